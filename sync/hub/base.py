"""The hub seam: a durable, ordered message log per pairing that followers tail.

``Hub`` is the Protocol; ``SqlHub`` (the in-process default, persisted in the
SQL database) and ``RedisHub`` (Redis Streams, for several replicas) implement
it. Ids are consecutive integers per pairing, counted from the log's *origin*:
the first message is ``origin + 1``, and a gap is how a follower learns that
history was trimmed. ``SqlHub``'s origin is 0 (its log is as durable as the
database). ``RedisHub`` takes a new stream's origin from Redis's clock, so a
stream that Redis lost (a restart without persistence, ``FLUSHALL``, expiry)
starts again above every id it ever gave out: ids never repeat in a pairing,
and a follower still holding an old id gets a ``HistoryTrimmed`` (a resync).
Ids stay below 2**53, so JavaScript clients hold them exactly.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import HistoryTrimmed


@dataclass(frozen=True)
class Message:
    id: int
    type: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "data": self.data}


class Hub(Protocol):
    async def publish(self, pairing_id: str, type: str, data: dict[str, Any]) -> int:
        """Append a message and return its id; it is durable before this returns."""
        ...

    def follow(self, pairing_id: str, after: int) -> AsyncIterator[Message]:
        """Every message with an id above ``after``, in order, then new ones as they come, forever.

        Raises ``HistoryTrimmed`` when messages after ``after`` are no longer all kept.
        Close it with ``contextlib.aclosing`` when done.
        """
        ...

    async def last_id(self, pairing_id: str) -> int:
        """The newest id given out (the log's origin before its first message: 0 for ``SqlHub``)."""
        ...

    async def ack(self, pairing_id: str, device_id: str, message_id: int) -> None:
        """Remember that ``device_id`` has everything up to ``message_id`` (never moves back)."""
        ...

    async def acked(self, pairing_id: str, device_id: str) -> int: ...

    async def forget(self, pairing_id: str) -> None:
        """Drop the pairing's log after a short grace (its followers still see the last messages)."""
        ...

    async def sweep(self) -> int:
        """Apply retention; returns how many messages or streams went."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Wakeups:
    """This process's "something new" signal per pairing, for followers waiting on the log."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._watchers: Counter[str] = Counter()

    @contextmanager
    def watch(self, pairing_id: str) -> Iterator[Callable[[], asyncio.Event]]:
        """Yields ``current()``: take the event *before* reading, wait on it after an empty read."""
        self._watchers[pairing_id] += 1
        try:
            yield lambda: self._events.setdefault(pairing_id, asyncio.Event())
        finally:
            self._watchers[pairing_id] -= 1
            if self._watchers[pairing_id] <= 0:
                del self._watchers[pairing_id]
                self._events.pop(pairing_id, None)

    def notify(self, pairing_id: str) -> None:
        event = self._events.pop(pairing_id, None)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        for pairing_id in list(self._events):
            self.notify(pairing_id)

    def watched(self) -> list[str]:
        return list(self._watchers)

    def __len__(self) -> int:
        return sum(self._watchers.values())


async def follow_log(
    pairing_id: str,
    after: int,
    *,
    read: Callable[[str, int], Awaitable[list[Message]]],
    bounds: Callable[[str], Awaitable[tuple[int, int]]],
    wakeups: Wakeups,
) -> AsyncIterator[Message]:
    """The follow loop both backends share: read after the cursor, else wait for a wake-up.

    ``read(pairing_id, after)`` returns the next batch in id order;
    ``bounds(pairing_id)`` is ``(origin, last_id)``. ``after=0`` means "from the
    start", whatever the origin. Raises ``HistoryTrimmed`` when messages after
    the cursor are gone (a batch that does not start right after it, or nothing
    to read below a head read earlier), with reason ``"reset"`` when ``after``
    is not an id of this log at all (beyond the head, or below the origin).
    """
    with wakeups.watch(pairing_id) as current:
        # Bounds before the first read: every id up to ``head`` was readable then, unless trimmed since.
        origin, head = await bounds(pairing_id)
        if after == 0:
            cursor = origin
        elif after > head or after < origin:
            raise HistoryTrimmed(pairing_id, after, head, "reset")
        else:
            cursor = after
        while True:
            wake = current()
            batch = await read(pairing_id, cursor)
            if batch:
                if batch[0].id != cursor + 1:
                    raise HistoryTrimmed(pairing_id, cursor, (await bounds(pairing_id))[1])
                for message in batch:
                    cursor = message.id
                    yield message
                continue
            if cursor < head:
                raise HistoryTrimmed(pairing_id, cursor, (await bounds(pairing_id))[1])
            await wake.wait()
