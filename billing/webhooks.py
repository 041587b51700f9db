"""Stripe webhook events, applied once.

The event id is stored in the transaction that applies the event: a replayed (or
concurrently re-delivered) event finds it and changes nothing; an event that fails
half-way leaves nothing behind, and Stripe's retry applies it whole. Events about
one account can arrive out of order, so each change remembers the ``created`` time
of the event that made it, and an older event does not undo a newer one.

Handled: ``checkout.session.completed`` / ``checkout.session.async_payment_succeeded``
(credits added; a pay-as-you-go subscription linked), ``customer.subscription.*``
(plan changes), ``invoice.payment_failed`` (keys suspended) and ``invoice.paid`` /
``invoice.payment_succeeded`` (restored). Anything else is acknowledged and ignored.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .accounts import Clock, grant_entry
from .db import Account, LedgerEntry, StripeEvent
from .errors import BillingError
from .plans import Catalogue, to_milli

log = logging.getLogger("arclip.billing")

_LIVE_SUBSCRIPTION = {"active", "trialing", "past_due"}
_ENDED_SUBSCRIPTION = {"canceled", "unpaid", "incomplete_expired", "paused"}


class _Replay(Exception):
    pass


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


class WebhookHandler:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], catalogue: Catalogue | None = None, clock: Clock = time.time
    ) -> None:
        self._sessions = sessions
        self.catalogue = catalogue or Catalogue()
        self._clock = clock

    async def handle(self, event: dict[str, Any]) -> str:
        """Apply a verified event once: ``"applied"``, ``"ignored"`` or ``"replayed"``."""
        event_id, kind = str(event["id"]), str(event["type"])
        created = int(event.get("created") or 0)
        try:
            async with self._sessions.begin() as session:
                session.add(StripeEvent(id=event_id, type=kind, created=created, received=self._clock()))
                try:
                    await session.flush()
                except IntegrityError as exc:
                    raise _Replay from exc
                obj = (event.get("data") or {}).get("object") or {}
                outcome = await self._apply(session, kind, created, obj)
        except _Replay:
            log.info("stripe event %s (%s) replayed; ignored", event_id, kind)
            return "replayed"
        log.info("stripe event %s (%s): %s", event_id, kind, outcome)
        return outcome

    async def _apply(self, session: AsyncSession, kind: str, created: int, obj: dict[str, Any]) -> str:
        if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            return await self._checkout(session, kind, created, obj)
        if kind.startswith("customer.subscription."):
            return await self._subscription(session, kind, created, obj)
        if kind == "invoice.payment_failed":
            return await self._suspend(session, created, obj)
        if kind in ("invoice.paid", "invoice.payment_succeeded"):
            return await self._restore(session, created, obj)
        return "ignored"

    async def _account(self, session: AsyncSession, obj: dict[str, Any]) -> Account | None:
        account_id = _meta(obj).get("arclip_account") or obj.get("client_reference_id")
        if account_id:
            found = await session.get(Account, str(account_id), populate_existing=True)
            if found is not None:
                return found
        customer = obj.get("customer")
        if isinstance(customer, dict):
            customer = customer.get("id")
        if customer:
            return await session.scalar(
                select(Account).where(Account.stripe_customer_id == str(customer)).execution_options(
                    populate_existing=True
                )
            )
        return None

    async def _checkout(self, session: AsyncSession, kind: str, created: int, obj: dict[str, Any]) -> str:
        account = await self._account(session, obj)
        if account is None:
            return "ignored (no such account)"
        customer = obj.get("customer")
        if isinstance(customer, str) and account.stripe_customer_id is None:
            account.stripe_customer_id = customer
        if obj.get("mode") == "subscription":
            if created >= account.plan_event_at and obj.get("subscription"):
                account.stripe_subscription_id = str(obj["subscription"])
                account.plan = self._plan_name(_meta(obj).get("arclip_plan"), "payg")
                account.plan_event_at = created
            return "subscribed"
        if obj.get("payment_status") not in ("paid", "no_payment_required"):
            return "awaiting payment"  # a delayed method: async_payment_succeeded follows
        credits = self._pack_credits(obj)
        if credits <= 0:
            return "ignored (no credits in the session)"
        reference = f"checkout:{obj.get('id')}"
        if await session.scalar(select(LedgerEntry.id).where(LedgerEntry.reference == reference)) is not None:
            return "already credited"  # completed and async_payment_succeeded both came
        session.add(grant_entry(account.id, credits, self._clock(), kind="purchase", reference=reference,
                                operation=f"pack:{_meta(obj).get('arclip_pack', '')}"))
        account.credits += credits
        if account.plan == "free" and "prepaid" in self.catalogue.plans:
            account.plan = "prepaid"
        return "credited"

    def _pack_credits(self, obj: dict[str, Any]) -> int:
        meta = _meta(obj)
        pack = self.catalogue.packs.get(str(meta.get("arclip_pack", "")))
        if pack is not None:
            return pack.credits
        try:
            return to_milli(meta.get("arclip_credits", 0))
        except BillingError:
            return 0

    def _plan_name(self, wanted: object, default: str) -> str:
        name = str(wanted) if wanted else default
        return name if name in self.catalogue.plans else default

    async def _subscription(self, session: AsyncSession, kind: str, created: int, obj: dict[str, Any]) -> str:
        account = await self._account(session, obj)
        if account is None:
            return "ignored (no such account)"
        if created < account.plan_event_at:
            return "ignored (older than the last plan change)"
        status = str(obj.get("status", ""))
        subscription_id = str(obj.get("id", ""))
        if kind != "customer.subscription.deleted" and status in _LIVE_SUBSCRIPTION:
            account.plan = self._plan_name(_meta(obj).get("arclip_plan"), "payg")
            account.stripe_subscription_id = subscription_id
            account.plan_event_at = created
            return f"plan {account.plan}"
        if kind == "customer.subscription.deleted" or status in _ENDED_SUBSCRIPTION:
            if account.stripe_subscription_id not in (None, subscription_id):
                return "ignored (not the account's subscription)"
            account.plan = "prepaid" if account.credits > 0 and "prepaid" in self.catalogue.plans else "free"
            account.stripe_subscription_id = None
            account.plan_event_at = created
            return f"plan {account.plan}"
        return f"ignored (status {status})"

    async def _suspend(self, session: AsyncSession, created: int, obj: dict[str, Any]) -> str:
        account = await self._account(session, obj)
        if account is None:
            return "ignored (no such account)"
        if created < account.suspension_event_at:
            return "ignored (older than the last change)"
        account.suspension_event_at = created
        if account.suspended_at is None:
            account.suspended_at = datetime.fromtimestamp(self._clock(), UTC)
            account.suspended_reason = "payment_failed"
        return "suspended"

    async def _restore(self, session: AsyncSession, created: int, obj: dict[str, Any]) -> str:
        account = await self._account(session, obj)
        if account is None:
            return "ignored (no such account)"
        if created < account.suspension_event_at:
            return "ignored (older than the last change)"
        account.suspension_event_at = created
        if account.suspended_at is not None and account.suspended_reason == "payment_failed":
            account.suspended_at = None
            account.suspended_reason = None
            return "restored"
        return "paid"
