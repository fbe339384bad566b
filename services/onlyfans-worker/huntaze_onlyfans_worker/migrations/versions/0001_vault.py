"""The onlyfans schema: the credential vault's sealed secrets.

Revision ID: 0001
Revises:
Create Date: 2026-11-30 19:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vault_secrets",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("location", sa.Text(), nullable=False),
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
            "location IN ('database', 'secrets_manager')", name=op.f("ck_vault_secrets_location")
        ),
        sa.CheckConstraint(
            "(location = 'database') = (ciphertext IS NOT NULL)",
            name=op.f("ck_vault_secrets_ciphertext_location"),
        ),
        sa.PrimaryKeyConstraint("creator_id", "name", name=op.f("pk_vault_secrets")),
        schema="onlyfans",
    )
    op.create_index(op.f("ix_vault_secrets_key_id"), "vault_secrets", ["key_id"], schema="onlyfans")


def downgrade() -> None:
    op.drop_table("vault_secrets", schema="onlyfans")
