"""The usage outbox: pay-as-you-go charges reported to Stripe as Billing Meter events.

A metered charge writes its outbox row in the transaction that settles it, so no
charge is ever lost between the database and Stripe. This worker (a background task
of the app) sends each row as a meter event whose ``identifier`` is the ledger row
id — Stripe refuses a second event with it, and the request's idempotency key makes
a retried request return the first answer — so retries, crashes and restarts never
count usage twice. Rows are claimed with a short lease, so replicas share the work.
When Stripe is down a row waits with exponential back-off: an outage only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .accounts import Clock
from .db import UsageOutbox
from .errors import BillingError, PaymentsUnavailable
from .payments import MeterEvent, PaymentGateway, meter_units

log = logging.getLogger("arclip.billing")

# Stripe takes meter events up to 35 days old; past that a row cannot be reported.
MAX_EVENT_AGE = 35 * 24 * 3600 - 3600


class UsageReporter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        gateway: PaymentGateway,
        customer_of: Callable[[str], Awaitable[str]],
        *,
        meter_unit: int = 250,
        interval: float = 5.0,
        batch: int = 100,
        lease: float = 60.0,
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
        clock: Clock = time.time,
    ) -> None:
        self._sessions = sessions
        self._gateway = gateway
        self._customer_of = customer_of  # account id -> Stripe customer id (created when missing)
        self.meter_unit = meter_unit
        self.interval = interval
        self.batch = batch
        self.lease = lease
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="arclip-usage-outbox")

    def wake(self) -> None:
        """New usage is waiting: report it now instead of at the next tick."""
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                reported = await self.run_once()
            except Exception:  # a database hiccup: log, and try again next tick
                log.exception("usage outbox round failed")
                reported = 0
            if reported >= self.batch:
                continue  # more are waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()

    def _backoff(self, attempts: int) -> float:
        delay = min(self.max_backoff, self.base_backoff * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.8, 1.0)

    async def run_once(self) -> int:
        """Report what is due; return how many rows were reported."""
        now = self._clock()
        due = (
            UsageOutbox.reported.is_(None),
            UsageOutbox.abandoned.is_(None),
            UsageOutbox.next_attempt <= now,
            or_(UsageOutbox.lease_until.is_(None), UsageOutbox.lease_until <= now),
        )
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(UsageOutbox.ledger_id, UsageOutbox.account_id, UsageOutbox.amount, UsageOutbox.created,
                           UsageOutbox.attempts)
                    .where(*due)
                    .order_by(UsageOutbox.created)
                    .limit(self.batch)
                )
            ).all()
        reported = 0
        for ledger_id, account_id, amount, created, attempts in rows:
            if not await self._claim(ledger_id):
                continue  # another replica has it
            if created < self._clock() - MAX_EVENT_AGE:
                await self._finish(ledger_id, abandoned=True, error="older than Stripe accepts (35 days)")
                log.error("usage %s is too old for Stripe and was abandoned", ledger_id)
                continue
            try:
                customer = await self._customer_of(account_id)
                await self._gateway.report_usage(
                    MeterEvent(
                        identifier=ledger_id,
                        customer_id=customer,
                        value=meter_units(amount, self.meter_unit),
                        timestamp=int(created),
                    )
                )
            except PaymentsUnavailable as exc:
                await self._retry(ledger_id, attempts + 1, exc.detail)
                log.warning("Stripe unavailable; usage reporting paused: %s", exc.detail)
                break  # an outage: leave the rest for later
            except BillingError as exc:
                await self._retry(ledger_id, attempts + 1, exc.detail)
                log.error("Stripe refused usage %s: %s", ledger_id, exc.detail)
                continue
            await self._finish(ledger_id)
            reported += 1
        return reported

    async def _claim(self, ledger_id: str) -> bool:
        now = self._clock()
        async with self._sessions.begin() as session:
            claimed = await session.execute(
                update(UsageOutbox)
                .where(
                    UsageOutbox.ledger_id == ledger_id,
                    UsageOutbox.reported.is_(None),
                    or_(UsageOutbox.lease_until.is_(None), UsageOutbox.lease_until <= now),
                )
                .values(lease_until=now + self.lease)
            )
            return bool(claimed.rowcount)

    async def _finish(self, ledger_id: str, *, abandoned: bool = False, error: str | None = None) -> None:
        now = self._clock()
        values: dict[str, object] = {"lease_until": None, "last_error": error}
        values["abandoned" if abandoned else "reported"] = now
        async with self._sessions.begin() as session:
            await session.execute(update(UsageOutbox).where(UsageOutbox.ledger_id == ledger_id).values(**values))

    async def _retry(self, ledger_id: str, attempts: int, error: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(UsageOutbox)
                .where(UsageOutbox.ledger_id == ledger_id)
                .values(
                    attempts=attempts,
                    next_attempt=self._clock() + self._backoff(attempts),
                    lease_until=None,
                    last_error=error[:1000],
                )
            )

    async def pending(self) -> int:
        """Rows not yet reported (nor abandoned)."""
        async with self._sessions() as session:
            return int(
                await session.scalar(
                    select(func.count())
                    .select_from(UsageOutbox)
                    .where(UsageOutbox.reported.is_(None), UsageOutbox.abandoned.is_(None))
                )
                or 0
            )
