"""The ai schema: configurations, the style index of past replies, suggestions, the LLM call
ledger, the audit of AI-written messages, and the outbox and inbox of its events.

Revision ID: 0001
Revises:
Create Date: 2026-11-30 19:40:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from huntaze_kit.outbox import create_outbox_tables, drop_outbox_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SUGGESTION_STATUSES = (
    "status IN ('pending', 'suggested', 'scheduled', 'sent', 'accepted', 'edited', 'rejected', "
    "'cancelled', 'handed_off', 'ignored')"
)


def _timestamp(name: str, *, nullable: bool = False) -> "sa.Column[Any]":
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=None if nullable else sa.text("now()"),
        nullable=nullable,
    )


def _count(name: str) -> "sa.Column[Any]":
    return sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)


def _label(name: str) -> "sa.Column[Any]":
    return sa.Column(name, sa.Text(), server_default="", nullable=False)


def upgrade() -> None:
    op.create_table(
        "configurations",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("creator_id", name=op.f("pk_configurations")),
        schema="ai",
    )
    op.create_table(
        "past_replies",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("fan_message", sa.Text(), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(
                "setweight(to_tsvector('simple', fan_message), 'A') || "
                "setweight(to_tsvector('simple', reply), 'B')",
                persisted=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_past_replies")),
        schema="ai",
    )
    op.create_index(
        "ix_past_replies_creator_id_created_at",
        "past_replies",
        ["creator_id", "created_at"],
        schema="ai",
    )
    op.create_index(
        "ix_past_replies_search_vector",
        "past_replies",
        ["search_vector"],
        postgresql_using="gin",
        schema="ai",
    )

    op.create_table(
        "suggestions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("incoming_text", sa.Text(), nullable=False),
        _timestamp("received_at"),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        _label("mode"),
        _label("text"),
        _label("handoff_reason"),
        _label("provider"),
        _label("model"),
        _label("prompt_fingerprint"),
        _count("input_tokens"),
        _count("output_tokens"),
        _count("cost_micros"),
        _count("latency_ms"),
        _label("fallback"),
        _timestamp("send_after", nullable=True),
        _timestamp("claimed_until", nullable=True),
        sa.Column("sent_message_id", sa.UUID(), nullable=True),
        _label("request_id"),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint(SUGGESTION_STATUSES, name=op.f("ck_suggestions_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suggestions")),
        sa.UniqueConstraint(
            "creator_id", "message_id", name=op.f("uq_suggestions_creator_id_message_id")
        ),
        schema="ai",
    )
    op.create_index(
        "ix_suggestions_creator_id_conversation_id_created_at",
        "suggestions",
        ["creator_id", "conversation_id", "created_at"],
        schema="ai",
    )
    op.create_index(
        "ix_suggestions_pending",
        "suggestions",
        ["created_at"],
        postgresql_where=sa.text("status = 'pending'"),
        schema="ai",
    )
    op.create_index(
        "ix_suggestions_scheduled",
        "suggestions",
        ["send_after"],
        postgresql_where=sa.text("status = 'scheduled'"),
        schema="ai",
    )
    op.create_table(
        "llm_calls",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.Text(), server_default="started", nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("prompt_fingerprint", sa.Text(), nullable=False),
        _label("text"),
        _label("error"),
        _count("input_tokens"),
        _count("output_tokens"),
        _count("cost_micros"),
        _count("latency_ms"),
        _timestamp("created_at"),
        _timestamp("completed_at", nullable=True),
        sa.CheckConstraint(
            "status IN ('started', 'completed', 'failed')", name=op.f("ck_llm_calls_status")
        ),
        sa.PrimaryKeyConstraint("creator_id", "message_id", name=op.f("pk_llm_calls")),
        schema="ai",
    )
    op.create_index(
        "ix_llm_calls_creator_id_created_at",
        "llm_calls",
        ["creator_id", "created_at"],
        schema="ai",
    )
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("suggestion_id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("sent_message_id", sa.UUID(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("prompt_fingerprint", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        _count("input_tokens"),
        _count("output_tokens"),
        _count("cost_micros"),
        _count("latency_ms"),
        sa.Column("approved_by", sa.Text(), nullable=False),
        sa.Column("edited", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
        schema="ai",
    )
    op.create_index(
        "ix_audit_entries_creator_id_conversation_id_created_at",
        "audit_entries",
        ["creator_id", "conversation_id", "created_at"],
        schema="ai",
    )
    op.create_index(
        "ix_audit_entries_creator_id_fan_id_created_at",
        "audit_entries",
        ["creator_id", "fan_id", "created_at"],
        schema="ai",
    )
    create_outbox_tables("ai")


def downgrade() -> None:
    drop_outbox_tables("ai")
    op.drop_table("audit_entries", schema="ai")
    op.drop_table("llm_calls", schema="ai")
    op.drop_table("suggestions", schema="ai")
    op.drop_table("past_replies", schema="ai")
    op.drop_table("configurations", schema="ai")
