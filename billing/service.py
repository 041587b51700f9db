"""Billing's parts, put together: what the app builds at start-up and routes use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .accounts import AccountService, Clock
from .checkout import CheckoutService
from .idempotency import IdempotencyStore
from .keys import ApiKeyService, KeyInfo
from .ledger import Ledger
from .metering import Metering
from .outbox import UsageReporter
from .payments import PaymentGateway, verify_signature
from .plans import Catalogue
from .ratelimit import Limit, LimiterStore, MemoryLimiterStore, RateLimiter
from .webhooks import WebhookHandler

log = logging.getLogger("arclip.billing")


@dataclass
class BillingConfig:
    idempotency_ttl: float = 24 * 3600
    reservation_ttl: float = 15 * 60  # a reservation older than this belonged to a dead process
    maintenance_interval: float = 60.0
    key_touch_interval: float = 60.0  # last_used_at is written at most this often per key
    meter_unit: int = 250  # millicredits per Stripe meter unit (a preview)
    outbox_interval: float = 5.0
    payg_price: str | None = None
    webhook_secret: str | None = None


@dataclass
class Billing:
    catalogue: Catalogue
    keys: ApiKeyService
    accounts: AccountService
    ledger: Ledger
    idempotency: IdempotencyStore
    metering: Metering
    limiter: RateLimiter
    webhooks: WebhookHandler
    config: BillingConfig
    gateway: PaymentGateway | None = None
    checkout: CheckoutService | None = None
    reporter: UsageReporter | None = None
    _maintenance: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        sessions: async_sessionmaker[AsyncSession],
        *,
        catalogue: Catalogue | None = None,
        limiter_store: LimiterStore | None = None,
        gateway: PaymentGateway | None = None,
        config: BillingConfig | None = None,
        clock: Clock = time.time,
    ) -> Billing:
        catalogue = catalogue or Catalogue()
        config = config or BillingConfig()
        accounts = AccountService(sessions, catalogue, clock)
        ledger = Ledger(sessions, catalogue, clock)
        idempotency = IdempotencyStore(
            sessions, ttl=config.idempotency_ttl, pending_ttl=config.reservation_ttl, clock=clock
        )
        checkout = reporter = None
        if gateway is not None:
            checkout = CheckoutService(gateway, accounts, payg_price=config.payg_price)
            reporter = UsageReporter(
                sessions, gateway, checkout.customer_of, meter_unit=config.meter_unit,
                interval=config.outbox_interval, clock=clock,
            )
            ledger.on_metered = reporter.wake
        return cls(
            catalogue=catalogue,
            keys=ApiKeyService(sessions, catalogue, clock=clock, touch_interval=config.key_touch_interval),
            accounts=accounts,
            ledger=ledger,
            idempotency=idempotency,
            metering=Metering(ledger, idempotency),
            limiter=RateLimiter(limiter_store or MemoryLimiterStore()),
            webhooks=WebhookHandler(sessions, catalogue, clock),
            config=config,
            gateway=gateway,
            checkout=checkout,
            reporter=reporter,
        )

    def verify_webhook(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event of a webhook request, checked with ``stripe.Webhook.construct_event``."""
        return verify_signature(payload, signature, self.config.webhook_secret)

    def limit_for(self, key: KeyInfo) -> Limit:
        plan = self.catalogue.plan(key.plan)
        return Limit(rate=plan.rate, burst=plan.burst, concurrency=plan.concurrency)

    async def maintain(self) -> None:
        """Finish undos a database fault interrupted; give back the credits of dead requests;
        forget expired idempotent responses."""
        await self.metering.retry_undos()
        await self.ledger.release_stale(self.config.reservation_ttl)
        await self.idempotency.sweep()

    def start(self) -> None:
        if self.reporter is not None:
            self.reporter.start()
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(self._maintain_forever(), name="arclip-billing-maintenance")

    async def _maintain_forever(self) -> None:
        while True:
            try:
                await self.maintain()
            except Exception:
                log.exception("billing maintenance failed")
            await asyncio.sleep(self.config.maintenance_interval)

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        if self.reporter is not None:
            await self.reporter.close()
        await self.limiter.close()
