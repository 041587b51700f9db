"""A paid call when the database fails: charged and recorded, or an error and nothing charged.

The faults are real SQLite ones: another connection holding the write lock (``BEGIN
EXCLUSIVE``, as a stuck writer or a backup would), and a database that cannot grow
(``max_page_count``: the same ``SQLITE_FULL`` a full disk gives, without mounting one).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.database import create_database, create_schema
from billing import IdempotencyStore, Ledger, Metering, StoredResponse
from billing.db import IdempotencyRecord, LedgerEntry
from tests.conftest import sqlite_locked


class Disk:
    """Whether the database may grow: when full, it keeps the pages it has."""

    full = False


@pytest.fixture
def database_path(tmp_path: Path) -> Path:
    return tmp_path / "billing.db"


@pytest.fixture
def disk() -> Disk:
    return Disk()


@pytest.fixture
async def engine(database_path: Path, disk: Disk) -> AsyncIterator[AsyncEngine]:
    """The app's engine, with a short busy timeout (a locked database fails in 0.1 s, not 5 s)."""
    database = create_database(f"sqlite+aiosqlite:///{database_path}", busy_timeout_s=0.1)

    @event.listens_for(database.sync_engine, "checkout")
    def _disk_space(dbapi_connection, _record, _proxy):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA page_count")
        pages = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count={pages if disk.full else 1_073_741_823}")
        cursor.close()

    await create_schema(database)
    yield database
    await database.dispose()


@pytest.fixture
def metering(sessions, catalogue, clock) -> Metering:
    return Metering(Ledger(sessions, catalogue, clock), IdempotencyStore(sessions, clock=clock))


def render(body: bytes):
    return lambda charge: StoredResponse(200, {"X-Credits-Charged": str(charge.amount)}, body, "image/png")


async def ledger_rows(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return list((await session.scalars(select(LedgerEntry.status).order_by(LedgerEntry.created))).all())


async def idempotency_records(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(IdempotencyRecord)) or 0)


async def remaining(metering: Metering, key) -> int:
    return (await metering.ledger.balance(key.account_id)).remaining


async def charge_once(metering: Metering, key, body: bytes = b"img") -> StoredResponse:
    async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
        return await call.succeed(render(body))


async def test_locked_before_the_call_charges_nothing(keys, metering, sessions, database_path) -> None:
    key, _ = await keys.create("app")
    with sqlite_locked(database_path):
        with pytest.raises(OperationalError, match="locked"):
            await charge_once(metering, key)
        with pytest.raises(OperationalError, match="locked"):
            async with metering.call(key, operation="clip"):  # no Idempotency-Key: the reservation fails
                pytest.fail("the work ran without a reservation")
    assert await remaining(metering, key) == 5000
    assert await ledger_rows(sessions) == [] and await idempotency_records(sessions) == 0
    assert metering.pending_undos == 0


async def test_locked_when_charging_gives_the_reservation_back(keys, metering, sessions, database_path) -> None:
    key, _ = await keys.create("app")
    with contextlib.ExitStack() as lock, pytest.raises(OperationalError, match="locked"):
        async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
            lock.enter_context(sqlite_locked(database_path))  # from the end of the work until after the error
            await call.succeed(render(b"img"))
    # The undo could not be written either: the credits are held, not charged, until it is.
    assert await ledger_rows(sessions) == ["reserved"] and metering.pending_undos == 1
    with sqlite_locked(database_path):
        assert await metering.retry_undos() == 0  # still locked: kept for the next round
    assert metering.pending_undos == 1
    assert await metering.retry_undos() == 1
    assert await ledger_rows(sessions) == ["released"] and await idempotency_records(sessions) == 0
    assert await remaining(metering, key) == 5000 and metering.pending_undos == 0
    # The client's retry with the same key runs anew and is charged once.
    assert (await charge_once(metering, key)).headers == {"X-Credits-Charged": "1000"}
    assert await remaining(metering, key) == 4000
    assert sorted(await ledger_rows(sessions)) == ["charged", "released"]


async def test_full_when_charging_gives_the_reservation_back(keys, metering, sessions, disk) -> None:
    key, _ = await keys.create("app")
    with pytest.raises(OperationalError, match="full"):
        async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
            disk.full = True  # the kept response (200 kB) needs pages the database cannot get
            await call.succeed(render(bytes(200_000)))
    await metering.retry_undos()  # a no-op when the undo went through at once
    disk.full = False
    await metering.retry_undos()
    assert await ledger_rows(sessions) == ["released"] and await idempotency_records(sessions) == 0
    assert await remaining(metering, key) == 5000 and metering.pending_undos == 0


async def test_a_lost_commit_answer_is_a_success(
    keys, metering, sessions, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The charge committed and then the driver failed: the client gets what it paid for."""
    key, _ = await keys.create("app")
    dialect = engine.sync_engine.dialect
    commit = dialect.do_commit
    commits: list[None] = []

    def lose_the_answer(dbapi_connection) -> None:  # type: ignore[no-untyped-def]
        commit(dbapi_connection)
        commits.append(None)
        if len(commits) == 3:  # the idempotency key, the reservation, then the charge
            raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(dialect, "do_commit", lose_the_answer)
    with caplog.at_level(logging.WARNING, logger="arclip.billing"):
        response = await charge_once(metering, key)
    assert any("raised after its commit" in r.getMessage() for r in caplog.records)  # the fault happened
    assert response.headers == {"X-Credits-Charged": "1000"}
    assert await ledger_rows(sessions) == ["charged"] and await remaining(metering, key) == 4000
    assert metering.pending_undos == 0
    async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
        assert call.replay == response  # and a retry replays it, uncharged
    assert await remaining(metering, key) == 4000
