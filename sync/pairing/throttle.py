"""Fixed-window attempt counters that guard pairing codes against guessing.

``Throttle`` is the seam; ``MemoryThrottle`` counts in this process (one
replica), ``RedisThrottle`` counts in Redis so every replica shares the budget.
A window is ``floor(now / window_s)``: simple, exact, and the same on every
replica that agrees on the time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .errors import PairingUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

T = TypeVar("T")


@dataclass(frozen=True)
class Limit:
    """At most ``count`` hits per ``window_s`` seconds."""

    count: int
    window_s: float

    def window(self, now: float) -> int:
        return int(now // self.window_s)

    def retry_after(self, now: float) -> float:
        return (self.window(now) + 1) * self.window_s - now


class Throttle(Protocol):
    async def hit(self, key: str, limit: Limit) -> float | None:
        """Count one hit; the seconds to wait when that went over the limit, else None."""
        ...

    async def peek(self, key: str, limit: Limit) -> float | None:
        """Without counting: the seconds to wait if the limit is already reached, else None."""
        ...


class MemoryThrottle:
    """Counts per key for the current window only; finished windows are pruned as it grows."""

    def __init__(self, clock: Callable[[], float] = time.time, prune_above: int = 10_000) -> None:
        self._clock = clock
        self._prune_above = prune_above
        self._counts: dict[str, tuple[float, int, int]] = {}  # key -> (window_s, window, count)

    def _count(self, key: str, limit: Limit, now: float) -> int:
        entry = self._counts.get(key)
        if entry is None or entry[0] != limit.window_s or entry[1] != limit.window(now):
            return 0
        return entry[2]

    def _prune(self, now: float) -> None:
        for key, (window_s, window, _) in list(self._counts.items()):
            if window < int(now // window_s):
                del self._counts[key]

    async def hit(self, key: str, limit: Limit) -> float | None:
        now = self._clock()
        if len(self._counts) > self._prune_above:
            self._prune(now)
        count = self._count(key, limit, now) + 1
        self._counts[key] = (limit.window_s, limit.window(now), count)
        return limit.retry_after(now) if count > limit.count else None

    async def peek(self, key: str, limit: Limit) -> float | None:
        now = self._clock()
        return limit.retry_after(now) if self._count(key, limit, now) >= limit.count else None


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _shielded(call: Awaitable[T]) -> T:
    # redis-py can swallow a cancellation that lands mid-command (redis/redis-py#2028).
    task = asyncio.ensure_future(call)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


class RedisThrottle:
    """``INCR`` on ``{prefix}:{key}:{window}``, expiring with the window."""

    def __init__(self, redis: Redis, prefix: str = "arclip:throttle", clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock

    def _key(self, key: str, limit: Limit, now: float) -> str:
        return f"{self._prefix}:{key}:{limit.window(now)}"

    async def hit(self, key: str, limit: Limit) -> float | None:
        from redis.exceptions import RedisError

        now = self._clock()
        name = self._key(key, limit, now)
        try:
            count, _ = await _shielded(self._incr(name, math.ceil(limit.window_s) + 1))
        except RedisError as exc:
            raise PairingUnavailable("The pairing service cannot count attempts right now; retry shortly.") from exc
        return limit.retry_after(now) if int(count) > limit.count else None

    async def peek(self, key: str, limit: Limit) -> float | None:
        from redis.exceptions import RedisError

        now = self._clock()
        try:
            count = await _shielded(self._redis.get(self._key(key, limit, now)))
        except RedisError as exc:
            raise PairingUnavailable("The pairing service cannot count attempts right now; retry shortly.") from exc
        return limit.retry_after(now) if int(count or 0) >= limit.count else None

    async def _incr(self, name: str, ttl: int) -> list[Any]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, ttl)
            return await pipe.execute()
