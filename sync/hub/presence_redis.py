"""RedisPresence: who is connected, shared by every replica (the phone on A, the desktop on B).

Layout (``prefix`` defaults to ``arclip``)::

    {prefix}:presence:{pairing_id}   sorted set; member "device_id role connection_id", score: its deadline (ms)
    {prefix}:presence                pub/sub channel; a message (the pairing id) means "look again"

A connection's member is renewed every ``refresh_s`` by the replica that holds
it, to ``ttl_s`` ahead: a replica that dies without saying goodbye has its
devices drop off within ``ttl_s``. A closed connection is replaced by a
lingering member ("… ~") that lives ``grace_s``; the replica that closed it
publishes again once the grace is over. Deadlines use Redis's own clock
(``TIME`` inside the scripts), so the replicas' clocks need not agree.

Pub/sub messages are only wake-ups: readers always read the set. A lost
message (a reconnecting subscriber, a replica that died before its grace ran
out) delays the news until the sessions' periodic re-read, never corrupts it.
One channel for every pairing keeps it to one subscription per replica; it
carries one message per connect and per disconnect, not per hub message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from sync.pairing import Device

from .base import Wakeups
from .errors import HubError
from .presence import DEFAULT_GRACE_S, Peer, new_connection_id
from .redis_streams import _translated, shielded

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = logging.getLogger("arclip.hub")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] set; ARGV member, ttl_ms, keep_ms, channel, pairing_id
_JOIN = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return now
"""

# KEYS[1] set; ARGV member, grace_ms, keep_ms, channel, pairing_id. Returns the linger's deadline (0: none).
_LEAVE = _NOW + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local grace = tonumber(ARGV[2])
if grace <= 0 then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  return 0
end
redis.call('ZADD', KEYS[1], now + grace, ARGV[1] .. ' ~')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return now + grace
"""

# KEYS[1] set; ARGV deadline_ms, channel, pairing_id. Returns the ms still to wait (0: done, published).
_EXPIRE = _NOW + """
local deadline = tonumber(ARGV[1])
if now < deadline then return deadline - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 0
"""

# KEYS the sets; ARGV ttl_ms, keep_ms, then one member per key. XX: a closed connection is never revived.
_REFRESH = _NOW + """
local ttl, keep = tonumber(ARGV[1]), ARGV[2]
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 2])
  redis.call('PEXPIRE', key, keep)
end
return #KEYS
"""

# KEYS[1] set. The members whose deadline is still ahead.
_READ = _NOW + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisPresence:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "arclip",
        grace_s: float = DEFAULT_GRACE_S,
        ttl_s: float = 30.0,
        refresh_s: float = 10.0,
        poll_s: float = 1.0,
    ) -> None:
        if grace_s < 0:
            raise ValueError("grace_s must be >= 0")
        if refresh_s >= ttl_s:
            raise ValueError("connections must be refreshed more often than they expire")
        self._redis = redis
        self._key_prefix = f"{prefix}:presence:"
        self.channel = f"{prefix}:presence"
        self.grace_s = grace_s
        self._ttl_ms = math.ceil(ttl_s * 1000)
        self._grace_ms = math.ceil(grace_s * 1000)
        self._keep_ms = max(self._ttl_ms, self._grace_ms) + 1000  # the set outlives every deadline in it
        self._refresh_s = refresh_s
        self._poll_s = poll_s  # how often the subscriber looks for a message (and for being closed)
        self._join = redis.register_script(_JOIN)
        self._leave = redis.register_script(_LEAVE)
        self._expire = redis.register_script(_EXPIRE)
        self._refresh = redis.register_script(_REFRESH)
        self._read = redis.register_script(_READ)
        self._wakeups = Wakeups()
        self._local: dict[str, tuple[str, str]] = {}  # connection id -> (set key, member) held here
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscriber: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._closing = False

    def _key(self, pairing_id: str) -> str:
        return self._key_prefix + pairing_id

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._subscriber is None:
            self._subscriber = asyncio.create_task(self._subscribe(), name="arclip-presence-sub")
            self._refresher = asyncio.create_task(self._refresh_loop(), name="arclip-presence-refresh")
            # Wait (briefly) for the subscription, so a connection made right after start is heard.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._subscribed.wait()

    async def close(self) -> None:
        self._closing = True
        self._wakeups.notify_all()
        tasks = [t for t in (self._subscriber, self._refresher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._subscriber = self._refresher = None
        self._tasks.clear()

    # -- connections -------------------------------------------------------------------------------------
    async def connect(self, device: Device) -> str:
        connection_id = new_connection_id()
        key, member = self._key(device.pairing_id), f"{device.device_id} {device.role} {connection_id}"
        self._local[connection_id] = (key, member)
        try:
            with _translated():
                await shielded(
                    self._join(keys=[key], args=[member, self._ttl_ms, self._keep_ms, self.channel, device.pairing_id])
                )
        except BaseException:
            self._local.pop(connection_id, None)
            raise
        return connection_id

    async def disconnect(self, device: Device, connection_id: str, *, linger: bool = True) -> None:
        held = self._local.pop(connection_id, None)
        if held is None:
            return
        key, member = held
        grace_ms = self._grace_ms if linger else 0
        with _translated():
            deadline = await shielded(
                self._leave(keys=[key], args=[member, grace_ms, self._keep_ms, self.channel, device.pairing_id])
            )
        if deadline and not self._closing:
            self._after(self.grace_s, key, int(deadline), device.pairing_id)

    def _after(self, delay: float, key: str, deadline: int, pairing_id: str) -> None:
        async def expire() -> None:
            await asyncio.sleep(delay)
            try:
                with _translated():
                    wait_ms = await shielded(self._expire(keys=[key], args=[deadline, self.channel, pairing_id]))
            except HubError:  # the sessions' periodic re-read catches up
                log.warning("presence: could not announce the end of a grace period", exc_info=True)
                return
            if wait_ms and not self._closing:
                self._after(int(wait_ms) / 1000 + 0.001, key, deadline, pairing_id)

        task = asyncio.create_task(expire())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def online(self, pairing_id: str) -> frozenset[Peer]:
        with _translated():
            members = await shielded(self._read(keys=[self._key(pairing_id)]))
        peers = set()
        for member in members or []:
            device_id, role, *_ = _text(member).split(" ")
            peers.add(Peer(device_id, role))
        return frozenset(peers)

    def watch(self, pairing_id: str) -> AbstractContextManager[Callable[[], asyncio.Event]]:
        return self._wakeups.watch(pairing_id)

    # -- background ------------------------------------------------------------------------------------
    async def _refresh_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._refresh_s)
            held = list(self._local.values())
            if not held:
                continue
            try:
                with _translated():
                    await shielded(
                        self._refresh(
                            keys=[key for key, _ in held], args=[self._ttl_ms, self._keep_ms, *(m for _, m in held)]
                        )
                    )
            except HubError as exc:
                log.warning("presence: refresh failed (%s); retrying", exc)

    async def _subscribe(self) -> None:
        backoff = 0.1
        while not self._closing:
            pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                # Whatever was published while we were not listening: every watcher looks again.
                self._wakeups.notify_all()
                backoff = 0.1
                while not self._closing:
                    message = await pubsub.get_message(timeout=self._poll_s)
                    if message and message.get("type") == "message":
                        self._wakeups.notify(_text(message["data"]))
            except (RedisError, OSError) as exc:
                log.warning("presence: lost the Redis subscription (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())
