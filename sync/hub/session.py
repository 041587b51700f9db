"""One device's live session over a websocket: the sync protocol, transport-agnostic.

Every frame is a JSON text message.

Server to client::

    {"id": null, "type": "hello",  "data": {"pairing_id", "device_id", "role", "last_id", "acked_id",
                                             "heartbeat_s", "idle_timeout_s", "peers": [{"device_id", "role"}],
                                             "presence_grace_s"}}          first, once
    {"id": N,    "type": T,        "data": {...}}     the pairing's messages, ids increasing by one
    {"id": N,    "type": "resync", "data": {"reason": "trimmed" | "reset", "last_id": N, "snapshot": {...}}}
    {"id": null, "type": "peer.online" | "peer.offline", "data": {"device_id", "role"}}    presence
    {"id": null, "type": "ping" | "pong", "data": {}}                  control, not in the log
    {"id": null, "type": "error",  "data": {"code", "detail", ["retry_after"]}}

Client to server::

    {"type": "ack", "id": N}            "I have everything up to N" (kept across reconnects)
    {"type": "resume", "last_id": N}    replay everything after N, then carry on live
    {"type": "ping"} / {"type": "pong"}

Ids are integers, 0 ≤ N < 2**63 (in practice below 2**53, so JavaScript holds
them exactly). They increase and never repeat within a pairing, even if the
hub's store loses its data (see ``sync.hub.base``); they need not start at 1.

Delivery is at-least-once and in order: a client ignores ids it has already
seen. Without ``resume`` delivery starts after the device's last ack, so a
client that acks never misses a message, even across server restarts. When the
messages it asks for are no longer all kept (retention, length limit) it gets
one ``resync`` instead (reason ``trimmed``), whose snapshot holds the pairing's
current state, and then everything after its ``last_id``. A connection carries
a given snapshot once: a ``resume`` that reaches back before it goes on from
the snapshot.

Ids the pairing never gave out: a ``resume`` beyond the pairing's last id (or
from before its log was lost and started again) gets a ``resync`` with reason
``reset``: the client's state belongs to a log that is gone, so it replaces it
with the snapshot and carries on from ``last_id``, lower than the id it sent
when it was beyond. An ``ack`` beyond the pairing's last id is refused
(``error`` ``bad_ack``) and not stored. A malformed ``ack``/``resume`` (not an
integer in range) gets ``error`` ``bad_ack``/``bad_resume``; more than
``max_errors`` bad frames close the socket (1008).

Presence: ``hello.peers`` lists the pairing's *other* devices connected right
now (on any replica); then ``peer.online``/``peer.offline`` report each change
as it happens. A device is online while any of its connections is open (two
tabs count once) and stays so for ``presence_grace_s`` after its last one
closes, so a reload or a quick reconnect is never reported; a device removed
from the pairing goes offline at once. Presence frames are control frames (id
null), deliberately outside the log: they are neither acked nor replayed on
``resume``, because a replayed "online" from an hour ago would be false; a
reconnecting client gets the truth in its new ``hello`` instead. (Contrast
``peer.joined``/``peer.left``, which are logged: a phone claimed the pairing,
or left it, whether or not anyone was connected.)

Liveness: the server sends ``ping`` every ``heartbeat_s`` (browsers cannot
send protocol pings, and cannot see the server's); any client frame counts as
a sign of life, and ``idle_timeout_s`` without one closes the socket (4408).
Protocol-level pings are the server's (uvicorn's) business.

Faults: when a backing service fails mid-session (the database locked,
unreachable or full; Redis down) the server sends ``error`` with a stable
``code`` (``hub_unavailable``, ``database_unavailable``, ``redis_unavailable``
…) and ``retry_after`` seconds, then closes with 1013 and that code as the
reason. A fault before the hello (the token cannot be checked) closes with
1013 and the code as the reason alone. Nothing the client was sent is lost:
it reconnects after ``retry_after`` and resumes from its last id.

Close codes: 1000 normal; 1008 too many bad frames; 1009 frame too big; 1011
server error (a bug of ours); 1012 server restarting, reconnect (elsewhere);
1013 a backing service is unavailable, reconnect later; 4408 idle timeout,
reconnect; 4401/4403/4410 bad token, device removed, pairing closed or
expired: do not reconnect with that token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Protocol

from sync.pairing import PAIRING_CLOSED, PEER_LEFT, Device

from .base import Hub
from .errors import HistoryTrimmed, HubUnavailable
from .presence import PEER_OFFLINE, PEER_ONLINE, Peer, Presence

log = logging.getLogger("arclip.hub")

Snapshot = Callable[[str], Awaitable[dict[str, Any]]]

MAX_ID = 2**63 - 1  # ids are signed 64-bit integers in every store


class Fault(Protocol):
    """An infrastructure fault: answered with an ``error`` frame and close 1013."""

    @property
    def code(self) -> str: ...

    @property
    def detail(self) -> str: ...

    @property
    def retry_after(self) -> int: ...


# Tells a fault of a backing service from a bug; api/ injects its classifier (sync does not import api).
Faults = Callable[[BaseException], Fault | None]


@dataclass(frozen=True)
class _HubFault:
    code: str
    detail: str
    retry_after: int = 2


class CloseCode(IntEnum):
    NORMAL = 1000
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    IDLE_TIMEOUT = 4408
    GONE = 4410


class SocketClosed(Exception):
    """The peer went away (raised by ``Socket`` adapters)."""

    def __init__(self, code: int = 1006) -> None:
        super().__init__(f"socket closed ({code})")
        self.code = code


class Socket(Protocol):
    """An accepted websocket; adapters raise ``SocketClosed`` when the peer is gone."""

    async def receive_text(self) -> str: ...

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...


@dataclass(frozen=True)
class SessionConfig:
    heartbeat_s: float = 25.0
    idle_timeout_s: float = 60.0
    max_frame_chars: int = 4096
    max_errors: int = 20  # bad frames before the socket is closed

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= self.heartbeat_s:
            raise ValueError("the idle timeout must be longer than the heartbeat interval")


class SessionState(StrEnum):
    CONNECTING = "connecting"  # accepted; hello not yet sent
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_NEXT: dict[SessionState, frozenset[SessionState]] = {
    SessionState.CONNECTING: frozenset({SessionState.OPEN, SessionState.CLOSING}),
    SessionState.OPEN: frozenset({SessionState.CLOSING}),
    SessionState.CLOSING: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


class SyncSession:
    def __init__(
        self,
        socket: Socket,
        device: Device,
        hub: Hub,
        *,
        config: SessionConfig | None = None,
        snapshot: Snapshot | None = None,
        presence: Presence | None = None,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket = socket
        self.device = device
        self.config = config or SessionConfig()
        self._hub = hub
        self._faults = faults
        self._snapshot = snapshot
        self._presence = presence
        self._connection_id: str | None = None  # our entry in the presence registry
        self._peers: frozenset[Peer] = frozenset()  # the presence this client was last told
        self._clock = clock
        self.state = SessionState.CONNECTING
        self.close_code: int | None = None
        self.close_reason = ""
        self._send_close = True
        self._farewell: dict[str, Any] | None = None  # an error frame to send before the close
        self._done = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None
        self._issued = 0  # the newest id this session knows the pairing gave out
        self._acked = 0
        self._resynced_to = 0  # the newest resync snapshot sent on this connection
        self._errors = 0
        self._last_heard = clock()

    # -- the state machine -------------------------------------------------------------------------------
    def _move(self, to: SessionState) -> None:
        if to not in _NEXT[self.state]:
            raise RuntimeError(f"session cannot go from {self.state} to {to}")
        self.state = to

    def close(self, code: int, reason: str = "", *, send: bool = True, farewell: dict[str, Any] | None = None) -> None:
        """Ask the session to end (idempotent): ``run`` sends ``farewell`` (an error), closes the socket, returns."""
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return
        self._move(SessionState.CLOSING)
        self.close_code, self.close_reason, self._send_close = code, reason, send
        self._farewell = farewell
        self._done.set()

    async def run(self) -> int:
        """Serve the socket until either side ends the session; returns the close code."""
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._guarded(self._open)
            if self.state is SessionState.OPEN:
                tasks = [
                    asyncio.create_task(self._guarded(self._read_loop)),
                    asyncio.create_task(self._guarded(self._heartbeat)),
                ]
                if self._presence is not None:
                    tasks.append(asyncio.create_task(self._guarded(self._watch_presence)))
                self._start_pump(self._acked)
            await self._done.wait()
        finally:
            self.close(CloseCode.SERVICE_RESTART, "server restarting")  # no-op unless cancelled from outside
            if self._pump is not None:
                tasks.append(self._pump)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._send_close:
                with contextlib.suppress(Exception):
                    if self._farewell is not None:  # every task is done: nothing else holds the send lock
                        await self._control("error", self._farewell)
                with contextlib.suppress(Exception):
                    await self.socket.close(int(self.close_code or CloseCode.NORMAL), self.close_reason)
            await self._leave_presence()
            self._move(SessionState.CLOSED)
        return int(self.close_code or CloseCode.NORMAL)

    async def _guarded(self, work: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        try:
            await work(*args)
        except SocketClosed as exc:
            self.close(exc.code, "", send=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fault = self._fault(exc)
            if fault is None:
                log.exception("sync session of %s failed", self.device.device_id)
                self.close(CloseCode.INTERNAL_ERROR, "server error")
                return
            log.warning("%s; closing %s's socket with 1013: %r", fault.code, self.device.device_id, exc)
            farewell = {"code": fault.code, "detail": fault.detail, "retry_after": fault.retry_after}
            self.close(CloseCode.TRY_AGAIN_LATER, fault.code, farewell=farewell)

    def _fault(self, exc: Exception) -> Fault | None:
        found = self._faults(exc) if self._faults is not None else None
        if found is None and isinstance(exc, HubUnavailable):
            found = _HubFault(exc.code, exc.detail)
        return found

    async def _open(self) -> None:
        pairing_id, device_id = self.device.pairing_id, self.device.device_id
        self._acked = await self._hub.acked(pairing_id, device_id)
        last_id = self._issued = await self._hub.last_id(pairing_id)
        if self._presence is not None:
            self._connection_id = await self._presence.connect(self.device)
            self._peers = self._others(await self._presence.online(pairing_id))
        await self._control(
            "hello",
            {
                "pairing_id": pairing_id,
                "device_id": device_id,
                "role": self.device.role,
                "last_id": last_id,
                "acked_id": self._acked,
                "heartbeat_s": self.config.heartbeat_s,
                "idle_timeout_s": self.config.idle_timeout_s,
                "peers": [peer.to_json() for peer in sorted(self._peers)],
                "presence_grace_s": self._presence.grace_s if self._presence is not None else None,
            },
        )
        if self.state is SessionState.CONNECTING:
            self._move(SessionState.OPEN)

    # -- sending ------------------------------------------------------------------------------------------
    async def _send(self, frame: dict[str, Any]) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        async with self._send_lock:
            await self.socket.send_text(text)

    async def _control(self, type: str, data: dict[str, Any] | None = None) -> None:
        await self._send({"id": None, "type": type, "data": data or {}})

    def _start_pump(self, after: int) -> None:
        self._pump = asyncio.create_task(self._guarded(self._pump_from, after))

    async def _pump_from(self, after: int) -> None:
        cursor = after
        while True:
            try:
                async with contextlib.aclosing(self._hub.follow(self.device.pairing_id, cursor)) as messages:
                    async for message in messages:
                        await self._send(message.to_json())
                        cursor = message.id
                        self._issued = max(self._issued, message.id)
                        if self._ends_session(message.type, message.data):
                            return
            except HistoryTrimmed as gap:
                if gap.after < self._resynced_to:
                    # The gap starts before a snapshot this connection already carried (a resume that
                    # raced the replay hello started): go on from that snapshot rather than repeat it.
                    cursor = self._resynced_to
                    continue
                snapshot = await self._snapshot(self.device.pairing_id) if self._snapshot else {}
                await self._send(
                    {
                        "id": gap.last_id,
                        "type": "resync",
                        "data": {"reason": gap.reason, "last_id": gap.last_id, "snapshot": snapshot},
                    }
                )
                cursor = self._resynced_to = gap.last_id
                self._issued = max(self._issued, gap.last_id)

    def _ends_session(self, type: str, data: dict[str, Any]) -> bool:
        if type == PAIRING_CLOSED:
            self.close(CloseCode.GONE, f"pairing {data.get('state', 'closed')}")
            return True
        if type == PEER_LEFT and data.get("device_id") == self.device.device_id:
            self.close(CloseCode.FORBIDDEN, "device removed from the pairing")
            return True
        return False

    # -- receiving ----------------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        while True:
            text = await self.socket.receive_text()
            self._last_heard = self._clock()
            if len(text) > self.config.max_frame_chars:
                self.close(CloseCode.TOO_BIG, "frame too big")
                return
            try:
                frame = json.loads(text)
                kind = frame["type"]
            except (ValueError, TypeError, KeyError):
                await self._refuse("bad_frame", 'Send JSON objects with a "type".')
                continue
            if kind == "ack":
                await self._on_ack(frame.get("id"))
            elif kind == "resume":
                await self._on_resume(frame.get("last_id"))
            elif kind == "ping":
                await self._control("pong")
            elif kind == "pong":
                pass
            else:
                await self._refuse("unknown_type", f"Unknown message type {kind!r}.")

    async def _refuse(self, code: str, detail: str) -> None:
        self._errors += 1
        if self._errors > self.config.max_errors:
            self.close(1008, "too many bad frames")
            return
        await self._control("error", {"code": code, "detail": detail})

    @staticmethod
    def _message_id(value: Any) -> int | None:
        in_range = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID
        return value if in_range else None

    async def _on_ack(self, value: Any) -> None:
        message_id = self._message_id(value)
        if message_id is None:
            await self._refuse("bad_ack", f'"id" must be a message id (an integer from 0 to {MAX_ID}).')
            return
        if message_id > self._issued:  # maybe given out since this session last looked
            self._issued = max(self._issued, await self._hub.last_id(self.device.pairing_id))
        if message_id > self._issued:
            await self._refuse("bad_ack", f"Message {message_id} was never sent; the newest is {self._issued}.")
            return
        if message_id > self._acked:
            self._acked = message_id
            await self._hub.ack(self.device.pairing_id, self.device.device_id, message_id)

    async def _on_resume(self, value: Any) -> None:
        last_id = self._message_id(value)
        if last_id is None:
            await self._refuse("bad_resume", f'"last_id" must be a message id (an integer from 0 to {MAX_ID}).')
            return
        # One beyond the pairing's last id is the follower's to find: it answers with a "reset" resync.
        # Under the send lock the pump is never mid-frame when it is replaced.
        async with self._send_lock:
            if self._pump is not None:
                self._pump.cancel()
                await asyncio.wait([self._pump])
            if self.state is not SessionState.OPEN:
                return
            self._start_pump(last_id)

    # -- presence -----------------------------------------------------------------------------------------
    def _others(self, online: frozenset[Peer]) -> frozenset[Peer]:
        return frozenset(peer for peer in online if peer.device_id != self.device.device_id)

    async def _watch_presence(self) -> None:
        """Tell the client each change of who else is connected (hello told it the start)."""
        assert self._presence is not None
        pairing_id = self.device.pairing_id
        with self._presence.watch(pairing_id) as current:
            while True:
                wake = current()
                peers = self._others(await self._presence.online(pairing_id))
                for peer in sorted(peers - self._peers):
                    await self._control(PEER_ONLINE, peer.to_json())
                for peer in sorted(self._peers - peers):
                    await self._control(PEER_OFFLINE, peer.to_json())
                self._peers = peers
                # Wake-ups can be lost (a replica that died mid-grace): look again now and then anyway.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.heartbeat_s):
                        await wake.wait()

    async def _leave_presence(self) -> None:
        if self._presence is None or self._connection_id is None:
            return
        connection_id, self._connection_id = self._connection_id, None
        # A removed device or an ended pairing will not reconnect with this token: no grace.
        final = self.close_code in (CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN, CloseCode.GONE)
        try:
            # Shielded: a session cancelled at shutdown must still say it has gone.
            await asyncio.shield(self._presence.disconnect(self.device, connection_id, linger=not final))
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis down: the entry expires by itself (RedisPresence's ttl)
            log.warning("presence: could not record that %s left", self.device.device_id, exc_info=True)

    # -- liveness -----------------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        next_ping = self._clock() + self.config.heartbeat_s
        while True:
            now = self._clock()
            idle_deadline = self._last_heard + self.config.idle_timeout_s
            if now >= idle_deadline:
                self.close(CloseCode.IDLE_TIMEOUT, "idle timeout")
                return
            if now >= next_ping:
                await self._control("ping")
                next_ping = now + self.config.heartbeat_s
            await asyncio.sleep(max(0.005, min(next_ping, idle_deadline) - now))
