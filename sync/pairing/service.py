"""PairingService: open a pairing on the desktop, claim it from a phone, authenticate both.

Who a pairing holds: **one desktop** (the companion that opened it) and **up to
``max_phones`` phones** (4 by default). Each phone claims its own code; codes
are single-use, so the desktop asks for a fresh one (``new_code``) to add
another phone. The desktop's unpair closes the whole pairing: every token is
revoked, ``pairing.closed`` is published and the close listeners run (assets go
with their pairing). A phone's unpair removes only that phone (``peer.left``).

Lifetimes: an opened pairing lives as long as its newest code
(``code_ttl``, minutes); once claimed it stays active for ``lifetime`` (7 days
by default) and then expires like a close. ``sweep()`` expires what is due;
``authenticate`` also expires a lapsed pairing the moment it is used.

Secrets: codes and tokens are random (``secrets``), handed out once and only
their sha256 is stored. Guessing is throttled per client and overall.

Writes start with a conditional ``UPDATE`` (the row's current state in the
``WHERE``), so concurrent requests and replicas never both win a transition,
and SQLite takes its write lock at the start of the transaction.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sync.db import DeviceRow, PairingCodeRow, PairingRow, utcnow

from .codes import hash_secret, new_code, new_id, new_token, normalize_code
from .errors import (
    CodeExpired,
    CodeUsed,
    IllegalTransition,
    InvalidCode,
    InvalidToken,
    MalformedCode,
    MissingToken,
    PairingClosed,
    PairingFull,
    PairingNotFound,
    RevokedToken,
    TooManyAttempts,
    WrongRole,
)
from .states import LIVE, TRANSITIONS, PairingEvent, PairingState
from .throttle import Limit, MemoryThrottle, Throttle

log = logging.getLogger("arclip.pairing")

Role = Literal["phone", "desktop"]
EventSink = Callable[[str, str, dict[str, Any]], Awaitable[int]]
"""``(pairing_id, type, data) -> message id``: ``Hub.publish``."""
CloseListener = Callable[[str], Awaitable[None]]

PEER_JOINED = "peer.joined"
PEER_LEFT = "peer.left"
PAIRING_CLOSED = "pairing.closed"

_PAIRING_PREFIX = "pr_"
_DEVICE_PREFIX = "dev_"
_COLLISION_RETRIES = 5
_SWEEP_BATCH = 500

CLAIMS_PER_CLIENT = Limit(10, 60.0)
CLAIM_FAILURES = Limit(300, 60.0)
OPENS_PER_CLIENT = Limit(30, 60.0)


@dataclass(frozen=True)
class Device:
    """An authenticated device: what a token stands for."""

    pairing_id: str
    role: Role
    device_id: str

    def require(self, role: Role) -> Device:
        if self.role != role:
            raise WrongRole(f"This needs the {role}'s token; this is the {self.role}'s.")
        return self


@dataclass(frozen=True)
class PairingConfig:
    code_length: int = 8
    code_ttl: timedelta = timedelta(minutes=5)
    lifetime: timedelta = timedelta(days=7)
    max_phones: int = 4
    claims_per_client: Limit = CLAIMS_PER_CLIENT
    claim_failures: Limit = CLAIM_FAILURES  # overall, every client together
    opens_per_client: Limit = OPENS_PER_CLIENT
    keep_ended: timedelta = timedelta(days=30)  # how long a closed pairing still answers "closed"

    def __post_init__(self) -> None:
        if self.code_length < 6:
            raise ValueError("pairing codes need at least 6 characters")
        if self.max_phones < 1:
            raise ValueError("a pairing holds at least one phone")


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: datetime


@dataclass(frozen=True)
class OpenedPairing:
    pairing_id: str
    code: str
    expires_at: datetime
    desktop: Device
    desktop_token: str


@dataclass(frozen=True)
class ClaimedPairing:
    pairing_id: str
    phone: Device
    phone_token: str


@dataclass(frozen=True)
class PairingInfo:
    pairing_id: str
    state: PairingState
    created_at: datetime
    expires_at: datetime
    devices: tuple[Device, ...] = field(default_factory=tuple)
    max_phones: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "pairing_id": self.pairing_id,
            "state": self.state.value,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "max_phones": self.max_phones,
            "devices": [{"device_id": d.device_id, "role": d.role} for d in self.devices],
        }


class PairingService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        config: PairingConfig | None = None,
        *,
        throttle: Throttle | None = None,
        events: EventSink | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self.config = config or PairingConfig()
        self._clock = clock
        self._throttle = throttle or MemoryThrottle(lambda: clock().timestamp())
        self._events = events
        self._close_listeners: list[CloseListener] = []

    # -- wiring ------------------------------------------------------------------------------------
    def add_close_listener(self, listener: CloseListener) -> None:
        """``await listener(pairing_id)`` after a pairing closes or expires (errors are logged)."""
        self._close_listeners.append(listener)

    def set_event_sink(self, events: EventSink | None) -> None:
        self._events = events

    # -- desktop: open -------------------------------------------------------------------------------
    async def open(self, client: str) -> OpenedPairing:
        """A new pairing in ``opened``, its first code, and the desktop's token."""
        await self._count(f"open:{client}", self.config.opens_per_client, "Too many pairings opened; wait a moment.")
        collision: IntegrityError | None = None
        for _ in range(_COLLISION_RETRIES):
            now = self._clock()
            code, token = new_code(self.config.code_length), new_token("desktop")
            expires_at = now + self.config.code_ttl
            desktop = Device(new_id(_PAIRING_PREFIX), "desktop", new_id(_DEVICE_PREFIX))
            try:
                async with self._sessions.begin() as session:
                    session.add(
                        PairingRow(
                            id=desktop.pairing_id, state=PairingState.OPENED.value, created_at=now, expires_at=expires_at
                        )
                    )
                    await session.flush()  # the parent row first: codes and devices refer to it
                    session.add(
                        PairingCodeRow(
                            code_hash=hash_secret(code), pairing_id=desktop.pairing_id, created_at=now, expires_at=expires_at
                        )
                    )
                    session.add(
                        DeviceRow(
                            id=desktop.device_id,
                            pairing_id=desktop.pairing_id,
                            role="desktop",
                            token_hash=hash_secret(token),
                            created_at=now,
                        )
                    )
            except IntegrityError as exc:  # a code (or id) met a remembered one: draw again
                collision = exc
                continue
            return OpenedPairing(desktop.pairing_id, code, expires_at, desktop, token)
        raise RuntimeError("could not draw a unique pairing code") from collision

    async def new_code(self, device: Device) -> IssuedCode:
        """A fresh code for the desktop to show (another phone, or the first one's code lapsed).

        Any unused code of the pairing lapses; an opened pairing lives as long as its newest code.
        """
        device.require("desktop")
        collision: IntegrityError | None = None
        for _ in range(_COLLISION_RETRIES):
            now = self._clock()
            code = new_code(self.config.code_length)
            expires_at = now + self.config.code_ttl
            try:
                async with self._sessions.begin() as session:
                    await session.execute(
                        update(PairingRow)
                        .where(
                            PairingRow.id == device.pairing_id,
                            PairingRow.state == PairingState.OPENED.value,
                            PairingRow.expires_at > now,
                        )
                        .values(expires_at=expires_at)
                    )
                    row = await session.get(PairingRow, device.pairing_id)
                    if row is None:
                        raise PairingNotFound("No such pairing.")
                    if row.state not in LIVE or row.expires_at <= now:
                        raise PairingClosed("The pairing has ended; open a new one.", row.state)
                    await session.execute(
                        update(PairingCodeRow)
                        .where(
                            PairingCodeRow.pairing_id == device.pairing_id,
                            PairingCodeRow.used_at.is_(None),
                            PairingCodeRow.expires_at > now,
                        )
                        .values(expires_at=now)
                    )
                    session.add(
                        PairingCodeRow(
                            code_hash=hash_secret(code), pairing_id=device.pairing_id, created_at=now, expires_at=expires_at
                        )
                    )
            except IntegrityError as exc:
                collision = exc
                continue
            return IssuedCode(code, expires_at)
        raise RuntimeError("could not draw a unique pairing code") from collision

    # -- phone: claim --------------------------------------------------------------------------------
    async def claim(self, code: str, client: str) -> ClaimedPairing:
        """Spend ``code``: the phone joins its pairing and gets its token.

        Every attempt counts against ``client``'s budget; failed ones also against
        the overall budget, which is checked first, so a distributed guesser
        locks itself out without knowing whether any guess came close.
        """
        await self._count(f"claim:{client}", self.config.claims_per_client, "Too many pairing attempts; wait a moment.")
        retry = await self._throttle.peek("claim-failures", self.config.claim_failures)
        if retry is not None:
            raise TooManyAttempts("Pairing is paused after too many wrong codes; retry shortly.", retry)
        try:
            return await self._claim(code)
        except (MalformedCode, InvalidCode, CodeExpired, CodeUsed):
            await self._throttle.hit("claim-failures", self.config.claim_failures)
            raise

    async def _claim(self, typed: str) -> ClaimedPairing:
        digest = hash_secret(normalize_code(typed, self.config.code_length))
        now = self._clock()
        token = new_token("phone")
        async with self._sessions.begin() as session:
            spent = await session.execute(
                update(PairingCodeRow)
                .where(
                    PairingCodeRow.code_hash == digest,
                    PairingCodeRow.used_at.is_(None),
                    PairingCodeRow.expires_at > now,
                )
                .values(used_at=now)
            )
            if spent.rowcount != 1:
                row = await session.get(PairingCodeRow, digest)
                if row is None:
                    raise InvalidCode("No pairing has this code; check it on the laptop.")
                if row.used_at is not None:
                    raise CodeUsed("This code has been used; ask the laptop for a new one.")
                raise CodeExpired("This code has expired; ask the laptop for a new one.")
            pairing_id = (await session.get(PairingCodeRow, digest)).pairing_id  # type: ignore[union-attr]
            pairing = await session.get(PairingRow, pairing_id)
            if pairing is None or pairing.state not in LIVE or pairing.expires_at <= now:
                raise CodeExpired("This code's pairing has ended; open a new one on the laptop.")
            phones = await session.scalar(
                select(func.count())
                .select_from(DeviceRow)
                .where(DeviceRow.pairing_id == pairing_id, DeviceRow.role == "phone", DeviceRow.revoked_at.is_(None))
            )
            if (phones or 0) >= self.config.max_phones:
                raise PairingFull(f"This pairing already holds {self.config.max_phones} phone(s).")

            def values(src: PairingState, dst: PairingState) -> dict[str, Any]:
                if src is PairingState.OPENED:
                    return {"activated_at": now, "expires_at": now + self.config.lifetime}
                return {}

            await self._advance(session, pairing_id, PairingEvent.CLAIM, values)
            phone = Device(pairing_id, "phone", new_id(_DEVICE_PREFIX))
            session.add(
                DeviceRow(
                    id=phone.device_id, pairing_id=pairing_id, role="phone", token_hash=hash_secret(token), created_at=now
                )
            )
        await self._emit(pairing_id, PEER_JOINED, {"device_id": phone.device_id, "role": "phone"})
        return ClaimedPairing(pairing_id, phone, token)

    # -- both: authenticate ---------------------------------------------------------------------------
    async def authenticate(self, token: str | None) -> Device:
        """The device a bearer token belongs to, if the token and its pairing are both live."""
        if not token:
            raise MissingToken("Send the device token as 'Authorization: Bearer …' (or ?token= on a websocket).")
        digest = hash_secret(token)
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(DeviceRow, PairingRow)
                    .join(PairingRow, PairingRow.id == DeviceRow.pairing_id)
                    .where(DeviceRow.token_hash == digest)
                )
            ).first()
        # Looked up by hash; compared again in constant time so timing says nothing about near-misses.
        if found is None or not hmac.compare_digest(found[0].token_hash, digest):
            raise InvalidToken("The device token is not valid.")
        device_row, pairing = found
        if pairing.state not in LIVE:
            raise PairingClosed(f"The pairing is {pairing.state}; pair again.", pairing.state)
        if pairing.expires_at <= self._clock():
            await self._end_quietly(pairing.id, PairingEvent.EXPIRE, "expired")
            raise PairingClosed("The pairing has expired; pair again.", PairingState.EXPIRED.value)
        if device_row.revoked_at is not None:
            raise RevokedToken("This device was removed from the pairing.")
        return Device(pairing.id, device_row.role, device_row.id)  # type: ignore[arg-type]

    async def get(self, pairing_id: str) -> PairingInfo:
        async with self._sessions() as session:
            pairing = await session.get(PairingRow, pairing_id)
            if pairing is None:
                raise PairingNotFound("No such pairing.")
            rows = (
                await session.scalars(
                    select(DeviceRow)
                    .where(DeviceRow.pairing_id == pairing_id, DeviceRow.revoked_at.is_(None))
                    .order_by(DeviceRow.created_at)
                )
            ).all()
        devices = tuple(Device(pairing_id, r.role, r.id) for r in rows)  # type: ignore[arg-type]
        return PairingInfo(
            pairing_id, PairingState(pairing.state), pairing.created_at, pairing.expires_at, devices, self.config.max_phones
        )

    async def snapshot(self, pairing_id: str) -> dict[str, Any]:
        """The pairing's part of a hub resync: its state and its devices."""
        info = await self.get(pairing_id)
        return {"state": info.state.value, "devices": [{"device_id": d.device_id, "role": d.role} for d in info.devices]}

    # -- unpair, close, expire -----------------------------------------------------------------------
    async def unpair(self, device: Device) -> None:
        """The desktop closes the pairing; a phone leaves it."""
        if device.role == "desktop":
            await self.close(device.pairing_id, reason="unpaired")
            return
        now = self._clock()
        async with self._sessions.begin() as session:
            gone = await session.execute(
                update(DeviceRow)
                .where(DeviceRow.id == device.device_id, DeviceRow.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        if gone.rowcount:
            await self._emit(
                device.pairing_id, PEER_LEFT, {"device_id": device.device_id, "role": device.role, "reason": "unpaired"}
            )

    async def close(self, pairing_id: str, reason: str = "unpaired") -> None:
        """``opened|active -> closed``; ``IllegalTransition`` if it already ended."""
        await self._end(pairing_id, PairingEvent.CLOSE, reason)

    async def expire(self, pairing_id: str) -> None:
        """``opened|active -> expired``; ``IllegalTransition`` if it already ended."""
        await self._end(pairing_id, PairingEvent.EXPIRE, "expired")

    async def sweep(self) -> int:
        """Expire what is due and forget long-ended pairings; returns how many expired."""
        now = self._clock()
        async with self._sessions() as session:
            due = (
                await session.scalars(
                    select(PairingRow.id)
                    .where(PairingRow.state.in_([s.value for s in LIVE]), PairingRow.expires_at <= now)
                    .limit(_SWEEP_BATCH)
                )
            ).all()
        expired = 0
        for pairing_id in due:
            expired += await self._end_quietly(pairing_id, PairingEvent.EXPIRE, "expired")
        async with self._sessions.begin() as session:
            await session.execute(delete(PairingCodeRow).where(PairingCodeRow.expires_at <= now - timedelta(days=1)))
            old = select(PairingRow.id).where(PairingRow.ended_at <= now - self.config.keep_ended)
            await session.execute(delete(DeviceRow).where(DeviceRow.pairing_id.in_(old)))
            await session.execute(delete(PairingCodeRow).where(PairingCodeRow.pairing_id.in_(old)))
            await session.execute(delete(PairingRow).where(PairingRow.ended_at <= now - self.config.keep_ended))
        return expired

    async def _end(self, pairing_id: str, event: PairingEvent, reason: str) -> None:
        now = self._clock()
        async with self._sessions.begin() as session:
            _, state = await self._advance(
                session, pairing_id, event, lambda src, dst: {"ended_at": now, "end_reason": reason}
            )
            await session.execute(
                update(DeviceRow)
                .where(DeviceRow.pairing_id == pairing_id, DeviceRow.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            await session.execute(
                update(PairingCodeRow)
                .where(
                    PairingCodeRow.pairing_id == pairing_id,
                    PairingCodeRow.used_at.is_(None),
                    PairingCodeRow.expires_at > now,
                )
                .values(expires_at=now)
            )
        log.info("pairing %s %s (%s)", pairing_id, state.value, reason)
        await self._emit(pairing_id, PAIRING_CLOSED, {"state": state.value, "reason": reason})
        for listener in list(self._close_listeners):
            try:
                await listener(pairing_id)
            except Exception:
                log.exception("close listener failed for pairing %s", pairing_id)

    async def _end_quietly(self, pairing_id: str, event: PairingEvent, reason: str) -> int:
        """``_end`` where losing the race to another request or replica is fine."""
        try:
            await self._end(pairing_id, event, reason)
        except (IllegalTransition, PairingNotFound):
            return 0
        return 1

    async def _advance(
        self,
        session: AsyncSession,
        pairing_id: str,
        event: PairingEvent,
        values: Callable[[PairingState, PairingState], dict[str, Any]],
    ) -> tuple[PairingState, PairingState]:
        """Apply ``event`` to the stored state with one conditional UPDATE per legal source state."""
        for (src, on), dst in TRANSITIONS.items():
            if on is not event:
                continue
            moved = await session.execute(
                update(PairingRow)
                .where(PairingRow.id == pairing_id, PairingRow.state == src.value)
                .values(state=dst.value, **values(src, dst))
            )
            if moved.rowcount == 1:
                return src, dst
        row = await session.get(PairingRow, pairing_id)
        if row is None:
            raise PairingNotFound("No such pairing.")
        raise IllegalTransition(row.state, event.value)

    # -- helpers ----------------------------------------------------------------------------------------
    async def _count(self, key: str, limit: Limit, detail: str) -> None:
        retry = await self._throttle.hit(key, limit)
        if retry is not None:
            raise TooManyAttempts(detail, retry)

    async def _emit(self, pairing_id: str, type: str, data: dict[str, Any]) -> None:
        # The state change is committed already; a hub outage must not undo it or fail the request.
        if self._events is None:
            return
        try:
            await self._events(pairing_id, type, data)
        except Exception:
            log.exception("could not publish %s for pairing %s", type, pairing_id)
