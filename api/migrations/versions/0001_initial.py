"""The initial schema: every table that ``create_all`` made before migrations.

A database made that way is adopted by running this revision on it (see
api.migrations), so this must stay exactly what those releases created.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# sync.db.UTCDateTime stores naive UTC in a plain DateTime; a revision names the
# column type, never the app's Python type, so later code changes cannot alter it.
UTCDateTime = sa.DateTime


class Index(NamedTuple):
    name: str
    columns: list[str]
    unique: bool = False


def _unless_present(existing: list[str]):  # type: ignore[no-untyped-def]
    """``create(table, *columns_and_constraints, *indexes)``, skipping a table the database has.

    A database from before migrations had its tables made by ``create_all``, which
    also added tables new in a release to an older database at start-up. Adopting
    one (api.migrations checks that the tables it has are these) runs this revision:
    the tables it lacks are made, as ``create_all`` would have made them.
    """

    def create(name: str, *elements: Any) -> None:
        if name in existing:
            return
        op.create_table(name, *(e for e in elements if not isinstance(e, Index)))
        for index in (e for e in elements if isinstance(e, Index)):
            op.create_index(index.name, name, index.columns, unique=index.unique)

    return create


def upgrade() -> None:
    create = _unless_present(sa.inspect(op.get_bind()).get_table_names())
    # -- billing ---------------------------------------------------------------------------------------
    create(
        "billing_accounts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("plan", sa.String(32), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("free_credits", sa.BigInteger(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("metered_used", sa.BigInteger(), nullable=False),
        sa.Column("metered_limit", sa.BigInteger(), nullable=True),
        sa.Column("stripe_customer_id", sa.String(64), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(64), nullable=True),
        sa.Column("plan_event_at", sa.BigInteger(), nullable=False),
        sa.Column("suspension_event_at", sa.BigInteger(), nullable=False),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("suspended_reason", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stripe_customer_id"),
    )
    create(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("mode", sa.String(4), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["billing_accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        Index("ix_api_keys_account_id", ["account_id"]),
        Index("ix_api_keys_secret_hash", ["secret_hash"], unique=True),
    )
    create(
        "billing_ledger",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(4), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("from_free", sa.BigInteger(), nullable=False),
        sa.Column("from_credits", sa.BigInteger(), nullable=False),
        sa.Column("metered", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("reference", sa.String(128), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("settled", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["billing_accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference"),
        Index("ix_billing_ledger_account_created", ["account_id", "created"]),
        Index("ix_billing_ledger_status", ["status"]),
    )
    create(
        "billing_usage_outbox",
        sa.Column("ledger_id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("next_attempt", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("reported", sa.Float(), nullable=True),
        sa.Column("abandoned", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["ledger_id"], ["billing_ledger.id"]),
        sa.PrimaryKeyConstraint("ledger_id"),
        Index("ix_billing_usage_outbox_next_attempt", ["next_attempt"]),
        Index("ix_billing_usage_outbox_reported", ["reported"]),
    )
    create(
        "billing_idempotency",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("media_type", sa.String(128), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "key", name="uq_billing_idempotency_scope_key"),
        Index("ix_billing_idempotency_expires", ["expires"]),
    )
    create(
        "billing_stripe_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )

    # -- sync: pairings and the hub --------------------------------------------------------------------
    create(
        "sync_pairings",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        Index("ix_sync_pairings_expires_at", ["expires_at"]),
        Index("ix_sync_pairings_state", ["state"]),
    )
    create(
        "sync_pairing_codes",
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["pairing_id"], ["sync_pairings.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("code_hash"),
        Index("ix_sync_pairing_codes_expires_at", ["expires_at"]),
        Index("ix_sync_pairing_codes_pairing_id", ["pairing_id"]),
    )
    create(
        "sync_devices",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["pairing_id"], ["sync_pairings.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        Index("ix_sync_devices_pairing_id", ["pairing_id"]),
        Index("ix_sync_devices_token_hash", ["token_hash"], unique=True),
    )
    create(
        "sync_streams",
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("trimmed_through", sa.Integer(), nullable=False),
        sa.Column("forget_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("pairing_id"),
        Index("ix_sync_streams_forget_at", ["forget_at"]),
    )
    create(
        "sync_messages",
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pairing_id", "id"),
        Index("ix_sync_messages_created_at", ["created_at"]),
    )
    create(
        "sync_cursors",
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(32), nullable=False),
        sa.Column("acked_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("pairing_id", "device_id"),
    )

    # -- sync: assets, screens, capture keys -----------------------------------------------------------
    create(
        "assets",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("pairing_id", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(512), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("bbox_left", sa.Integer(), nullable=False),
        sa.Column("bbox_top", sa.Integer(), nullable=False),
        sa.Column("bbox_width", sa.Integer(), nullable=False),
        sa.Column("bbox_height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        Index("ix_assets_expires_at", ["expires_at"]),
        Index("ix_assets_pairing_id", ["pairing_id"]),
    )
    create(
        "screens",
        sa.Column("pairing_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("storage_key", sa.String(512), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("fiducials", sa.Boolean(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pairing_id"),
        Index("ix_screens_updated_at", ["updated_at"]),
    )
    create(
        "sync_capture_keys",
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("asset_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pairing_id", "key"),
        Index("ix_sync_capture_keys_expires_at", ["expires_at"]),
    )


def downgrade() -> None:
    # Dependents first; a table's indexes go with it.
    for table in (
        "sync_capture_keys",
        "screens",
        "assets",
        "sync_cursors",
        "sync_messages",
        "sync_streams",
        "sync_devices",
        "sync_pairing_codes",
        "sync_pairings",
        "billing_stripe_events",
        "billing_idempotency",
        "billing_usage_outbox",
        "billing_ledger",
        "api_keys",
        "billing_accounts",
    ):
        op.drop_table(table)
