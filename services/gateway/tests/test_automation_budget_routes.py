"""The per-fan automation budget over HTTP, served from the routes declared in `crm.proto`: read
and set by the creator, a fan's use of it after automated sends (made over gRPC with the AI
agent's service token, as the agent makes them), and bad input as problem documents."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import nats
import pytest

from huntaze.auth.v1 import auth_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze_devstack.testing import (
    PlatformEvents,
    assert_problem,
    eventually,
    problem_fields,
    token_from_email,
)

PASSWORD = "Violet-Harbour-Lantern-42"
_addresses = iter(range(1, 10_000))


def _from_elsewhere() -> dict[str, str]:
    """A client address of its own per call (sign-ups are limited per address)."""
    return {"x-forwarded-for": f"198.51.100.{next(_addresses) % 250 + 1}"}


async def sign_up(live: Any) -> tuple[str, dict[str, str]]:
    """A verified creator's id and the headers of their access token."""
    email = f"budget-{uuid.uuid4().hex[:10]}@example.com"
    client = live.client
    registered = await client.post(
        "/api/auth/register",
        json={"email": email, "password": PASSWORD},
        headers=_from_elsewhere(),
    )
    assert registered.status_code == 201, registered.text
    mail = await live.mail.wait_for_async(lambda m: email in str(m["To"]), timeout=15.0)
    verified = await client.post(
        "/api/auth/verify-email", json={"token": token_from_email(mail)}, headers=_from_elsewhere()
    )
    assert verified.status_code == 200, verified.text
    login = await client.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD}, headers=_from_elsewhere()
    )
    assert login.status_code == 200, login.text
    body = login.json()
    return body["user"]["id"], {"authorization": f"Bearer {body['tokens']['accessToken']}"}


async def test_the_creator_reads_and_sets_the_budget(live: Any) -> None:
    _, headers = await sign_up(live)
    read = await live.client.get("/api/crm/automation-budget", headers=headers)
    assert read.status_code == 200, read.text
    default = read.json()["messagesPerFanPerDay"]
    assert default > 0

    changed = await live.client.put(
        "/api/crm/automation-budget",
        json={"budget": {"messagesPerFanPerDay": 3}},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"messagesPerFanPerDay": 3}
    again = await live.client.get("/api/crm/automation-budget", headers=headers)
    assert again.json() == {"messagesPerFanPerDay": 3}

    # Zero is a budget too: no automated message at all.
    none = await live.client.put(
        "/api/crm/automation-budget", json={"budget": {"messagesPerFanPerDay": 0}}, headers=headers
    )
    assert none.json() == {"messagesPerFanPerDay": 0}


async def test_bad_budgets_are_problems_and_change_nothing(live: Any) -> None:
    _, headers = await sign_up(live)
    await live.client.put(
        "/api/crm/automation-budget", json={"budget": {"messagesPerFanPerDay": 5}}, headers=headers
    )
    for body, field in (
        ({"budget": {"messagesPerFanPerDay": 1001}}, "budget.messagesPerFanPerDay"),
        ({"budget": {"messagesPerFanPerDay": -1}}, "budget.messagesPerFanPerDay"),
        ({"budget": {}}, "budget.messagesPerFanPerDay"),
        ({}, "budget"),
    ):
        answer = await live.client.put("/api/crm/automation-budget", json=body, headers=headers)
        problem = assert_problem(answer, 422)
        assert field in problem_fields(problem), (body, problem)
    unchanged = await live.client.get("/api/crm/automation-budget", headers=headers)
    assert unchanged.json() == {"messagesPerFanPerDay": 5}
    anonymous = await live.client.get("/api/crm/automation-budget")
    assert_problem(anonymous, 401)
    # The same rules hold for a gRPC caller: no budget is not a budget of zero.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await live.runtime.crm.UpdateAutomationBudget(
            crm_pb2.UpdateAutomationBudgetRequest(),
            metadata=(("authorization", headers["authorization"]),),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    unchanged = await live.client.get("/api/crm/automation-budget", headers=headers)
    assert unchanged.json() == {"messagesPerFanPerDay": 5}


async def test_a_fans_usage_counts_automated_sends_only(live: Any) -> None:
    creator_id, headers = await sign_up(live)
    await live.client.put(
        "/api/crm/automation-budget", json={"budget": {"messagesPerFanPerDay": 2}}, headers=headers
    )
    client = await nats.connect(live.nats_url)
    try:
        await PlatformEvents(client.jetstream()).fan_writes(
            _Creator(creator_id), platform_message_id="m-1", text="hi"
        )
    finally:
        await client.close()
    fans = await eventually(lambda: _fans(live, headers), lambda found: len(found) == 1)
    fan_id = fans[0]["id"]
    usage_path = f"/api/crm/fans/{fan_id}/automation-usage"

    fresh = await live.client.get(usage_path, headers=headers)
    assert fresh.status_code == 200, fresh.text
    assert fresh.json() == {
        "fanId": fan_id,
        "messagesPerFanPerDay": 2,
        "sentLastDay": 0,
        "remaining": 2,
        "nextAvailableAt": None,
    }

    secret = live.ai.settings.ai_service_secret
    assert secret is not None
    issued = await live.runtime.auth.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(
            service_name="ai", service_secret=secret.get_secret_value(), creator_id=creator_id
        )
    )
    service = (("authorization", f"Bearer {issued.access_token}"),)
    for n in range(2):
        await live.runtime.crm.SendMessage(
            crm_pb2.SendMessageRequest(
                fan_id=fan_id,
                text=f"automated {n}",
                idempotency_key=f"auto-{n}",
                sender_kind=crm_pb2.SENDER_KIND_AI,
            ),
            metadata=service,
        )
    # The creator's own reply does not count.
    mine = await live.client.post(
        "/api/messages/reply",
        json={"fanId": fan_id, "text": "from me", "idempotencyKey": "mine-1"},
        headers=headers,
    )
    assert mine.status_code == 201, mine.text

    spent = (await live.client.get(usage_path, headers=headers)).json()
    assert (spent["sentLastDay"], spent["remaining"]) == (2, 0)
    assert spent["nextAvailableAt"] is not None

    _, stranger = await sign_up(live)
    assert_problem(await live.client.get(usage_path, headers=stranger), 404)
    assert_problem(
        await live.client.get("/api/crm/fans/not-a-uuid/automation-usage", headers=headers), 422
    )


class _Creator:
    def __init__(self, creator_id: str) -> None:
        self.id = creator_id


async def _fans(live: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    answer = await live.client.get("/api/crm/fans", headers=headers)
    fans: list[dict[str, Any]] = answer.json()["fans"]
    return fans
