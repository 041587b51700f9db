"""The initial schema: every table that ``create_all`` made before migrations.

A database made that way is stamped with this revision (see api.migrations),
so this must stay exactly what those releases created.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# sync.db.UTCDateTime stores naive UTC in a plain DateTime; a revision names the
# column type, never the app's Python type, so later code changes cannot alter it.
UTCDateTime = sa.DateTime


def upgrade() -> None:
    # -- billing ---------------------------------------------------------------------------------------
    op.create_table(
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
    op.create_table(
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
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])
    op.create_index("ix_api_keys_secret_hash", "api_keys", ["secret_hash"], unique=True)
    op.create_table(
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
    )
    op.create_index("ix_billing_ledger_account_created", "billing_ledger", ["account_id", "created"])
    op.create_index("ix_billing_ledger_status", "billing_ledger", ["status"])
    op.create_table(
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
    )
    op.create_index("ix_billing_usage_outbox_next_attempt", "billing_usage_outbox", ["next_attempt"])
    op.create_index("ix_billing_usage_outbox_reported", "billing_usage_outbox", ["reported"])
    op.create_table(
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
    )
    op.create_index("ix_billing_idempotency_expires", "billing_idempotency", ["expires"])
    op.create_table(
        "billing_stripe_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )

    # -- sync: pairings and the hub --------------------------------------------------------------------
    op.create_table(
        "sync_pairings",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sync_pairings_expires_at", "sync_pairings", ["expires_at"])
    op.create_index("ix_sync_pairings_state", "sync_pairings", ["state"])
    op.create_table(
        "sync_pairing_codes",
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["pairing_id"], ["sync_pairings.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_index("ix_sync_pairing_codes_expires_at", "sync_pairing_codes", ["expires_at"])
    op.create_index("ix_sync_pairing_codes_pairing_id", "sync_pairing_codes", ["pairing_id"])
    op.create_table(
        "sync_devices",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["pairing_id"], ["sync_pairings.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sync_devices_pairing_id", "sync_devices", ["pairing_id"])
    op.create_index("ix_sync_devices_token_hash", "sync_devices", ["token_hash"], unique=True)
    op.create_table(
        "sync_streams",
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("trimmed_through", sa.Integer(), nullable=False),
        sa.Column("forget_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("pairing_id"),
    )
    op.create_index("ix_sync_streams_forget_at", "sync_streams", ["forget_at"])
    op.create_table(
        "sync_messages",
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pairing_id", "id"),
    )
    op.create_index("ix_sync_messages_created_at", "sync_messages", ["created_at"])
    op.create_table(
        "sync_cursors",
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(32), nullable=False),
        sa.Column("acked_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("pairing_id", "device_id"),
    )

    # -- sync: assets, screens, capture keys -----------------------------------------------------------
    op.create_table(
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
    )
    op.create_index("ix_assets_expires_at", "assets", ["expires_at"])
    op.create_index("ix_assets_pairing_id", "assets", ["pairing_id"])
    op.create_table(
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
    )
    op.create_index("ix_screens_updated_at", "screens", ["updated_at"])
    op.create_table(
        "sync_capture_keys",
        sa.Column("pairing_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("asset_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pairing_id", "key"),
    )
    op.create_index("ix_sync_capture_keys_expires_at", "sync_capture_keys", ["expires_at"])


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
