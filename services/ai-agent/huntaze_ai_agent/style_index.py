"""The creator's past replies, retrieved by likeness to a new fan message with PostgreSQL full
text search: no model, no download. A message matches on any of its words (an OR query), ranked
by how much of it the earlier fan message shares."""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, Text, cast, func, literal_column, select
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


async def similar_replies(
    session: AsyncSession, *, creator_id: uuid.UUID, text: str, limit: int = 5
) -> list[StyleExample]:
    """The creator's past exchanges most like `text`, best first."""
    config: ColumnElement[str] = literal_column(f"'{SEARCH_CONFIG}'::regconfig")
    # plainto_tsquery ANDs the words (and drops punctuation, so fan text cannot inject query
    # syntax); turning its ANDs into ORs matches messages sharing any word.
    query = func.replace(cast(func.plainto_tsquery(config, text), Text), "&", "|")
    tsquery = func.to_tsquery(config, query)
    rank = func.ts_rank_cd(PastReply.search_vector, tsquery)
    rows = await session.execute(
        select(PastReply.fan_message, PastReply.reply)
        .where(PastReply.creator_id == creator_id, PastReply.search_vector.op("@@")(tsquery))
        .order_by(rank.desc(), PastReply.created_at.desc())
        .limit(limit)
    )
    return [StyleExample(fan_message=row.fan_message, reply=row.reply) for row in rows]
