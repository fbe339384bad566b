"""The per-fan budget shared by every automation: however many services send automated
messages (sender AI or automation: the AI agent, campaigns, sequences), one fan receives at most
the creator's budget of them in any 24 hours. Checked inside SendMessage's transaction, which
holds the fan's and the conversation's rows locked: concurrent sends cannot overrun it together."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze_crm.models import AutomationBudget, Message
from huntaze_kit.errors import RateLimited

AUTOMATED_SENDERS = ("ai", "automation")
WINDOW = timedelta(days=1)
BUDGET_EXHAUSTED = "AUTOMATION_BUDGET_EXHAUSTED"


async def budget_of(session: AsyncSession, *, creator_id: uuid.UUID, default: int) -> int:
    chosen = await session.get(AutomationBudget, creator_id)
    return default if chosen is None else chosen.messages_per_fan_per_day


async def set_budget(
    session: AsyncSession, *, creator_id: uuid.UUID, messages_per_fan_per_day: int
) -> None:
    statement = insert(AutomationBudget).values(
        creator_id=creator_id, messages_per_fan_per_day=messages_per_fan_per_day
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[AutomationBudget.creator_id],
            set_={
                "messages_per_fan_per_day": statement.excluded.messages_per_fan_per_day,
                "updated_at": func.now(),
            },
        )
    )


@dataclass(frozen=True)
class FanUsage:
    """A fan's share of the budget now: the budget, what the last 24 hours used of it, and
    (when spent) when the oldest counted message leaves the window."""

    limit: int
    sent: int
    next_available_at: datetime | None

    @property
    def remaining(self) -> int:
        return max(self.limit - self.sent, 0)


async def usage_of(
    session: AsyncSession, *, creator_id: uuid.UUID, fan_id: uuid.UUID, now: datetime, default: int
) -> FanUsage:
    """The automated messages the fan received in the last 24 hours, against the budget."""
    limit = await budget_of(session, creator_id=creator_id, default=default)
    recent = list(
        await session.scalars(
            select(Message.created_at)
            .where(
                Message.creator_id == creator_id,
                Message.fan_id == fan_id,
                Message.created_at > now - WINDOW,
                Message.sender_kind.in_(AUTOMATED_SENDERS),
            )
            .order_by(Message.created_at.desc())
        )
    )
    spent = len(recent) >= limit
    # The (sent - limit + 1)th oldest must leave the window before one more may go.
    frees_at = recent[limit - 1] + WINDOW if spent and limit > 0 else None
    return FanUsage(limit=limit, sent=len(recent), next_available_at=frees_at)


async def check_budget(
    session: AsyncSession,
    *,
    creator_id: uuid.UUID,
    conversation_id: uuid.UUID,
    now: datetime,
    default: int,
) -> None:
    """Raises RateLimited when the fan has had the creator's budget of automated messages in
    the last 24 hours. (A fan has one conversation per platform, and a fan row per platform.)"""
    limit = await budget_of(session, creator_id=creator_id, default=default)
    sent = await session.execute(
        select(Message.created_at)
        .where(
            Message.creator_id == creator_id,
            Message.conversation_id == conversation_id,
            Message.created_at > now - WINDOW,
            Message.sender_kind.in_(AUTOMATED_SENDERS),
        )
        .order_by(Message.created_at.desc())
        .limit(max(limit, 1))
    )
    recent = list(sent.scalars())
    if len(recent) < limit:
        return
    frees_at = recent[-1] + WINDOW if recent else now + WINDOW
    raise RateLimited(
        message=f"This fan has had {limit} automated messages in the last 24 hours, "
        "the most the creator allows.",
        reason=BUDGET_EXHAUSTED,
        retry_after_seconds=max((frees_at - now).total_seconds(), 1.0),
        metadata={"messages_per_fan_per_day": str(limit)},
    )
