"""The usage ledger: credits reserved before the work, settled after it, or given back.

``reserve`` takes the price off the balance and writes a ``reserved`` ledger row in
one transaction, which starts by locking the account row (an UPDATE: a row lock in
PostgreSQL, the write lock in SQLite) so concurrent reservations queue and none can
overdraw. ``settle`` marks the row ``charged`` (and queues pay-as-you-go usage for
Stripe in the same transaction); ``release`` marks it ``released`` and gives the
credits back. A reservation whose process died is released by ``release_stale``.
Test-mode keys reserve nothing: their rows record the usage at zero.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .accounts import Balance, Clock, balance_of, new_id, period_of
from .db import Account, LedgerEntry, UsageOutbox
from .errors import AccountNotFound, AccountSuspended, InsufficientCredits, echo
from .keys import KeyInfo
from .plans import Catalogue, credits_text, format_credits

log = logging.getLogger("arclip.billing")


@dataclass(frozen=True)
class Reservation:
    id: str
    account_id: str
    key_id: str
    mode: str
    operation: str
    price: int
    from_free: int
    from_credits: int
    metered: int
    period: str

    @property
    def amount(self) -> int:
        """Millicredits taken (0 for test keys)."""
        return self.from_free + self.from_credits + self.metered


@dataclass(frozen=True)
class Charge:
    ledger_id: str
    amount: int  # millicredits charged
    remaining: int  # millicredits left after it (see Balance.remaining)
    mode: str


def _split(balance: Balance, price: int, metered_allowed: bool) -> tuple[int, int, int] | None:
    """(from_free, from_credits, metered) for ``price``, or None when it cannot be paid."""
    if balance.prepaid >= price:
        from_free = min(balance.free_credits, price)
        return from_free, price - from_free, 0
    if metered_allowed and balance.metered_used + price <= balance.metered_limit:
        return 0, 0, price
    return None


class Ledger:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], catalogue: Catalogue | None = None, clock: Clock = time.time
    ) -> None:
        self._sessions = sessions
        self.catalogue = catalogue or Catalogue()
        self._clock = clock
        self.on_metered: Callable[[], None] | None = None  # the outbox worker's wake-up

    async def reserve(self, key: KeyInfo, price: int, *, operation: str, request_id: str | None = None) -> Reservation:
        """Take ``price`` millicredits from the key's account, or raise ``InsufficientCredits``."""
        now = self._clock()
        period = period_of(now)
        async with self._sessions.begin() as session:
            # Lock first, then read: concurrent reservations of one account queue here.
            locked = await session.execute(
                update(Account).where(Account.id == key.account_id).values(period=Account.period)
            )
            if locked.rowcount == 0:
                raise AccountNotFound(f"No account with id {key.account_id!r}.")
            account = (
                await session.scalars(
                    select(Account).where(Account.id == key.account_id).execution_options(populate_existing=True)
                )
            ).one()
            if account.suspended_at is not None:
                raise AccountSuspended("The account is suspended because a payment failed.")
            plan = self.catalogue.plan(account.plan)
            balance = balance_of(account, plan, period)
            if key.test:
                parts = (0, 0, 0)
            else:
                split = _split(balance, price, plan.metered)
                if split is None:
                    raise InsufficientCredits(
                        f"This request costs {credits_text(price)} and "
                        f"{format_credits(balance.remaining)} are left.",
                        required=price,
                        remaining=balance.remaining,
                    )
                parts = split
            account.period = period
            account.free_credits = balance.free_credits - parts[0]
            account.credits = balance.credits - parts[1]
            account.metered_used = balance.metered_used + parts[2]
            entry = LedgerEntry(
                id=new_id("led"),
                account_id=key.account_id,
                key_id=key.id,
                kind="usage",
                status="reserved",
                mode=key.mode,
                operation=operation,
                price=price,
                from_free=parts[0],
                from_credits=parts[1],
                metered=parts[2],
                period=period,
                request_id=request_id,
                created=now,
            )
            session.add(entry)
        return Reservation(
            id=entry.id,
            account_id=key.account_id,
            key_id=key.id,
            mode=key.mode,
            operation=operation,
            price=price,
            from_free=parts[0],
            from_credits=parts[1],
            metered=parts[2],
            period=period,
        )

    async def settle(
        self,
        reservation: Reservation,
        then: Callable[[AsyncSession, Charge], Awaitable[None]] | None = None,
    ) -> Charge:
        """Charge a reservation; ``then`` runs in the same transaction (the idempotent response)."""
        now = self._clock()
        async with self._sessions.begin() as session:
            settled = await session.execute(
                update(LedgerEntry)
                .where(LedgerEntry.id == reservation.id, LedgerEntry.status == "reserved")
                .values(status="charged", settled=now)
            )
            amount = reservation.amount
            if settled.rowcount == 0:
                status = await session.scalar(select(LedgerEntry.status).where(LedgerEntry.id == reservation.id))
                if status != "charged":
                    # Released as stale while the work ran (it outlived the reservation TTL):
                    # the credits went back, so this one is not charged.
                    log.warning("reservation %s was released before it settled; not charged", reservation.id)
                    amount = 0
            elif reservation.metered and reservation.mode == "live":
                session.add(
                    UsageOutbox(
                        ledger_id=reservation.id,
                        account_id=reservation.account_id,
                        amount=reservation.metered,
                        created=now,
                        next_attempt=now,
                        attempts=0,
                    )
                )
            account = await session.get(Account, reservation.account_id, populate_existing=True)
            assert account is not None
            balance = balance_of(account, self.catalogue.plan(account.plan), period_of(now))
            charge = Charge(ledger_id=reservation.id, amount=amount, remaining=balance.remaining, mode=reservation.mode)
            if then is not None:
                await then(session, charge)
        if charge.amount and reservation.metered and self.on_metered is not None:
            self.on_metered()
        return charge

    async def release(self, reservation: Reservation) -> bool:
        """Give a reservation's credits back; False when it was settled or released already."""
        async with self._sessions.begin() as session:
            return await self._release(session, reservation.id, reservation.account_id, reservation.period,
                                       reservation.from_free, reservation.from_credits, reservation.metered)

    async def _release(
        self, session: AsyncSession, ledger_id: str, account_id: str, period: str, free: int, credits: int, metered: int
    ) -> bool:
        released = await session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.id == ledger_id, LedgerEntry.status == "reserved")
            .values(status="released", settled=self._clock())
        )
        if released.rowcount == 0:
            return False
        same_month = Account.period == period
        # Free credits of a month that is over lapse rather than come back.
        await session.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(
                credits=Account.credits + credits,
                free_credits=case((same_month, Account.free_credits + free), else_=Account.free_credits),
                metered_used=case((same_month, Account.metered_used - metered), else_=Account.metered_used),
            )
        )
        return True

    async def release_stale(self, older_than: float) -> int:
        """Release reservations older than ``older_than`` seconds (their process died)."""
        cutoff = self._clock() - older_than
        async with self._sessions() as session:
            stale = (
                await session.scalars(
                    select(LedgerEntry).where(LedgerEntry.status == "reserved", LedgerEntry.created < cutoff).limit(500)
                )
            ).all()
        count = 0
        for row in stale:
            async with self._sessions.begin() as session:
                if await self._release(
                    session, row.id, row.account_id, row.period, row.from_free, row.from_credits, row.metered
                ):
                    count += 1
        if count:
            log.warning("released %d stale credit reservations", count)
        return count

    async def status(self, ledger_id: str) -> str | None:
        """A ledger row's status (``reserved``, ``charged``, ``released``); None when there is none."""
        async with self._sessions() as session:
            return await session.scalar(select(LedgerEntry.status).where(LedgerEntry.id == ledger_id))

    async def balance(self, account_id: str) -> Balance:
        async with self._sessions() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise AccountNotFound(f"No account with id {echo(account_id)!r}.")
            return balance_of(account, self.catalogue.plan(account.plan), period_of(self._clock()))
