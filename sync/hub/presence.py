"""Presence: which devices of a pairing hold a live ``/v1/sync`` connection right now.

Not part of the message log: presence is a fact about *now*, so it is never
stored for replay (a replayed "online" from an hour ago would be a lie). The
sessions read it when a device connects (``hello``) and are woken when it
changes (``watch``), then diff what they last told their client.

A device is online while it has at least one connection (two tabs of the
canvas count once, until the last one closes) and for ``grace_s`` after its
last one closes: a reload or a network blip that reconnects within the grace
is never seen as offline. ``MemoryPresence`` serves one process (the in-process
hub); ``RedisPresence`` (``presence_redis.py``) spans replicas.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from sync.pairing import Device

from .base import Wakeups

DEFAULT_GRACE_S = 5.0

# Control frames (id null) the sessions send; see session.py.
PEER_ONLINE = "peer.online"
PEER_OFFLINE = "peer.offline"


@dataclass(frozen=True, order=True)
class Peer:
    """A device that is online."""

    device_id: str
    role: str

    def to_json(self) -> dict[str, str]:
        return {"device_id": self.device_id, "role": self.role}


class Presence(Protocol):
    grace_s: float

    async def connect(self, device: Device) -> str:
        """Count one more connection of ``device``; returns its connection id for ``disconnect``."""
        ...

    async def disconnect(self, device: Device, connection_id: str, *, linger: bool = True) -> None:
        """That connection closed; the device goes offline ``grace_s`` after its last one.

        ``linger=False``: at once (the device was removed or its pairing ended: it is not coming back).
        """
        ...

    async def online(self, pairing_id: str) -> frozenset[Peer]:
        """The pairing's devices online now."""
        ...

    def watch(self, pairing_id: str) -> AbstractContextManager[Callable[[], asyncio.Event]]:
        """Like ``Wakeups.watch``: take the event *before* reading ``online``, wait on it after."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def new_connection_id() -> str:
    return secrets.token_hex(8)


@dataclass
class _Connection:
    peer: Peer
    linger_until: float | None = None  # set when it closed: still counts until then


class MemoryPresence:
    """This process's connections; right for the in-process hub (one process per database)."""

    def __init__(self, grace_s: float = DEFAULT_GRACE_S, *, clock: Callable[[], float] = time.monotonic) -> None:
        if grace_s < 0:
            raise ValueError("grace_s must be >= 0")
        self.grace_s = grace_s
        self._clock = clock
        self._connections: dict[str, dict[str, _Connection]] = {}
        self._wakeups = Wakeups()
        self._timers: set[asyncio.TimerHandle] = set()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._wakeups.notify_all()

    async def connect(self, device: Device) -> str:
        connection_id = new_connection_id()
        self._connections.setdefault(device.pairing_id, {})[connection_id] = _Connection(
            Peer(device.device_id, device.role)
        )
        self._wakeups.notify(device.pairing_id)
        return connection_id

    async def disconnect(self, device: Device, connection_id: str, *, linger: bool = True) -> None:
        connections = self._connections.get(device.pairing_id, {})
        connection = connections.get(connection_id)
        if connection is None or connection.linger_until is not None:
            return
        if self.grace_s <= 0 or not linger:
            del connections[connection_id]
            self._prune(device.pairing_id)
            self._wakeups.notify(device.pairing_id)
            return
        connection.linger_until = self._clock() + self.grace_s
        self._expire_later(device.pairing_id, self.grace_s)

    async def online(self, pairing_id: str) -> frozenset[Peer]:
        self._prune(pairing_id)
        return frozenset(c.peer for c in self._connections.get(pairing_id, {}).values())

    def watch(self, pairing_id: str) -> AbstractContextManager[Callable[[], asyncio.Event]]:
        return self._wakeups.watch(pairing_id)

    # -- the grace -------------------------------------------------------------------------------------
    def _prune(self, pairing_id: str) -> None:
        connections = self._connections.get(pairing_id)
        if connections is None:
            return
        now = self._clock()
        for connection_id in [i for i, c in connections.items() if c.linger_until is not None and c.linger_until <= now]:
            del connections[connection_id]
        if not connections:
            del self._connections[pairing_id]

    def _expire_later(self, pairing_id: str, delay: float) -> None:
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            self._expire(pairing_id)

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    def _expire(self, pairing_id: str) -> None:
        self._prune(pairing_id)
        # The loop may fire a timer a hair early by our clock: a linger about to end gets one more.
        now = self._clock()
        due = [
            c.linger_until - now
            for c in self._connections.get(pairing_id, {}).values()
            if c.linger_until is not None and c.linger_until - now < 0.01
        ]
        if due:
            self._expire_later(pairing_id, max(due) + 0.001)
        self._wakeups.notify(pairing_id)
