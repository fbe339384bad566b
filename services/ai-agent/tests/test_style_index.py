"""Retrieval of the creator's past replies by likeness, with PostgreSQL text search, and the
stored configuration."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_ai_agent.configuration import AiConfiguration, Guardrails
from huntaze_ai_agent.prompts import StyleExample
from huntaze_ai_agent.repository import load_configuration, save_configuration
from huntaze_ai_agent.style_index import add_past_reply, similar_replies


async def test_past_replies_most_like_the_message_come_first(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    creator, other = uuid.uuid4(), uuid.uuid4()
    async with sessions() as session:
        for fan_message, reply in [
            ("good morning beautiful", "Morning! Coffee first ☕"),
            ("how was your weekend at the beach", "Sunny and salty 🌊"),
            ("what did you do this weekend", "Lazy weekend in bed 😴"),
            ("do you sell feet pics", "Check my vault 😉"),
        ]:
            add_past_reply(session, creator_id=creator, fan_message=fan_message, reply=reply)
        add_past_reply(session, creator_id=other, fan_message="weekend plans?", reply="not yours")
        await session.commit()

        found = await similar_replies(session, creator_id=creator, text="How was your WEEKEND?!")
        nothing = await similar_replies(session, creator_id=creator, text="zebra quantum")
        syntax = await similar_replies(session, creator_id=creator, text="a & | ! ( :* ' weekend")
        empty = await similar_replies(session, creator_id=creator, text="!!! ???")

    assert found[0] == StyleExample("how was your weekend at the beach", "Sunny and salty 🌊")
    assert {example.reply for example in found} >= {"Sunny and salty 🌊", "Lazy weekend in bed 😴"}
    assert all(example.reply != "not yours" for example in found + syntax)
    assert nothing == []
    assert {example.reply for example in syntax} == {"Sunny and salty 🌊", "Lazy weekend in bed 😴"}
    assert empty == []


async def test_the_configuration_is_stored_and_replaced(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    creator = uuid.uuid4()
    saved = AiConfiguration(mode="autopilot", guardrails=Guardrails(handoff_spend_cents=10_000))
    async with sessions() as session:
        assert await load_configuration(session, creator_id=creator) == AiConfiguration()
        await save_configuration(session, creator_id=creator, configuration=AiConfiguration())
        await save_configuration(session, creator_id=creator, configuration=saved)
        await session.commit()
    async with sessions() as session:
        assert await load_configuration(session, creator_id=creator) == saved
        assert await load_configuration(session, creator_id=uuid.uuid4()) == AiConfiguration()
