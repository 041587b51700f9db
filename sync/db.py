"""Sync's tables: pairings, their codes and devices, and the hub's durable message log.

A separate ``Base`` keeps sync's metadata apart from billing's; the composition
root creates both schemas. Timestamps are stored as naive UTC and handed back
as aware UTC (SQLite keeps no zone), so comparisons behave the same on SQLite
and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python, naive UTC in the database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class PairingRow(Base):
    __tablename__ = "sync_pairings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # opened: when the newest code lapses; active: the end of the pairing's lifetime.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class PairingCodeRow(Base):
    """One claim code. Only its hash is kept; a spent or replaced code stays to say so."""

    __tablename__ = "sync_pairing_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    pairing_id: Mapped[str] = mapped_column(ForeignKey("sync_pairings.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeviceRow(Base):
    """A device in a pairing, with the sha256 of its bearer token."""

    __tablename__ = "sync_devices"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pairing_id: Mapped[str] = mapped_column(ForeignKey("sync_pairings.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StreamRow(Base):
    """The SQL hub's per-pairing stream head: the last id given out and how far history was trimmed."""

    __tablename__ = "sync_streams"

    pairing_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    trimmed_through: Mapped[int] = mapped_column(Integer, default=0)
    forget_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class MessageRow(Base):
    __tablename__ = "sync_messages"

    pairing_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_sync_messages_created_at", "created_at"),)


class CursorRow(Base):
    """The highest message id a device has acknowledged."""

    __tablename__ = "sync_cursors"

    pairing_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    acked_id: Mapped[int] = mapped_column(Integer, default=0)


# -- assets (sync/assets) ----------------------------------------------------------------------------
# Rebuilt from sync/assets' use of them after this file was overwritten; the assets owner should check them.


class AssetRow(Base):
    __tablename__ = "assets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pairing_id: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bbox_left: Mapped[int] = mapped_column(Integer)
    bbox_top: Mapped[int] = mapped_column(Integer)
    bbox_width: Mapped[int] = mapped_column(Integer)
    bbox_height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ScreenRow(Base):
    """The latest screen picture of a pairing."""

    __tablename__ = "screens"

    pairing_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(32))
    storage_key: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    fiducials: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class CaptureKeyRow(Base):
    """An ``Idempotency-Key`` of ``POST /v1/captures``: the capture it made, replayed for a while.

    ``pending`` while the first request runs; ``done`` with its ``asset_id`` once the desktop was told.
    """

    __tablename__ = "sync_capture_keys"

    pairing_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(8))  # pending | done
    asset_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
