"""The AI agent through the gateway, every service a real process: a fan's message on the
platform becomes a suggestion on the creator's Server-Sent Events stream, the creator accepts it
over HTTP, and the CRM holds the queued reply; the configuration and audit routes; and the
agent's problems over HTTP."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from huntaze_devstack.testing import PlatformEvents, assert_problem, inbox_stream
from tests.conftest import Suite


@dataclass(frozen=True)
class Creator:
    id: str


async def ok(response: Any) -> Any:
    answer = await response
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_fan_message_becomes_a_suggestion_on_the_stream_then_a_queued_reply(
    suite: Suite, worker: PlatformEvents
) -> None:
    async with suite.signed_in() as (creator_id, token, client):
        saved = await ok(
            client.post(
                "/api/onboarding/save-ai-config",
                json={
                    "mode": "suggest",
                    "customResponses": [{"trigger": "good morning", "reply": "Morning {name} ☀️"}],
                },
            )
        )
        assert saved["mode"] == "suggest"
        async with inbox_stream(suite.gateway_url, token) as stream:
            # The stream is open before the CRM joins this watcher: write until it shows.
            for attempt in range(20):
                await worker.fan_writes(
                    Creator(creator_id),
                    platform_message_id=f"m-{uuid.uuid4().hex}",
                    text=f"good morning! {attempt}",
                    platform_fan_id=f"fan-{attempt}",
                    display_name="Lily Rose",
                )
                with contextlib.suppress(TimeoutError):
                    created = await stream.until("ai.suggestion_created", within=3.0)
                    break
            else:
                pytest.fail("no suggestion on the stream")
            assert created.data is not None
            notice = created.data["ai"]
            assert notice["status"] == "suggested"
            assert notice["text"] == "Morning Lily ☀️"

            accepted = await ok(
                client.post(f"/api/ai/suggestions/{notice['suggestionId']}/accept", json={})
            )
            assert accepted["status"] == "accepted"
            resolved = await stream.until("ai.suggestion_resolved")
            assert resolved.data is not None
            assert resolved.data["ai"]["status"] == "accepted"

        conversation = notice["conversationId"]
        messages = await ok(client.get(f"/api/crm/conversations/{conversation}/messages"))
        [reply] = [m for m in messages["messages"] if m["direction"] == "out"]
        assert reply["text"] == "Morning Lily ☀️"
        assert reply["deliveryStatus"] == "queued"
        assert reply["id"] == accepted["sentMessageId"]

        audit = await ok(client.get(f"/api/ai/conversations/{conversation}/audit"))
        [entry] = audit["entries"]
        assert entry["approvedBy"] == creator_id
        assert entry["provider"] == "local"
        assert entry["inputTokens"] == 0
        listed = await ok(client.get(f"/api/ai/suggestions?conversationId={conversation}"))
        assert [s["status"] for s in listed["suggestions"]] == ["accepted"]


async def test_the_configuration_routes_and_their_problems(suite: Suite) -> None:
    async with suite.signed_in() as (_, _token, client):
        default = await ok(client.get("/api/ai/config"))
        assert default["mode"] == "suggest"
        assert "paypal" in default["guardrails"]["bannedWords"]
        assert default["responseStyle"]["maxLength"] == 300

        body = {
            "mode": "autopilot",
            "responseStyle": {"useEmoji": False},
            "guardrails": {
                "handoffSpendCents": 25000,
                "quietHours": {"start": "22:00", "end": "08:00", "timezone": "Europe/Paris"},
            },
        }
        put = await ok(client.put("/api/ai/config", json=body))
        posted = await ok(client.post("/api/ai/config", json=body))
        read = await ok(client.get("/api/ai/config"))
        assert put == posted == read
        assert read["guardrails"]["handoffSpendCents"] == 25000
        assert read["responseStyle"]["useEmoji"] is False
        assert read["guardrails"]["quietHours"]["timezone"] == "Europe/Paris"

        bad_zone = await client.put(
            "/api/ai/config",
            json={
                "guardrails": {"quietHours": {"start": "22:00", "end": "08:00", "timezone": "x"}}
            },
        )
        assert_problem(bad_zone, 422)
        bad_mode = await client.put("/api/ai/config", json={"mode": "always"})
        assert_problem(bad_mode, 422)
        missing = await client.post(f"/api/ai/suggestions/{uuid.uuid4()}/accept", json={})
        assert_problem(missing, 404)

    async with suite.client() as anonymous:
        assert_problem(await anonymous.get("/api/ai/config"), 401)
