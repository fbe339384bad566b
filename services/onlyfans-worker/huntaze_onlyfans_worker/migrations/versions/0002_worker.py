"""Connections, sync cursors, send attempts, leases, and the outbox and inbox of the worker.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 19:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from huntaze_kit.outbox import create_outbox_tables, drop_outbox_tables

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "onlyfans"


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[sa.DateTime]:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=True)
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("platform_user_id", sa.Text(), server_default="", nullable=False),
        sa.Column("username", sa.Text(), server_default="", nullable=False),
        _timestamp("connected_at", nullable=True),
        _timestamp("last_synced_at", nullable=True),
        _timestamp("backoff_until", nullable=True),
        _timestamp("updated_at"),
        sa.CheckConstraint(
            "state IN ('disconnected', 'connected', 'needs_otp', 'needs_session_import', "
            "'failed', 'needs_attention')",
            name=op.f("ck_connections_state"),
        ),
        sa.PrimaryKeyConstraint("creator_id", name=op.f("pk_connections")),
        schema=SCHEMA,
    )
    op.create_table(
        "sync_cursors",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("position", sa.Text(), nullable=False),
        _timestamp("updated_at"),
        sa.CheckConstraint("kind IN ('chat', 'transactions')", name=op.f("ck_sync_cursors_kind")),
        sa.PrimaryKeyConstraint("creator_id", "kind", "key", name=op.f("pk_sync_cursors")),
        schema=SCHEMA,
    )
    op.create_table(
        "send_attempts",
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("platform_fan_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("platform_message_id", sa.Text(), server_default="", nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint(
            "state IN ('sending', 'sent', 'failed')", name=op.f("ck_send_attempts_state")
        ),
        sa.PrimaryKeyConstraint("idempotency_key", name=op.f("pk_send_attempts")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_send_attempts_creator_id_created_at"),
        "send_attempts",
        ["creator_id", "created_at"],
        schema=SCHEMA,
    )
    op.create_table(
        "leases",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", name=op.f("pk_leases")),
        schema=SCHEMA,
    )
    create_outbox_tables(SCHEMA)


def downgrade() -> None:
    drop_outbox_tables(SCHEMA)
    for table in ("leases", "send_attempts", "sync_cursors", "connections"):
        op.drop_table(table, schema=SCHEMA)
