"""SyncGateway: this process's live sessions, their shutdown, the resync snapshot, and presence.

Other parts of the product add to the snapshot a client receives after a gap
(``add_snapshot_source("assets", fn)``): each source returns a JSON-ready dict
for a pairing id and lands under its name.

``faults`` tells an infrastructure fault from a bug for the sessions (close
1013 with an ``error`` frame, rather than 1011); the composition root passes
its classifier. Without one only ``HubUnavailable`` counts as a fault.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sync.pairing import Device

from .base import Hub
from .errors import HubUnavailable
from .presence import MemoryPresence, Presence
from .session import CloseCode, Faults, SessionConfig, Snapshot, Socket, SyncSession

log = logging.getLogger("arclip.hub")


class SyncGateway:
    def __init__(
        self,
        hub: Hub,
        config: SessionConfig | None = None,
        *,
        presence: Presence | None = None,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self._faults = faults
        self.config = config or SessionConfig()
        # In-process by default; several replicas share a RedisPresence (api/live.py).
        self.presence: Presence = presence if presence is not None else MemoryPresence()
        self._clock = clock
        self._sources: dict[str, Snapshot] = {}
        self._sessions: set[SyncSession] = set()
        self._closing = False

    @property
    def connections(self) -> int:
        return len(self._sessions)

    def add_snapshot_source(self, name: str, source: Snapshot) -> None:
        if name in ("last_id",):
            raise ValueError(f"{name!r} is reserved in the snapshot")
        self._sources[name] = source

    async def snapshot(self, pairing_id: str) -> dict[str, Any]:
        snapshot: dict[str, Any] = {"last_id": await self.hub.last_id(pairing_id)}
        for name, source in self._sources.items():
            try:
                snapshot[name] = await source(pairing_id)
            except Exception as exc:
                if self._is_fault(exc):
                    raise  # 1013: the client resumes later and gets the whole snapshot then
                # A bug in one source: a partial snapshot beats none; the client can fetch the rest.
                log.exception("snapshot source %r failed for pairing %s", name, pairing_id)
        return snapshot

    def _is_fault(self, exc: Exception) -> bool:
        return isinstance(exc, HubUnavailable) or (self._faults is not None and self._faults(exc) is not None)

    async def serve(self, socket: Socket, device: Device) -> int:
        """Run ``device``'s session on an accepted socket until it ends; returns the close code."""
        if self._closing:
            await socket.close(CloseCode.SERVICE_RESTART, "server restarting")
            return CloseCode.SERVICE_RESTART
        session = SyncSession(
            socket, device, self.hub, config=self.config, snapshot=self.snapshot, presence=self.presence,
            faults=self._faults, clock=self._clock,
        )
        self._sessions.add(session)
        try:
            return await session.run()
        finally:
            self._sessions.discard(session)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Close every session with 1012 so clients reconnect (to another replica), and wait for them."""
        self._closing = True
        for session in list(self._sessions):
            session.close(CloseCode.SERVICE_RESTART, "server restarting")
        deadline = asyncio.get_running_loop().time() + timeout
        while self._sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
