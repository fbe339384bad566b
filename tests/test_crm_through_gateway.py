"""The CRM end to end through the gateway, as real processes (auth, crm, gateway) with platform
events published to NATS the way the OnlyFans worker publishes them: nothing is lost across a
restart of the CRM, tenants are isolated on every route that takes an id (a matrix generated from
the gateway's OpenAPI document), retries are idempotent, the inbox streams as Server-Sent Events
with replay on reconnection, and bad input gets clear 4xx problem documents."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import httpx
import pytest

from huntaze_devstack.testing import (
    EventStreamReader,
    PlatformEvents,
    assert_problem,
    eventually,
    inbox_stream,
    problem_fields,
)
from huntaze_gateway.app import create_app
from huntaze_gateway.config import GatewaySettings

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
WAIT_SECONDS = 20.0
T = TypeVar("T")

DOCUMENT: dict[str, Any] = create_app(GatewaySettings()).openapi()


# ---------------------------------------------------------------------------------------------
# Helpers.


@dataclass
class Creator:
    id: str
    token: str
    client: httpx.AsyncClient

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, path, **kwargs)

    async def get(self, path: str) -> Any:
        response = await self.client.get(path)
        assert response.status_code == 200, f"GET {path}: {response.text}"
        return response.json()


@contextlib.asynccontextmanager
async def signed_up(suite: Any) -> AsyncIterator[Creator]:
    async with suite.signed_in() as (user_id, token, client):
        yield Creator(id=user_id, token=token, client=client)


async def open_conversation(
    worker: PlatformEvents, creator: Creator, *, fan: str, text: str = "hello there"
) -> dict[str, Any]:
    """A fan writes; answers the conversation once the CRM has stored it."""
    await worker.fan_writes(
        creator, platform_message_id=f"pm-{uuid.uuid4().hex}", text=text, platform_fan_id=fan
    )
    page = await eventually(
        lambda: creator.get("/api/crm/conversations?archived=all&limit=200"),
        lambda p: any(c["fan"]["platformFanId"] == fan for c in p["conversations"]),
    )
    found: dict[str, Any] = next(
        c for c in page["conversations"] if c["fan"]["platformFanId"] == fan
    )
    return found


async def view(creator: Creator) -> dict[str, Any]:
    """Everything the creator can see, read through the API."""
    seen: dict[str, Any] = {}
    fans = await creator.get("/api/crm/fans?limit=200")
    seen["fans"] = fans
    for fan in fans["fans"]:
        seen[f"fan {fan['id']}"] = await creator.get(f"/api/crm/fans/{fan['id']}")
        seen[f"purchases {fan['id']}"] = await creator.get(f"/api/crm/fans/{fan['id']}/purchases")
    conversations = await creator.get("/api/crm/conversations?archived=all&limit=200")
    seen["conversations"] = conversations
    for conversation in conversations["conversations"]:
        cid = conversation["id"]
        seen[f"conversation {cid}"] = await creator.get(f"/api/crm/conversations/{cid}")
        seen[f"messages {cid}"] = await creator.get(
            f"/api/crm/conversations/{cid}/messages?limit=200"
        )
    seen["quick replies"] = await creator.get("/api/crm/quick-replies?limit=200")
    lists = await creator.get("/api/crm/lists?limit=200")
    seen["lists"] = lists
    for fan_list in lists["lists"]:
        seen[f"members {fan_list['id']}"] = await creator.get(
            f"/api/crm/lists/{fan_list['id']}/members?limit=200"
        )
    return seen


@dataclass
class World:
    """One object of each kind, by the names the API gives their ids."""

    objects: dict[str, str] = field(default_factory=dict)


async def build_world(worker: PlatformEvents, creator: Creator, tag: str) -> World:
    platform_fan = f"of-{tag}-{uuid.uuid4().hex[:6]}"
    conversation = await open_conversation(worker, creator, fan=platform_fan)
    messages = await creator.get(f"/api/crm/conversations/{conversation['id']}/messages")
    quick_reply = await creator.call(
        "POST", "/api/crm/quick-replies", json={"shortcut": f"/{tag}", "text": "Thanks!"}
    )
    assert quick_reply.status_code == 201, quick_reply.text
    fan_list = await creator.call(
        "POST", "/api/crm/lists", json={"name": f"{tag} list", "kind": "static"}
    )
    assert fan_list.status_code == 201, fan_list.text
    added = await creator.call(
        "POST",
        f"/api/crm/lists/{fan_list.json()['id']}/members",
        json={"fanIds": [conversation["fanId"]]},
    )
    assert added.status_code == 200, added.text
    # The AI agent drafts a suggestion for the fan's message (suggest mode, by default).
    suggestions = await eventually(
        lambda: creator.get(f"/api/ai/suggestions?conversationId={conversation['id']}"),
        lambda page: [s["status"] for s in page["suggestions"]] == ["suggested"],
    )
    return World(
        {
            "fan": conversation["fanId"],
            "conversation": conversation["id"],
            "message": messages["messages"][0]["id"],
            "quick_reply": quick_reply.json()["id"],
            "list": fan_list.json()["id"],
            "suggestion": suggestions["suggestions"][0]["id"],
            "platform_fan": platform_fan,
        }
    )


# ---------------------------------------------------------------------------------------------
# Persistence.


async def test_nothing_is_lost_across_a_restart_of_the_crm(
    suite: Any, worker: PlatformEvents
) -> None:
    async with signed_up(suite) as ada:
        conversation = await open_conversation(worker, ada, fan="of-restart", text="hi")
        await worker.fan_pays(ada, transaction_id="tx-r1", cents=1500, platform_fan_id="of-restart")
        created = await ada.call(
            "POST",
            "/api/crm/fans",
            json={
                "platform": "tiktok",
                "displayName": "Zoe",
                "tags": ["vip"],
                "notes": "met at the show",
                "customFields": {"city": "Lyon", "visits": 2},
            },
        )
        assert created.status_code == 201, created.text
        quick_reply = await ada.call(
            "POST", "/api/crm/quick-replies", json={"shortcut": "/hi", "text": "Hello!"}
        )
        assert quick_reply.status_code == 201, quick_reply.text
        fan_list = await ada.call("POST", "/api/crm/lists", json={"name": "VIP", "kind": "static"})
        added = await ada.call(
            "POST",
            f"/api/crm/lists/{fan_list.json()['id']}/members",
            json={"fanIds": [created.json()["id"]]},
        )
        assert added.status_code == 200, added.text
        dynamic = await ada.call(
            "POST",
            "/api/crm/lists",
            json={"name": "Tippers", "kind": "dynamic", "segment": {"minValueCents": 1000}},
        )
        assert dynamic.status_code == 201, dynamic.text
        reply = {"conversationId": conversation["id"], "text": "Hey!", "idempotencyKey": "r-1"}
        sent = await ada.call("POST", "/api/messages/reply", json=reply)
        assert sent.status_code == 201, sent.text
        pinned = await ada.call(
            "PATCH", f"/api/crm/conversations/{conversation['id']}", json={"pinned": True}
        )
        assert pinned.status_code == 200, pinned.text
        await eventually(
            lambda: ada.get(f"/api/crm/fans/{conversation['fanId']}"),
            lambda fan: fan["valueCents"] == 1500,
        )
        before = await view(ada)
        assert len(before["fans"]["fans"]) == 2
        assert before["members " + dynamic.json()["id"]]["fans"][0]["valueCents"] == 1500

        async with suite.stopped("crm"):
            assert_problem(await ada.call("GET", "/api/crm/fans"), 503)
            # The platform keeps talking while the CRM is away.
            await worker.fan_writes(
                ada, platform_message_id="while-down", text="still there?", platform_fan_id="of-new"
            )

        newcomer = await open_conversation(worker, ada, fan="of-new", text="ignored")
        after = await view(ada)
        for key, seen in before.items():
            if key in ("fans", "conversations"):
                items = [
                    x for x in after[key][key] if newcomer["fanId"] not in (x["id"], x.get("fanId"))
                ]
                assert items == seen[key], key
            else:
                assert after[key] == seen, key
        stored = await ada.get(f"/api/crm/conversations/{newcomer['id']}/messages")
        assert [m["text"] for m in stored["messages"]][-1] == "still there?"
        # A retry after the restart still answers the first message.
        again = await ada.call("POST", "/api/messages/reply", json=reply)
        assert again.status_code == 200, again.text
        assert again.json()["message"]["id"] == sent.json()["message"]["id"]


# ---------------------------------------------------------------------------------------------
# Tenant isolation, generated from the OpenAPI document.

# Which object an id names, by the API's names for it (path, query and body).
OBJECT_OF = {
    "fan_id": "fan",
    "fanId": "fan",
    "fanIds": "fan",
    "conversation_id": "conversation",
    "conversationId": "conversation",
    "message_id": "message",
    "quick_reply_id": "quick_reply",
    "list_id": "list",
    "suggestion_id": "suggestion",
}
# Ids that name no object of the creator's: a session of the caller's own (auth checks it
# against the token's user), a team member of another service, the caller's own inbox position
# (the stream is the caller's by construction), and the platform's own ids.
NOT_OBJECTS = {"session_id", "assignedMemberId", "lastEventId"}
PLATFORM_PREFIX = "platform"
# What an operation needs besides ids to reach the look-up of its objects.
SAMPLE_BODIES: dict[str, dict[str, Any]] = {
    "PATCH /api/crm/fans/{fan_id}": {"displayName": "stolen", "tags": ["stolen"]},
    "PATCH /api/crm/conversations/{conversation_id}": {"pinned": True, "archived": True},
    "PATCH /api/crm/quick-replies/{quick_reply_id}": {"text": "stolen"},
    "PATCH /api/crm/lists/{list_id}": {"name": "stolen"},
    "POST /api/messages/reply": {"text": "stolen", "priceCents": 100, "idempotencyKey": "x"},
    "POST /api/of/send": {"text": "stolen", "priceCents": 100, "idempotencyKey": "x"},
    "POST /api/crm/fans/tags": {"addTags": ["stolen"], "removeTags": ["vip"]},
}
SAMPLE_QUERIES: dict[str, dict[str, str]] = {"GET /api/messages/search": {"q": "hello"}}
# Ids a request takes one of, never several: each is tried on its own.
ONE_OF: dict[str, tuple[str, ...]] = {
    "POST /api/messages/reply": ("conversationId", "fanId"),
    "POST /api/of/send": ("conversationId", "fanId"),
}
# Auth's own routes, isolated by auth (a session id is checked against the caller's user).
# Campaign routes' isolation is the campaigns service's own test (their ids change state: a
# draft's pause is refused, so one world cannot serve every route's control call).
OUT_OF_SCOPE_PREFIXES = ("/api/auth/", "/api/campaigns", "/api/of/campaigns")


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _looks_like_id(name: str) -> bool:
    return name.endswith(("Id", "Ids", "_id", "_ids")) and not name.startswith(PLATFORM_PREFIX)


@dataclass(frozen=True)
class Position:
    where: str  # path, query or body
    name: str


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    positions: tuple[Position, ...]
    required_query: tuple[str, ...]
    body_schema: dict[str, Any] | None
    # Which of the `ONE_OF` ids this variant of the operation names.
    variant: str = ""

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def test_id(self) -> str:
        return f"{self.key} ({self.variant})" if self.variant else self.key


def _operations_with_ids() -> list[Operation]:
    found: list[Operation] = []
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            positions: list[Position] = []
            required_query: list[str] = []
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" or (
                    parameter["in"] == "query" and _looks_like_id(parameter["name"])
                ):
                    positions.append(Position(parameter["in"], parameter["name"]))
                elif parameter["in"] == "query" and parameter.get("required"):
                    required_query.append(parameter["name"])
            body_schema = None
            if "requestBody" in operation:
                body_schema = _resolve(
                    operation["requestBody"]["content"]["application/json"]["schema"]
                )
                positions += [
                    Position("body", name)
                    for name in body_schema.get("properties", {})
                    if _looks_like_id(name)
                ]
            positions = [p for p in positions if p.name not in NOT_OBJECTS]
            if not positions:
                continue
            operation_found = Operation(
                method.upper(), path, tuple(positions), tuple(required_query), body_schema
            )
            alternatives = ONE_OF.get(operation_found.key, ())
            found += [
                replace(
                    operation_found,
                    positions=tuple(
                        p for p in positions if p.name == name or p.name not in alternatives
                    ),
                    variant=name,
                )
                for name in alternatives
            ] or [operation_found]
    return found


OPERATIONS = [op for op in _operations_with_ids() if not op.path.startswith(OUT_OF_SCOPE_PREFIXES)]


def _request(op: Operation, ids: dict[Position, str], many: dict[Position, list[str]]) -> dict:
    """The method, URL and body of a call naming `ids` at each position."""
    path = op.path
    params: dict[str, str] = dict(SAMPLE_QUERIES.get(op.key, {}))
    missing_query = [name for name in op.required_query if name not in params]
    if missing_query:
        pytest.fail(f"{op.key}: add a sample for the required query {missing_query}")
    body: dict[str, Any] | None = None
    if op.body_schema is not None:
        body = dict(SAMPLE_BODIES.get(op.key, {}))
    for position, value in ids.items():
        if position.where == "path":
            path = path.replace("{" + position.name + "}", value)
        elif position.where == "query":
            params[position.name] = value
        else:
            assert body is not None
            body[position.name] = many.get(position, value)
    if body is not None and op.body_schema is not None:
        missing_body = set(op.body_schema.get("required", [])) - set(body)
        if missing_body:
            pytest.fail(f"{op.key}: add a sample body with {sorted(missing_body)}")
    return {"method": op.method, "url": path, "params": params, "json": body}


def _kind(op: Operation, position: Position) -> str:
    kind = OBJECT_OF.get(position.name)
    if kind is None:
        pytest.fail(
            f"{op.key}: no way to build an object for the id `{position.name}` ({position.where})"
            " - add it to OBJECT_OF and to build_world, then make the route isolated"
        )
    return kind


@pytest.fixture(scope="module")
async def owner(suite: Any, worker: PlatformEvents) -> AsyncIterator[tuple[Creator, World]]:
    async with signed_up(suite) as ada:
        world = await build_world(worker, ada, "ada")
        await worker.fan_pays(
            ada,
            transaction_id=f"tx-{uuid.uuid4().hex}",
            cents=700,
            platform_fan_id=world.objects["platform_fan"],
        )
        await eventually(
            lambda: ada.get(f"/api/crm/fans/{world.objects['fan']}/purchases"),
            lambda page: len(page["purchases"]) == 1,
        )
        await eventually(
            lambda: ada.get(f"/api/crm/fans/{world.objects['fan']}"),
            lambda fan: fan["valueCents"] == 700,
        )
        yield ada, world


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.test_id for op in OPERATIONS])
async def test_another_creator_gets_404_and_changes_nothing(
    suite: Any, worker: PlatformEvents, owner: tuple[Creator, World], op: Operation
) -> None:
    ada, theirs = owner
    async with signed_up(suite) as bea:
        mine = await build_world(worker, bea, "bea")
        kinds = {position: _kind(op, position) for position in op.positions}
        before = await view(ada)
        for target in op.positions:
            ids = {p: (theirs if p == target else mine).objects[kinds[p]] for p in op.positions}
            many = {p: [ids[p]] for p in op.positions if p.name.endswith(("Ids", "_ids"))}
            request = _request(op, ids, many)
            answer = await bea.client.request(**request)
            body = assert_problem(answer, 404)
            assert body["code"].endswith("_NOT_FOUND"), (target, body)
            assert await view(ada) == before, f"{op.key} with ada's {target.name} changed her data"
        # The same call with the caller's own objects is well formed and goes through.
        own = {p: mine.objects[kinds[p]] for p in op.positions}
        request = _request(
            op, own, {p: [own[p]] for p in op.positions if p.name.endswith(("Ids", "_ids"))}
        )
        control = await bea.client.request(**request)
        assert control.status_code < 300, f"{op.key} with bea's own ids: {control.text}"
        assert await view(ada) == before


def test_the_matrix_covers_every_route_with_an_id() -> None:
    keys = {op.key for op in OPERATIONS}
    for expected in (
        "GET /api/crm/fans/{fan_id}",
        "PATCH /api/crm/fans/{fan_id}",
        "DELETE /api/crm/fans/{fan_id}",
        "GET /api/crm/fans/{fan_id}/purchases",
        "POST /api/crm/fans/tags",
        "GET /api/crm/conversations/{conversation_id}",
        "PATCH /api/crm/conversations/{conversation_id}",
        "POST /api/crm/conversations/{conversation_id}/read",
        "GET /api/crm/conversations/{conversation_id}/messages",
        "POST /api/messages/{message_id}/read",
        "POST /api/messages/reply",
        "GET /api/messages/search",
        "GET /api/crm/quick-replies/{quick_reply_id}",
        "PATCH /api/crm/quick-replies/{quick_reply_id}",
        "DELETE /api/crm/quick-replies/{quick_reply_id}",
        "GET /api/crm/lists/{list_id}",
        "PATCH /api/crm/lists/{list_id}",
        "DELETE /api/crm/lists/{list_id}",
        "GET /api/crm/lists/{list_id}/members",
        "POST /api/crm/lists/{list_id}/members",
        "DELETE /api/crm/lists/{list_id}/members",
        "GET /api/ai/suggestions",
        "GET /api/ai/suggestions/{suggestion_id}",
        "POST /api/ai/suggestions/{suggestion_id}/accept",
        "POST /api/ai/suggestions/{suggestion_id}/reject",
        "GET /api/ai/conversations/{conversation_id}/audit",
    ):
        assert expected in keys, expected
    every_path_with_a_parameter = {
        f"{method.upper()} {path}"
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if "{" in path and not path.startswith(OUT_OF_SCOPE_PREFIXES)
    }
    assert every_path_with_a_parameter <= keys


# ---------------------------------------------------------------------------------------------
# Idempotency.


async def test_retries_and_redeliveries_store_one_row(suite: Any, worker: PlatformEvents) -> None:
    async with signed_up(suite) as ada:
        conversation = await open_conversation(worker, ada, fan="of-idem", text="first")
        cid = conversation["id"]
        reply = {"conversationId": cid, "text": "Only once", "priceCents": 1200}
        one, two = await asyncio.gather(
            ada.call("POST", "/api/messages/reply", json=reply, headers={"Idempotency-Key": "k1"}),
            ada.call("POST", "/api/messages/reply", json=reply, headers={"Idempotency-Key": "k1"}),
        )
        assert sorted([one.status_code, two.status_code]) == [200, 201], (one.text, two.text)
        assert one.json()["message"]["id"] == two.json()["message"]["id"]
        three = await ada.call(
            "POST", "/api/messages/reply", json={**reply, "idempotencyKey": "k1"}
        )
        assert three.status_code == 200
        assert three.json()["created"] is False

        # The same inbound event delivered again, and the same platform message under a new
        # event id (the worker synced it twice).
        event_id = await worker.fan_writes(
            ada, platform_message_id="pm-dup", text="twice?", platform_fan_id="of-idem"
        )
        await worker.fan_writes(
            ada,
            platform_message_id="pm-dup",
            text="twice?",
            platform_fan_id="of-idem",
            event_id=event_id,
            msg_id="redelivered",
        )
        await worker.fan_writes(
            ada, platform_message_id="pm-dup", text="twice?", platform_fan_id="of-idem"
        )
        for _ in range(2):
            await worker.fan_pays(
                ada, transaction_id="tx-dup", cents=900, platform_fan_id="of-idem"
            )
        await worker.fan_writes(
            ada, platform_message_id="pm-last", text="last", platform_fan_id="of-idem"
        )
        page = await eventually(
            lambda: ada.get(f"/api/crm/conversations/{cid}/messages"),
            lambda p: p["messages"][0]["text"] == "last",
        )
        await asyncio.sleep(0.3)  # let any late duplicate arrive
        page = await ada.get(f"/api/crm/conversations/{cid}/messages")
        texts = [m["text"] for m in page["messages"]]
        assert texts == ["last", "twice?", "Only once", "first"]
        purchases = await eventually(
            lambda: ada.get(f"/api/crm/fans/{conversation['fanId']}/purchases"),
            lambda p: len(p["purchases"]) >= 1,
        )
        assert [p["amountCents"] for p in purchases["purchases"]] == [900]
        fan = await ada.get(f"/api/crm/fans/{conversation['fanId']}")
        assert fan["valueCents"] == 900


# ---------------------------------------------------------------------------------------------
# The inbox as Server-Sent Events.


@contextlib.asynccontextmanager
async def listening(
    suite: Any, creator: Creator, *, headers: dict[str, str] | None = None, query: str = ""
) -> AsyncIterator[EventStreamReader]:
    async with inbox_stream(
        suite.gateway_url, creator.token, query=query, headers=headers
    ) as reader:
        response = reader.response
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        yield reader


async def test_the_inbox_streams_and_replays_what_was_missed(
    suite: Any, worker: PlatformEvents
) -> None:
    async with signed_up(suite) as ada:
        async with listening(suite, ada) as stream:
            # The stream is open before the CRM has joined this watcher to the inbox: write
            # until a message shows (at most a few tries).
            for attempt in range(20):
                await worker.fan_writes(
                    ada, platform_message_id=f"live-0-{attempt}", text=f"are you there? {attempt}"
                )
                with contextlib.suppress(TimeoutError):
                    received = await stream.until("message.received", within=1.0)
                    break
            else:
                pytest.fail("no event on the stream")
            assert received.data is not None
            assert received.data["message"]["text"].startswith("are you there?")
            assert received.data["message"]["direction"] == "in"
            assert received.data["id"] == received.id
            updated = await stream.until("conversation.updated")
            assert updated.data is not None
            assert updated.data["conversation"]["lastMessagePreview"].startswith("are you")
            # Live from now on: the next message arrives at once.
            started = time.monotonic()
            await worker.fan_writes(ada, platform_message_id="live-1", text="still there?")
            live = await stream.until("message.received")
            assert live.data is not None
            assert live.data["message"]["text"] == "still there?"
            assert time.monotonic() - started < 5
            last_seen = (await stream.until("conversation.updated")).id
        assert last_seen is not None

        # Missed while disconnected.
        await worker.fan_writes(ada, platform_message_id="live-2", text="hello?")
        await worker.fan_writes(ada, platform_message_id="live-3", text="helloooo?")
        cid = received.data["message"]["conversationId"]
        await eventually(
            lambda: ada.get(f"/api/crm/conversations/{cid}/messages"),
            lambda page: page["messages"][0]["text"] == "helloooo?",
        )
        async with listening(suite, ada, headers={"Last-Event-ID": str(last_seen)}) as again:
            replayed = [await again.until("message.received") for _ in range(2)]
            assert [e.data["message"]["text"] for e in replayed if e.data] == [
                "hello?",
                "helloooo?",
            ]
            assert all(e.id is not None and e.id > last_seen for e in replayed)
            # ... and it follows live again.
            await worker.fan_writes(ada, platform_message_id="live-4", text="bye")
            followed = await again.until("message.received")
            assert followed.data is not None
            assert followed.data["message"]["text"] == "bye"
        async with listening(suite, ada, query=f"?lastEventId={last_seen}") as polyfill:
            first = await polyfill.until("message.received")
            assert first.data is not None
            assert first.data["message"]["text"] == "hello?"


# ---------------------------------------------------------------------------------------------
# Bad input.


async def test_bad_input_gets_clear_4xx_problems(suite: Any, worker: PlatformEvents) -> None:
    async with signed_up(suite) as ada:
        conversation = await open_conversation(worker, ada, fan="of-bad")
        cid = conversation["id"]
        unknown = str(uuid.uuid4())
        cases: list[tuple[str, str, dict[str, Any] | None, int, str | None]] = [
            ("GET", f"/api/crm/fans/{unknown}", None, 404, None),
            ("GET", f"/api/crm/conversations/{unknown}/messages", None, 404, None),
            ("PATCH", f"/api/crm/lists/{unknown}", {"name": "x"}, 404, None),
            ("DELETE", f"/api/crm/quick-replies/{unknown}", None, 404, None),
            ("POST", f"/api/messages/{unknown}/read", None, 404, None),
            ("GET", "/api/crm/fans/not-a-uuid", None, 422, "fanId"),
            ("GET", "/api/crm/conversations?cursor=not-a-cursor", None, 422, "query.cursor"),
            (
                "GET",
                f"/api/crm/conversations/{cid}/messages?cursor=%7B%7D",
                None,
                422,
                "query.cursor",
            ),
            ("GET", "/api/crm/fans?limit=100000", None, 422, "query.limit"),
            ("GET", "/api/crm/quick-replies?limit=201", None, 422, "query.limit"),
            (
                "POST",
                "/api/messages/reply",
                {"conversationId": cid, "text": "x", "priceCents": -5, "idempotencyKey": "a"},
                422,
                "priceCents",
            ),
            (
                "POST",
                "/api/messages/reply",
                {"conversationId": cid, "text": "x" * 5001, "idempotencyKey": "b"},
                422,
                "text",
            ),
            (
                "POST",
                "/api/crm/quick-replies",
                {"shortcut": "/long", "text": "y" * 5001},
                422,
                "text",
            ),
            ("POST", "/api/crm/fans", {"platform": "onlyfans", "email": "nope"}, 422, "email"),
            ("POST", "/api/crm/lists", {"name": "", "kind": "static"}, 422, "name"),
            (
                "POST",
                "/api/crm/lists/preview",
                {"segment": {"minValueCents": 10, "maxValueCents": 1}},
                422,
                "segment.maxValueCents",
            ),
            (
                "POST",
                "/api/crm/lists/preview",
                {"segment": {"minValueCents": -1, "lastActiveWithinDays": 0}},
                422,
                "segment.lastActiveWithinDays",
            ),
            ("POST", "/api/crm/fans", {"platform": "onlyfans", "tags": ["t" * 51]}, 422, "tags[0]"),
            # A typo is refused, not ignored (which would answer 200 and change nothing).
            ("PATCH", f"/api/crm/fans/{conversation['fanId']}", {"dispalyName": "x"}, 422, None),
        ]
        for method, path, body, status, field_name in cases:
            response = await ada.call(method, path, json=body)
            found = assert_problem(response, status)
            assert found["detail"], found
            if field_name is not None:
                assert field_name in problem_fields(found), (method, path, found)
            if status == 422:
                # One code, and fields named as the API names them, in `detail` too.
                assert found["code"] == "VALIDATION_FAILED", found
                assert "_" not in found["detail"], found
        typo = await ada.call(
            "PATCH", f"/api/crm/fans/{conversation['fanId']}", json={"dispalyName": "x"}
        )
        assert problem_fields(assert_problem(typo, 422)) == ["dispalyName"]
        # A cursor from another list is refused, not misread.
        fans_cursor = await ada.call("GET", "/api/crm/fans?limit=1")
        assert fans_cursor.status_code == 200
        await ada.call("POST", "/api/crm/fans", json={"platform": "onlyfans"})
        paged = (await ada.get("/api/crm/fans?limit=1"))["nextCursor"]
        assert paged
        misused = await ada.call("GET", f"/api/crm/quick-replies?cursor={paged}")
        assert problem_fields(assert_problem(misused, 422)) == ["query.cursor"]
