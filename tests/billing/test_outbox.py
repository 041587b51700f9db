"""The usage outbox: every metered charge reported once, whatever fails in between."""

from __future__ import annotations

import asyncio

import pytest

from billing import (
    Billing,
    BillingConfig,
    Catalogue,
    MemoryGateway,
    PaymentsError,
    PaymentsUnavailable,
)


@pytest.fixture
def gateway() -> MemoryGateway:
    return MemoryGateway()


@pytest.fixture
def billing(sessions, clock, gateway) -> Billing:
    catalogue = Catalogue.build({"payg": {"monthly_credits": 0}})
    return Billing.build(sessions, catalogue=catalogue, gateway=gateway, config=BillingConfig(), clock=clock)


async def use(billing: Billing, key, operation: str = "clip") -> str:
    async with billing.metering.call(key, operation=operation) as call:
        from billing import StoredResponse

        await call.succeed(lambda charge: StoredResponse(200))
    return call.charge.ledger_id


async def test_metered_usage_is_reported_once_with_the_ledger_id(billing, gateway) -> None:
    key, _ = await billing.keys.create("metered", plan="payg")
    ids = [await use(billing, key), await use(billing, key, "clip.preview"), await use(billing, key, "clip.preview")]
    assert await billing.reporter.pending() == 3
    assert await billing.reporter.run_once() == 3
    assert sorted(gateway.events) == sorted(ids)
    assert {e.identifier: e.value for e in gateway.events.values()} == {ids[0]: 4, ids[1]: 1, ids[2]: 1}
    assert len(gateway.customers) == 1  # created on first need, then reused
    customer = (await billing.accounts.get(key.account_id)).stripe_customer_id
    assert {e.customer_id for e in gateway.events.values()} == {customer}
    calls = gateway.calls
    assert await billing.reporter.run_once() == 0 and gateway.calls == calls  # nothing twice
    assert await billing.reporter.pending() == 0


async def test_prepaid_and_test_usage_is_not_reported(billing, gateway) -> None:
    key, _ = await billing.keys.create("prepaid", plan="payg", credits=5000)
    test, _ = await billing.keys.create("test", account_id=key.account_id, mode="test")
    await use(billing, key)  # from the balance
    await use(billing, test)
    assert await billing.reporter.pending() == 0


async def test_an_outage_only_delays(billing, gateway, clock) -> None:
    key, _ = await billing.keys.create("metered", plan="payg")
    ids = [await use(billing, key) for _ in range(3)]
    gateway.outage = PaymentsUnavailable("Stripe is down")
    for _ in range(3):
        assert await billing.reporter.run_once() == 0
        clock.advance(1000)
    assert await billing.reporter.pending() == 3 and gateway.events == {}
    gateway.outage = None
    assert await billing.reporter.run_once() == 3
    assert sorted(gateway.events) == sorted(ids)


async def test_backoff_after_failures(billing, gateway, clock) -> None:
    key, _ = await billing.keys.create("metered", plan="payg")
    await use(billing, key)
    gateway.outage = PaymentsUnavailable("down")
    await billing.reporter.run_once()
    gateway.outage = None
    assert await billing.reporter.run_once() == 0  # not due yet
    clock.advance(billing.reporter.max_backoff)
    assert await billing.reporter.run_once() == 1


async def test_a_refusal_does_not_block_the_others(billing, gateway, clock) -> None:
    first, _ = await billing.keys.create("one", plan="payg")
    second, _ = await billing.keys.create("two", plan="payg")
    await use(billing, first)
    await use(billing, second)
    real = gateway.report_usage
    bad_customer = None

    async def refuse_one(event):
        nonlocal bad_customer
        bad_customer = bad_customer or event.customer_id
        if event.customer_id == bad_customer:
            raise PaymentsError("No such customer")
        await real(event)

    gateway.report_usage = refuse_one  # type: ignore[method-assign]
    assert await billing.reporter.run_once() == 1
    assert await billing.reporter.pending() == 1


async def test_replicas_share_the_work_without_double_reporting(billing, gateway, sessions, clock) -> None:
    from billing import UsageReporter

    key, _ = await billing.keys.create("metered", plan="payg")
    await billing.checkout.customer_of(key.account_id)
    for _ in range(20):
        await use(billing, key)
    reports = []
    real = gateway.report_usage

    async def counted(event):
        reports.append(event.identifier)
        await asyncio.sleep(0)
        await real(event)

    gateway.report_usage = counted  # type: ignore[method-assign]
    other = UsageReporter(sessions, gateway, billing.checkout.customer_of, clock=clock)
    done = await asyncio.gather(billing.reporter.run_once(), other.run_once())
    assert sum(done) == 20
    assert len(reports) == 20 and len(set(reports)) == 20


async def test_a_crash_after_reporting_is_retried_and_deduplicated(billing, gateway, clock, monkeypatch) -> None:
    key, _ = await billing.keys.create("metered", plan="payg")
    await use(billing, key)

    async def crash(*args, **kwargs):
        raise RuntimeError("process killed before marking the row")

    monkeypatch.setattr(billing.reporter, "_finish", crash)
    with pytest.raises(RuntimeError):
        await billing.reporter.run_once()
    assert len(gateway.events) == 1
    monkeypatch.undo()
    assert await billing.reporter.run_once() == 0  # leased by the dead attempt
    clock.advance(billing.reporter.lease + 1)
    assert await billing.reporter.run_once() == 1  # sent again: Stripe keeps the first (same identifier)
    assert len(gateway.events) == 1


async def test_the_worker_reports_in_the_background(billing, gateway) -> None:
    billing.reporter.interval = 30  # only a wake-up can make it quick
    billing.start()
    try:
        key, _ = await billing.keys.create("metered", plan="payg")
        ledger_id = await use(billing, key)
        for _ in range(100):
            if ledger_id in gateway.events:
                break
            await asyncio.sleep(0.02)
        assert ledger_id in gateway.events
    finally:
        await billing.close()
