"""PairingService: the state machine, codes (expiry, single use, guessing), tokens (hashed, scoped, revoked)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.database import create_database, create_schema, session_factory
from sync.pairing import (
    ALPHABET,
    PAIRING_CLOSED,
    PEER_JOINED,
    PEER_LEFT,
    CodeExpired,
    CodeUsed,
    Device,
    IllegalTransition,
    InvalidCode,
    InvalidToken,
    Limit,
    MalformedCode,
    MemoryThrottle,
    MissingToken,
    PairingClosed,
    PairingConfig,
    PairingEvent,
    PairingFull,
    PairingService,
    PairingState,
    RevokedToken,
    TooManyAttempts,
    WrongRole,
    normalize_code,
    transition,
)
from sync.pairing.codes import new_code
from sync.pairing.states import TRANSITIONS


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Events:
    """A recording ``EventSink``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, pairing_id: str, type: str, data: dict[str, Any]) -> int:
        self.sent.append((pairing_id, type, data))
        return len(self.sent)

    def types(self, pairing_id: str) -> list[str]:
        return [t for p, t, _ in self.sent if p == pairing_id]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[Any, Path]]:
    path = tmp_path / "pairing.db"
    engine = create_database(f"sqlite+aiosqlite:///{path}")
    await create_schema(engine)
    try:
        yield session_factory(engine), path
    finally:
        await engine.dispose()


def make_service(db, clock, events, **config) -> PairingService:
    return PairingService(db[0], PairingConfig(**config), events=events, clock=clock)


@pytest.fixture
def service(db, clock, events) -> PairingService:
    return make_service(db, clock, events)


# -- the state machine ---------------------------------------------------------------------------------


def test_transitions_follow_the_lifecycle() -> None:
    assert transition("opened", "claim") is PairingState.ACTIVE
    assert transition("active", "claim") is PairingState.ACTIVE
    assert transition("opened", "expire") is PairingState.EXPIRED
    assert transition("active", "close") is PairingState.CLOSED


@pytest.mark.parametrize(
    ("state", "event"),
    [(s, e) for s, e in itertools.product(PairingState, PairingEvent) if (s, e) not in TRANSITIONS],
)
def test_every_other_transition_is_illegal(state: PairingState, event: PairingEvent) -> None:
    with pytest.raises(IllegalTransition) as err:
        transition(state, event)
    assert (err.value.state, err.value.event) == (state.value, event.value)


def test_terminal_states_accept_nothing() -> None:
    for state in (PairingState.CLOSED, PairingState.EXPIRED):
        for event in PairingEvent:
            with pytest.raises(IllegalTransition):
                transition(state, event)


# -- codes -------------------------------------------------------------------------------------------


def test_codes_use_the_unambiguous_alphabet() -> None:
    assert not set("ILOU") & set(ALPHABET) and len(ALPHABET) == 32
    codes = {new_code(8) for _ in range(200)}
    assert len(codes) == 200
    assert all(len(c) == 8 and set(c) <= set(ALPHABET) for c in codes)
    with pytest.raises(ValueError):
        new_code(5)
    with pytest.raises(ValueError):
        PairingConfig(code_length=5)


def test_typed_codes_are_read_forgivingly() -> None:
    assert normalize_code("ab1c-2d3e", 8) == "AB1C2D3E"
    assert normalize_code(" o1il 2345 ", 8) == "01112345"
    for bad in ("AB1C2D3", "AB1C2D3EF", "AB1C2D3U", "AB1C2D3!"):
        with pytest.raises(MalformedCode):
            normalize_code(bad, 8)


# -- open, claim, authenticate -----------------------------------------------------------------------------


async def test_open_claim_authenticate(service: PairingService, events: Events) -> None:
    opened = await service.open("10.0.0.1")
    assert opened.pairing_id.startswith("pr_") and len(opened.code) == 8
    assert (await service.get(opened.pairing_id)).state is PairingState.OPENED
    desktop = await service.authenticate(opened.desktop_token)
    assert desktop == Device(opened.pairing_id, "desktop", opened.desktop.device_id)

    claimed = await service.claim(opened.code.lower(), "10.0.0.2")
    assert claimed.pairing_id == opened.pairing_id
    phone = await service.authenticate(claimed.phone_token)
    assert phone.role == "phone" and phone.pairing_id == opened.pairing_id
    info = await service.get(opened.pairing_id)
    assert info.state is PairingState.ACTIVE
    assert [d.role for d in info.devices] == ["desktop", "phone"]
    assert events.sent == [(opened.pairing_id, PEER_JOINED, {"device_id": phone.device_id, "role": "phone"})]
    assert opened.desktop_token != claimed.phone_token


async def test_tokens_and_codes_are_stored_hashed(service: PairingService, db) -> None:
    opened = await service.open("10.0.0.1")
    claimed = await service.claim(opened.code, "10.0.0.2")
    raw = sqlite3.connect(db[1])
    try:
        hashes = {row[0] for row in raw.execute("SELECT token_hash FROM sync_devices")}
        code_hashes = {row[0] for row in raw.execute("SELECT code_hash FROM sync_pairing_codes")}
        dump = "\n".join(raw.iterdump())
    finally:
        raw.close()
    def sha(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    assert hashes == {sha(opened.desktop_token), sha(claimed.phone_token)}
    assert code_hashes == {sha(opened.code)}
    for secret in (opened.desktop_token, claimed.phone_token, opened.code):
        assert secret not in dump


async def test_bad_tokens_are_refused(service: PairingService) -> None:
    with pytest.raises(MissingToken):
        await service.authenticate(None)
    with pytest.raises(MissingToken):
        await service.authenticate("")
    with pytest.raises(InvalidToken):
        await service.authenticate("arcp_not-a-token")


async def test_tokens_are_scoped_to_a_role(service: PairingService) -> None:
    opened = await service.open("10.0.0.1")
    claimed = await service.claim(opened.code, "10.0.0.2")
    with pytest.raises(WrongRole):
        claimed.phone.require("desktop")
    with pytest.raises(WrongRole):
        await service.new_code(claimed.phone)
    assert opened.desktop.require("desktop") is opened.desktop


async def test_tokens_are_scoped_to_one_pairing(service: PairingService) -> None:
    first, second = await service.open("a"), await service.open("a")
    assert (await service.authenticate(first.desktop_token)).pairing_id == first.pairing_id
    assert (await service.authenticate(second.desktop_token)).pairing_id == second.pairing_id


# -- single use and expiry -----------------------------------------------------------------------------


async def test_a_code_is_single_use(service: PairingService) -> None:
    opened = await service.open("10.0.0.1")
    await service.claim(opened.code, "10.0.0.2")
    with pytest.raises(CodeUsed):
        await service.claim(opened.code, "10.0.0.3")


async def test_racing_claims_of_one_code_have_one_winner(service: PairingService) -> None:
    opened = await service.open("10.0.0.1")
    results = await asyncio.gather(
        *(service.claim(opened.code, f"10.0.1.{i}") for i in range(6)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, CodeUsed) for r in results if isinstance(r, BaseException))


async def test_unknown_code(service: PairingService) -> None:
    await service.open("10.0.0.1")
    with pytest.raises(InvalidCode):
        await service.claim("ZZZZZZZZ", "10.0.0.2")


async def test_codes_expire(service: PairingService, clock: FakeClock) -> None:
    opened = await service.open("10.0.0.1")
    assert opened.expires_at == clock.now + timedelta(minutes=5)
    clock.advance(minutes=5)
    with pytest.raises(CodeExpired):
        await service.claim(opened.code, "10.0.0.2")


async def test_an_unclaimed_pairing_expires_with_its_code(
    service: PairingService, clock: FakeClock, events: Events
) -> None:
    closed: list[str] = []

    async def on_close(pairing_id: str) -> None:
        closed.append(pairing_id)

    service.add_close_listener(on_close)
    opened, other = await service.open("a"), await service.open("b")
    await service.claim(other.code, "c")
    clock.advance(minutes=4)
    assert await service.sweep() == 0
    clock.advance(minutes=1, seconds=1)
    assert await service.sweep() == 1  # the claimed one lives on
    assert (await service.get(opened.pairing_id)).state is PairingState.EXPIRED
    assert (await service.get(other.pairing_id)).state is PairingState.ACTIVE
    assert closed == [opened.pairing_id]
    assert (opened.pairing_id, PAIRING_CLOSED, {"state": "expired", "reason": "expired"}) in events.sent
    with pytest.raises(PairingClosed) as err:
        await service.authenticate(opened.desktop_token)
    assert err.value.state == "expired"
    with pytest.raises(IllegalTransition):
        await service.close(opened.pairing_id)


async def test_an_active_pairing_expires_after_its_lifetime(db, clock: FakeClock, events: Events) -> None:
    service = make_service(db, clock, events, lifetime=timedelta(hours=1))
    closed: list[str] = []

    async def on_close(pairing_id: str) -> None:
        closed.append(pairing_id)

    service.add_close_listener(on_close)
    opened = await service.open("a")
    claimed = await service.claim(opened.code, "b")
    clock.advance(minutes=59)
    await service.authenticate(claimed.phone_token)
    clock.advance(minutes=1)
    with pytest.raises(PairingClosed):  # expired on use, before any sweep
        await service.authenticate(claimed.phone_token)
    assert closed == [opened.pairing_id]
    assert (await service.get(opened.pairing_id)).state is PairingState.EXPIRED


async def test_a_new_code_replaces_the_unused_one_and_extends_an_opened_pairing(
    service: PairingService, clock: FakeClock
) -> None:
    opened = await service.open("a")
    clock.advance(minutes=4)
    issued = await service.new_code(opened.desktop)
    assert issued.code != opened.code and issued.expires_at == clock.now + timedelta(minutes=5)
    with pytest.raises(CodeExpired):
        await service.claim(opened.code, "b")
    clock.advance(minutes=3)  # past the first code's lifetime, within the second's
    await service.sweep()
    claimed = await service.claim(issued.code, "b")
    assert claimed.pairing_id == opened.pairing_id


# -- how many phones ------------------------------------------------------------------------------------


async def test_one_desktop_and_up_to_max_phones(db, clock: FakeClock, events: Events) -> None:
    service = make_service(db, clock, events, max_phones=2)
    opened = await service.open("a")
    await service.claim(opened.code, "b")
    second = await service.new_code(opened.desktop)
    await service.claim(second.code, "c")
    third = await service.new_code(opened.desktop)
    with pytest.raises(PairingFull):
        await service.claim(third.code, "d")
    info = await service.get(opened.pairing_id)
    assert [d.role for d in info.devices] == ["desktop", "phone", "phone"]
    assert info.state is PairingState.ACTIVE


# -- unpair -----------------------------------------------------------------------------------------------


async def test_the_desktop_unpairs_everyone(service: PairingService, events: Events) -> None:
    closed: list[str] = []

    async def on_close(pairing_id: str) -> None:
        closed.append(pairing_id)

    async def broken(pairing_id: str) -> None:
        raise RuntimeError("listener bug")

    service.add_close_listener(broken)  # logged, does not stop the others
    service.add_close_listener(on_close)
    opened = await service.open("a")
    claimed = await service.claim(opened.code, "b")
    await service.unpair(opened.desktop)
    assert closed == [opened.pairing_id]
    for token in (opened.desktop_token, claimed.phone_token):
        with pytest.raises(PairingClosed):
            await service.authenticate(token)
    assert (await service.get(opened.pairing_id)).state is PairingState.CLOSED
    assert events.types(opened.pairing_id) == [PEER_JOINED, PAIRING_CLOSED]
    with pytest.raises(IllegalTransition):
        await service.close(opened.pairing_id)


async def test_a_phone_unpairs_only_itself(service: PairingService, events: Events) -> None:
    opened = await service.open("a")
    claimed = await service.claim(opened.code, "b")
    await service.unpair(claimed.phone)
    with pytest.raises(RevokedToken):
        await service.authenticate(claimed.phone_token)
    assert (await service.authenticate(opened.desktop_token)).role == "desktop"
    assert events.sent[-1] == (
        opened.pairing_id,
        PEER_LEFT,
        {"device_id": claimed.phone.device_id, "role": "phone", "reason": "unpaired"},
    )
    # its place is free again
    again = await service.claim((await service.new_code(opened.desktop)).code, "b")
    assert again.phone.device_id != claimed.phone.device_id


async def test_closing_an_opened_pairing_spends_its_code(service: PairingService) -> None:
    opened = await service.open("a")
    await service.close(opened.pairing_id)
    with pytest.raises(CodeExpired):
        await service.claim(opened.code, "b")


# -- guessing ----------------------------------------------------------------------------------------------


async def test_claims_are_throttled_per_client(db, clock: FakeClock, events: Events) -> None:
    service = make_service(db, clock, events, claims_per_client=Limit(5, 60))
    opened = await service.open("a")
    for _ in range(5):
        with pytest.raises(InvalidCode):
            await service.claim("ZZZZZZZZ", "10.6.6.6")
    with pytest.raises(TooManyAttempts) as err:
        await service.claim(opened.code, "10.6.6.6")  # even the right code, from this client
    assert 0 < err.value.retry_after <= 60
    await service.claim(opened.code, "10.0.0.9")  # another client is unaffected
    clock.advance(seconds=60)
    with pytest.raises(CodeUsed):
        await service.claim(opened.code, "10.6.6.6")  # the window passed: answered again


async def test_wrong_codes_are_throttled_overall(db, clock: FakeClock, events: Events) -> None:
    service = make_service(db, clock, events, claim_failures=Limit(20, 60))
    opened = await service.open("a")
    for i in range(20):  # a distributed guesser: every attempt from a new address
        with pytest.raises((InvalidCode, MalformedCode)):
            await service.claim("ZZZZZZZZ" if i % 2 else "short", f"10.1.{i}.1")
    with pytest.raises(TooManyAttempts):
        await service.claim(opened.code, "10.2.0.1")
    clock.advance(seconds=60)
    await service.claim(opened.code, "10.2.0.1")


async def test_opening_is_throttled_per_client(db, clock: FakeClock, events: Events) -> None:
    service = make_service(db, clock, events, opens_per_client=Limit(3, 60))
    for _ in range(3):
        await service.open("10.0.0.1")
    with pytest.raises(TooManyAttempts):
        await service.open("10.0.0.1")
    await service.open("10.0.0.2")


async def test_memory_throttle_windows() -> None:
    now = [1000.0]
    throttle = MemoryThrottle(lambda: now[0], prune_above=2)
    limit = Limit(2, 10)
    assert await throttle.peek("k", limit) is None
    assert await throttle.hit("k", limit) is None
    assert await throttle.hit("k", limit) is None
    assert await throttle.peek("k", limit) == pytest.approx(10.0)
    assert await throttle.hit("k", limit) == pytest.approx(10.0)
    for key in "abc":  # grows past prune_above: finished windows go
        await throttle.hit(key, limit)
    now[0] += 10
    assert await throttle.hit("k", limit) is None
    assert len(throttle._counts) <= 4
