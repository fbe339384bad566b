"""The campaigns schema: templates, campaigns, audience snapshots, the send queue, attributed
purchases, and the outbox and inbox of its events.

Revision ID: 0001
Revises:
Create Date: 2026-11-30 21:50:00
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

# The metrics' tallies, kept by statement triggers with transition tables: one aggregated
# upsert per statement (a COPY of 50,000 sends is one), so the metrics read a few rows. Rows
# of a deleted campaign go with it (cascade): a delete only lowers tallies that still exist.
_SENDS_CHANGES = """
CREATE FUNCTION campaigns.tally_sends() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE campaigns.send_tallies t SET sends = t.sends - d.n
        FROM (SELECT campaign_id, variant, state, reason, count(*) AS n
              FROM old_rows GROUP BY 1, 2, 3, 4) d
        WHERE t.campaign_id = d.campaign_id AND t.variant = d.variant
          AND t.state = d.state AND t.reason = d.reason;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO campaigns.send_tallies AS t (campaign_id, variant, state, reason, sends)
        SELECT campaign_id, variant, state, reason, count(*)
        FROM new_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (campaign_id, variant, state, reason)
        DO UPDATE SET sends = t.sends + excluded.sends;
    ELSE
        INSERT INTO campaigns.send_tallies AS t (campaign_id, variant, state, reason, sends)
        SELECT campaign_id, variant, state, reason, sum(delta)
        FROM (
            SELECT campaign_id, variant, state, reason, 1 AS delta FROM new_rows
            UNION ALL
            SELECT campaign_id, variant, state, reason, -1 FROM old_rows
        ) changes
        GROUP BY 1, 2, 3, 4 HAVING sum(delta) <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (campaign_id, variant, state, reason)
        DO UPDATE SET sends = t.sends + excluded.sends;
    END IF;
    RETURN NULL;
END $$
"""
_RECIPIENTS_CHANGES = """
CREATE FUNCTION campaigns.tally_recipients() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE campaigns.recipient_tallies t
        SET recipients = t.recipients - d.n, stopped = t.stopped - d.stopped,
            converted = t.converted - d.converted
        FROM (SELECT campaign_id, variant, holdout, count(*) AS n,
                     count(stopped_at) AS stopped, count(converted_at) AS converted
              FROM old_rows GROUP BY 1, 2, 3) d
        WHERE t.campaign_id = d.campaign_id AND t.variant = d.variant AND t.holdout = d.holdout;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO campaigns.recipient_tallies AS t
            (campaign_id, variant, holdout, recipients, stopped, converted)
        SELECT campaign_id, variant, holdout, count(*), count(stopped_at), count(converted_at)
        FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, variant, holdout)
        DO UPDATE SET recipients = t.recipients + excluded.recipients,
                      stopped = t.stopped + excluded.stopped,
                      converted = t.converted + excluded.converted;
    ELSE
        INSERT INTO campaigns.recipient_tallies AS t
            (campaign_id, variant, holdout, recipients, stopped, converted)
        SELECT campaign_id, variant, holdout, sum(n), sum(stopped), sum(converted)
        FROM (
            SELECT campaign_id, variant, holdout, 1 AS n,
                   (stopped_at IS NOT NULL)::int AS stopped,
                   (converted_at IS NOT NULL)::int AS converted
            FROM new_rows
            UNION ALL
            SELECT campaign_id, variant, holdout, -1,
                   -(stopped_at IS NOT NULL)::int, -(converted_at IS NOT NULL)::int
            FROM old_rows
        ) changes
        GROUP BY 1, 2, 3
        HAVING sum(n) <> 0 OR sum(stopped) <> 0 OR sum(converted) <> 0
        ORDER BY 1, 2, 3
        ON CONFLICT (campaign_id, variant, holdout)
        DO UPDATE SET recipients = t.recipients + excluded.recipients,
                      stopped = t.stopped + excluded.stopped,
                      converted = t.converted + excluded.converted;
    END IF;
    RETURN NULL;
END $$
"""
_PURCHASES_CHANGES = """
CREATE FUNCTION campaigns.tally_purchases() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO campaigns.recipient_tallies AS t
        (campaign_id, variant, holdout, purchases, revenue_cents)
    SELECT r.campaign_id, r.variant, r.holdout, count(*), sum(p.amount_cents)
    FROM new_rows p
    JOIN campaigns.recipients r ON r.campaign_id = p.campaign_id AND r.fan_id = p.fan_id
    WHERE p.from_message
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (campaign_id, variant, holdout)
    DO UPDATE SET purchases = t.purchases + excluded.purchases,
                  revenue_cents = t.revenue_cents + excluded.revenue_cents;
    RETURN NULL;
END $$
"""


def _triggers(table: str, function: str, events: tuple[str, ...]) -> list[str]:
    """One statement trigger per event (a trigger with transition tables has one event)."""
    tables = {
        "INSERT": "REFERENCING NEW TABLE AS new_rows",
        "UPDATE": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "DELETE": "REFERENCING OLD TABLE AS old_rows",
    }
    return [
        f"CREATE TRIGGER {table}_tally_{event.lower()} AFTER {event} ON campaigns.{table} "
        f"{tables[event]} FOR EACH STATEMENT EXECUTE FUNCTION campaigns.{function}()"
        for event in events
    ]


TALLY_TRIGGERS = [
    _SENDS_CHANGES,
    _RECIPIENTS_CHANGES,
    _PURCHASES_CHANGES,
    *_triggers("sends", "tally_sends", ("INSERT", "UPDATE", "DELETE")),
    *_triggers("recipients", "tally_recipients", ("INSERT", "UPDATE", "DELETE")),
    *_triggers("purchases", "tally_purchases", ("INSERT",)),
]


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="draft", nullable=False),
        sa.Column("list_id", sa.UUID(), nullable=True),
        sa.Column("silent_for_days", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "exclusions",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("variants", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "steps",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("holdout_percent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attribution_window_hours", sa.Integer(), server_default="72", nullable=False),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column("template_id", sa.UUID(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("audience_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("holdout_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("excluded_count", sa.BigInteger(), server_default="0", nullable=False),
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
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('one_off', 'welcome', 'reengagement', 'sequence')",
            name=op.f("ck_campaigns_kind"),
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled')",
            name=op.f("ck_campaigns_status"),
        ),
        sa.CheckConstraint(
            "holdout_percent BETWEEN 0 AND 50", name=op.f("ck_campaigns_holdout_percent")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        schema="campaigns",
    )
    op.create_index(
        "ix_campaigns_creator_id_created_at",
        "campaigns",
        ["creator_id", "created_at", "id"],
        unique=False,
        schema="campaigns",
    )
    op.create_index(
        "ix_campaigns_welcome",
        "campaigns",
        ["creator_id"],
        unique=False,
        schema="campaigns",
        postgresql_where=sa.text("kind = 'welcome' AND status = 'running'"),
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("seed_key", sa.Text(), nullable=True),
        sa.Column("niche", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("price_cents", sa.BigInteger(), server_default="0", nullable=False),
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
            "niche IN ('general', 'fitness', 'gaming', 'adult', 'fashion')",
            name=op.f("ck_templates_niche"),
        ),
        sa.CheckConstraint("price_cents >= 0", name=op.f("ck_templates_price_cents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint(
            "creator_id", "seed_key", name=op.f("uq_templates_creator_id_seed_key")
        ),
        schema="campaigns",
    )
    op.create_table(
        "purchases",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("purchase_id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("crm_message_id", sa.UUID(), nullable=True),
        sa.Column("from_message", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.campaigns.id"],
            name=op.f("fk_purchases_campaign_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "purchase_id", name=op.f("pk_purchases")),
        schema="campaigns",
    )
    op.create_index(
        "ix_purchases_creator_id_fan_id",
        "purchases",
        ["creator_id", "fan_id"],
        unique=False,
        schema="campaigns",
    )
    op.create_table(
        "recipients",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("platform_fan_id", sa.Text(), server_default="", nullable=False),
        sa.Column("display_name", sa.Text(), server_default="", nullable=False),
        sa.Column("variant", sa.Text(), server_default="", nullable=False),
        sa.Column("holdout", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "enrolled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stop_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.campaigns.id"],
            name=op.f("fk_recipients_campaign_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "fan_id", name=op.f("pk_recipients")),
        schema="campaigns",
    )
    op.create_index(
        "ix_recipients_creator_id_fan_id",
        "recipients",
        ["creator_id", "fan_id"],
        unique=False,
        schema="campaigns",
    )
    op.create_table(
        "sends",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("variant", sa.Text(), server_default="", nullable=False),
        sa.Column("state", sa.Text(), server_default="queued", nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("crm_message_id", sa.UUID(), nullable=True),
        sa.Column("platform_message_id", sa.Text(), server_default="", nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'requested', 'sent', 'failed', 'skipped', 'stopped', 'cancelled')",
            name=op.f("ck_sends_state"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.campaigns.id"],
            name=op.f("fk_sends_campaign_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "fan_id", "step", name=op.f("pk_sends")),
        schema="campaigns",
    )
    op.create_index(
        "ix_sends_campaign_id_fan_id",
        "sends",
        ["campaign_id", "fan_id"],
        unique=False,
        schema="campaigns",
    )
    op.create_index(
        "ix_sends_due",
        "sends",
        ["due_at"],
        unique=False,
        schema="campaigns",
        postgresql_where=sa.text("state = 'queued'"),
    )
    op.create_table(
        "send_tallies",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("variant", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("sends", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.campaigns.id"],
            name=op.f("fk_send_tallies_campaign_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "campaign_id", "variant", "state", "reason", name=op.f("pk_send_tallies")
        ),
        schema="campaigns",
    )
    op.create_table(
        "recipient_tallies",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("variant", sa.Text(), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("recipients", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("stopped", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("converted", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("purchases", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("revenue_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.campaigns.id"],
            name=op.f("fk_recipient_tallies_campaign_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "campaign_id", "variant", "holdout", name=op.f("pk_recipient_tallies")
        ),
        schema="campaigns",
    )
    for statement in TALLY_TRIGGERS:
        op.execute(statement)
    create_outbox_tables("campaigns")


def downgrade() -> None:
    drop_outbox_tables("campaigns")
    for function in ("tally_sends", "tally_recipients", "tally_purchases"):
        op.execute(f"DROP FUNCTION campaigns.{function}() CASCADE")
    for table in (
        "recipient_tallies",
        "send_tallies",
        "purchases",
        "sends",
        "recipients",
        "templates",
        "campaigns",
    ):
        op.drop_table(table, schema="campaigns")
