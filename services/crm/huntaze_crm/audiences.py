"""Campaign audiences (`ResolveAudience`, for services): the fans of a list or a saved segment,
or of a default audience (fans in some subscription states, or silent for some days), a page at a
time by fan id, each with their last automated and last human message within a window: what a
campaign needs to apply its exclusions itself. Reads only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Text, and_, exists, false, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze_crm.automation import AUTOMATED_SENDERS
from huntaze_crm.models import Fan, FanList, FanListMember, Message, fan_shown_name
from huntaze_crm.segments import Segment
from huntaze_kit.errors import NotFound

HUMAN_SENDERS = ("creator", "team_member")
DEFAULT_LIMIT = 1000


@dataclass(frozen=True)
class AudienceFan:
    fan_id: uuid.UUID
    platform: str
    platform_fan_id: str
    display_name: str
    subscription_state: str
    last_automated_at: datetime | None
    last_human_at: datetime | None


@dataclass(frozen=True)
class AudienceQuery:
    """What to resolve: a list, or (without one) the fans in `subscription_states` or silent
    for `silent_for_days`."""

    list_id: uuid.UUID | None
    subscription_states: tuple[str, ...]
    silent_for_days: int
    after_fan_id: uuid.UUID | None
    limit: int
    recent_sends_within: timedelta | None


async def _condition(
    session: AsyncSession, *, creator_id: uuid.UUID, query: AudienceQuery, now: datetime
) -> ColumnElement[bool]:
    if query.list_id is not None:
        fan_list = await session.scalar(
            select(FanList).where(FanList.creator_id == creator_id, FanList.id == query.list_id)
        )
        if fan_list is None:
            raise NotFound(message="List not found.", reason="LIST_NOT_FOUND")
        if fan_list.kind == "dynamic" and fan_list.segment is not None:
            return Segment.from_json(fan_list.segment).condition(now=now)
        return exists().where(
            FanListMember.creator_id == creator_id,
            FanListMember.list_id == query.list_id,
            FanListMember.fan_id == Fan.id,
        )
    parts: list[ColumnElement[bool]] = []
    if query.subscription_states:
        parts.append(Fan.subscription_state.in_(query.subscription_states))
    if query.silent_for_days:
        since = now - timedelta(days=query.silent_for_days)
        parts.append(
            func.coalesce(func.greatest(Fan.last_seen_at, Fan.last_message_at), Fan.created_at)
            < since
        )
    return or_(false(), *parts)


async def resolve_audience(
    session: AsyncSession, *, creator_id: uuid.UUID, query: AudienceQuery, now: datetime
) -> list[AudienceFan]:
    condition = await _condition(session, creator_id=creator_id, query=query, now=now)
    statement = (
        select(
            Fan.id,
            Fan.platform,
            Fan.platform_fan_id,
            literal_column(fan_shown_name(Fan.__tablename__), type_=Text),
            Fan.subscription_state,
        )
        .where(Fan.creator_id == creator_id, condition)
        .order_by(Fan.id)
        .limit(query.limit or DEFAULT_LIMIT)
    )
    if query.after_fan_id is not None:
        statement = statement.where(Fan.id > query.after_fan_id)
    rows = (await session.execute(statement)).all()
    recent: dict[uuid.UUID, tuple[datetime | None, datetime | None]] = {}
    if rows and query.recent_sends_within is not None:
        # Bounded by the window: only the creator's recent outgoing messages are read.
        sends = await session.execute(
            select(
                Message.fan_id,
                func.max(Message.created_at).filter(Message.sender_kind.in_(AUTOMATED_SENDERS)),
                func.max(Message.created_at).filter(Message.sender_kind.in_(HUMAN_SENDERS)),
            )
            .where(
                and_(
                    Message.creator_id == creator_id,
                    Message.direction == "out",
                    Message.created_at > now - query.recent_sends_within,
                    Message.fan_id.in_([row[0] for row in rows]),
                )
            )
            .group_by(Message.fan_id)
        )
        recent = {fan_id: (automated, human) for fan_id, automated, human in sends.all()}
    return [
        AudienceFan(
            fan_id=fan_id,
            platform=platform,
            platform_fan_id=platform_fan_id or "",
            display_name=name or "",
            subscription_state=state,
            last_automated_at=recent.get(fan_id, (None, None))[0],
            last_human_at=recent.get(fan_id, (None, None))[1],
        )
        for fan_id, platform, platform_fan_id, name, state in rows
    ]
