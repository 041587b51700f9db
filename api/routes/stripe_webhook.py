"""``POST /v1/stripe/webhook``: Stripe's events, verified on the raw body and applied once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from ..deps import BillingDep

router = APIRouter(tags=["billing"])


@router.post("/v1/stripe/webhook", include_in_schema=False)
async def stripe_webhook(
    request: Request,
    billing: BillingDep,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> dict[str, object]:
    # The signature covers the exact bytes Stripe sent: never parse before verifying.
    event = billing.verify_webhook(await request.body(), stripe_signature)
    outcome = await billing.webhooks.handle(event)
    # 2xx for replays and ignored types too: Stripe stops retrying them.
    return {"received": True, "id": event["id"], "outcome": outcome}
