"""Billing's tables.

Amounts are integer millicredits. Times that code compares (expiries, retry times)
are epoch seconds as floats, which SQLite and PostgreSQL compare alike; times people
read (created, last used) are timezone-aware datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Account(Base):
    """Who pays: a plan, balances, and the link to a Stripe customer."""

    __tablename__ = "billing_accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(32), default="free")
    # The calendar month (UTC, "YYYY-MM") the monthly figures below belong to;
    # the first charge of a new month resets them.
    period: Mapped[str] = mapped_column(String(7))
    free_credits: Mapped[int] = mapped_column(BigInteger, default=0)  # this month's grant, left
    credits: Mapped[int] = mapped_column(BigInteger, default=0)  # bought or granted; never lapse
    metered_used: Mapped[int] = mapped_column(BigInteger, default=0)  # pay-as-you-go usage this month
    metered_limit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # None: the plan's
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Stripe's ``created`` of the last event that changed the plan / the suspension:
    # an older event arriving late changes nothing.
    plan_event_at: Mapped[int] = mapped_column(BigInteger, default=0)
    suspension_event_at: Mapped[int] = mapped_column(BigInteger, default=0)
    suspended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    suspended_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("billing_accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # sha256 of the secret: a database leak reveals no usable key.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    last4: Mapped[str] = mapped_column(String(4))
    mode: Mapped[str] = mapped_column(String(4), default="live")  # live | test
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LedgerEntry(Base):
    """One row per charge (and per purchase or grant), written with the balance change.

    A usage row is ``reserved`` before the work (the balance already reduced), then
    ``charged`` after it succeeded or ``released`` (the balance given back) after it failed.
    """

    __tablename__ = "billing_ledger"
    __table_args__ = (Index("ix_billing_ledger_account_created", "account_id", "created"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("billing_accounts.id"))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # usage | purchase | grant
    status: Mapped[str] = mapped_column(String(16), index=True)  # reserved | charged | released
    mode: Mapped[str] = mapped_column(String(4), default="live")
    operation: Mapped[str] = mapped_column(String(64), default="")
    price: Mapped[int] = mapped_column(BigInteger, default=0)  # what the operation costs
    # Where the charge came from (all zero for test keys): usage takes these away,
    # purchases and grants add ``from_credits``.
    from_free: Mapped[int] = mapped_column(BigInteger, default=0)
    from_credits: Mapped[int] = mapped_column(BigInteger, default=0)
    metered: Mapped[int] = mapped_column(BigInteger, default=0)
    period: Mapped[str] = mapped_column(String(7))
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reference: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)  # e.g. a Checkout Session
    created: Mapped[float] = mapped_column(Float)
    settled: Mapped[float | None] = mapped_column(Float, nullable=True)


class UsageOutbox(Base):
    """Metered usage waiting to be reported to Stripe as a Billing Meter event."""

    __tablename__ = "billing_usage_outbox"

    ledger_id: Mapped[str] = mapped_column(ForeignKey("billing_ledger.id"), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)  # millicredits
    created: Mapped[float] = mapped_column(Float)  # the usage's time: the event's timestamp
    next_attempt: Mapped[float] = mapped_column(Float, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    reported: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    abandoned: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class IdempotencyRecord(Base):
    """The first response to an ``Idempotency-Key``, replayed for its lifetime."""

    __tablename__ = "billing_idempotency"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_billing_idempotency_scope_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(64))  # account and mode
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(8))  # pending | done
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    headers: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON object
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    media_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float, index=True)


class StripeEvent(Base):
    """Stripe webhook events already handled: a replay is acknowledged and ignored."""

    __tablename__ = "billing_stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(128))
    created: Mapped[int] = mapped_column(BigInteger)
    received: Mapped[float] = mapped_column(Float)
