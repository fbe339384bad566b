"""Per-creator budgets of automated messages per fan and rolling day.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 19:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "automation_budgets",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("messages_per_fan_per_day", sa.Integer(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "messages_per_fan_per_day BETWEEN 0 AND 1000",
            name=op.f("ck_automation_budgets_range"),
        ),
        sa.PrimaryKeyConstraint("creator_id", name=op.f("pk_automation_budgets")),
        schema="crm",
    )


def downgrade() -> None:
    op.drop_table("automation_budgets", schema="crm")
