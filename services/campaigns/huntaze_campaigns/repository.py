"""Reads and writes of the `campaigns` schema. Nothing here commits: the service layer does."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze_campaigns.models import (
    SCHEMA,
    AttributedPurchase,
    Campaign,
    Recipient,
    Send,
    Template,
)
from huntaze_campaigns.templates import SEEDS

# States whose send is still to be made, or made and not yet confirmed by the platform.
PENDING_STATES = ("queued", "requested")


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session's transaction (for COPY)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


# --- templates ------------------------------------------------------------------------------


async def seed_templates(session: AsyncSession, *, creator_id: uuid.UUID) -> None:
    """Adds the seeded templates the creator does not have yet (edited ones are kept)."""
    await session.execute(
        insert(Template)
        .values(
            [
                {
                    "id": uuid.uuid4(),
                    "creator_id": creator_id,
                    "seed_key": seed.key,
                    "niche": seed.niche,
                    "name": seed.name,
                    "text": seed.text,
                    "price_cents": seed.price_cents,
                }
                for seed in SEEDS
            ]
        )
        .on_conflict_do_nothing(index_elements=["creator_id", "seed_key"])
    )


@dataclass(frozen=True)
class Results:
    campaigns: int = 0
    recipients: int = 0
    purchases: int = 0
    revenue_cents: int = 0
    converted: int = 0


_TEMPLATE_RESULTS = """
SELECT c.template_id,
       count(DISTINCT c.id),
       coalesce(sum(t.recipients) FILTER (WHERE NOT t.holdout), 0),
       coalesce(sum(t.purchases), 0),
       coalesce(sum(t.revenue_cents), 0),
       coalesce(sum(t.converted) FILTER (WHERE NOT t.holdout), 0)
FROM campaigns.campaigns c
LEFT JOIN campaigns.recipient_tallies t ON t.campaign_id = c.id
WHERE c.creator_id = :creator_id AND c.template_id IS NOT NULL AND c.status <> 'draft'
GROUP BY c.template_id
"""


async def template_results(
    session: AsyncSession, *, creator_id: uuid.UUID
) -> dict[uuid.UUID, Results]:
    rows = await session.execute(text(_TEMPLATE_RESULTS), {"creator_id": creator_id})
    return {
        row[0]: Results(
            campaigns=int(row[1]),
            recipients=int(row[2]),
            purchases=int(row[3]),
            revenue_cents=int(row[4]),
            converted=int(row[5]),
        )
        for row in rows.all()
    }


# --- audience snapshot and queue ---------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFan:
    fan_id: uuid.UUID
    platform_fan_id: str
    display_name: str
    variant: str
    holdout: bool


async def bought_in(
    session: AsyncSession, *, creator_id: uuid.UUID, campaign_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Fans who bought one of these campaigns' messages."""
    if not campaign_ids:
        return set()
    rows = await session.scalars(
        select(AttributedPurchase.fan_id).where(
            AttributedPurchase.creator_id == creator_id,
            AttributedPurchase.campaign_id.in_(campaign_ids),
            AttributedPurchase.from_message,
        )
    )
    return set(rows.all())


async def store_snapshot(
    session: AsyncSession,
    *,
    campaign: Campaign,
    fans: Sequence[PlannedFan],
    step_delays: Sequence[timedelta],
    start: datetime,
) -> None:
    """The audience and every send of it (one per step, holdout left out), by COPY: a large
    audience is queued durably in one transaction."""
    connection = await driver_connection(session)
    await connection.copy_records_to_table(
        Recipient.__tablename__,
        schema_name=SCHEMA,
        columns=[
            "campaign_id",
            "fan_id",
            "creator_id",
            "platform_fan_id",
            "display_name",
            "variant",
            "holdout",
            "enrolled_at",
        ],
        records=[
            (
                campaign.id,
                fan.fan_id,
                campaign.creator_id,
                fan.platform_fan_id,
                fan.display_name,
                fan.variant,
                fan.holdout,
                start,
            )
            for fan in fans
        ],
    )
    due = [start]
    for delay in step_delays:
        due.append(due[-1] + delay)
    await connection.copy_records_to_table(
        Send.__tablename__,
        schema_name=SCHEMA,
        columns=["campaign_id", "fan_id", "step", "creator_id", "variant", "due_at"],
        records=[
            (campaign.id, fan.fan_id, step, campaign.creator_id, fan.variant, due_at)
            for fan in fans
            if not fan.holdout
            for step, due_at in enumerate(due)
        ],
    )


async def enroll(
    session: AsyncSession,
    *,
    campaign: Campaign,
    fan: PlannedFan,
    step_delays: Sequence[timedelta],
    start: datetime,
) -> bool:
    """One fan joins a running campaign (a new subscriber of a welcome campaign); False when
    they had joined already."""
    joined = await session.execute(
        insert(Recipient)
        .values(
            campaign_id=campaign.id,
            fan_id=fan.fan_id,
            creator_id=campaign.creator_id,
            platform_fan_id=fan.platform_fan_id,
            display_name=fan.display_name,
            variant=fan.variant,
            holdout=fan.holdout,
            enrolled_at=start,
        )
        .on_conflict_do_nothing(index_elements=["campaign_id", "fan_id"])
        .returning(Recipient.fan_id)
    )
    if joined.first() is None:
        return False
    counts: dict[str, Any] = {"audience_count": Campaign.audience_count + 1}
    if fan.holdout:
        counts["holdout_count"] = Campaign.holdout_count + 1
    else:
        due_at = start
        rows = []
        for step in range(len(step_delays) + 1):
            if step:
                due_at = due_at + step_delays[step - 1]
            rows.append(
                {
                    "campaign_id": campaign.id,
                    "fan_id": fan.fan_id,
                    "step": step,
                    "creator_id": campaign.creator_id,
                    "variant": fan.variant,
                    "due_at": due_at,
                }
            )
        await session.execute(insert(Send).values(rows).on_conflict_do_nothing())
    await session.execute(update(Campaign).where(Campaign.id == campaign.id).values(**counts))
    return True


# --- the scheduler's queue ---------------------------------------------------------------------


@dataclass(frozen=True)
class DueSend:
    campaign_id: uuid.UUID
    fan_id: uuid.UUID
    step: int
    creator_id: uuid.UUID
    variant: str

    @classmethod
    def of(cls, send: Send) -> DueSend:
        return cls(send.campaign_id, send.fan_id, send.step, send.creator_id, send.variant)

    @property
    def idempotency_key(self) -> str:
        """The CRM's key of this send: the same fan, campaign and step is one message."""
        return f"{KEY_PREFIX}{self.campaign_id}:{self.fan_id}:{self.step}"


KEY_PREFIX = "campaign:"


def parse_key(key: str) -> tuple[uuid.UUID, uuid.UUID, int] | None:
    """(campaign, fan, step) of one of our idempotency keys; None for anyone else's."""
    if not key.startswith(KEY_PREFIX):
        return None
    parts = key.removeprefix(KEY_PREFIX).split(":")
    if len(parts) != 3:
        return None
    try:
        return uuid.UUID(parts[0]), uuid.UUID(parts[1]), int(parts[2])
    except ValueError:
        return None


_CLAIM = """
WITH due AS (
    SELECT s.campaign_id, s.fan_id, s.step
    FROM campaigns.sends s
    JOIN campaigns.campaigns c ON c.id = s.campaign_id
    WHERE s.state = 'queued' AND s.due_at <= :now
      AND (s.claimed_until IS NULL OR s.claimed_until < :now)
      AND c.status IN ('scheduled', 'running')
    ORDER BY s.due_at
    LIMIT :limit
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE campaigns.sends s SET claimed_until = :until
FROM due
WHERE s.campaign_id = due.campaign_id AND s.fan_id = due.fan_id AND s.step = due.step
RETURNING s.campaign_id, s.fan_id, s.step, s.creator_id, s.variant
"""


async def claim_due(
    session: AsyncSession, *, now: datetime, until: datetime, limit: int
) -> list[DueSend]:
    """Due sends of campaigns that are not paused, each claimed until `until` (a crashed
    scheduler's claims lapse; a concurrent scheduler skips the rows locked here)."""
    rows = await session.execute(text(_CLAIM), {"now": now, "until": until, "limit": limit})
    return [DueSend(*row) for row in rows.all()]


def send_key(send: DueSend) -> Any:
    return (
        (Send.campaign_id == send.campaign_id)
        & (Send.fan_id == send.fan_id)
        & (Send.step == send.step)
    )


async def settle_send(
    session: AsyncSession, *, send: DueSend, allowed: Sequence[str], **values: Any
) -> bool:
    """Moves a send on from one of the `allowed` states; False when it had moved already."""
    moved = await session.execute(
        update(Send)
        .where(send_key(send), Send.state.in_(allowed))
        .values(claimed_until=None, **values)
        .returning(Send.step)
    )
    return moved.first() is not None


_REQUEST_MASS_SENDS = """
UPDATE campaigns.sends s
SET state = 'requested', mass_key = :mass_key, crm_message_id = v.crm_message_id,
    requested_at = :now, claimed_until = NULL
FROM unnest(CAST(:fan_ids AS uuid[]), CAST(:crm_message_ids AS uuid[]))
    AS v(fan_id, crm_message_id)
WHERE s.campaign_id = :campaign_id AND s.step = 0 AND s.fan_id = v.fan_id
    AND s.state = 'queued'
"""
_SKIP_SENDS = """
UPDATE campaigns.sends s
SET state = 'skipped', reason = v.reason, claimed_until = NULL
FROM unnest(CAST(:fan_ids AS uuid[]), CAST(:reasons AS text[])) AS v(fan_id, reason)
WHERE s.campaign_id = :campaign_id AND s.step = 0 AND s.fan_id = v.fan_id
    AND s.state = 'queued'
"""


async def request_mass_sends(
    session: AsyncSession,
    *,
    campaign_id: uuid.UUID,
    fan_ids: Sequence[uuid.UUID],
    crm_message_ids: Sequence[uuid.UUID],
    mass_key: str,
    now: datetime,
) -> None:
    """The first sends of these fans, carried by the mass message `mass_key` (one statement)."""
    if fan_ids:
        await session.execute(
            text(_REQUEST_MASS_SENDS),
            {
                "campaign_id": campaign_id,
                "fan_ids": list(fan_ids),
                "crm_message_ids": list(crm_message_ids),
                "mass_key": mass_key,
                "now": now,
            },
        )


async def skip_sends(
    session: AsyncSession, *, campaign_id: uuid.UUID, reasons: dict[uuid.UUID, str]
) -> None:
    """The first sends of these fans skipped, each with its reason (one statement)."""
    if reasons:
        await session.execute(
            text(_SKIP_SENDS),
            {
                "campaign_id": campaign_id,
                "fan_ids": list(reasons),
                "reasons": list(reasons.values()),
            },
        )


async def complete_if_done(
    session: AsyncSession, *, campaign_id: uuid.UUID, now: datetime
) -> Campaign | None:
    """Marks a running campaign completed once nothing is left to send (welcome campaigns run
    until cancelled)."""
    left = (
        select(Send.step)
        .where(Send.campaign_id == campaign_id, Send.state == "queued")
        .limit(1)
        .exists()
    )
    return await session.scalar(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.status.in_(("scheduled", "running")),
            Campaign.kind != "welcome",
            ~left,
        )
        .values(status="completed", completed_at=now, updated_at=func.now())
        .returning(Campaign)
    )


# --- metrics -----------------------------------------------------------------------------------


@dataclass
class VariantCounts:
    recipients: int = 0
    holdout: bool = False
    stopped: int = 0
    states: dict[tuple[str, str], int] = field(default_factory=dict)
    purchases: int = 0
    revenue_cents: int = 0
    converted: int = 0


# The metrics read the tallies the triggers keep (asyncpg's `$1`: they run on the driver's
# connection, prepared once per connection by its statement cache).
RECIPIENTS = """
SELECT variant, holdout, recipients, stopped, converted, purchases, revenue_cents
FROM campaigns.recipient_tallies WHERE campaign_id = $1
"""
SENDS = """
SELECT variant, state, reason, sends
FROM campaigns.send_tallies WHERE campaign_id = $1 AND sends <> 0
"""


async def campaign_counts(
    session: AsyncSession, *, campaign_id: uuid.UUID
) -> dict[tuple[str, bool], VariantCounts]:
    """Per (variant, holdout): recipients, send states with their reasons, purchases, from
    the tallies (a few rows, however many recipients)."""
    counts: dict[tuple[str, bool], VariantCounts] = {}
    connection = await driver_connection(session)
    for row in await connection.fetch(RECIPIENTS, campaign_id):
        counts[(row["variant"], row["holdout"])] = VariantCounts(
            recipients=int(row["recipients"]),
            holdout=row["holdout"],
            stopped=int(row["stopped"]),
            purchases=int(row["purchases"]),
            revenue_cents=int(row["revenue_cents"]),
            converted=int(row["converted"]),
        )
    for variant, state, reason, number in await connection.fetch(SENDS, campaign_id):
        entry = counts.setdefault((variant, False), VariantCounts())
        entry.states[(state, reason)] = int(number)
    return counts
