"""Credits: reserved before the work, charged after it, given back on failure; never overdrawn."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from billing import (
    AccountService,
    ApiKeyService,
    Catalogue,
    InsufficientCredits,
    Ledger,
    format_credits,
    to_milli,
)
from billing.db import LedgerEntry, UsageOutbox
from billing.errors import InvalidAmount

FULL, PREVIEW = 1000, 250


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue.build({"free": {"monthly_credits": 3}, "payg": {"monthly_credits": 0, "metered_limit": 2}})


@pytest.fixture
def ledger(sessions, catalogue, clock) -> Ledger:
    return Ledger(sessions, catalogue, clock)


@pytest.fixture
def accounts(sessions, catalogue, clock) -> AccountService:
    return AccountService(sessions, catalogue, clock)


async def rows(sessions, kind: str = "usage") -> list[LedgerEntry]:
    async with sessions() as session:
        found = await session.scalars(select(LedgerEntry).where(LedgerEntry.kind == kind).order_by(LedgerEntry.created))
        return list(found.all())


def test_amounts() -> None:
    assert to_milli(1) == 1000 and to_milli("0.25") == 250 and to_milli(2.5) == 2500
    assert [format_credits(v) for v in (1000, 250, 0, 9750, 1_000_000)] == ["1", "0.25", "0", "9.75", "1000"]
    with pytest.raises(InvalidAmount):
        to_milli("0.0001")


async def test_reserve_then_settle_charges_once(keys, ledger, accounts) -> None:
    key, _ = await keys.create("app")  # free: 3 credits this month
    reservation = await ledger.reserve(key, FULL, operation="clip")
    assert (await accounts.get(key.account_id)).balance.remaining == 2000  # held while the work runs
    charge = await ledger.settle(reservation)
    assert charge.amount == FULL and charge.remaining == 2000
    assert [(r.status, r.from_free, r.price) for r in await rows(ledger._sessions)] == [("charged", FULL, FULL)]
    again = await ledger.settle(reservation)  # settling twice changes nothing
    assert (await accounts.get(key.account_id)).balance.remaining == 2000 and again.amount == FULL


async def test_release_gives_everything_back(keys, ledger, accounts) -> None:
    key, _ = await keys.create("app", credits=500)
    reservation = await ledger.reserve(key, FULL, operation="clip")
    assert await ledger.release(reservation)
    assert not await ledger.release(reservation)  # once
    balance = (await accounts.get(key.account_id)).balance
    assert (balance.free_credits, balance.credits) == (3000, 500)
    assert [r.status for r in await rows(ledger._sessions)] == ["released"]


async def test_monthly_credits_go_first_then_bought_ones(keys, ledger, accounts) -> None:
    key, _ = await keys.create("app", credits=2000)
    for _ in range(4):
        await ledger.settle(await ledger.reserve(key, FULL, operation="clip"))
    balance = (await accounts.get(key.account_id)).balance
    assert (balance.free_credits, balance.credits) == (0, 1000)
    parts = sorted((r.from_free, r.from_credits) for r in await rows(ledger._sessions))
    assert parts == [(0, 1000), (1000, 0), (1000, 0), (1000, 0)]


async def test_a_charge_can_span_both_balances(keys, ledger, accounts) -> None:
    key, _ = await keys.create("app", credits=1000)
    for _ in range(11):
        await ledger.settle(await ledger.reserve(key, PREVIEW, operation="clip.preview"))
    balance = (await accounts.get(key.account_id)).balance
    assert (balance.free_credits, balance.credits) == (250, 1000)
    spanning = await ledger.reserve(key, FULL, operation="clip")
    assert (spanning.from_free, spanning.from_credits) == (250, 750)
    with pytest.raises(InsufficientCredits) as refused:
        await ledger.reserve(key, FULL, operation="clip")
    assert refused.value.required == FULL and refused.value.remaining == 250
    await ledger.release(spanning)
    balance = (await accounts.get(key.account_id)).balance
    assert (balance.free_credits, balance.credits) == (250, 1000)  # each part back where it came from


async def test_out_of_credits_is_refused_and_writes_nothing(keys, ledger, accounts) -> None:
    key, _ = await keys.create("app")
    for _ in range(3):
        await ledger.settle(await ledger.reserve(key, FULL, operation="clip"))
    with pytest.raises(InsufficientCredits):
        await ledger.reserve(key, FULL, operation="clip")
    assert len(await rows(ledger._sessions)) == 3


async def test_monthly_credits_reset_on_a_new_month(keys, ledger, accounts, clock) -> None:
    key, _ = await keys.create("app", credits=1000)
    for _ in range(3):
        await ledger.settle(await ledger.reserve(key, FULL, operation="clip"))
    clock.advance(31 * 24 * 3600)
    balance = (await accounts.get(key.account_id)).balance
    assert (balance.free_credits, balance.credits) == (3000, 1000)  # the grant is back; bought ones stay
    reservation = await ledger.reserve(key, FULL, operation="clip")
    assert reservation.from_free == FULL


async def test_free_credits_of_a_past_month_do_not_come_back(keys, ledger, accounts, clock) -> None:
    key, _ = await keys.create("app")
    reservation = await ledger.reserve(key, FULL, operation="clip")
    clock.advance(31 * 24 * 3600)
    await ledger.settle(await ledger.reserve(key, FULL, operation="clip"))  # the new month begins: 3 - 1
    await ledger.release(reservation)  # last month's credit lapses instead of adding to this month's
    assert (await accounts.get(key.account_id)).balance.free_credits == 2000


async def test_pay_as_you_go_meters_beyond_the_balance_up_to_the_cap(keys, ledger, accounts, sessions) -> None:
    key, _ = await keys.create("metered", plan="payg", credits=1000)
    first = await ledger.settle(await ledger.reserve(key, FULL, operation="clip"))  # from the balance
    second = await ledger.reserve(key, FULL, operation="clip")
    assert second.metered == FULL and second.from_credits == 0
    await ledger.settle(second)
    await ledger.settle(await ledger.reserve(key, FULL, operation="clip"))
    with pytest.raises(InsufficientCredits):  # the monthly cap (2 credits metered)
        await ledger.reserve(key, PREVIEW, operation="clip.preview")
    assert first.amount == FULL
    async with sessions() as session:
        queued = (await session.scalars(select(UsageOutbox))).all()
    assert sorted(q.amount for q in queued) == [FULL, FULL]  # only metered usage goes to Stripe


async def test_a_failed_metered_request_is_not_reported(keys, ledger, sessions) -> None:
    key, _ = await keys.create("metered", plan="payg")
    await ledger.release(await ledger.reserve(key, FULL, operation="clip"))
    async with sessions() as session:
        assert (await session.scalars(select(UsageOutbox))).all() == []


async def test_test_keys_are_never_charged(keys, ledger, accounts) -> None:
    live, _ = await keys.create("app")
    test, _ = await keys.create("app test", account_id=live.account_id, mode="test")
    for _ in range(3):
        await ledger.settle(await ledger.reserve(live, FULL, operation="clip"))
    for _ in range(5):  # the live balance is spent; test keys keep working
        charge = await ledger.settle(await ledger.reserve(test, FULL, operation="clip"))
        assert charge.amount == 0 and charge.mode == "test"
    usage = await accounts.usage(live.account_id)
    assert (usage.requests, usage.credits, usage.test_requests) == (3, 3000, 5)


async def test_concurrent_reservations_never_overdraw(sessions, clock) -> None:
    catalogue = Catalogue.build({"free": {"monthly_credits": 0}})
    keys = ApiKeyService(sessions, catalogue, clock=clock)
    ledger = Ledger(sessions, catalogue, clock)
    key, _ = await keys.create("busy", credits=10_000)

    async def one():
        try:
            reservation = await ledger.reserve(key, FULL, operation="clip")
        except InsufficientCredits:
            return False
        await asyncio.sleep(0.01)
        await ledger.settle(reservation)
        return True

    results = await asyncio.gather(*(one() for _ in range(16)))
    assert sum(results) == 10
    assert (await ledger.balance(key.account_id)).prepaid == 0
    usage = await rows(sessions)
    assert len(usage) == 10 and all(r.status == "charged" for r in usage)


async def test_stale_reservations_are_released(keys, ledger, accounts, clock) -> None:
    key, _ = await keys.create("app")
    dead = await ledger.reserve(key, FULL, operation="clip")  # its process died
    clock.advance(60)
    alive = await ledger.reserve(key, FULL, operation="clip")
    assert await ledger.release_stale(30) == 1
    assert (await accounts.get(key.account_id)).balance.remaining == 2000
    assert (await ledger.settle(alive)).amount == FULL
    assert (await ledger.settle(dead)).amount == 0  # released meanwhile: not charged after all
    assert (await accounts.get(key.account_id)).balance.remaining == 2000


async def test_grants_and_usage_summary(keys, ledger, accounts) -> None:
    key, _ = await keys.create("app")
    await accounts.grant(key.account_id, 2500)
    await ledger.settle(await ledger.reserve(key, FULL, operation="clip"))
    await ledger.settle(await ledger.reserve(key, PREVIEW, operation="clip.preview"))
    await ledger.release(await ledger.reserve(key, FULL, operation="clip"))
    usage = await accounts.usage(key.account_id)
    assert usage.requests == 2 and usage.credits == 1250
    assert usage.by_operation == {"clip": 1, "clip.preview": 1}
    grants = await rows(ledger._sessions, "grant")
    assert [(g.from_credits, g.status) for g in grants] == [(2500, "charged")]
