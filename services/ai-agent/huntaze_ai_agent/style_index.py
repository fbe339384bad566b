"""The creator's past replies, retrieved by likeness to a new fan message with PostgreSQL full
text search: no model, no download. A message matches on any of its words (an OR query), ranked
by how much of it the earlier fan message shares."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Text,
    cast,
    column,
    func,
    literal_column,
    select,
    true,
    values,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze_ai_agent.models import SEARCH_CONFIG, PastReply
from huntaze_ai_agent.prompts import StyleExample

# Past replies longer than this teach little about style and cost prompt tokens.
MAX_EXAMPLE_CHARS = 500


def add_past_reply(
    session: AsyncSession, *, creator_id: uuid.UUID, fan_message: str, reply: str
) -> None:
    session.add(
        PastReply(
            creator_id=creator_id,
            fan_message=fan_message[:MAX_EXAMPLE_CHARS],
            reply=reply[:MAX_EXAMPLE_CHARS],
        )
    )


@dataclass(frozen=True)
class Lookup:
    """One message to find past replies like: `key` names it in the answer."""

    key: uuid.UUID
    creator_id: uuid.UUID
    text: str


async def similar_replies(
    session: AsyncSession, *, creator_id: uuid.UUID, text: str, limit: int = 5
) -> list[StyleExample]:
    """The creator's past exchanges most like `text`, best first."""
    key = uuid.uuid4()
    found = await similar_replies_many(
        session, [Lookup(key=key, creator_id=creator_id, text=text)], limit=limit
    )
    return found[key]


async def similar_replies_many(
    session: AsyncSession, lookups: Sequence[Lookup], *, limit: int = 5
) -> dict[uuid.UUID, list[StyleExample]]:
    """`similar_replies` for many messages in one query: each one's best `limit`."""
    found: dict[uuid.UUID, list[StyleExample]] = {lookup.key: [] for lookup in lookups}
    if not lookups:
        return found
    wanted = values(
        column("key", UUID(as_uuid=True)),
        column("creator_id", UUID(as_uuid=True)),
        column("text", Text),
        name="wanted",
    ).data([(lookup.key, lookup.creator_id, lookup.text) for lookup in lookups])
    config: ColumnElement[str] = literal_column(f"'{SEARCH_CONFIG}'::regconfig")
    # plainto_tsquery ANDs the words (and drops punctuation, so fan text cannot inject query
    # syntax); turning its ANDs into ORs matches messages sharing any word.
    query = func.replace(cast(func.plainto_tsquery(config, wanted.c.text), Text), "&", "|")
    tsquery = func.to_tsquery(config, query)
    rank = func.ts_rank_cd(PastReply.search_vector, tsquery)
    best = (
        select(
            PastReply.fan_message,
            PastReply.reply,
            rank.label("rank"),
            PastReply.created_at.label("created_at"),
        )
        .where(
            PastReply.creator_id == wanted.c.creator_id,
            PastReply.search_vector.op("@@")(tsquery),
        )
        .order_by(rank.desc(), PastReply.created_at.desc())
        .limit(limit)
        .lateral("best")
    )
    rows = await session.execute(
        select(wanted.c.key, best.c.fan_message, best.c.reply)
        .select_from(wanted.join(best, true()))
        .order_by(best.c.rank.desc(), best.c.created_at.desc())
    )
    for row in rows:
        found[row.key].append(StyleExample(fan_message=row.fan_message, reply=row.reply))
    return found
