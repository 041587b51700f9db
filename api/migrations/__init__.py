"""Schema migrations: Alembic, configured in code, its scripts shipped inside the package.

Every table (billing's and sync's) is made and changed by the revisions in
``versions/``; ``create_all`` is never used. All changes run in the caller's
transaction: on SQLite that holds the write lock (``BEGIN IMMEDIATE``), on
PostgreSQL it first takes an advisory lock, so two replicas or a replica and
``arclip db upgrade`` never migrate at once; the second waits, then finds the
work done.

A database made by ``create_all`` before migrations existed (our tables, no
``alembic_version``) is adopted when the tables it has hold the columns the first
revision makes: that revision then runs, making only the tables it lacks (as
``create_all`` would have at start-up), and is recorded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import billing
import sync.db

# The revision that creates what ``create_all`` created before migrations.
INITIAL = "0001"
# pg_advisory_xact_lock's key: "arclip" in ASCII, one lock for every migration.
LOCK_KEY = 0x6172636C6970
UPGRADE_HINT = "run `arclip db upgrade` (or set ARCLIP_AUTO_MIGRATE=true to let a replica upgrade it at start)"


class SchemaError(Exception):
    """The database's schema is not one this release can run on, or a migration was refused."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SchemaOutOfDate(SchemaError):
    """Older than this release (or empty), and upgrading at start is not allowed."""


class SchemaTooNew(SchemaError):
    """At a revision this release does not know: written by a newer arclip."""


class SchemaMismatch(SchemaError):
    """Our tables without a migration record, and not the ones the first revision makes."""


class UnknownRevision(SchemaError):
    """A revision asked for that does not exist, or is not up (or down) from the current one."""


def target_metadata() -> Sequence[MetaData]:
    return (billing.Base.metadata, sync.db.Base.metadata)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, without an alembic.ini: the scripts are this package's folder."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The revision this release's code expects."""
    return _scripts().get_current_head() or ""


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # the revision recorded in the database; None: none recorded
    head: str
    known: bool  # current is one of this release's revisions (or None)
    unversioned_tables: tuple[str, ...]  # our tables present while no revision is recorded

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def too_new(self) -> bool:
        return not self.known

    def describe(self) -> str:
        if self.current is not None:
            return f"revision {self.current}"
        if self.unversioned_tables:
            return "no revision (tables made before migrations, adopted by `arclip db upgrade`)"
        return "no revision (empty)"


def _our_tables() -> set[str]:
    return {name for metadata in target_metadata() for name in metadata.tables}


def read_state(conn: Connection) -> SchemaState:
    current = MigrationContext.configure(conn).get_current_revision()
    known = current is None or _known(current)
    unversioned: tuple[str, ...] = ()
    if current is None:
        unversioned = tuple(sorted(_our_tables() & set(inspect(conn).get_table_names())))
    return SchemaState(current=current, head=head(), known=known, unversioned_tables=unversioned)


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:  # alembic's ResolutionError is a CommandError
        return False


def _lock(conn: Connection) -> None:
    # Held to the end of the caller's transaction. SQLite needs none: its
    # transactions here begin IMMEDIATE, which is already the database's write lock.
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})


@functools.cache
def _initial_columns() -> dict[str, frozenset[str]]:
    """Table -> column names that the first revision makes (run once on a scratch SQLite)."""
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), INITIAL)
            found = inspect(conn)
            return {
                table: frozenset(column["name"] for column in found.get_columns(table))
                for table in found.get_table_names()
                if table != "alembic_version"
            }
    finally:
        engine.dispose()


def _adopt(conn: Connection, state: SchemaState) -> None:
    expected = _initial_columns()
    found = inspect(conn)
    problems = []
    for table, columns in sorted(expected.items()):
        if not found.has_table(table):
            continue  # newer than the release that made the database: the revision makes it
        present = {column["name"] for column in found.get_columns(table)}
        if present != columns:
            missing, extra = sorted(columns - present), sorted(present - columns)
            problems.append(f"{table} differs (missing: {', '.join(missing) or '-'}; extra: {', '.join(extra) or '-'})")
    if problems:
        raise SchemaMismatch(
            f"the database has arclip tables ({', '.join(state.unversioned_tables)}) but no migration record, "
            f"and they are not those of revision {INITIAL}: {'; '.join(problems)}"
        )
    command.upgrade(alembic_config(conn), INITIAL)


def _refuse_too_new(state: SchemaState) -> None:
    if state.too_new:
        raise SchemaTooNew(
            f"the database schema is at revision {state.current}, which this arclip does not know "
            f"(it expects {state.head}): it was upgraded by a newer release; run that release, "
            f"or its `arclip db downgrade {state.head}`"
        )


def prepare_sync(conn: Connection, *, migrate: bool) -> None:
    """At start-up: adopt a pre-migration database; upgrade if ``migrate``, else refuse an old schema."""
    _lock(conn)
    state = read_state(conn)
    _refuse_too_new(state)
    if state.up_to_date:
        return
    if state.current is None and state.unversioned_tables:
        _adopt(conn, state)
        state = read_state(conn)
        if state.up_to_date:
            return
    if not migrate:
        raise SchemaOutOfDate(
            f"the database schema is at {state.describe()}, but this arclip expects revision {state.head}: "
            + UPGRADE_HINT
        )
    _run(command.upgrade, conn, "head")


def upgrade_sync(conn: Connection, revision: str = "head") -> None:
    _lock(conn)
    state = read_state(conn)
    _refuse_too_new(state)
    if state.current is None and state.unversioned_tables:
        _adopt(conn, state)
    _run(command.upgrade, conn, revision)


def downgrade_sync(conn: Connection, revision: str) -> None:
    _lock(conn)
    _refuse_too_new(read_state(conn))
    _run(command.downgrade, conn, revision)


def _run(step, conn: Connection, revision: str) -> None:  # type: ignore[no-untyped-def]
    try:
        step(alembic_config(conn), revision)
    except CommandError as exc:  # an unknown revision, or one not up/down from here
        raise UnknownRevision(str(exc)) from None


# -- on the app's async engine ------------------------------------------------------------------------


async def prepare(engine: AsyncEngine, *, migrate: bool) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync_conn: prepare_sync(sync_conn, migrate=migrate))


async def state(engine: AsyncEngine) -> SchemaState:
    async with engine.connect() as conn:
        return await conn.run_sync(read_state)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> SchemaState:
    async with engine.begin() as conn:
        await conn.run_sync(upgrade_sync, revision)
    return await state(engine)


async def downgrade(engine: AsyncEngine, revision: str) -> SchemaState:
    async with engine.begin() as conn:
        await conn.run_sync(downgrade_sync, revision)
    return await state(engine)
