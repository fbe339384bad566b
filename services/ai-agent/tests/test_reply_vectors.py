"""Past replies retrieved by meaning: vectors from an OpenAI-compatible embeddings server (the
local test server, deterministic vectors) stored in pgvector, behind the same interface as
text search; and the fall back to text search without the extension, for a creator without
vectors yet, and when the embeddings server fails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import openai
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.ai.v1 import ai_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze_ai_agent.embeddings import Embedder
from huntaze_ai_agent.models import SCHEMA
from huntaze_ai_agent.prompts import StyleExample
from huntaze_ai_agent.server import MIGRATIONS_PACKAGE
from huntaze_ai_agent.style_index import Lookup, StyleIndex, add_past_reply
from huntaze_devstack.roles import role_url
from huntaze_devstack.testing import eventually
from huntaze_kit.db import create_engine, libpq_url, session_factory
from huntaze_kit.migrations import upgrade_async

from .conftest import EMBEDDING_DIMENSIONS, Failure, FakeOpenAI, Stack

MODEL = "test-embeddings"
PAST = [
    ("hey beautiful", "Hi you 😘"),
    ("what are you doing this saturday", "Beach day! 🌊"),
    ("do you sell feet pics", "Check my vault 😉"),
]


def embedder(fake: FakeOpenAI) -> Embedder:
    client = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="none", max_retries=0)
    return Embedder(client=client, model=MODEL)


async def remember(sessions: async_sessionmaker[AsyncSession], creator: uuid.UUID) -> None:
    async with sessions() as session:
        for fan_message, reply in PAST:
            add_past_reply(session, creator_id=creator, fan_message=fan_message, reply=reply)
        await session.commit()


def lookup(creator: uuid.UUID, text: str) -> Lookup:
    return Lookup(key=uuid.uuid4(), creator_id=creator, text=text)


async def test_past_replies_are_found_by_meaning_with_vectors(
    sessions: async_sessionmaker[AsyncSession], fake_openai: FakeOpenAI
) -> None:
    creator, other = uuid.uuid4(), uuid.uuid4()
    index = StyleIndex(embedder(fake_openai))
    await index.open(sessions)
    assert index.vectors
    await remember(sessions, creator)
    async with sessions() as session:
        add_past_reply(session, creator_id=other, fan_message="hello gorgeous", reply="not yours")
        await session.commit()

    assert await index.embed_pending(sessions) == len(PAST) + 1
    assert await index.embed_pending(sessions) == 0  # each reply gets its vector once
    [stored] = [r for r in fake_openai.requests if r.path == "/v1/embeddings"]
    assert stored.body["model"] == MODEL
    assert sorted(stored.body["input"]) == sorted([m for m, _ in PAST] + ["hello gorgeous"])

    greeting, weekend = lookup(creator, "hello gorgeous"), lookup(creator, "sunday plans?")
    async with sessions() as session:
        found = await index.similar_many(session, [greeting, weekend], limit=1)
        # No word in common: text search finds nothing.
        plain = await StyleIndex().similar_many(session, [greeting, weekend], limit=1)

    assert found[greeting.key] == [StyleExample("hey beautiful", "Hi you 😘")]
    assert found[weekend.key] == [StyleExample("what are you doing this saturday", "Beach day! 🌊")]
    assert plain == {greeting.key: [], weekend.key: []}
    asked = [r for r in fake_openai.requests if r.path == "/v1/embeddings"][-1]
    assert asked.body["input"] == ["hello gorgeous", "sunday plans?"]
    async with sessions() as session:
        dimensions = await session.scalar(
            text(f"SELECT DISTINCT vector_dims(embedding) FROM {SCHEMA}.reply_vectors")
        )
    assert dimensions == EMBEDDING_DIMENSIONS


async def test_a_creator_without_vectors_and_a_failing_server_get_text_search(
    sessions: async_sessionmaker[AsyncSession], fake_openai: FakeOpenAI
) -> None:
    creator = uuid.uuid4()
    index = StyleIndex(embedder(fake_openai))
    await index.open(sessions)
    await remember(sessions, creator)  # not embedded yet

    weekend = lookup(creator, "what about this saturday")
    async with sessions() as session:
        before = await index.similar_many(session, [weekend], limit=1)
    await index.embed_pending(sessions)
    fake_openai.failures = [Failure(status=500, retry_after_ms=None)]
    async with sessions() as session:
        failing = await index.similar_many(session, [weekend], limit=1)

    expected = [StyleExample("what are you doing this saturday", "Beach day! 🌊")]
    assert before[weekend.key] == expected
    assert failing[weekend.key] == expected
    assert fake_openai.failures == []  # the failure was met


@pytest.fixture
async def plain_role(database_url: str) -> AsyncIterator[str]:
    """The database as a role that may not create the extension (no superuser), owning the
    `ai` schema, as a service role does: where pgvector was never installed."""
    name = f"ai_plain_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(libpq_url(database_url))
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER')
        await admin.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO "{name}"')
        await admin.execute(f'CREATE SCHEMA {SCHEMA} AUTHORIZATION "{name}"')
        yield role_url(database_url, name)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; DROP OWNED BY "{name}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


async def test_without_the_extension_the_index_keeps_to_text_search(
    plain_role: str, fake_openai: FakeOpenAI
) -> None:
    await upgrade_async(plain_role, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    engine = create_engine(plain_role, application_name="ai-agent-tests", pool_size=2)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            installed = await session.scalar(
                text("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")
            )
        assert installed == 0
        index = StyleIndex(embedder(fake_openai))
        await index.open(sessions)
        creator = uuid.uuid4()
        await remember(sessions, creator)

        assert not index.vectors
        assert await index.embed_pending(sessions) == 0
        weekend = lookup(creator, "this saturday?")
        async with sessions() as session:
            found = await index.similar_many(session, [weekend], limit=1)
        assert found[weekend.key] == [
            StyleExample("what are you doing this saturday", "Beach day! 🌊")
        ]
        assert fake_openai.requests == []
    finally:
        await engine.dispose()


class TestTheAgentWithAnEmbeddingModel:
    """The agent process configured with the embeddings server: a creator's reply gets its
    vector in the background, and the next draft of the creator asks for the fan message's."""

    @pytest.fixture
    def agent_overrides(self, fake_openai: FakeOpenAI) -> dict[str, Any]:
        return {
            "ai_embeddings_base_url": f"{fake_openai.url}/v1",
            "ai_embeddings_model": MODEL,
            "ai_embeddings_poll_seconds": 0.1,
        }

    async def test_replies_are_embedded_and_drafts_look_them_up(
        self, stack: Stack, fake_openai: FakeOpenAI
    ) -> None:
        service = stack.agent.service
        assert service is not None
        assert service.style.vectors
        creator = await stack.sign_up()
        await stack.platform.fan_writes(creator, platform_message_id="m-1", text="hey beautiful")
        [first] = await stack.settled(creator)
        await stack.crm_stub.SendMessage(
            crm_pb2.SendMessageRequest(
                conversation_id=first.conversation_id, text="Hi you 😘", idempotency_key="mine-1"
            ),
            metadata=creator.auth,
        )
        await eventually(lambda: _embedded(fake_openai), lambda inputs: ["hey beautiful"] in inputs)

        await stack.platform.fan_writes(creator, platform_message_id="m-2", text="hello gorgeous")

        found = await eventually(
            lambda: stack.suggestions(creator),
            lambda s: len(s) == 2 and s[0].status == ai_pb2.SUGGESTION_STATUS_SUGGESTED,
        )
        assert ["hello gorgeous"] in await _embedded(fake_openai)
        assert found[0].provider == "local"


async def _embedded(fake: FakeOpenAI) -> list[list[str]]:
    return [list(r.body["input"]) for r in fake.requests if r.path == "/v1/embeddings"]
