"""Accounts: who pays. A plan, this month's free credits, bought credits, pay-as-you-go usage."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .db import Account, ApiKey, LedgerEntry, utcnow
from .errors import AccountNotFound, InvalidAmount, echo
from .plans import Catalogue, Plan

Clock = Callable[[], float]


def period_of(ts: float) -> str:
    """The calendar month (UTC) of an epoch time: ``"2025-06"``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


def period_bounds(period: str) -> tuple[float, float]:
    """Epoch seconds of the first instant of ``period`` and of the next month."""
    year, month = (int(p) for p in period.split("-"))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; ours are all UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass(frozen=True)
class Balance:
    """An account's credits as of now (a new month's grant shown before its first charge)."""

    plan: str
    period: str
    free_credits: int  # millicredits left of this month's grant
    credits: int  # bought or granted millicredits
    metered_used: int  # pay-as-you-go millicredits used this month
    metered_limit: int  # 0 when the plan is not metered

    @property
    def prepaid(self) -> int:
        return self.free_credits + self.credits

    @property
    def remaining(self) -> int:
        """What may still be spent: the balance, plus the pay-as-you-go headroom."""
        return self.prepaid + max(0, self.metered_limit - self.metered_used)


def balance_of(row: Account, plan: Plan, period: str) -> Balance:
    fresh = row.period != period
    limit = (row.metered_limit if row.metered_limit is not None else plan.metered_limit) if plan.metered else 0
    return Balance(
        plan=row.plan,
        period=period,
        free_credits=plan.monthly_credits if fresh else row.free_credits,
        credits=row.credits,
        metered_used=0 if fresh else row.metered_used,
        metered_limit=limit,
    )


@dataclass(frozen=True)
class AccountInfo:
    id: str
    name: str
    plan: str
    balance: Balance
    stripe_customer_id: str | None
    suspended: bool
    suspended_reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class Usage:
    """What an account's keys used in a period, live and test apart."""

    period: str
    requests: int  # live, charged
    credits: int  # millicredits charged (live)
    metered: int  # of which pay-as-you-go
    by_operation: dict[str, int]  # live requests per operation
    test_requests: int  # test-mode requests (never charged)


def new_account(name: str, plan: Plan, credits: int, now: float) -> Account:
    if credits < 0:
        raise InvalidAmount("Starting credits cannot be negative.")
    return Account(
        id=new_id("acct"),
        name=name,
        plan=plan.name,
        period=period_of(now),
        free_credits=plan.monthly_credits,
        credits=credits,
        metered_used=0,
        created_at=datetime.fromtimestamp(now, UTC),
    )


def grant_entry(account_id: str, credits: int, now: float, *, kind: str = "grant", reference: str | None = None,
                operation: str = "") -> LedgerEntry:
    return LedgerEntry(
        id=new_id("led"),
        account_id=account_id,
        kind=kind,
        status="charged",
        mode="live",
        operation=operation,
        price=0,
        from_credits=credits,
        period=period_of(now),
        reference=reference,
        created=now,
        settled=now,
    )


class AccountService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], catalogue: Catalogue | None = None, clock: Clock = time.time
    ) -> None:
        self._sessions = sessions
        self.catalogue = catalogue or Catalogue()
        self._clock = clock

    def _info(self, row: Account) -> AccountInfo:
        plan = self.catalogue.plan(row.plan)
        return AccountInfo(
            id=row.id,
            name=row.name,
            plan=row.plan,
            balance=balance_of(row, plan, period_of(self._clock())),
            stripe_customer_id=row.stripe_customer_id,
            suspended=row.suspended_at is not None,
            suspended_reason=row.suspended_reason,
            created_at=aware(row.created_at),  # type: ignore[arg-type]
        )

    async def create(self, name: str, plan: str = "free", credits: int = 0) -> AccountInfo:
        """A new account; ``credits`` (millicredits) are granted on top of the plan's monthly ones."""
        now = self._clock()
        row = new_account(name, self.catalogue.plan(plan), credits, now)
        async with self._sessions.begin() as session:
            session.add(row)
            await session.flush()
            if credits:
                session.add(grant_entry(row.id, credits, now, operation="initial"))
        return self._info(row)

    async def get(self, account_id: str) -> AccountInfo:
        async with self._sessions() as session:
            row = await session.get(Account, account_id)
            if row is None:
                raise AccountNotFound(f"No account with id {echo(account_id)!r}.")
            return self._info(row)

    async def list(self) -> list[AccountInfo]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(Account).order_by(Account.created_at))).all()
        return [self._info(r) for r in rows]

    async def grant(self, account_id: str, credits: int, *, reference: str | None = None) -> AccountInfo:
        """Add credits that never lapse (an operator's grant), with their ledger row."""
        if credits <= 0:
            raise InvalidAmount("A grant must be a positive number of credits.")
        now = self._clock()
        async with self._sessions.begin() as session:
            changed = await session.execute(
                update(Account).where(Account.id == account_id).values(credits=Account.credits + credits)
            )
            if changed.rowcount == 0:
                raise AccountNotFound(f"No account with id {echo(account_id)!r}.")
            session.add(grant_entry(account_id, credits, now, reference=reference, operation="grant"))
            row = await session.get(Account, account_id, populate_existing=True)
            assert row is not None
            return self._info(row)

    async def set_plan(self, account_id: str, plan: str) -> AccountInfo:
        self.catalogue.plan(plan)
        async with self._sessions.begin() as session:
            changed = await session.execute(update(Account).where(Account.id == account_id).values(plan=plan))
            if changed.rowcount == 0:
                raise AccountNotFound(f"No account with id {echo(account_id)!r}.")
            row = await session.get(Account, account_id, populate_existing=True)
            assert row is not None
            return self._info(row)

    async def set_customer(self, account_id: str, customer_id: str) -> str:
        """Link a Stripe customer unless one is linked already; return the linked one."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(Account)
                .where(Account.id == account_id, Account.stripe_customer_id.is_(None))
                .values(stripe_customer_id=customer_id)
            )
            row = await session.get(Account, account_id, populate_existing=True)
            if row is None:
                raise AccountNotFound(f"No account with id {echo(account_id)!r}.")
            return row.stripe_customer_id or customer_id

    async def usage(self, account_id: str, period: str | None = None) -> Usage:
        period = period or period_of(self._clock())
        start, end = period_bounds(period)
        in_period = (
            LedgerEntry.account_id == account_id,
            LedgerEntry.kind == "usage",
            LedgerEntry.status == "charged",
            LedgerEntry.created >= start,
            LedgerEntry.created < end,
        )
        charged = LedgerEntry.from_free + LedgerEntry.from_credits + LedgerEntry.metered
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        LedgerEntry.mode,
                        LedgerEntry.operation,
                        func.count(),
                        func.coalesce(func.sum(charged), 0),
                        func.coalesce(func.sum(LedgerEntry.metered), 0),
                    )
                    .where(*in_period)
                    .group_by(LedgerEntry.mode, LedgerEntry.operation)
                )
            ).all()
        live = [r for r in rows if r[0] == "live"]
        return Usage(
            period=period,
            requests=sum(r[2] for r in live),
            credits=sum(int(r[3]) for r in live),
            metered=sum(int(r[4]) for r in live),
            by_operation={r[1]: r[2] for r in live},
            test_requests=sum(r[2] for r in rows if r[0] == "test"),
        )

    async def key_count(self, account_id: str) -> int:
        async with self._sessions() as session:
            return int(
                await session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.account_id == account_id))
                or 0
            )


__all__ = [
    "AccountInfo",
    "AccountService",
    "Balance",
    "Usage",
    "aware",
    "balance_of",
    "new_account",
    "period_bounds",
    "period_of",
    "utcnow",
]
