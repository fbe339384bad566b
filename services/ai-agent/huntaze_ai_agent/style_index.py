"""The creator's past replies, retrieved by likeness to a new fan message with PostgreSQL full
text search: no model, no download. A message matches on any of its words (an OR query), ranked
by how much of it the earlier fan message shares."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze_ai_agent.models import SCHEMA, SEARCH_CONFIG, PastReply
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


# Each message's best past replies, for any number of messages in one statement of one shape.
# plainto_tsquery ANDs the words (and drops punctuation, so fan text cannot inject query
# syntax); turning its ANDs into ORs matches messages sharing any word.
_SIMILAR = text(
    f"""
    SELECT wanted.key, best.fan_message, best.reply
    FROM unnest(CAST(:keys AS uuid[]), CAST(:creators AS uuid[]), CAST(:texts AS text[]))
        AS wanted(key, creator_id, text)
    CROSS JOIN LATERAL (
        SELECT p.fan_message, p.reply, p.created_at, ts_rank_cd(p.search_vector, q.query) AS rank
        FROM {SCHEMA}.past_replies AS p,
            to_tsquery('{SEARCH_CONFIG}', replace(
                CAST(plainto_tsquery('{SEARCH_CONFIG}', wanted.text) AS text), '&', '|'
            )) AS q(query)
        WHERE p.creator_id = wanted.creator_id AND p.search_vector @@ q.query
        ORDER BY rank DESC, p.created_at DESC
        LIMIT :limit
    ) AS best
    ORDER BY best.rank DESC, best.created_at DESC
    """  # noqa: S608 (constants only)
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
    rows = await session.execute(
        _SIMILAR,
        {
            "keys": [lookup.key for lookup in lookups],
            "creators": [lookup.creator_id for lookup in lookups],
            "texts": [lookup.text for lookup in lookups],
            "limit": limit,
        },
    )
    for row in rows:
        found[row.key].append(StyleExample(fan_message=row.fan_message, reply=row.reply))
    return found
