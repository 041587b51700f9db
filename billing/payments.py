"""Stripe, behind a small seam: customers, Checkout, Billing Meter events; webhook signatures.

``StripeGateway`` is the real adapter over the official SDK (a ``stripe.StripeClient``
built by the app's lifespan, async calls). ``MemoryGateway`` stands in for tests that
need no HTTP. Stripe's errors never leave this module: a network failure, a 429 or a
5xx becomes ``PaymentsUnavailable`` (retry later), any other refusal ``PaymentsError``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .errors import (
    InvalidWebhook,
    PaymentsError,
    PaymentsNotConfigured,
    PaymentsUnavailable,
)
from .plans import CreditPack, format_credits

if TYPE_CHECKING:
    import stripe

log = logging.getLogger("arclip.billing")


@dataclass(frozen=True)
class CheckoutRequest:
    account_id: str
    customer_id: str
    success_url: str
    cancel_url: str
    pack: CreditPack | None = None  # a credit pack (mode=payment) ...
    subscription_price: str | None = None  # ... or a metered subscription (mode=subscription)
    plan: str | None = None  # the plan the subscription puts the account on


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str


@dataclass(frozen=True)
class MeterEvent:
    identifier: str  # the ledger row id: Stripe drops a second event with it
    customer_id: str
    value: int  # whole meter units (Stripe accepts whole numbers only)
    timestamp: int


class PaymentGateway(Protocol):
    async def create_customer(self, *, account_id: str, name: str, idempotency_key: str) -> str: ...

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession: ...

    async def report_usage(self, event: MeterEvent) -> None: ...


def meter_units(millicredits: int, unit: int) -> int:
    """Whole meter units for a charge, rounding a fraction up (``unit``: millicredits per unit)."""
    return math.ceil(millicredits / unit)


def checkout_params(request: CheckoutRequest) -> dict[str, Any]:
    metadata = {"arclip_account": request.account_id}
    params: dict[str, Any] = {
        "customer": request.customer_id,
        "client_reference_id": request.account_id,
        "success_url": request.success_url,
        "cancel_url": request.cancel_url,
    }
    if request.pack is not None:
        pack = request.pack
        metadata |= {"arclip_pack": pack.name, "arclip_credits": format_credits(pack.credits)}
        item: dict[str, Any] = {"quantity": 1}
        if pack.price_id:
            item["price"] = pack.price_id
        else:
            item["price_data"] = {
                "currency": pack.currency,
                "unit_amount": pack.amount,
                "product_data": {"name": f"arclip: {format_credits(pack.credits)} credits ({pack.name})"},
            }
        params |= {"mode": "payment", "line_items": [item], "payment_intent_data": {"metadata": dict(metadata)}}
    elif request.subscription_price:
        metadata |= {"arclip_plan": request.plan or "payg"}
        params |= {
            "mode": "subscription",
            "line_items": [{"price": request.subscription_price}],
            "subscription_data": {"metadata": dict(metadata)},
        }
    else:
        raise PaymentsError("A checkout needs a credit pack or a subscription price.")
    params["metadata"] = metadata
    return params


def verify_signature(payload: bytes, signature: str | None, secret: str | None, tolerance: int = 300) -> dict[str, Any]:
    """The event of a webhook body whose ``Stripe-Signature`` verifies with ``secret``."""
    import stripe

    if not secret:
        raise PaymentsNotConfigured("Stripe webhooks are not configured (ARCLIP_STRIPE_WEBHOOK_SECRET).")
    if not signature:
        raise InvalidWebhook("The Stripe-Signature header is missing.")
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret, tolerance=tolerance)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook("The Stripe-Signature header does not verify.") from exc
    except ValueError as exc:  # a body that is not JSON
        raise InvalidWebhook("The webhook body is not a Stripe event.") from exc
    data = event.to_dict()
    if not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str):
        raise InvalidWebhook("The webhook body is not a Stripe event.")
    return data


def _translate(exc: Exception) -> PaymentsError:
    import stripe

    if isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError)):
        return PaymentsUnavailable(f"Stripe is unreachable: {exc.__class__.__name__}")
    if isinstance(exc, stripe.StripeError):
        status = exc.http_status or 0
        if status >= 500 or status == 429 or isinstance(exc, stripe.APIError) and status == 0:
            return PaymentsUnavailable(f"Stripe failed ({status or 'no status'}): {exc.user_message or exc.code}")
        return PaymentsError(f"Stripe refused the request ({status}): {exc.user_message or exc.code or exc}")
    return PaymentsUnavailable(f"Stripe call failed: {exc.__class__.__name__}: {exc}")


def _is_duplicate_event(exc: Exception) -> bool:
    """Stripe's refusal of a meter event whose identifier it already has: already reported."""
    import stripe

    if not isinstance(exc, stripe.InvalidRequestError):
        return False
    text = f"{exc.code or ''} {exc.user_message or ''}".lower()
    return "identifier" in text and ("already" in text or "duplicate" in text or "exists" in text)


class StripeGateway:
    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        meter_event_name: str = "arclip_credits",
        meter_unit: int = 250,
    ) -> None:
        self._client = client
        self.meter_event_name = meter_event_name
        self.meter_unit = meter_unit

    async def create_customer(self, *, account_id: str, name: str, idempotency_key: str) -> str:
        try:
            customer = await self._client.v1.customers.create_async(
                {"name": name, "metadata": {"arclip_account": account_id}},
                {"idempotency_key": idempotency_key},
            )
        except Exception as exc:
            raise _translate(exc) from exc
        return str(customer.id)

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        try:
            session = await self._client.v1.checkout.sessions.create_async(checkout_params(request))  # type: ignore[arg-type]
        except Exception as exc:
            raise _translate(exc) from exc
        return CheckoutSession(id=str(session.id), url=str(session.url))

    async def report_usage(self, event: MeterEvent) -> None:
        try:
            await self._client.v1.billing.meter_events.create_async(
                {
                    "event_name": self.meter_event_name,
                    "identifier": event.identifier,
                    "timestamp": event.timestamp,
                    "payload": {"stripe_customer_id": event.customer_id, "value": str(event.value)},
                },
                # A retry after a lost response gets the first answer back, not a second event.
                {"idempotency_key": f"arclip-meter-{event.identifier}"},
            )
        except Exception as exc:
            if _is_duplicate_event(exc):
                log.info("meter event %s was reported already", event.identifier)
                return
            raise _translate(exc) from exc


@dataclass
class MemoryGateway:
    """Stripe in a dict, for tests: records what was asked; ``outage`` makes every call fail."""

    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkouts: list[CheckoutRequest] = field(default_factory=list)
    events: dict[str, MeterEvent] = field(default_factory=dict)
    calls: int = 0
    outage: Exception | None = None
    _idempotent: dict[str, str] = field(default_factory=dict)

    def _call(self) -> None:
        self.calls += 1
        if self.outage is not None:
            raise self.outage

    async def create_customer(self, *, account_id: str, name: str, idempotency_key: str) -> str:
        self._call()
        if idempotency_key in self._idempotent:
            return self._idempotent[idempotency_key]
        customer_id = f"cus_mem{len(self.customers) + 1}"
        self.customers[customer_id] = {"name": name, "metadata": {"arclip_account": account_id}}
        self._idempotent[idempotency_key] = customer_id
        return customer_id

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        self._call()
        checkout_params(request)
        self.checkouts.append(request)
        session_id = f"cs_mem{len(self.checkouts)}"
        return CheckoutSession(id=session_id, url=f"https://checkout.invalid/{session_id}")

    async def report_usage(self, event: MeterEvent) -> None:
        self._call()
        self.events.setdefault(event.identifier, event)

    def total(self, customer_id: str | None = None) -> int:
        return sum(e.value for e in self.events.values() if customer_id in (None, e.customer_id))
