"""Schema migrations (api/migrations) on SQLite and on a real PostgreSQL, and the ``arclip db`` commands.

Every schema here is built by migrations only; ``create_all`` appears solely to make
the database an older release left behind, or to compare against.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from api import migrations
from api.cli import app as cli
from api.database import create_database, create_schema
from api.migrations import SchemaMismatch, SchemaOutOfDate, SchemaTooNew
from tests.conftest import disk_model, make_settings
from tests.postgres import new_database

OUR_TABLES = {name for metadata in migrations.target_metadata() for name in metadata.tables}
REPO = Path(__file__).resolve().parents[2]

NewEngine = Callable[[], Awaitable[AsyncEngine]]


@pytest.fixture
async def new_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[NewEngine]:
    """Engines on fresh, empty databases of the dialect under test (each call: another database)."""
    engines: list[AsyncEngine] = []
    server = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None

    async def make() -> AsyncEngine:
        if server is None:
            url = f"sqlite+aiosqlite:///{tmp_path / f'db{len(engines)}.sqlite'}"
        else:
            url = await new_database(server)
        engines.append(create_database(url))
        return engines[-1]

    yield make
    for engine in engines:
        await engine.dispose()


both = pytest.mark.parametrize("new_engine", ["sqlite", "postgresql"], indirect=True)
postgres_only = pytest.mark.parametrize("new_engine", ["postgresql"], indirect=True)


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def revision(engine: AsyncEngine) -> str | None:
    return (await migrations.state(engine)).current


async def create_all(engine: AsyncEngine) -> None:
    """What releases before migrations did at start-up."""
    async with engine.begin() as conn:
        for metadata in migrations.target_metadata():
            await conn.run_sync(metadata.create_all)


def reflect(conn: Connection) -> dict[str, Any]:
    """Everything about our tables that a migration could get wrong, as comparable values."""
    found = inspect(conn)
    schema: dict[str, Any] = {}
    for table in sorted(OUR_TABLES):
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("autoincrement"))
                for c in found.get_columns(table)
            ],
            "primary key": found.get_pk_constraint(table)["constrained_columns"],
            "foreign keys": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]),
                 fk.get("options", {}).get("ondelete"))
                for fk in found.get_foreign_keys(table)
            ),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in found.get_indexes(table)),
            "unique": sorted((str(u["name"]), tuple(u["column_names"])) for u in found.get_unique_constraints(table)),
        }
    return schema


# -- building and rebuilding ---------------------------------------------------------------------------


@both
async def test_upgrade_from_empty_builds_every_table(new_engine: NewEngine) -> None:
    engine = await new_engine()
    state = await migrations.upgrade(engine)
    assert state.current == state.head == migrations.head() and state.up_to_date
    assert await tables(engine) == OUR_TABLES | {"alembic_version"}


@both
async def test_downgrade_to_base_then_upgrade_again(new_engine: NewEngine) -> None:
    engine = await new_engine()
    await migrations.upgrade(engine)
    state = await migrations.downgrade(engine, "base")
    assert state.current is None and not state.up_to_date
    assert await tables(engine) & OUR_TABLES == set()
    await migrations.upgrade(engine)
    assert await tables(engine) == OUR_TABLES | {"alembic_version"}
    # The rebuilt schema takes writes: an API key for a new account.
    from billing import ApiKeyService, Catalogue

    from api.database import session_factory

    keys = ApiKeyService(session_factory(engine), Catalogue.build({}))
    info, _ = await keys.create("after a rebuild")
    assert [k.id for k in await keys.list()] == [info.id]


@both
async def test_migrations_match_the_models(new_engine: NewEngine) -> None:
    engine = await new_engine()
    await migrations.upgrade(engine)

    def drift(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, migrations.target_metadata())

    async with engine.connect() as conn:
        assert await conn.run_sync(drift) == []


@both
async def test_migrations_make_exactly_what_create_all_made(new_engine: NewEngine) -> None:
    migrated, legacy = await new_engine(), await new_engine()
    await migrations.upgrade(migrated)
    await create_all(legacy)
    async with migrated.connect() as a, legacy.connect() as b:
        assert await a.run_sync(reflect) == await b.run_sync(reflect)


# -- start-up ---------------------------------------------------------------------------------------


async def test_sqlite_upgrades_itself_at_start(tmp_path: Path) -> None:
    engine = create_database(f"sqlite+aiosqlite:///{tmp_path / 'arclip.db'}")
    try:
        await create_schema(engine, auto_migrate=False)  # SQLite: always, whatever the setting
        assert await revision(engine) == migrations.head()
    finally:
        await engine.dispose()


@postgres_only
async def test_a_postgres_replica_refuses_an_empty_schema(new_engine: NewEngine) -> None:
    engine = await new_engine()
    with pytest.raises(SchemaOutOfDate) as refused:
        await create_schema(engine, auto_migrate=False)
    message = refused.value.message
    assert "no revision (empty)" in message and f"expects revision {migrations.head()}" in message
    assert "`arclip db upgrade`" in message and "ARCLIP_AUTO_MIGRATE=true" in message
    assert await tables(engine) == set()  # refused before touching anything

    await create_schema(engine, auto_migrate=True)
    assert await revision(engine) == migrations.head()
    await create_schema(engine, auto_migrate=False)  # up to date: starts without the setting


@postgres_only
async def test_a_replica_on_an_old_schema_refuses_to_start_unless_auto_migrate(
    new_engine: NewEngine, tmp_path: Path
) -> None:
    from api.app import create_app

    engine = await new_engine()
    url = engine.url.render_as_string(hide_password=False)
    refusing = create_app(make_settings(tmp_path / "a", database_url=url), model=disk_model())
    with pytest.raises(SchemaOutOfDate, match="arclip db upgrade"):
        async with refusing.router.lifespan_context(refusing):
            pass
    assert await revision(engine) is None

    upgrading = create_app(make_settings(tmp_path / "b", database_url=url, auto_migrate=True), model=disk_model())
    async with upgrading.router.lifespan_context(upgrading):
        assert await revision(engine) == migrations.head()


@postgres_only
async def test_two_replicas_migrating_at_once_do_not_collide(new_engine: NewEngine) -> None:
    for _ in range(3):  # each round: a fresh database, two replicas starting together
        first = await new_engine()
        replicas = [first, create_database(first.url.render_as_string(hide_password=False))]
        try:
            await asyncio.gather(*(create_schema(r, auto_migrate=True) for r in replicas))
            assert await revision(replicas[0]) == migrations.head()
            assert await tables(replicas[0]) == OUR_TABLES | {"alembic_version"}
        finally:
            await replicas[1].dispose()


@postgres_only
async def test_a_migration_waits_for_the_advisory_lock(new_engine: NewEngine) -> None:
    engine = await new_engine()
    async with engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": migrations.LOCK_KEY})
        await holder.commit()
        migrating = asyncio.ensure_future(create_schema(engine, auto_migrate=True))
        try:
            while not await _someone_waits_for_an_advisory_lock(engine) and not migrating.done():
                await asyncio.sleep(0.02)
            assert not migrating.done()
            assert await tables(engine) == set()  # nothing ran while the lock was held elsewhere
        finally:
            await holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": migrations.LOCK_KEY})
            await holder.commit()
        await migrating
    assert await revision(engine) == migrations.head()


async def _someone_waits_for_an_advisory_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
    return bool(waiting)


@both
async def test_a_database_made_by_create_all_is_adopted_with_its_data(new_engine: NewEngine) -> None:
    engine = await new_engine()
    await create_all(engine)
    async with engine.begin() as conn:
        # As left by a release before capture keys existed (its create_all made them at start).
        await conn.execute(text("DROP TABLE sync_capture_keys"))
        await conn.execute(
            text(
                "INSERT INTO sync_pairings (id, state, created_at, expires_at) "
                "VALUES ('p1', 'active', '2026-01-01 00:00:00', '2026-02-01 00:00:00')"
            )
        )
    state = await migrations.state(engine)
    assert state.current is None and set(state.unversioned_tables) == OUR_TABLES - {"sync_capture_keys"}

    await create_schema(engine, auto_migrate=False)  # adopting changes no table: allowed without the setting
    assert await revision(engine) == migrations.INITIAL
    reference = await new_engine()
    await migrations.upgrade(reference)
    async with engine.connect() as conn, reference.connect() as migrated:
        assert (await conn.execute(text("SELECT id, state FROM sync_pairings"))).all() == [("p1", "active")]
        assert await conn.run_sync(reflect) == await migrated.run_sync(reflect)  # the missing table made too


@both
async def test_unversioned_tables_that_differ_are_refused(new_engine: NewEngine) -> None:
    engine = await new_engine()
    await create_all(engine)
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE screens ADD COLUMN colour VARCHAR(8)"))
        await conn.execute(text("ALTER TABLE sync_cursors DROP COLUMN acked_id"))
    with pytest.raises(SchemaMismatch) as refused:
        await create_schema(engine, auto_migrate=True)
    assert "screens differs (missing: -; extra: colour)" in refused.value.message
    assert "sync_cursors differs (missing: acked_id; extra: -)" in refused.value.message
    assert await revision(engine) is None


@both
async def test_a_schema_newer_than_the_code_is_refused(new_engine: NewEngine) -> None:
    engine = await new_engine()
    await migrations.upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    for auto_migrate in (False, True):
        with pytest.raises(SchemaTooNew) as refused:
            await create_schema(engine, auto_migrate=auto_migrate)
        assert "revision f00dfeed" in refused.value.message and f"expects {migrations.head()}" in refused.value.message
    with pytest.raises(SchemaTooNew):
        await migrations.upgrade(engine)
    assert await revision(engine) == "f00dfeed"


# -- the command line ------------------------------------------------------------------------------------


def db(*args: str, **env: str) -> Any:
    return CliRunner().invoke(cli, ["db", *args], env=env, catch_exceptions=False)


def test_db_commands_on_the_embedded_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCLIP_DATA_DIR", str(tmp_path / "data"))
    head = migrations.head()

    before = db("current")
    assert before.exit_code == 1
    assert before.stdout.splitlines() == ["current: no revision (empty)", f"head: revision {head}",
                                          "out of date: run `arclip db upgrade`"]

    upgraded = db("upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout.strip() == f"database at revision {head} (this arclip expects {head})"
    after = db("current")
    assert after.exit_code == 0 and after.stdout.splitlines()[-1] == "up to date"

    down = db("downgrade", "base")
    assert down.exit_code == 0 and "database at revision base" in down.stdout
    assert db("current").exit_code == 1


def test_db_command_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCLIP_DATA_DIR", str(tmp_path / "data"))
    unknown = db("upgrade", "--revision", "nope")
    assert unknown.exit_code == 2
    assert unknown.stderr.strip() == "error: Can't locate revision identified by 'nope'"

    unreachable = db("current", ARCLIP_DATABASE_URL="postgresql+asyncpg://arclip:secret@127.0.0.1:9/arclip")
    assert unreachable.exit_code == 1
    [line] = unreachable.stderr.strip().splitlines()
    assert line.startswith("error: cannot use the database postgresql+asyncpg://arclip:***@127.0.0.1:9/arclip: ")
    assert "secret" not in unreachable.output


def test_any_command_on_a_newer_schema_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCLIP_DATA_DIR", str(tmp_path / "data"))
    assert db("upgrade").exit_code == 0
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "arclip.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00dfeed'")
    for command in (["keys", "list"], ["db", "upgrade"]):
        refused = CliRunner().invoke(cli, command, catch_exceptions=False)
        assert refused.exit_code == 1
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith("error: the database schema is at revision f00dfeed, which this arclip does not know")
    current = db("current")
    assert current.exit_code == 1 and current.stdout.splitlines()[-1].startswith("newer than this arclip")


def test_db_upgrade_on_postgres_lets_a_replica_start(postgres_url: str, tmp_path: Path) -> None:
    url = asyncio.run(new_database(postgres_url))
    env = {"ARCLIP_DATABASE_URL": url, "ARCLIP_DATA_DIR": str(tmp_path)}
    assert db("current", **env).exit_code == 1
    assert db("upgrade", **env).exit_code == 0
    current = db("current", **env)
    assert current.exit_code == 0 and current.stdout.splitlines()[0] == f"current: revision {migrations.head()}"

    async def start() -> None:
        engine = create_database(url)
        try:
            await create_schema(engine, auto_migrate=False)
        finally:
            await engine.dispose()

    asyncio.run(start())


def test_serve_on_an_old_postgres_schema_refuses_in_one_line(postgres_url: str, tmp_path: Path) -> None:
    url = asyncio.run(new_database(postgres_url))
    refused = CliRunner().invoke(
        cli, ["serve", "--port", "9"], env={"ARCLIP_DATABASE_URL": url, "ARCLIP_DATA_DIR": str(tmp_path)},
        catch_exceptions=False,
    )
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: the database schema is at no revision (empty), but this arclip expects revision "
        f"{migrations.head()}: run `arclip db upgrade` (or set ARCLIP_AUTO_MIGRATE=true to let a replica "
        "upgrade it at start)"
    ]


def test_alembic_tooling_for_new_revisions_sees_no_pending_change(tmp_path: Path) -> None:
    """`python -m api.migrations check` (how a developer learns a model change needs a revision) works."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCLIP_")}
    env["ARCLIP_DATA_DIR"] = str(tmp_path / "data")

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api.migrations", "check"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    before = check()
    assert before.returncode != 0 and "Target database is not up to date" in before.stdout + before.stderr
    assert db("upgrade", ARCLIP_DATA_DIR=env["ARCLIP_DATA_DIR"]).exit_code == 0
    checked = check()
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "No new upgrade operations detected" in checked.stdout


def test_the_installed_package_carries_its_migrations(tmp_path: Path) -> None:
    """Built as `pip install .` builds it, the package migrates from any folder: no alembic.ini, no checkout."""
    source = tmp_path / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("api", "billing", "sync", "segmentation"):
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    lib = tmp_path / "lib"
    built = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "--build-lib", str(lib)],
        cwd=source, capture_output=True, text=True, timeout=120,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    assert (lib / "api/migrations/script.py.mako").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCLIP_")}
    env.update(PYTHONPATH=str(lib), ARCLIP_DATA_DIR=str(elsewhere / "data"))
    script = (
        "import sys, api.migrations as m; assert m.__file__.startswith(sys.argv[1]), m.__file__; "
        "from api.cli import main; sys.argv = ['arclip', 'db', 'upgrade']; main()"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script, str(lib)], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert f"database at revision {migrations.head()}" in ran.stdout
