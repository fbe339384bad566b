"""The creator's past replies, retrieved by likeness to a new fan message.

By default with PostgreSQL full text search: no model, no download. A message matches on any of
its words (an OR query), ranked by how much of it the earlier fan message shares.

With an embedding model configured and the pgvector extension in the database (migration 0002
creates `reply_vectors` only then), by meaning: a background loop gives every past reply the
vector of the fan message it answered, and a new message finds the nearest ones (cosine
distance) among its creator's. `StyleIndex` answers both ways alike; it keeps to text search
without the extension, for a creator none of whose replies has a vector yet, and whenever the
embeddings server fails."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_ai_agent.embeddings import Embedder, EmbeddingError
from huntaze_ai_agent.models import SCHEMA, SEARCH_CONFIG, PastReply
from huntaze_ai_agent.prompts import StyleExample
from huntaze_kit.logging import get_logger

log = get_logger(__name__)

REPLY_VECTORS = "reply_vectors"
# Past replies given their vectors per embeddings request.
EMBED_BATCH = 64

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


# The nearest past replies by the vectors of the fan messages they answered.
_NEAREST = text(
    f"""
    SELECT wanted.key, best.fan_message, best.reply
    FROM unnest(CAST(:keys AS uuid[]), CAST(:creators AS uuid[]), CAST(:vectors AS text[]))
        AS wanted(key, creator_id, vector)
    CROSS JOIN LATERAL (
        SELECT p.fan_message, p.reply, v.embedding <=> CAST(wanted.vector AS vector) AS distance
        FROM {SCHEMA}.{REPLY_VECTORS} AS v
        JOIN {SCHEMA}.past_replies AS p ON p.id = v.past_reply_id
        WHERE v.creator_id = wanted.creator_id AND v.model = :model
        ORDER BY distance
        LIMIT :limit
    ) AS best
    ORDER BY best.distance
    """  # noqa: S608 (constants only)
)
_WITHOUT_VECTORS = text(
    f"""
    SELECT p.id, p.creator_id, p.fan_message
    FROM {SCHEMA}.past_replies AS p
    WHERE NOT EXISTS (
        SELECT 1 FROM {SCHEMA}.{REPLY_VECTORS} AS v
        WHERE v.creator_id = p.creator_id AND v.model = :model AND v.past_reply_id = p.id
    )
    ORDER BY p.id
    LIMIT :limit
    FOR UPDATE OF p SKIP LOCKED
    """  # noqa: S608 (constants only)
)
_ADD_VECTORS = text(
    f"""
    INSERT INTO {SCHEMA}.{REPLY_VECTORS} (creator_id, model, past_reply_id, embedding)
    SELECT t.creator_id, :model, t.id, CAST(t.vector AS vector)
    FROM unnest(CAST(:creators AS uuid[]), CAST(:ids AS bigint[]), CAST(:vectors AS text[]))
        AS t(creator_id, id, vector)
    ON CONFLICT DO NOTHING
    """  # noqa: S608 (constants only)
)


def _vector_text(vector: Sequence[float]) -> str:
    """pgvector's text form."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


class StyleIndex:
    """Past replies like new messages: by vectors when `embedder` is set and the database has
    the vectors' table (see `open`), else by text search."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder = embedder
        self.vectors = False

    async def open(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Looks for the vectors' table: without it (no pgvector), text search alone."""
        if self.embedder is None:
            return
        async with sessions() as session:
            found = await session.scalar(
                text("SELECT to_regclass(:name) IS NOT NULL"),
                {"name": f"{SCHEMA}.{REPLY_VECTORS}"},
            )
        self.vectors = bool(found)
        if not self.vectors:
            log.warning("ai.reply_vectors_unavailable", fallback="text_search")

    async def similar_many(
        self, session: AsyncSession, lookups: Sequence[Lookup], *, limit: int = 5
    ) -> dict[uuid.UUID, list[StyleExample]]:
        """Each message's best `limit` past replies of its creator, best first."""
        if not self.vectors or self.embedder is None or not lookups:
            return await similar_replies_many(session, lookups, limit=limit)
        try:
            vectors = await self.embedder.embed([lookup.text for lookup in lookups])
        except EmbeddingError as error:
            log.warning("ai.embeddings_failed", error=str(error), fallback="text_search")
            return await similar_replies_many(session, lookups, limit=limit)
        found: dict[uuid.UUID, list[StyleExample]] = {lookup.key: [] for lookup in lookups}
        rows = await session.execute(
            _NEAREST,
            {
                "keys": [lookup.key for lookup in lookups],
                "creators": [lookup.creator_id for lookup in lookups],
                "vectors": [_vector_text(vector) for vector in vectors],
                "model": self.embedder.model,
                "limit": limit,
            },
        )
        for row in rows:
            found[row.key].append(StyleExample(fan_message=row.fan_message, reply=row.reply))
        # A creator none of whose replies has a vector yet still gets text search's.
        missing = [lookup for lookup in lookups if not found[lookup.key]]
        if missing:
            found |= await similar_replies_many(session, missing, limit=limit)
        return found

    async def embed_pending(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Gives up to `EMBED_BATCH` past replies without a vector theirs; how many. The rows
        stay locked meanwhile, so replicas share the work without doing it twice."""
        if not self.vectors or self.embedder is None:
            return 0
        model = self.embedder.model
        async with sessions() as session:
            rows = (
                await session.execute(_WITHOUT_VECTORS, {"model": model, "limit": EMBED_BATCH})
            ).all()
            if not rows:
                return 0
            vectors = await self.embedder.embed([row.fan_message for row in rows])
            await session.execute(
                _ADD_VECTORS,
                {
                    "model": model,
                    "creators": [row.creator_id for row in rows],
                    "ids": [row.id for row in rows],
                    "vectors": [_vector_text(vector) for vector in vectors],
                },
            )
            await session.commit()
        return len(rows)
