"""The real Stripe SDK against a local Stripe on loopback (localstripe, and a stub for the rest)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import stripe

from api.metering import stripe_gateway
from billing import (
    Billing,
    BillingConfig,
    Catalogue,
    PaymentsError,
    PaymentsUnavailable,
    StoredResponse,
)
from billing.payments import MeterEvent, StripeGateway
from tests.conftest import STRIPE_TEST_KEY, make_settings


@pytest.fixture
async def gateway(stripe_local, tmp_path: Path):
    """Built as the app builds it, pointed at the local Stripe."""
    settings = make_settings(
        tmp_path, stripe_api_key=STRIPE_TEST_KEY, stripe_api_base=stripe_local.url, stripe_max_retries=0
    )
    built = stripe_gateway(settings)
    assert built is not None
    gateway, close = built
    yield gateway
    await close()


@pytest.fixture
async def sdk(stripe_local):
    """A plain client for the test's own look-ups (in localstripe)."""
    http_client = stripe.HTTPXClient()
    yield stripe.StripeClient(STRIPE_TEST_KEY, base_addresses={"api": stripe_local.localstripe.url}, http_client=http_client)
    await http_client.close_async()


async def test_the_gateway_is_never_pointed_at_stripe_by_the_tests(gateway: StripeGateway, stripe_local) -> None:
    base = gateway._client._requestor._options.base_addresses["api"]
    assert base == stripe_local.url and base.startswith("http://127.0.0.1:")


async def test_a_customer_per_account(gateway: StripeGateway, sdk, sessions, clock) -> None:
    billing = Billing.build(sessions, gateway=gateway, clock=clock)
    account = await billing.accounts.create("Acme")
    first = await billing.checkout.customer_of(account.id)
    second = await billing.checkout.customer_of(account.id)
    assert first == second and first.startswith("cus_")
    customer = await sdk.v1.customers.retrieve_async(first)  # it exists in (local) Stripe
    assert customer.name == "Acme" and customer.metadata["arclip_account"] == account.id
    assert (await billing.accounts.get(account.id)).stripe_customer_id == first


async def test_checkout_for_a_credit_pack(gateway: StripeGateway, sessions, clock, stripe_local) -> None:
    billing = Billing.build(sessions, gateway=gateway, clock=clock)
    account = await billing.accounts.create("Acme")
    session = await billing.checkout.buy_pack(
        account.id, "growth", success_url="https://arclip.example/ok", cancel_url="https://arclip.example/no"
    )
    assert session.id.startswith("cs_test_") and session.url.startswith("https://")
    sent = stripe_local.stub.checkout_sessions[-1]
    assert sent["mode"] == "payment" and sent["customer"].startswith("cus_")
    assert sent["line_items[0][price_data][unit_amount]"] == "8000"
    assert sent["metadata[arclip_account]"] == account.id and sent["metadata[arclip_pack]"] == "growth"
    assert sent["client_reference_id"] == account.id


async def test_pay_as_you_go_checkout_needs_a_price(gateway: StripeGateway, sessions, clock, stripe_local) -> None:
    from billing import PaymentsNotConfigured

    billing = Billing.build(sessions, gateway=gateway, clock=clock)
    account = await billing.accounts.create("Acme")
    with pytest.raises(PaymentsNotConfigured):
        await billing.checkout.subscribe(account.id, "payg", success_url="https://a/ok", cancel_url="https://a/no")
    billing = Billing.build(sessions, gateway=gateway, clock=clock, config=BillingConfig(payg_price="price_metered"))
    await billing.checkout.subscribe(account.id, "payg", success_url="https://a/ok", cancel_url="https://a/no")
    sent = stripe_local.stub.checkout_sessions[-1]
    assert sent["mode"] == "subscription" and sent["line_items[0][price]"] == "price_metered"
    assert sent["subscription_data[metadata][arclip_plan]"] == "payg"


async def test_meter_events_and_their_identifiers(gateway: StripeGateway, sdk, stripe_local) -> None:
    customer = (await sdk.v1.customers.create_async({"name": "x"})).id
    event = MeterEvent(identifier="led_abc", customer_id=customer, value=4, timestamp=int(time.time()))
    await gateway.report_usage(event)
    await gateway.report_usage(event)  # a retry: the idempotency key returns the first answer
    stripe_local.stub._idempotent.clear()  # a retry after the idempotency key expired
    await gateway.report_usage(event)  # Stripe refuses the identifier: counted as reported
    assert [(e["identifier"], e["payload"]["value"]) for e in stripe_local.stub.meter_events] == [("led_abc", "4")]
    assert stripe_local.stub.meter_events[0]["event_name"] == "arclip_credits"


async def test_stripe_errors_are_translated(gateway: StripeGateway, stripe_local) -> None:
    with pytest.raises(PaymentsError) as refused:  # a customer Stripe does not know
        await gateway.report_usage(MeterEvent("led_x", "cus_missing", 1, int(time.time())))
    assert not isinstance(refused.value, PaymentsUnavailable)
    stripe_local.stub.down = True
    with pytest.raises(PaymentsUnavailable):
        await gateway.report_usage(MeterEvent("led_y", "cus_missing", 1, int(time.time())))
    with pytest.raises(PaymentsUnavailable):
        await gateway.create_customer(account_id="a", name="n", idempotency_key="k")


async def test_unreachable_stripe_is_unavailable(tmp_path: Path) -> None:
    from tests.billing.stripe_server import free_port

    settings = make_settings(
        tmp_path, stripe_api_key=STRIPE_TEST_KEY, stripe_api_base=f"http://127.0.0.1:{free_port()}",
        stripe_max_retries=0,
    )
    gateway, close = stripe_gateway(settings)  # type: ignore[misc]
    try:
        with pytest.raises(PaymentsUnavailable):
            await gateway.create_customer(account_id="a", name="n", idempotency_key="k")
    finally:
        await close()


async def test_the_outbox_catches_up_after_an_outage(gateway: StripeGateway, sessions, clock, stripe_local) -> None:
    catalogue = Catalogue.build({"payg": {"monthly_credits": 0}})
    billing = Billing.build(sessions, catalogue=catalogue, gateway=gateway, clock=clock)
    key, _ = await billing.keys.create("metered", plan="payg")
    await billing.checkout.customer_of(key.account_id)
    ids = []
    for operation in ("clip", "clip.preview", "clip"):
        async with billing.metering.call(key, operation=operation) as call:
            await call.succeed(lambda charge: StoredResponse(200))
        ids.append(call.charge.ledger_id)

    stripe_local.stub.fail_meter_events = 2  # Stripe answers 500 twice, then recovers
    assert await billing.reporter.run_once() == 0
    assert await billing.reporter.pending() == 3
    clock.advance(600)
    assert await billing.reporter.run_once() == 0  # the second 500
    clock.advance(600)
    assert await billing.reporter.run_once() == 3
    clock.advance(600)
    assert await billing.reporter.run_once() == 0  # and never again
    events = stripe_local.stub.meter_events
    assert sorted(e["identifier"] for e in events) == sorted(ids)
    assert sorted(int(e["payload"]["value"]) for e in events) == [1, 4, 4]
    customer = (await billing.accounts.get(key.account_id)).stripe_customer_id
    assert {e["payload"]["stripe_customer_id"] for e in events} == {customer}
