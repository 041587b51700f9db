"""Part of the composition root: billing built from settings.

The rate limiter gets its own Redis client (short timeouts: a slow Redis counts as
a failed one, and the limiter limits in process until it answers again); Stripe gets
a ``stripe.StripeClient`` with an async HTTP client, pointed at ``ARCLIP_STRIPE_API_BASE`` when set. Without
``ARCLIP_STRIPE_API_KEY`` there is no Stripe: credits and the ledger work, Checkout
is refused, and metered usage waits in the outbox until Stripe is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import (
    Billing,
    BillingConfig,
    Catalogue,
    MemoryLimiterStore,
    RedisLimiterStore,
    StripeGateway,
    to_milli,
)
from billing.ratelimit import LimiterStore

from .settings import Settings

log = logging.getLogger("arclip")


@dataclass
class BillingStack:
    billing: Billing
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        await self.billing.close()
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:  # shutting down: log and go on
                log.exception("closing a billing client failed")


def catalogue(settings: Settings) -> Catalogue:
    return Catalogue.build(settings.plans, settings.credit_packs)


def billing_config(settings: Settings) -> BillingConfig:
    secret = settings.stripe_webhook_secret
    return BillingConfig(
        idempotency_ttl=settings.idempotency_ttl_s,
        reservation_ttl=settings.reservation_ttl_s,
        key_touch_interval=settings.key_touch_interval_s,
        meter_unit=to_milli(settings.stripe_meter_unit),
        outbox_interval=settings.usage_report_interval_s,
        payg_price=settings.stripe_payg_price,
        webhook_secret=secret.get_secret_value() if secret else None,
    )


def stripe_gateway(settings: Settings) -> tuple[StripeGateway, Callable[[], Awaitable[None]]] | None:
    if settings.stripe_api_key is None:
        return None
    import stripe

    http_client = stripe.HTTPXClient(timeout=settings.stripe_timeout_s)
    base = settings.stripe_api_base.rstrip("/") if settings.stripe_api_base else None
    client = stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": base, "connect": base, "files": base, "meter_events": base} if base else None,
        http_client=http_client,
        max_network_retries=settings.stripe_max_retries,
    )
    gateway = StripeGateway(
        client, meter_event_name=settings.stripe_meter_event, meter_unit=to_milli(settings.stripe_meter_unit)
    )
    return gateway, http_client.close_async


def limiter_store(settings: Settings) -> tuple[LimiterStore, str]:
    if settings.redis_url:
        from redis.asyncio import Redis

        timeout = settings.ratelimit_redis_timeout_s
        redis = Redis.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=10
        )
        return RedisLimiterStore(redis), "Redis"
    return MemoryLimiterStore(), "in process"


def start_billing(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> BillingStack:
    store, where = limiter_store(settings)
    stripe_parts = stripe_gateway(settings)
    billing = Billing.build(
        sessions,
        catalogue=catalogue(settings),
        limiter_store=store,
        gateway=stripe_parts[0] if stripe_parts else None,
        config=billing_config(settings),
    )
    billing.start()
    log.info("rate limits %s; Stripe %s", where, "on" if stripe_parts else "off (usage kept for later)")
    return BillingStack(billing, [stripe_parts[1]] if stripe_parts else [])
