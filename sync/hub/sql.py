"""SqlHub: the in-process hub, its log kept in the SQL database (SQLite by default).

A message is committed before ``publish`` returns, so a restart loses nothing;
this process's followers are woken in memory. Followers in *other* processes
are not woken: one process per database, or ``RedisHub`` for several replicas.

Each pairing's stream row holds the last id given out. ``publish`` starts with
``UPDATE … SET last_id = last_id + 1``: that takes the row lock (the write lock
on SQLite) first, so ids are consecutive and become visible in order.

``one_at_a_time`` (SQLite): the hub's transactions take turns in this process,
first come first served. SQLite runs one writer at a time anyway (and our
engine begins every transaction as a writer); left to SQLite's busy handler a
burst of them (300 sockets opening at once) is served in no order, and the
unlucky ones wait past the busy timeout. Waiting longer than ``queue_timeout_s``
for a turn (a minute by default: a burst of 300 connects queues for seconds)
is ``HubUnavailable``, as the database itself being busy is; so is a turn
behind one that found the database unavailable (see ``_Turns``).

Vendor errors become ``HubUnavailable`` here: the database locked, full,
unreachable, or its connection pool exhausted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sync.db import CursorRow, MessageRow, StreamRow, utcnow

from .base import Message, Wakeups, follow_log
from .errors import HubUnavailable

_BATCH = 200


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeout, DisconnectionError, OSError) as exc:
        raise HubUnavailable("The message log cannot be reached; retry shortly.") from exc
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise HubUnavailable("The message log cannot be reached; retry shortly.") from exc


class _Turns:
    """First come, first served access to the database, or no queue at all (``one_at_a_time=False``).

    A turn that finds the database unavailable fails the turns queued behind it
    at once: each would otherwise wait out the busy timeout in its turn, one
    after another, while the database stays locked.
    """

    def __init__(self, one_at_a_time: bool, queue_timeout_s: float) -> None:
        self._lock = asyncio.Lock() if one_at_a_time else None
        self._timeout = queue_timeout_s
        self._faults = 0  # turns that ended in HubUnavailable so far

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        if self._lock is None:
            yield
            return
        faults = self._faults
        try:
            async with asyncio.timeout(self._timeout):
                await self._lock.acquire()
        except TimeoutError:
            raise HubUnavailable("The message log is busy; retry shortly.") from None
        try:
            if self._faults != faults:
                raise HubUnavailable("The message log cannot be reached; retry shortly.")
            try:
                yield
            except HubUnavailable:
                self._faults += 1
                raise
        finally:
            self._lock.release()


class SqlHub:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_messages: int = 1000,
        retention: timedelta = timedelta(days=7),
        forget_after: timedelta = timedelta(minutes=1),
        clock: Callable[[], datetime] = utcnow,
        one_at_a_time: bool = False,
        queue_timeout_s: float = 60.0,
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self._sessions = sessions
        self._turn = _Turns(one_at_a_time, queue_timeout_s)
        self.max_messages = max_messages
        self.retention = retention
        self.forget_after = forget_after
        self._clock = clock
        self._wakeups = Wakeups()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._wakeups.notify_all()

    @property
    def followers(self) -> int:
        return len(self._wakeups)

    @contextlib.asynccontextmanager
    async def _session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """A session in its turn, committed on the way out when ``write``; vendor errors translated."""
        async with self._turn():
            with _translated():
                async with self._sessions.begin() if write else self._sessions() as session:
                    yield session

    # -- writing --------------------------------------------------------------------------------------
    async def publish(self, pairing_id: str, type: str, data: dict[str, Any]) -> int:
        payload = json.dumps(data, separators=(",", ":"))
        for _ in range(3):
            try:
                message_id = await self._append(pairing_id, type, payload)
                break
            except IntegrityError:  # two first messages raced to create the stream row
                continue
        else:
            raise HubUnavailable("The message log is contended; retry shortly.")
        self._wakeups.notify(pairing_id)
        return message_id

    async def _append(self, pairing_id: str, type: str, payload: str) -> int:
        now = self._clock()
        async with self._session(write=True) as session:
            bumped = await session.execute(
                update(StreamRow).where(StreamRow.pairing_id == pairing_id).values(last_id=StreamRow.last_id + 1)
            )
            if bumped.rowcount == 1:
                head = (
                    await session.execute(
                        select(StreamRow.last_id, StreamRow.trimmed_through).where(StreamRow.pairing_id == pairing_id)
                    )
                ).one()
                message_id, trimmed = int(head[0]), int(head[1])
            else:
                session.add(StreamRow(pairing_id=pairing_id, last_id=1, trimmed_through=0))
                await session.flush()
                message_id, trimmed = 1, 0
            session.add(MessageRow(pairing_id=pairing_id, id=message_id, type=type, data=payload, created_at=now))
            keep_from = message_id - self.max_messages  # ids <= this go
            if keep_from > trimmed:
                await session.execute(
                    delete(MessageRow).where(MessageRow.pairing_id == pairing_id, MessageRow.id <= keep_from)
                )
                await session.execute(
                    update(StreamRow).where(StreamRow.pairing_id == pairing_id).values(trimmed_through=keep_from)
                )
        return message_id

    async def ack(self, pairing_id: str, device_id: str, message_id: int) -> None:
        for _ in range(2):
            try:
                await self._ack(pairing_id, device_id, message_id)
                return
            except IntegrityError:  # another connection of the device created the row first
                continue

    async def _ack(self, pairing_id: str, device_id: str, message_id: int) -> None:
        async with self._session(write=True) as session:
            moved = await session.execute(
                update(CursorRow)
                .where(
                    CursorRow.pairing_id == pairing_id,
                    CursorRow.device_id == device_id,
                    CursorRow.acked_id < message_id,
                )
                .values(acked_id=message_id)
            )
            if not moved.rowcount and await session.get(CursorRow, (pairing_id, device_id)) is None:
                session.add(CursorRow(pairing_id=pairing_id, device_id=device_id, acked_id=message_id))

    async def forget(self, pairing_id: str) -> None:
        async with self._session(write=True) as session:
            await session.execute(
                update(StreamRow)
                .where(StreamRow.pairing_id == pairing_id)
                .values(forget_at=self._clock() + self.forget_after)
            )

    async def sweep(self) -> int:
        """Drop forgotten streams, then messages older than the retention; returns messages removed."""
        now = self._clock()
        removed = 0
        async with self._session(write=True) as session:
            gone = select(StreamRow.pairing_id).where(StreamRow.forget_at <= now)
            result = await session.execute(delete(MessageRow).where(MessageRow.pairing_id.in_(gone)))
            removed += result.rowcount or 0
            await session.execute(delete(CursorRow).where(CursorRow.pairing_id.in_(gone)))
            await session.execute(delete(StreamRow).where(StreamRow.forget_at <= now))
        cutoff = now - self.retention
        async with self._session() as session:
            old = (
                await session.execute(
                    select(MessageRow.pairing_id, func.max(MessageRow.id))
                    .where(MessageRow.created_at < cutoff)
                    .group_by(MessageRow.pairing_id)
                )
            ).all()
        for pairing_id, through in old:
            async with self._session(write=True) as session:
                result = await session.execute(
                    delete(MessageRow).where(MessageRow.pairing_id == pairing_id, MessageRow.id <= through)
                )
                removed += result.rowcount or 0
                await session.execute(
                    update(StreamRow)
                    .where(StreamRow.pairing_id == pairing_id, StreamRow.trimmed_through < through)
                    .values(trimmed_through=through)
                )
        return removed

    # -- reading --------------------------------------------------------------------------------------
    async def follow(self, pairing_id: str, after: int) -> AsyncIterator[Message]:
        async with contextlib.aclosing(
            follow_log(pairing_id, after, read=self._read, bounds=self._bounds, wakeups=self._wakeups)
        ) as messages:
            async for message in messages:
                yield message

    async def _read(self, pairing_id: str, after: int) -> list[Message]:
        async with self._session() as session:
            rows = (
                await session.execute(
                    select(MessageRow.id, MessageRow.type, MessageRow.data)
                    .where(MessageRow.pairing_id == pairing_id, MessageRow.id > after)
                    .order_by(MessageRow.id)
                    .limit(_BATCH)
                )
            ).all()
        return [Message(int(i), t, json.loads(d)) for i, t, d in rows]

    async def _bounds(self, pairing_id: str) -> tuple[int, int]:
        return 0, await self.last_id(pairing_id)  # the log is durable: it starts at 1, always

    async def last_id(self, pairing_id: str) -> int:
        async with self._session() as session:
            value = await session.scalar(select(StreamRow.last_id).where(StreamRow.pairing_id == pairing_id))
        return int(value or 0)

    async def acked(self, pairing_id: str, device_id: str) -> int:
        async with self._session() as session:
            row = await session.get(CursorRow, (pairing_id, device_id))
        return row.acked_id if row is not None else 0
