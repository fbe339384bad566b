"""The crm schema: fans, conversations, messages, purchases, quick replies, fan lists,
inbox events, and the outbox and inbox of its events.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 06:12:18.105498
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from huntaze_kit.outbox import create_outbox_tables, drop_outbox_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FANS_SEARCH_FUNCTION = """
CREATE FUNCTION crm.fans_search_vector() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  NEW.search_vector :=
    setweight(to_tsvector('simple', NEW.display_name || ' ' || NEW.handle), 'A')
    || setweight(to_tsvector('simple', array_to_string(NEW.tags, ' ')), 'B')
    || setweight(to_tsvector('simple', NEW.email || ' ' || NEW.notes), 'C');
  RETURN NEW;
END
$body$
"""


def upgrade() -> None:
    op.create_table(
        "fan_lists",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("segment", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'dynamic') = (segment IS NOT NULL)", name=op.f("ck_fan_lists_segment")
        ),
        sa.CheckConstraint("kind IN ('static', 'dynamic')", name=op.f("ck_fan_lists_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fan_lists")),
        sa.UniqueConstraint("creator_id", "id", name=op.f("uq_fan_lists_creator_id_id")),
        schema="crm",
    )
    op.create_index(
        "ix_fan_lists_creator_id_name",
        "fan_lists",
        ["creator_id", "name", "id"],
        unique=False,
        schema="crm",
    )
    op.create_table(
        "fans",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("platform_fan_id", sa.Text(), nullable=True),
        sa.Column("display_name", sa.Text(), server_default="", nullable=False),
        sa.Column("handle", sa.Text(), server_default="", nullable=False),
        sa.Column("avatar_url", sa.Text(), server_default="", nullable=False),
        sa.Column("email", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "tags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("value_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("subscription_state", sa.Text(), server_default="none", nullable=False),
        sa.Column("subscribed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("subscription_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "custom_fields",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("search_vector", postgresql.TSVECTOR(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "platform IN ('onlyfans', 'tiktok', 'instagram', 'reddit')",
            name=op.f("ck_fans_platform"),
        ),
        sa.CheckConstraint(
            "subscription_state IN ('none', 'active', 'cancelled', 'expired')",
            name=op.f("ck_fans_subscription"),
        ),
        sa.CheckConstraint("value_cents >= 0", name=op.f("ck_fans_value_cents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fans")),
        sa.UniqueConstraint("creator_id", "id", name=op.f("uq_fans_creator_id_id")),
        sa.UniqueConstraint(
            "creator_id",
            "platform",
            "platform_fan_id",
            name=op.f("uq_fans_creator_id_platform_platform_fan_id"),
        ),
        schema="crm",
    )
    op.create_index(
        "ix_fans_creator_id_created_at",
        "fans",
        ["creator_id", "created_at", "id"],
        unique=False,
        schema="crm",
    )
    op.create_index(
        "ix_fans_creator_id_last_message_at",
        "fans",
        ["creator_id", "last_message_at", "id"],
        unique=False,
        schema="crm",
    )
    op.create_index(
        "ix_fans_creator_id_last_seen_at",
        "fans",
        ["creator_id", "last_seen_at", "id"],
        unique=False,
        schema="crm",
    )
    op.create_index(
        "ix_fans_creator_id_value_cents",
        "fans",
        ["creator_id", "value_cents", "id"],
        unique=False,
        schema="crm",
    )
    op.create_index(
        "ix_fans_search_vector",
        "fans",
        ["search_vector"],
        unique=False,
        schema="crm",
        postgresql_using="gin",
    )
    op.create_index(
        "ix_fans_tags", "fans", ["tags"], unique=False, schema="crm", postgresql_using="gin"
    )
    op.create_table(
        "inbox_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_events")),
        schema="crm",
    )
    op.create_index(
        "ix_inbox_events_created_at", "inbox_events", ["created_at"], unique=False, schema="crm"
    )
    op.create_index(
        "ix_inbox_events_creator_id_id",
        "inbox_events",
        ["creator_id", "id"],
        unique=False,
        schema="crm",
    )
    op.create_table(
        "inbox_retention",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("pruned_through_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", name=op.f("pk_inbox_retention")),
        schema="crm",
    )
    op.create_table(
        "quick_replies",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("shortcut", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("char_length(text) <= 5000", name=op.f("ck_quick_replies_text_length")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quick_replies")),
        sa.UniqueConstraint(
            "creator_id", "shortcut", name=op.f("uq_quick_replies_creator_id_shortcut")
        ),
        schema="crm",
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("unread_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "last_message_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_message_preview", sa.Text(), server_default="", nullable=False),
        sa.Column("pinned", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("archived", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("assigned_member_id", sa.UUID(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "platform IN ('onlyfans', 'tiktok', 'instagram', 'reddit')",
            name=op.f("ck_conversations_platform"),
        ),
        sa.CheckConstraint("unread_count >= 0", name=op.f("ck_conversations_unread_count")),
        sa.ForeignKeyConstraint(
            ["creator_id", "fan_id"],
            ["crm.fans.creator_id", "crm.fans.id"],
            name=op.f("fk_conversations_creator_id_fan_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.UniqueConstraint(
            "creator_id",
            "fan_id",
            "platform",
            name=op.f("uq_conversations_creator_id_fan_id_platform"),
        ),
        sa.UniqueConstraint("creator_id", "id", name=op.f("uq_conversations_creator_id_id")),
        schema="crm",
    )
    op.create_index(
        "ix_conversations_creator_id_last_message_at",
        "conversations",
        ["creator_id", "last_message_at", "id"],
        unique=False,
        schema="crm",
    )
    op.create_table(
        "fan_list_members",
        sa.Column("list_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column(
            "added_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["creator_id", "fan_id"],
            ["crm.fans.creator_id", "crm.fans.id"],
            name=op.f("fk_fan_list_members_creator_id_fan_id"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["creator_id", "list_id"],
            ["crm.fan_lists.creator_id", "crm.fan_lists.id"],
            name=op.f("fk_fan_list_members_creator_id_list_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("list_id", "fan_id", name=op.f("pk_fan_list_members")),
        schema="crm",
    )
    op.create_index(
        "ix_fan_list_members_fan_id", "fan_list_members", ["fan_id"], unique=False, schema="crm"
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), server_default="", nullable=False),
        sa.Column("price_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "attachments",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("read", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivery_status", sa.Text(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("platform_message_id", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("sender_kind", sa.Text(), nullable=False),
        sa.Column("sender_id", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unlocked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('simple'::regconfig, text)", persisted=True),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(direction = 'in') = (delivery_status = 'received')",
            name=op.f("ck_messages_status_direction"),
        ),
        sa.CheckConstraint(
            "delivery_status IN ('received', 'queued', 'sending', 'sent', 'failed')",
            name=op.f("ck_messages_delivery_status"),
        ),
        sa.CheckConstraint("direction IN ('in', 'out')", name=op.f("ck_messages_direction")),
        sa.CheckConstraint(
            "platform IN ('onlyfans', 'tiktok', 'instagram', 'reddit')",
            name=op.f("ck_messages_platform"),
        ),
        sa.CheckConstraint(
            "sender_kind IN ('fan', 'creator', 'ai', 'automation', 'team_member')",
            name=op.f("ck_messages_sender_kind"),
        ),
        sa.CheckConstraint("price_cents >= 0", name=op.f("ck_messages_price_cents")),
        sa.ForeignKeyConstraint(
            ["creator_id", "conversation_id"],
            ["crm.conversations.creator_id", "crm.conversations.id"],
            name=op.f("fk_messages_creator_id_conversation_id"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["creator_id", "fan_id"],
            ["crm.fans.creator_id", "crm.fans.id"],
            name=op.f("fk_messages_creator_id_fan_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("creator_id", "id", name=op.f("uq_messages_creator_id_id")),
        sa.UniqueConstraint(
            "creator_id", "idempotency_key", name=op.f("uq_messages_creator_id_idempotency_key")
        ),
        sa.UniqueConstraint(
            "creator_id",
            "platform",
            "platform_message_id",
            name=op.f("uq_messages_creator_id_platform_platform_message_id"),
        ),
        schema="crm",
    )
    op.create_index(
        "ix_messages_creator_id_conversation_id_created_at",
        "messages",
        ["creator_id", "conversation_id", "created_at", "id"],
        unique=False,
        schema="crm",
    )
    op.create_index(
        "ix_messages_creator_id_created_at",
        "messages",
        ["creator_id", "created_at", "id"],
        unique=False,
        schema="crm",
    )
    op.create_index(
        "ix_messages_search_vector",
        "messages",
        ["search_vector"],
        unique=False,
        schema="crm",
        postgresql_using="gin",
    )
    op.create_index(
        "ix_messages_unread",
        "messages",
        ["conversation_id"],
        unique=False,
        schema="crm",
        postgresql_where=sa.text("direction = 'in' AND NOT read"),
    )
    op.create_table(
        "purchases",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("platform_transaction_id", sa.Text(), nullable=False),
        sa.Column("platform_message_id", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_purchases_currency")),
        sa.CheckConstraint(
            "kind IN ('tip', 'ppv_unlock', 'subscription', 'renewal')",
            name=op.f("ck_purchases_kind"),
        ),
        sa.CheckConstraint(
            "platform IN ('onlyfans', 'tiktok', 'instagram', 'reddit')",
            name=op.f("ck_purchases_platform"),
        ),
        sa.CheckConstraint("amount_cents >= 0", name=op.f("ck_purchases_amount_cents")),
        sa.ForeignKeyConstraint(
            ["creator_id", "fan_id"],
            ["crm.fans.creator_id", "crm.fans.id"],
            name=op.f("fk_purchases_creator_id_fan_id"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["crm.messages.id"],
            name=op.f("fk_purchases_message_id"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchases")),
        sa.UniqueConstraint(
            "creator_id",
            "platform",
            "platform_transaction_id",
            name=op.f("uq_purchases_creator_id_platform_platform_transaction_id"),
        ),
        schema="crm",
    )
    op.create_index(
        "ix_purchases_creator_id_fan_id_occurred_at",
        "purchases",
        ["creator_id", "fan_id", "occurred_at"],
        unique=False,
        schema="crm",
    )
    op.create_index(
        "ix_purchases_unlinked",
        "purchases",
        ["creator_id", "platform", "platform_message_id"],
        unique=False,
        schema="crm",
        postgresql_where=sa.text("message_id IS NULL AND platform_message_id IS NOT NULL"),
    )
    # Full-text search over a fan: name and handle first, then tags, then email and notes.
    op.execute(FANS_SEARCH_FUNCTION)
    op.execute(
        "CREATE TRIGGER fans_search_vector BEFORE INSERT OR UPDATE OF display_name, handle, "
        "tags, email, notes ON crm.fans FOR EACH ROW EXECUTE FUNCTION crm.fans_search_vector()"
    )
    create_outbox_tables("crm")


def downgrade() -> None:
    drop_outbox_tables("crm")
    op.execute("DROP TRIGGER IF EXISTS fans_search_vector ON crm.fans")
    op.execute("DROP FUNCTION IF EXISTS crm.fans_search_vector()")
    op.drop_index(
        "ix_purchases_unlinked",
        table_name="purchases",
        schema="crm",
        postgresql_where=sa.text("message_id IS NULL AND platform_message_id IS NOT NULL"),
    )
    op.drop_index(
        "ix_purchases_creator_id_fan_id_occurred_at", table_name="purchases", schema="crm"
    )
    op.drop_table("purchases", schema="crm")
    op.drop_index(
        "ix_messages_unread",
        table_name="messages",
        schema="crm",
        postgresql_where=sa.text("direction = 'in' AND NOT read"),
    )
    op.drop_index(
        "ix_messages_search_vector", table_name="messages", schema="crm", postgresql_using="gin"
    )
    op.drop_index("ix_messages_creator_id_created_at", table_name="messages", schema="crm")
    op.drop_index(
        "ix_messages_creator_id_conversation_id_created_at", table_name="messages", schema="crm"
    )
    op.drop_table("messages", schema="crm")
    op.drop_index("ix_fan_list_members_fan_id", table_name="fan_list_members", schema="crm")
    op.drop_table("fan_list_members", schema="crm")
    op.drop_index(
        "ix_conversations_creator_id_last_message_at", table_name="conversations", schema="crm"
    )
    op.drop_table("conversations", schema="crm")
    op.drop_table("quick_replies", schema="crm")
    op.drop_table("inbox_retention", schema="crm")
    op.drop_index("ix_inbox_events_creator_id_id", table_name="inbox_events", schema="crm")
    op.drop_index("ix_inbox_events_created_at", table_name="inbox_events", schema="crm")
    op.drop_table("inbox_events", schema="crm")
    op.drop_index("ix_fans_tags", table_name="fans", schema="crm", postgresql_using="gin")
    op.drop_index("ix_fans_search_vector", table_name="fans", schema="crm", postgresql_using="gin")
    op.drop_index("ix_fans_creator_id_value_cents", table_name="fans", schema="crm")
    op.drop_index("ix_fans_creator_id_last_seen_at", table_name="fans", schema="crm")
    op.drop_index("ix_fans_creator_id_last_message_at", table_name="fans", schema="crm")
    op.drop_index("ix_fans_creator_id_created_at", table_name="fans", schema="crm")
    op.drop_table("fans", schema="crm")
    op.drop_index("ix_fan_lists_creator_id_name", table_name="fan_lists", schema="crm")
    op.drop_table("fan_lists", schema="crm")
