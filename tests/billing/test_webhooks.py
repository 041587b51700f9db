"""Stripe webhook events: verified signatures, applied once, in the right order."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from billing import (
    AccountService,
    AccountSuspended,
    Catalogue,
    InvalidWebhook,
    WebhookHandler,
)
from billing.db import LedgerEntry, StripeEvent
from billing.payments import verify_signature
from tests.billing.stripe_server import event, sign

SECRET = "whsec_unit_test"


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue()


@pytest.fixture
def handler(sessions, catalogue, clock) -> WebhookHandler:
    return WebhookHandler(sessions, catalogue, clock)


@pytest.fixture
def accounts(sessions, catalogue, clock) -> AccountService:
    return AccountService(sessions, catalogue, clock)


def checkout(account_id: str, *, pack: str = "starter", paid: bool = True, session_id: str = "cs_test_1") -> dict:
    return {
        "id": session_id,
        "object": "checkout.session",
        "mode": "payment",
        "customer": "cus_test_1",
        "client_reference_id": account_id,
        "payment_status": "paid" if paid else "unpaid",
        "metadata": {"arclip_account": account_id, "arclip_pack": pack, "arclip_credits": "1000"},
    }


async def count(sessions, model) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)))


def test_signatures_verify_only_with_the_secret_and_the_exact_body() -> None:
    payload = json.dumps(event("invoice.paid", {"id": "in_1"})).encode()
    assert verify_signature(payload, sign(payload, SECRET), SECRET)["type"] == "invoice.paid"
    for bad_payload, header in (
        (payload, sign(payload, "whsec_other")),
        (payload + b" ", sign(payload, SECRET)),
        (payload, None),
        (payload, "t=1,v1=deadbeef"),
        (payload, sign(payload, SECRET, timestamp=int(time.time()) - 3600)),  # too old: a replay attack
    ):
        with pytest.raises(InvalidWebhook):
            verify_signature(bad_payload, header, SECRET)
    not_json = b"{not json"
    with pytest.raises(InvalidWebhook):
        verify_signature(not_json, sign(not_json, SECRET), SECRET)


async def test_completed_checkout_adds_credits_once(handler, accounts, sessions) -> None:
    account = await accounts.create("shop")
    completed = event("checkout.session.completed", checkout(account.id))
    assert await handler.handle(completed) == "credited"
    assert await handler.handle(completed) == "replayed"
    info = await accounts.get(account.id)
    assert info.balance.credits == 1_000_000 and info.plan == "prepaid"  # a buyer gets the prepaid plan's limits
    assert info.stripe_customer_id == "cus_test_1"
    # the same session through another event (a delayed payment's success) does not credit twice
    late = event("checkout.session.async_payment_succeeded", checkout(account.id))
    assert await handler.handle(late) == "already credited"
    assert (await accounts.get(account.id)).balance.credits == 1_000_000
    assert await count(sessions, StripeEvent) == 2
    async with sessions() as session:
        purchases = (await session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "purchase"))).all()
    assert [(p.from_credits, p.reference) for p in purchases] == [(1_000_000, "checkout:cs_test_1")]


async def test_an_unpaid_checkout_waits_for_its_payment(handler, accounts) -> None:
    account = await accounts.create("shop")
    assert await handler.handle(event("checkout.session.completed", checkout(account.id, paid=False))) == (
        "awaiting payment"
    )
    assert (await accounts.get(account.id)).balance.credits == 0
    await handler.handle(event("checkout.session.async_payment_succeeded", checkout(account.id)))
    assert (await accounts.get(account.id)).balance.credits == 1_000_000


async def test_unknown_accounts_and_types_are_acknowledged(handler, sessions) -> None:
    assert await handler.handle(event("checkout.session.completed", checkout("acct_nope"))) == (
        "ignored (no such account)"
    )
    assert await handler.handle(event("charge.refunded", {"id": "ch_1"})) == "ignored"
    assert await count(sessions, StripeEvent) == 2


async def test_subscription_changes_the_plan(handler, accounts) -> None:
    account = await accounts.create("metered")
    sub = {"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
           "metadata": {"arclip_account": account.id, "arclip_plan": "payg"}}
    now = int(time.time())
    assert await handler.handle(event("customer.subscription.created", sub, created=now)) == "plan payg"
    assert (await accounts.get(account.id)).plan == "payg"
    # an older event arriving late changes nothing
    stale = {**sub, "status": "canceled"}
    assert (await handler.handle(event("customer.subscription.updated", stale, created=now - 10))).startswith("ignored")
    assert (await accounts.get(account.id)).plan == "payg"
    assert await handler.handle(event("customer.subscription.deleted", stale, created=now + 10)) == "plan free"
    assert (await accounts.get(account.id)).plan == "free"


async def test_failed_payment_suspends_and_paid_invoice_restores(handler, accounts, keys) -> None:
    key, secret = await keys.create("app")
    await accounts.set_customer(key.account_id, "cus_9")
    invoice = {"id": "in_1", "object": "invoice", "customer": "cus_9"}
    now = int(time.time())
    assert await handler.handle(event("invoice.payment_failed", invoice, created=now)) == "suspended"
    with pytest.raises(AccountSuspended):
        await keys.authenticate(secret)
    _, other_secret = await keys.create("other account")
    await keys.authenticate(other_secret)  # other accounts are not touched
    # the failure of an older invoice, delivered late, does not suspend again after the payment
    assert await handler.handle(event("invoice.paid", invoice, created=now + 5)) == "restored"
    await keys.authenticate(secret)
    assert (await handler.handle(event("invoice.payment_failed", invoice, created=now + 1))).startswith("ignored")
    await keys.authenticate(secret)


async def test_a_failing_event_leaves_nothing_and_can_be_retried(handler, accounts, sessions, monkeypatch) -> None:
    account = await accounts.create("shop")
    completed = event("checkout.session.completed", checkout(account.id))

    async def broken(*args, **kwargs):
        raise RuntimeError("database went away mid-event")

    real = handler._checkout
    monkeypatch.setattr(handler, "_checkout", broken)
    with pytest.raises(RuntimeError):
        await handler.handle(completed)
    assert await count(sessions, StripeEvent) == 0
    monkeypatch.setattr(handler, "_checkout", real)
    assert await handler.handle(completed) == "credited"  # Stripe's retry applies it whole
    assert (await accounts.get(account.id)).balance.credits == 1_000_000
