"""The kit's messaging tables brought up to date: the consumers' `inbox` becomes
`processed_events` (rows kept; the name `inbox` belongs to the real-time inbox), handler
failures per event (`consumer_failures`), the effect ledger (`effect_ledger`), and parked
outbox rows (`parked_at`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 19:00:00.000000
"""

from collections.abc import Sequence

from huntaze_kit.outbox import downgrade_messaging_tables, upgrade_messaging_tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    upgrade_messaging_tables("crm")


def downgrade() -> None:
    downgrade_messaging_tables("crm")
