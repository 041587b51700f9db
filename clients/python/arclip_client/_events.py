"""The live channel, ``WS /v1/sync``: an async iterator of the pairing's messages.

The protocol (server side: ``sync/hub/session.py``): the server's first frame is
``{"id": null, "type": "hello", "data": {...}}``, then the pairing's messages
``{"id": N, "type": T, "data": {...}}`` with ids increasing by one, and control frames
(``ping``/``pong``/``error``, and presence: ``peer.online``/``peer.offline``, id null). The client acks ids (``{"type": "ack", "id": N}``)
and, on reconnecting, asks for what it missed (``{"type": "resume", "last_id": N}``).

:class:`EventStream` does all of that: a background task keeps the socket, answers pings,
drops duplicates (delivery is at-least-once), reconnects with backoff and resumes after the
last id it received, so the consumer sees every message once and in order. Close codes
1012/1013/4408 (and a dropped connection) reconnect; 4401/4403/4410 (bad token, device
removed, pairing closed or expired) end the stream with :class:`SyncClosed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ._base import USER_AGENT
from ._errors import APIConnectionError, SyncClosed
from ._retry import RetryPolicy
from ._types import Event

log = logging.getLogger("arclip_client.sync")

NORMAL_CLOSURE = 1000
# Close codes after which reconnecting with the same token cannot help.
FINAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010, 4401, 4403, 4410})
DEFAULT_RECONNECT = RetryPolicy(max_retries=10, initial_delay=0.2, max_delay=5.0, jitter=0.3)
_STABLE_S = 5.0  # a connection that lived this long resets the backoff


def is_final(code: int | None) -> bool:
    """Whether a close code means "do not reconnect with this token" (4408, idle timeout, is not)."""
    return code in FINAL_CLOSE_CODES or (code is not None and 4400 <= code < 4500 and code != 4408)


class _End:
    """The stream ended normally (close code 1000, or ``aclose``)."""


_END = _End()


class Cursor:
    """The newest message id a device's consumer was handed; shared by its streams, so a new
    stream carries on where the previous one stopped."""

    __slots__ = ("delivered",)

    def __init__(self, delivered: int | None = None) -> None:
        self.delivered = delivered


class _Retryable(Exception):
    """Opening the socket failed in a way another try may fix."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Fatal(Exception):
    """Opening the socket failed for good (bad token, pairing closed, …)."""

    def __init__(self, error: SyncClosed) -> None:
        super().__init__(str(error))
        self.error = error


class EventStream:
    """The pairing's messages, live; ``async for event in stream`` (or ``await stream.wait_for(...)``).

    Use it as an async context manager (or call :meth:`aclose`) so the socket is closed::

        async with desktop.events() as events:
            created = await events.wait_for("asset.created", timeout=30)
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        cursor: Cursor | None = None,
        since: int | None = None,
        auto_ack: bool = True,
        reconnect: RetryPolicy | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self._token = token
        self._cursor = cursor or Cursor()
        self._received: int | None = since if since is not None else self._cursor.delivered
        self.auto_ack = auto_ack
        self.reconnect_policy = reconnect or DEFAULT_RECONNECT
        self.open_timeout = open_timeout
        self.hello: Mapping[str, Any] | None = None
        self._peers: dict[str, str] | None = None  # device_id -> role of the other devices connected now
        self.reconnects = 0  # times the socket was re-opened after a drop
        self.close_code: int | None = None
        self._queue: asyncio.Queue[Event | _End | BaseException] = asyncio.Queue()
        self._final: _End | BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._acked = 0  # the newest id the server has our ack for
        self._to_ack = 0  # the newest id to ack
        self._ack_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- public ------------------------------------------------------------------------------------------
    @property
    def last_id(self) -> int | None:
        """The newest message id handed to the consumer."""
        return self._cursor.delivered

    @property
    def peers(self) -> dict[str, str] | None:
        """The pairing's other devices connected right now (``device_id -> role``); None while unknown
        (the socket is down, or the server does not report presence). Not part of the log: live only."""
        return dict(self._peers) if self._peers is not None else None

    def peer_online(self, role: str) -> bool | None:
        """Whether a device of ``role`` (``"phone"``/``"desktop"``) is connected now; None while unknown."""
        return None if self._peers is None else role in self._peers.values()

    def _set_hello(self, data: dict[str, Any]) -> None:
        self.hello = data
        peers = data.get("peers")
        self._peers = (
            {str(p["device_id"]): str(p.get("role")) for p in peers if isinstance(p, dict) and "device_id" in p}
            if isinstance(peers, list)
            else None
        )

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._connected.is_set()

    async def connect(self) -> EventStream:
        """Open the socket and wait for the server's hello (raises what would end the stream)."""
        self._start()
        task = self._task
        if task is None:  # closed or ended already
            self._raise_final_if_any()
            if isinstance(self._final, BaseException):
                raise self._final
            raise SyncClosed(self.close_code, "the live channel is closed")
        waiter = asyncio.ensure_future(self._connected.wait())
        done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            self._raise_final_if_any()
            raise SyncClosed(self.close_code, "the live channel ended before it opened")
        return self

    async def wait_for(self, *types: str, timeout: float | None = None) -> Event:
        """The next message of one of ``types`` (any type when none given); others are skipped.

        Raises ``TimeoutError`` after ``timeout`` seconds, ``SyncClosed`` if the stream ends.
        """
        async with asyncio.timeout(timeout):
            async for event in self:
                if not types or event.type in types:
                    return event
        raise SyncClosed(self.close_code, "the live channel ended")

    async def ack(self, message_id: int) -> None:
        """Tell the server everything up to ``message_id`` was handled (automatic unless ``auto_ack=False``).

        While the socket is down the ack waits, and is sent on reconnecting.
        """
        self._to_ack = max(self._to_ack, message_id)
        await self._send_acks()

    def _ack_soon(self, message_id: int) -> None:
        self._to_ack = max(self._to_ack, message_id)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(self._send_acks())

    async def _send_acks(self) -> None:
        while self._to_ack > self._acked:
            ws, wanted = self._ws, self._to_ack
            if ws is None:
                return  # sent after the next reconnect
            try:
                await ws.send(json.dumps({"type": "ack", "id": wanted}))
            except (ConnectionClosed, OSError):
                return
            self._acked = max(self._acked, wanted)

    async def aclose(self) -> None:
        """Close the socket; iteration then stops."""
        self._closed = True
        if self._ack_task is not None:  # the acks of what was handed out reach the server first
            await asyncio.wait({self._ack_task}, timeout=2)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._send_acks()
        # Closing the socket ends the reader's recv(); cancelling covers a reader between sockets.
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            if not task.done():  # pragma: no cover - it stops at its next step anyway (_closed)
                log.warning("live channel task did not stop in time")
        self._ws = None
        if self._final is None:
            self._final = _END
        while not self._queue.empty():  # not handed out: a later stream of the device gets them again
            self._queue.get_nowait()
        self._queue.put_nowait(_END)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._final is None or not self._queue.empty():
            self._start()
            item = await self._queue.get()
        else:
            item = self._final
        if isinstance(item, _End):
            self._final = self._final or item
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._final = item
            raise item
        self._cursor.delivered = item.id
        if self.auto_ack:
            self._ack_soon(item.id)
        return item

    async def __aenter__(self) -> EventStream:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- the background task -----------------------------------------------------------------------------
    def _start(self) -> None:
        if self._task is None and self._final is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"arclip-sync {self.url}")

    def _raise_final_if_any(self) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, BaseException):
                self._final = item
                raise item
            if isinstance(item, _End):
                self._final = item

    def _finish(self, item: _End | BaseException) -> None:
        self._queue.put_nowait(item)

    async def _run(self) -> None:
        failures = 0
        first = True
        try:
            while not self._closed:
                if not first:
                    delay = self.reconnect_policy.delay(failures)
                    if delay is None:
                        why = f"the live channel could not be re-opened after {failures} tries"
                        self._finish(APIConnectionError(why))
                        return
                    await asyncio.sleep(delay)
                first = False
                try:
                    ws = await self._open()
                except _Fatal as exc:
                    self.close_code = exc.error.code
                    self._finish(exc.error)
                    return
                except _Retryable as exc:
                    failures += 1
                    log.info("live channel: connection failed (%s); retrying", exc.why)
                    continue
                if self._closed:
                    await ws.close()
                    break
                opened = time.monotonic()
                self._ws = ws
                self._connected.set()
                code, reason, fresh = await self._read(ws)
                self._ws = None
                self._peers = None  # unknown until the next hello
                self.close_code = code
                if code == NORMAL_CLOSURE or self._closed:
                    self._finish(_END)
                    return
                if is_final(code):
                    self._finish(SyncClosed(code, reason))
                    return
                failures = 0 if fresh or time.monotonic() - opened >= _STABLE_S else failures + 1
                self.reconnects += 1
                log.info("live channel closed (%s %s); reconnecting", code, reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, surfaced to the consumer rather than lost in a task
            self._finish(exc)
        finally:
            leftover, self._ws = self._ws, None
            if leftover is not None:
                with contextlib.suppress(Exception):
                    await leftover.close()

    async def _open(self) -> ClientConnection:
        try:
            ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                user_agent_header=USER_AGENT,
                open_timeout=self.open_timeout,
                close_timeout=2,
                max_size=4 * 1024 * 1024,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if 400 <= status < 500 and status not in (408, 429):
                raise _Fatal(SyncClosed(4000 + status, f"handshake refused with HTTP {status}")) from exc
            raise _Retryable(f"HTTP {status}") from exc
        except InvalidURI:
            raise
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        try:
            async with asyncio.timeout(self.open_timeout):  # not wait_for: it can swallow a cancel (3.11)
                raw = await ws.recv()
            frame = json.loads(raw)
            if isinstance(frame, dict) and frame.get("type") == "hello":
                data = frame.get("data")
                hello: dict[str, Any] = data if isinstance(data, dict) else {}
                self._set_hello(hello)
                acked = hello.get("acked_id")
                if isinstance(acked, int):
                    self._acked = max(self._acked, acked)
            else:  # not expected, but nothing is dropped
                await self._handle(ws, frame)
            if self._received is not None:
                await ws.send(json.dumps({"type": "resume", "last_id": self._received}))
            if self._to_ack > self._acked:  # acks that could not be sent while the socket was down
                await ws.send(json.dumps({"type": "ack", "id": self._to_ack}))
                self._acked = self._to_ack
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            self.close_code = code
            if is_final(code):
                raise _Fatal(SyncClosed(code, reason)) from exc
            raise _Retryable(f"closed during hello ({code})") from exc
        except (TimeoutError, OSError, ValueError) as exc:
            with contextlib.suppress(Exception):
                await ws.close()
            raise _Retryable(f"no hello: {type(exc).__name__}") from exc
        return ws

    def _silence_limit(self) -> float:
        heartbeat = (self.hello or {}).get("heartbeat_s")
        if isinstance(heartbeat, (int, float)) and heartbeat > 0:
            return float(heartbeat) * 2 + 5
        return 60.0

    async def _read(self, ws: ClientConnection) -> tuple[int | None, str, bool]:
        """Read until the socket closes: (close code, reason, whether a message came through)."""
        fresh = False
        while True:
            try:
                async with asyncio.timeout(self._silence_limit()):
                    raw = await ws.recv()
            except TimeoutError:
                log.info("live channel silent for %.0fs; reconnecting", self._silence_limit())
                ws.transport.abort()
                return None, "silent", fresh
            except ConnectionClosed as exc:
                if exc.rcvd is not None:
                    return exc.rcvd.code, exc.rcvd.reason, fresh
                return None, "connection lost", fresh
            try:
                frame = json.loads(raw)
            except ValueError:
                log.warning("live channel: ignoring a frame that is not JSON")
                continue
            fresh = await self._handle(ws, frame) or fresh

    async def _handle(self, ws: ClientConnection, frame: Any) -> bool:
        """Act on one server frame; True when it was a (new) message of the log."""
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            return False
        kind, message_id = frame["type"], frame.get("id")
        raw_data = frame.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        if message_id is None:
            if kind == "ping":
                with contextlib.suppress(ConnectionClosed):
                    await ws.send('{"type":"pong"}')
            elif kind == "hello":
                self._set_hello(data)
            elif kind in ("peer.online", "peer.offline") and self._peers is not None and "device_id" in data:
                self._peers.pop(str(data["device_id"]), None)
                if kind == "peer.online":
                    self._peers[str(data["device_id"])] = str(data.get("role"))
            elif kind == "error":
                log.warning("live channel: server refused a frame: %s", data)
            return False
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            return False
        if self._received is not None and message_id <= self._received:
            return False  # at-least-once delivery: already seen
        self._received = message_id
        self._queue.put_nowait(Event(id=message_id, type=kind, data=data))
        return True


