"""RedisHub: one Redis Stream per pairing, so devices on different replicas see each other.

Layout (``prefix`` defaults to ``arclip``)::

    {prefix}:hub:{pairing_id}        stream; entry ids are 0-(origin+1), 0-(origin+2), … (``XADD … 0-*``)
    {prefix}:hub:{pairing_id}:acks   hash: device_id -> highest acked id

``publish`` is ``XADD`` (trimmed to ``max_messages`` exactly) and ``EXPIRE`` in
one script; it returns once Redis has the entry. How durable that is across
a *Redis* restart is Redis's persistence setting: run it with
``appendonly yes`` (the compose file does) for the 201-means-delivered promise.

Ids never repeat, even when Redis loses the stream (a restart without
persistence, ``FLUSHALL``, the TTL): whoever finds the stream missing (a
publish, or ``last_id``) creates it empty with its last id set to the *origin*,
Redis's clock in microseconds (``TIME``, about 1.7e15, below 2**53 until the
year 2255). A stream cannot give out more than one id per microsecond (each is
a round trip to Redis), so a stream created again starts above every id the
lost one gave out; a follower holding one of those ids gets a resync
(``HistoryTrimmed``), and the stream's origin is ``last-generated-id`` minus
``entries-added``. This trusts Redis's clock not to step back between the two.

Reading: followers read with ``XRANGE`` after their own cursor. One task per
process tails every stream this process's followers watch with a single
``XREAD BLOCK`` on a dedicated connection and wakes those followers; when a
new stream is watched it interrupts the block (``CLIENT UNBLOCK``) to include
it. So an idle websocket costs no Redis connection of its own.

Every Redis call runs shielded in its own task: redis-py's asyncio client can
swallow a cancellation that lands mid-command (redis/redis-py#2028, still seen
with 8.1), and a session must stop its follower the moment it is told to.

Time retention is the stream's TTL, renewed on every publish; the count limit
is the ``MAXLEN``. Needs Redis 7.0+ (``0-*`` ids, exclusive ``XRANGE``,
``XSETID … ENTRIESADDED``), and no cluster (one ``XREAD`` spans many keys).

Redis errors become ``HubUnavailable`` when Redis cannot serve now (down,
loading, out of memory, unable to persist, a read-only replica), else ``HubError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import Message, Wakeups, follow_log
from .errors import HubError, HubUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("arclip.hub")

T = TypeVar("T")

_BATCH = 200
# Creates a missing stream empty, its last id at the origin (see the module docstring).
_ENSURE = """
local function ensure(key, ttl)
  if redis.call('EXISTS', key) == 1 then return end
  local now = redis.call('TIME')
  local origin = '0-' .. now[1] .. string.format('%06d', tonumber(now[2]))
  redis.call('XADD', key, 'MAXLEN', '0', origin, 'type', '', 'data', '')
  redis.call('XSETID', key, origin, 'ENTRIESADDED', '0', 'MAXDELETEDID', '0-0')
  redis.call('EXPIRE', key, ttl)
end
"""
# KEYS: stream; ARGV: type, data, maxlen, ttl. Returns the new entry's id.
_PUBLISH_SCRIPT = _ENSURE + """
ensure(KEYS[1], ARGV[4])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '0-*', 'type', ARGV[1], 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return id
"""
# KEYS: stream; ARGV: ttl. Returns {last-generated-id, entries-added}.
_BOUNDS_SCRIPT = _ENSURE + """
ensure(KEYS[1], ARGV[1])
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, added = '0-0', 0
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'entries-added' then added = info[i + 1] end
end
return {last, added}
"""
_ACK_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


# Redis is there but cannot serve now (ConnectionError covers LOADING and "max clients").
_CANNOT_SERVE = (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, ReadOnlyError, TryAgainError, MasterDownError)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except _CANNOT_SERVE as exc:
        raise HubUnavailable("The message hub (Redis) cannot serve right now; retry shortly.") from exc
    except ResponseError as exc:
        if str(exc).startswith(("MISCONF", "OOM", "LOADING")):  # as relayed from inside a script
            raise HubUnavailable("The message hub (Redis) cannot serve right now; retry shortly.") from exc
        raise HubError(f"The message hub (Redis) failed: {exc}") from exc
    except RedisError as exc:
        raise HubError(f"The message hub (Redis) failed: {exc}") from exc


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # seen, so an abandoned call's error is not logged as "never retrieved"


async def shielded(call: Awaitable[T]) -> T:
    """Await a redis-py call so that cancelling the caller always works (the call finishes on its own)."""
    task = asyncio.ensure_future(call)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _seq(entry_id: bytes | str) -> int:
    return int(_text(entry_id).partition("-")[2])


def _dedicated(redis: Redis, read_timeout: float) -> Redis:
    """A client with its own single connection, for the blocking reader."""
    pool = redis.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = read_timeout
    own = pool.__class__(connection_class=pool.connection_class, max_connections=2, **kwargs)
    return redis.__class__(connection_pool=own, single_connection_client=True)


class RedisHub:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "arclip",
        max_messages: int = 1000,
        retention: timedelta = timedelta(days=7),
        forget_after: timedelta = timedelta(minutes=1),
        block_ms: int = 2000,
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self._redis = redis
        self._prefix = f"{prefix}:hub:"
        self.max_messages = max_messages
        self._retention_s = max(1, math.ceil(retention.total_seconds()))
        self._forget_s = max(1, math.ceil(forget_after.total_seconds()))
        self._block_ms = block_ms
        self._wakeups = Wakeups()
        self._ack = redis.register_script(_ACK_SCRIPT)
        self._publish = redis.register_script(_PUBLISH_SCRIPT)
        self._bounds_script = redis.register_script(_BOUNDS_SCRIPT)
        # The tail: the newest id seen per watched pairing, and who reads.
        self._cursors: dict[str, int] = {}
        self._watch_count: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._reader: Redis | None = None
        self._reader_id: int | None = None
        self._blocked = False
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def _key(self, pairing_id: str) -> str:
        return self._prefix + pairing_id

    @property
    def followers(self) -> int:
        return len(self._wakeups)

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._reader = _dedicated(self._redis, read_timeout=self._block_ms / 1000 + 10)
            self._task = asyncio.create_task(self._tail(), name="arclip-hub-tail")

    async def close(self) -> None:
        self._closing = True
        self._wakeups.notify_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._reader is not None:
            # The cancelled XREAD left its connection mid-reply: drop it rather than reuse it.
            with contextlib.suppress(Exception):
                if self._reader.connection is not None:
                    await self._reader.connection.disconnect()
            with contextlib.suppress(Exception):
                await self._reader.aclose(close_connection_pool=True)
            self._reader = None

    # -- writing --------------------------------------------------------------------------------------
    async def publish(self, pairing_id: str, type: str, data: dict[str, Any]) -> int:
        payload = json.dumps(data, separators=(",", ":"))
        key = self._key(pairing_id)
        with _translated():
            entry_id = await shielded(
                self._publish(keys=[key], args=[type, payload, self.max_messages, self._retention_s])
            )
        self._wakeups.notify(pairing_id)  # this replica's followers need not wait for the tail
        return _seq(entry_id)

    async def ack(self, pairing_id: str, device_id: str, message_id: int) -> None:
        with _translated():
            await shielded(self._ack(keys=[self._key(pairing_id) + ":acks"], args=[device_id, message_id, self._retention_s]))

    async def forget(self, pairing_id: str) -> None:
        key = self._key(pairing_id)
        with _translated():
            await shielded(self._expire(key, self._forget_s))

    async def _expire(self, key: str, seconds: int) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.expire(key, seconds)
            pipe.expire(key + ":acks", seconds)
            await pipe.execute()

    async def sweep(self) -> int:
        return 0  # Redis applies the TTLs and MAXLEN itself

    # -- reading --------------------------------------------------------------------------------------
    async def follow(self, pairing_id: str, after: int) -> AsyncIterator[Message]:
        await self._watch(pairing_id, after)
        try:
            async with contextlib.aclosing(
                follow_log(pairing_id, after, read=self._read, bounds=self._bounds, wakeups=self._wakeups)
            ) as messages:
                async for message in messages:
                    yield message
        finally:
            self._unwatch(pairing_id)

    async def _read(self, pairing_id: str, after: int) -> list[Message]:
        with _translated():
            entries = await shielded(self._redis.xrange(self._key(pairing_id), min=f"(0-{after}", max="+", count=_BATCH))
        messages = []
        for entry_id, fields in entries or []:
            fields = {_text(k): _text(v) for k, v in fields.items()}
            messages.append(Message(_seq(entry_id), fields.get("type", ""), json.loads(fields.get("data", "{}"))))
        return messages

    async def _bounds(self, pairing_id: str) -> tuple[int, int]:
        """``(origin, last_id)``, creating the stream (at a new origin) when Redis has none."""
        with _translated():
            last, added = await shielded(self._bounds_script(keys=[self._key(pairing_id)], args=[self._retention_s]))
        head = _seq(last)
        return head - int(added), head

    async def last_id(self, pairing_id: str) -> int:
        return (await self._bounds(pairing_id))[1]

    async def acked(self, pairing_id: str, device_id: str) -> int:
        with _translated():
            value = await shielded(self._redis.hget(self._key(pairing_id) + ":acks", device_id))
        return int(value or 0)

    # -- the tail ---------------------------------------------------------------------------------------
    async def _watch(self, pairing_id: str, after: int) -> None:
        count = self._watch_count.get(pairing_id, 0)
        self._watch_count[pairing_id] = count + 1
        if count:
            return
        # Start the tail at the follower's cursor: anything published after its first read wakes it.
        self._cursors[pairing_id] = after
        self._changed.set()
        if self._blocked and self._reader_id is not None:
            with contextlib.suppress(RedisError):
                await shielded(self._redis.client_unblock(self._reader_id))

    def _unwatch(self, pairing_id: str) -> None:
        count = self._watch_count.get(pairing_id, 0) - 1
        if count > 0:
            self._watch_count[pairing_id] = count
            return
        self._watch_count.pop(pairing_id, None)
        self._cursors.pop(pairing_id, None)

    async def _tail(self) -> None:
        assert self._reader is not None
        backoff = 0.1
        while not self._closing:
            try:
                if self._reader_id is None:
                    self._reader_id = int(await shielded(self._reader.client_id()))
                if not self._cursors:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                streams = {self._key(p): f"0-{c}" for p, c in self._cursors.items()}
                self._changed.clear()
                self._blocked = True
                try:
                    reply = await shielded(self._reader.xread(streams, count=_BATCH, block=self._block_ms))
                finally:
                    self._blocked = False
                backoff = 0.1
            except RedisError as exc:
                log.warning("hub tail lost Redis (%s); retrying in %.1f s", exc.__class__.__name__, backoff)
                self._reader_id = None
                self._wakeups.notify_all()  # followers re-read once Redis is back (or give up)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for key, entries in self._stream_replies(reply):
                pairing_id = _text(key)[len(self._prefix) :]
                if pairing_id in self._cursors and entries:
                    self._cursors[pairing_id] = max(self._cursors[pairing_id], _seq(entries[-1][0]))
                    self._wakeups.notify(pairing_id)

    @staticmethod
    def _stream_replies(reply: Any) -> list[tuple[Any, list[Any]]]:
        if not reply:
            return []
        return list(reply.items()) if isinstance(reply, Mapping) else [(k, v) for k, v in reply]
