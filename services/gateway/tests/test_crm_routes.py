"""The CRM routes in front of real auth and CRM gRPC servers (in-process): the JSON <-> gRPC
mapping of every route, the answers' shapes against the OpenAPI document, errors as problem
documents, and the inbox as Server-Sent Events through a real HTTP server (uvicorn on a loopback
port, since an in-memory transport would hold an endless response)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import nats
import pytest
import uvicorn

from huntaze.crm.v1 import crm_pb2
from huntaze_devstack.embedded import free_port
from huntaze_devstack.testing import (
    EventStreamReader,
    PlatformEvents,
    assert_problem,
    eventually,
    inbox_stream,
    problem_fields,
    token_from_email,
)
from huntaze_gateway import rpc_routes
from huntaze_gateway.app import create_app
from huntaze_gateway.config import GatewaySettings
from huntaze_gateway.models import sort_names

PROBLEM = "application/problem+json"
PASSWORD = "Violet-Harbour-Lantern-42"
WAIT_SECONDS = 15.0
T = TypeVar("T")
_counter = iter(range(1, 10_000))


def ip() -> dict[str, str]:
    n = next(_counter)
    return {"x-forwarded-for": f"192.0.2.{n % 250 + 1}"}


@dataclass
class Creator:
    id: str
    token: str
    session_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}", **ip()}


async def sign_up(live: Any) -> Creator:
    email = f"crm-{uuid.uuid4().hex[:10]}@example.com"
    registered = await live.client.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD}, headers=ip()
    )
    assert registered.status_code == 201, registered.text
    # Fan writes need a verified email address.
    mail = await live.mail.wait_for_async(
        lambda message: email in str(message["To"]), timeout=WAIT_SECONDS
    )
    verified = await live.client.post(
        "/api/auth/verify-email", json={"token": token_from_email(mail)}, headers=ip()
    )
    assert verified.status_code == 200, verified.text
    login = await live.client.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD}, headers=ip()
    )
    assert login.status_code == 200, login.text
    body = login.json()
    return Creator(
        id=body["user"]["id"],
        token=body["tokens"]["accessToken"],
        session_id=body["tokens"]["sessionId"],
    )


# ---------------------------------------------------------------------------------------------
# The answers against the OpenAPI document.


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def conforms(document: dict[str, Any], value: Any, schema: dict[str, Any], where: str) -> None:
    """`value` has exactly the members the schema names, recursively (types loosely)."""
    schema = _resolve(document, schema)
    options = schema.get("anyOf")
    if options is not None:
        if value is None:
            assert any(o.get("type") == "null" for o in options), f"{where}: null not allowed"
            return
        schema = _resolve(document, next(o for o in options if o.get("type") != "null"))
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        assert set(value) <= set(schema["properties"]), (
            f"{where}: undocumented {set(value) - set(schema['properties'])}"
        )
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, f"{where}: missing {missing}"
        for name, item in value.items():
            conforms(document, item, schema["properties"][name], f"{where}.{name}")
    elif kind == "array":
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        for index, item in enumerate(value):
            conforms(document, item, schema.get("items", {}), f"{where}[{index}]")
    elif kind == "integer":
        assert isinstance(value, int), f"{where}: {value!r}"
        assert not isinstance(value, bool), f"{where}: {value!r}"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{where}: {value!r}"
    elif kind == "string":
        assert isinstance(value, str), f"{where}: {value!r}"


class Api:
    """Calls the gateway as one creator and checks every 2xx JSON answer against the document."""

    def __init__(self, live: Any, creator: Creator) -> None:
        self.live = live
        self.creator = creator
        self.document: dict[str, Any] = live.app.openapi()

    async def call(
        self, method: str, path: str, *, expect: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {**self.creator.headers, **kwargs.pop("headers", {})}
        response = await self.live.client.request(method, path, headers=headers, **kwargs)
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.text}"
        if response.status_code < 300 and response.content:
            self._check(method, path, response)
        return response

    def _check(self, method: str, path: str, response: httpx.Response) -> None:
        assert response.headers["content-type"] == "application/json"
        template = next(
            p
            for p in self.document["paths"]
            if _matches(p, path.split("?", 1)[0]) and method.lower() in self.document["paths"][p]
        )
        operation = self.document["paths"][template][method.lower()]
        declared = operation["responses"][str(response.status_code)]
        schema = declared["content"]["application/json"]["schema"]
        conforms(self.document, response.json(), schema, f"{method} {template}")

    async def get(self, path: str, **kwargs: Any) -> Any:
        return (await self.call("GET", path, expect=200, **kwargs)).json()


def _matches(template: str, path: str) -> bool:
    parts, actual = template.strip("/").split("/"), path.strip("/").split("/")
    return len(parts) == len(actual) and all(
        p == a or (p.startswith("{") and p.endswith("}"))
        for p, a in zip(parts, actual, strict=True)
    )


# ---------------------------------------------------------------------------------------------
# Fixtures: NATS as the OnlyFans worker, and a real HTTP server for the event stream.


@pytest.fixture(scope="module")
async def worker(live: Any) -> AsyncIterator[PlatformEvents]:
    client = await nats.connect(live.nats_url)
    try:
        yield PlatformEvents(client.jetstream())
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def http_url(live: Any) -> AsyncIterator[str]:
    """The live app behind uvicorn on a loopback port (its lifespan already runs)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            live.app,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def listening(
    url: str, creator: Creator, headers: dict[str, str] | None = None, query: str = ""
) -> AsyncIterator[EventStreamReader]:
    async with inbox_stream(url, creator.token, query=query, headers=headers) as reader:
        yield reader


async def until_watchers(live: Any, count: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while live.crm.inbox.watcher_count != count:
        assert time.monotonic() < deadline, f"{live.crm.inbox.watcher_count} watchers, not {count}"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Tests.


def test_sort_names_cover_the_proto_sorts() -> None:
    fan_sorts = sort_names(crm_pb2.FanSort.DESCRIPTOR)
    conversation_sorts = sort_names(crm_pb2.ConversationSort.DESCRIPTOR)
    assert list(fan_sorts)[:3] == ["-createdAt", "-lastMessageAt", "-valueCents"]
    assert fan_sorts["displayName"] == crm_pb2.FAN_SORT_DISPLAY_NAME_ASC
    assert fan_sorts["-displayName"] == crm_pb2.FAN_SORT_DISPLAY_NAME_DESC
    assert conversation_sorts["pinnedFirst"] == crm_pb2.CONVERSATION_SORT_PINNED_FIRST
    document = create_app(GatewaySettings()).openapi()
    for path, parameter, names in (
        ("/api/crm/fans", "sort", fan_sorts),
        ("/api/crm/conversations", "sort", conversation_sorts),
        ("/api/crm/conversations", "archived", ["false", "true", "all"]),
    ):
        documented = next(
            p for p in document["paths"][path]["get"]["parameters"] if p["name"] == parameter
        )
        assert documented["schema"]["enum"] == list(names)
    assert len(fan_sorts) == len(crm_pb2.FanSort.keys()) - 1
    assert len(conversation_sorts) == len(crm_pb2.ConversationSort.keys()) - 1


async def test_fans_crud_filters_and_pages(live: Any) -> None:
    api = Api(live, await sign_up(live))
    created = await api.call(
        "POST",
        "/api/crm/fans",
        expect=201,
        json={
            "platform": "onlyfans",
            "platformFanId": "of-100",
            "displayName": "Lily Rose",
            "handle": "@lily",
            "email": "lily@example.com",
            "tags": ["vip", "whale"],
            "notes": "Likes cats",
            "customFields": {"birthday": "05-01", "visits": 3, "nested": {"a": [1, 2.5, None]}},
        },
    )
    fan = created.json()
    assert fan["platform"] == "onlyfans"
    assert fan["platformFanId"] == "of-100"
    assert fan["subscriptionState"] == "none"
    assert fan["valueCents"] == 0
    assert fan["customFields"] == {
        "birthday": "05-01",
        "visits": 3,
        "nested": {"a": [1, 2.5, None]},
    }
    assert fan["createdAt"].endswith("Z")

    again = await api.call(
        "POST", "/api/crm/fans", json={"platform": "onlyfans", "platformFanId": "of-100"}
    )
    assert_problem(again, 409, "FAN_EXISTS")
    for n in range(3):
        await api.call(
            "POST",
            "/api/crm/fans",
            expect=201,
            json={"platform": "tiktok", "displayName": f"Fan {n}", "tags": ["new"]},
        )

    assert await api.get(f"/api/crm/fans/{fan['id']}") == fan
    patched = await api.call(
        "PATCH",
        f"/api/crm/fans/{fan['id']}",
        expect=200,
        json={"notes": "Likes dogs", "tags": ["vip"], "custom_fields": {"visits": 4}},
    )
    assert patched.json()["notes"] == "Likes dogs"
    assert patched.json()["tags"] == ["vip"]
    assert patched.json()["customFields"] == {"visits": 4}
    assert patched.json()["displayName"] == "Lily Rose"  # absent: unchanged

    page = await api.get("/api/crm/fans?limit=2")
    assert len(page["fans"]) == 2
    assert page["nextCursor"]
    rest = await api.get(f"/api/crm/fans?limit=2&cursor={page['nextCursor']}")
    assert len(rest["fans"]) == 2
    assert rest["nextCursor"] is None
    assert {f["id"] for f in page["fans"] + rest["fans"]} >= {fan["id"]}

    only_tiktok = await api.get("/api/crm/fans?platforms=tiktok&sort=displayName")
    assert [f["displayName"] for f in only_tiktok["fans"]] == ["Fan 0", "Fan 1", "Fan 2"]
    assert [f["id"] for f in (await api.get("/api/crm/fans?tagsAny=vip"))["fans"]] == [fan["id"]]
    assert (await api.get("/api/crm/fans?search=cats"))["fans"] == []
    assert [f["id"] for f in (await api.get("/api/crm/fans?search=dogs"))["fans"]] == [fan["id"]]
    both = await api.get(
        "/api/crm/fans?platforms=onlyfans&platforms=tiktok&subscriptionStates=none"
    )
    assert len(both["fans"]) == 4

    tagged = await api.call(
        "POST",
        "/api/crm/fans/tags",
        expect=200,
        json={"fanIds": [f["id"] for f in only_tiktok["fans"]], "addTags": ["promo"]},
    )
    assert tagged.json() == {"updatedCount": 3}
    assert len((await api.get("/api/crm/fans?tagsAll=promo&tagsAll=new"))["fans"]) == 3

    purchases = await api.get(f"/api/crm/fans/{fan['id']}/purchases")
    assert purchases == {"purchases": [], "nextCursor": None}

    deleted = await api.call("DELETE", f"/api/crm/fans/{fan['id']}", expect=204)
    assert deleted.content == b""
    assert_problem(await api.call("GET", f"/api/crm/fans/{fan['id']}"), 404, "FAN_NOT_FOUND")


async def test_conversations_messages_replies_and_reads(live: Any, worker: PlatformEvents) -> None:
    creator = await sign_up(live)
    api = Api(live, creator)
    await worker.fan_writes(creator, platform_message_id="m-1", text="hello there")
    await worker.fan_writes(creator, platform_message_id="m-2", text="are you around tonight?")
    await worker.fan_writes(
        creator,
        platform_message_id="m-3",
        text="second fan here",
        platform_fan_id="of-fan-2",
        display_name="Mia",
    )
    page = await eventually(
        lambda: api.get("/api/crm/conversations"),
        lambda p: sum(c["unreadCount"] for c in p["conversations"]) == 3,
    )
    assert [c["fan"]["displayName"] for c in page["conversations"]] == ["Mia", "Lily"]
    lily = page["conversations"][1]
    assert lily["unreadCount"] == 2
    assert lily["lastMessagePreview"] == "are you around tonight?"
    assert lily["platform"] == "onlyfans"
    assert lily["assignedMemberId"] is None

    search = await api.get("/api/crm/conversations?search=tonight")
    assert [c["id"] for c in search["conversations"]] == [lily["id"]]
    assert (
        len(
            (await api.get("/api/crm/conversations?unread=true&platform=onlyfans"))["conversations"]
        )
        == 2
    )
    assert (await api.get("/api/crm/conversations?platform=tiktok"))["conversations"] == []
    by_unread = await api.get("/api/crm/conversations?sort=-unreadCount")
    assert by_unread["conversations"][0]["id"] == lily["id"]

    member = str(uuid.uuid4())
    pinned = await api.call(
        "PATCH",
        f"/api/crm/conversations/{lily['id']}",
        expect=200,
        json={"pinned": True, "assignedMemberId": member},
    )
    assert pinned.json()["pinned"] is True
    assert pinned.json()["assignedMemberId"] == member
    only_pinned = await api.get("/api/crm/conversations?pinned=true")
    assert [c["id"] for c in only_pinned["conversations"]] == [lily["id"]]
    unpinned = await api.get("/api/crm/conversations?pinned=false")
    assert lily["id"] not in [c["id"] for c in unpinned["conversations"]]
    first = await api.get("/api/crm/conversations?sort=pinnedFirst")
    assert first["conversations"][0]["id"] == lily["id"]
    unassigned = await api.call(
        "PATCH",
        f"/api/crm/conversations/{lily['id']}",
        expect=200,
        json={"assignedMemberId": None},
    )
    assert unassigned.json()["assignedMemberId"] is None
    assert unassigned.json()["pinned"] is True

    archived = await api.call(
        "PATCH", f"/api/crm/conversations/{lily['id']}", expect=200, json={"archived": True}
    )
    assert archived.json()["archived"] is True
    assert lily["id"] not in [
        c["id"] for c in (await api.get("/api/crm/conversations"))["conversations"]
    ]
    assert [
        c["id"] for c in (await api.get("/api/crm/conversations?archived=true"))["conversations"]
    ] == [lily["id"]]
    assert len((await api.get("/api/crm/conversations?archived=all"))["conversations"]) == 2
    await api.call(
        "PATCH", f"/api/crm/conversations/{lily['id']}", expect=200, json={"archived": False}
    )

    messages = await api.get(f"/api/crm/conversations/{lily['id']}/messages?limit=1")
    assert [m["text"] for m in messages["messages"]] == ["are you around tonight?"]
    older = await api.get(
        f"/api/crm/conversations/{lily['id']}/messages?limit=1&cursor={messages['nextCursor']}"
    )
    assert [m["text"] for m in older["messages"]] == ["hello there"]
    inbound = older["messages"][0]
    assert inbound["direction"] == "in"
    assert inbound["deliveryStatus"] == "received"
    assert inbound["senderKind"] == "fan"
    assert inbound["read"] is False
    assert inbound["platformMessageId"] == "m-1"

    read = await api.call("POST", f"/api/messages/{inbound['id']}/read", expect=200)
    assert read.json()["read"] is True
    assert read.json()["readAt"]
    assert (await api.get(f"/api/crm/conversations/{lily['id']}"))["unreadCount"] == 1

    body = {"conversationId": lily["id"], "text": "Hi Lily!", "priceCents": 500}
    sent = await api.call(
        "POST", "/api/messages/reply", expect=201, json=body, headers={"Idempotency-Key": "r-1"}
    )
    reply = sent.json()
    assert reply["created"] is True
    assert reply["message"]["direction"] == "out"
    assert reply["message"]["deliveryStatus"] == "queued"
    assert reply["message"]["senderKind"] == "creator"
    assert reply["message"]["senderId"] == creator.id
    assert reply["message"]["idempotencyKey"] == "r-1"
    retried = await api.call(
        "POST", "/api/messages/reply", expect=200, json={**body, "idempotencyKey": "r-1"}
    )
    assert retried.json()["created"] is False
    assert retried.json()["message"]["id"] == reply["message"]["id"]
    other = await api.call(
        "POST",
        "/api/messages/reply",
        json={**body, "idempotencyKey": "r-2"},
        headers={"Idempotency-Key": "r-3"},
    )
    assert problem_fields(assert_problem(other, 422, "VALIDATION_FAILED")) == ["idempotencyKey"]
    reused = await api.call(
        "POST", "/api/messages/reply", json={**body, "text": "Other text", "idempotencyKey": "r-1"}
    )
    assert problem_fields(assert_problem(reused, 422, "IDEMPOTENCY_KEY_REUSED")) == [
        "idempotencyKey"
    ]
    no_key = await api.call("POST", "/api/messages/reply", json=body)
    assert problem_fields(assert_problem(no_key, 422)) == ["idempotencyKey"]
    listed = await api.get(f"/api/crm/conversations/{lily['id']}/messages")
    assert [m["text"] for m in listed["messages"]].count("Hi Lily!") == 1

    hits = await api.get("/api/messages/search?q=tonight")
    assert [m["text"] for m in hits["messages"]] == ["are you around tonight?"]
    scoped = await api.get(
        f"/api/messages/search?q=fan&conversationId={page['conversations'][0]['id']}"
    )
    assert [m["text"] for m in scoped["messages"]] == ["second fan here"]

    all_read = await api.call("POST", f"/api/crm/conversations/{lily['id']}/read", expect=200)
    assert all_read.json()["unreadCount"] == 0


async def test_quick_replies(live: Any) -> None:
    api = Api(live, await sign_up(live))
    thanks = (
        await api.call(
            "POST",
            "/api/crm/quick-replies",
            expect=201,
            json={"shortcut": "/thanks", "text": "Thank you so much!"},
        )
    ).json()
    await api.call(
        "POST", "/api/crm/quick-replies", expect=201, json={"shortcut": "/bye", "text": "Bye!"}
    )
    taken = await api.call(
        "POST", "/api/crm/quick-replies", json={"shortcut": "/thanks", "text": "again"}
    )
    assert_problem(taken, 409, "SHORTCUT_TAKEN")
    listed = await api.get("/api/crm/quick-replies")
    assert [r["shortcut"] for r in listed["quickReplies"]] == ["/bye", "/thanks"]
    assert [
        r["id"] for r in (await api.get("/api/crm/quick-replies?prefix=/th"))["quickReplies"]
    ] == [thanks["id"]]
    assert await api.get(f"/api/crm/quick-replies/{thanks['id']}") == thanks
    changed = await api.call(
        "PATCH", f"/api/crm/quick-replies/{thanks['id']}", expect=200, json={"text": "Thanks!"}
    )
    assert changed.json()["text"] == "Thanks!"
    assert changed.json()["shortcut"] == "/thanks"
    await api.call("DELETE", f"/api/crm/quick-replies/{thanks['id']}", expect=204)
    assert_problem(
        await api.call("GET", f"/api/crm/quick-replies/{thanks['id']}"),
        404,
        "QUICK_REPLY_NOT_FOUND",
    )


async def test_fan_lists_members_and_segments(live: Any) -> None:
    api = Api(live, await sign_up(live))
    fans = [
        (
            await api.call(
                "POST",
                "/api/crm/fans",
                expect=201,
                json={"platform": "onlyfans", "displayName": f"F{n}", "tags": ["vip"] if n else []},
            )
        ).json()
        for n in range(3)
    ]
    static = (
        await api.call(
            "POST", "/api/crm/lists", expect=201, json={"name": "Favourites", "kind": "static"}
        )
    ).json()
    assert static["kind"] == "static"
    assert static["segment"] is None
    assert static["memberCount"] == 0
    added = await api.call(
        "POST",
        f"/api/crm/lists/{static['id']}/members",
        expect=200,
        json={"fanIds": [fans[0]["id"], fans[1]["id"]]},
    )
    assert added.json() == {"addedCount": 2}
    members = await api.get(f"/api/crm/lists/{static['id']}/members")
    assert {f["id"] for f in members["fans"]} == {fans[0]["id"], fans[1]["id"]}
    removed = await api.call(
        "DELETE",
        f"/api/crm/lists/{static['id']}/members",
        expect=200,
        json={"fanIds": [fans[0]["id"]]},
    )
    assert removed.json() == {"removedCount": 1}
    assert (await api.get(f"/api/crm/lists/{static['id']}"))["memberCount"] == 1

    segment = {"tagsAny": ["vip"], "platforms": ["onlyfans"], "minValueCents": 0}
    preview = await api.call(
        "POST", "/api/crm/lists/preview", expect=200, json={"segment": segment}
    )
    assert preview.json() == {"fanCount": 2}
    dynamic = (
        await api.call(
            "POST",
            "/api/crm/lists",
            expect=201,
            json={"name": "VIPs", "kind": "dynamic", "segment": segment},
        )
    ).json()
    assert dynamic["memberCount"] == 2
    assert dynamic["segment"]["tagsAny"] == ["vip"]
    assert dynamic["segment"]["maxValueCents"] is None
    refused = await api.call(
        "POST", f"/api/crm/lists/{dynamic['id']}/members", json={"fanIds": [fans[0]["id"]]}
    )
    assert_problem(refused, 409, "LIST_IS_DYNAMIC")
    renamed = await api.call(
        "PATCH",
        f"/api/crm/lists/{dynamic['id']}",
        expect=200,
        json={"name": "Big spenders", "segment": {"tagsAll": ["vip", "nobody"]}},
    )
    assert renamed.json()["name"] == "Big spenders"
    assert renamed.json()["memberCount"] == 0
    listed = await api.get("/api/crm/lists")
    assert [x["name"] for x in listed["lists"]] == ["Big spenders", "Favourites"]
    assert [x["id"] for x in (await api.get("/api/crm/lists?kind=static"))["lists"]] == [
        static["id"]
    ]
    await api.call("DELETE", f"/api/crm/lists/{static['id']}", expect=204)
    assert_problem(await api.call("GET", f"/api/crm/lists/{static['id']}"), 404, "LIST_NOT_FOUND")


async def test_bad_input_gets_clear_problems(live: Any) -> None:
    api = Api(live, await sign_up(live))
    fan = (
        await api.call(
            "POST",
            "/api/crm/fans",
            expect=201,
            json={"platform": "onlyfans", "platformFanId": "of-1"},
        )
    ).json()
    unknown = str(uuid.uuid4())
    for path in (
        f"/api/crm/fans/{unknown}",
        f"/api/crm/conversations/{unknown}",
        f"/api/crm/conversations/{unknown}/messages",
        f"/api/crm/quick-replies/{unknown}",
        f"/api/crm/lists/{unknown}",
        f"/api/crm/fans/{unknown}/purchases",
    ):
        assert_problem(await api.call("GET", path), 404)
    assert_problem(
        await api.call("POST", f"/api/messages/{unknown}/read"), 404, "MESSAGE_NOT_FOUND"
    )
    assert_problem(
        await api.call(
            "POST",
            "/api/messages/reply",
            json={"conversationId": unknown, "text": "hi", "idempotencyKey": "k"},
        ),
        404,
        "CONVERSATION_NOT_FOUND",
    )
    assert problem_fields(
        assert_problem(await api.call("GET", "/api/crm/fans/not-an-id"), 422)
    ) == ["fanId"]
    assert problem_fields(
        assert_problem(await api.call("GET", "/api/crm/fans/" + "a" * 65), 422)
    ) == ["fanId"]

    for query, field in (
        ("cursor=%%%", "query.cursor"),
        ("cursor=eyJzIjoibm9wZSJ9", "query.cursor"),
        ("cursor=" + "x" * 2000, "query.cursor"),
        ("limit=201", "query.limit"),
        ("limit=1000000000000", "query.limit"),
        ("limit=0", "query.limit"),
        ("limit=-5", "query.limit"),
        ("limit=ten", "query.limit"),
        ("search=" + "w" * 300, "query.search"),
        ("search=a%00b", "query.search"),
        ("sort=sideways", "query.sort"),
        ("platforms=myspace", "query.platforms[0]"),
        ("minValueCents=-1", "query.minValueCents"),
        ("minValueCents=99999999999999999999", "query.minValueCents"),
        ("minValueCents=10&maxValueCents=5", "query.maxValueCents"),
        ("lastActiveWithinDays=0", "query.lastActiveWithinDays"),
    ):
        body = assert_problem(await api.call("GET", f"/api/crm/fans?{query}"), 422)
        assert field in problem_fields(body), (query, body)
    conversations = assert_problem(
        await api.call("GET", "/api/crm/conversations?archived=maybe"), 422
    )
    assert problem_fields(conversations) == ["query.archived"]
    search = assert_problem(await api.call("GET", "/api/messages/search?q="), 422)
    assert problem_fields(search) == ["query.q"]

    sent = await api.call(
        "POST",
        "/api/messages/reply",
        json={"conversationId": unknown, "text": "x", "priceCents": -1},
        headers={"Idempotency-Key": "neg"},
    )
    assert "priceCents" in problem_fields(assert_problem(sent, 422))
    for body, field in (
        ({"text": "x" * 5001}, "text"),
        ({"text": "x", "priceCents": 10**30}, "priceCents"),
        ({"text": "x", "priceCents": 100_000_001}, "priceCents"),
        ({"text": ""}, "text"),
        ({"text": "x", "attachments": [{"kind": "hologram"}]}, "attachments[0].kind"),
        ({"text": "x", "attachments": [{"kind": "image", "url": "ftp://x"}]}, "attachments[0].url"),
        ({"text": "nul\u0000byte"}, "text"),
    ):
        answer = await api.call(
            "POST",
            "/api/messages/reply",
            json={"conversationId": unknown, "idempotencyKey": "bad", **body},
        )
        assert field in problem_fields(assert_problem(answer, 422)), (body, answer.text)

    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(40):
        cursor["x"] = {}
        cursor = cursor["x"]
    for custom in (deep, {"a": "nul\u0000"}):
        answer = await api.call(
            "PATCH", f"/api/crm/fans/{fan['id']}", json={"customFields": custom}
        )
        assert problem_fields(assert_problem(answer, 422)) == ["customFields"]
    nan = await api.call(
        "PATCH",
        f"/api/crm/fans/{fan['id']}",
        content=b'{"customFields": {"n": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert 400 <= nan.status_code < 500
    too_long = await api.call("PATCH", f"/api/crm/fans/{fan['id']}", json={"notes": "n" * 10_001})
    assert problem_fields(assert_problem(too_long, 422)) == ["notes"]
    tags = await api.call("POST", "/api/crm/fans/tags", json={"fanIds": ["nope"], "addTags": ["a"]})
    assert problem_fields(assert_problem(tags, 422)) == ["fanIds[0]"]
    preview = await api.call(
        "POST", "/api/crm/lists/preview", json={"segment": {"lastActiveWithinDays": 2**31}}
    )
    assert problem_fields(assert_problem(preview, 422)) == ["segment.lastActiveWithinDays"]


async def test_cookie_sessions_need_the_same_origin_to_write(live: Any) -> None:
    creator = await sign_up(live)
    cookie = {"cookie": f"huntaze_access={creator.token}"}
    listed = await live.client.get("/api/crm/fans", headers={**cookie, **ip()})
    assert listed.status_code == 200, listed.text
    cross = await live.client.post(
        "/api/crm/quick-replies",
        json={"shortcut": "/x", "text": "x"},
        headers={**cookie, "origin": "https://evil.example", **ip()},
    )
    assert_problem(cross, 403, "CROSS_SITE_REQUEST")
    anonymous = await live.client.get("/api/crm/conversations", headers=ip())
    assert_problem(anonymous, 401)


async def test_the_stream_delivers_replays_and_lets_go(
    live: Any, worker: PlatformEvents, http_url: str
) -> None:
    creator = await sign_up(live)
    other = await sign_up(live)
    async with (
        listening(http_url, other) as intruder,
        listening(http_url, creator) as stream,
    ):
        headers = stream.response.headers
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        assert "x-request-id" in headers
        await until_watchers(live, 2)
        await worker.fan_writes(creator, platform_message_id="s-1", text="first")
        received = await stream.until("message.received")
        assert stream.retry == rpc_routes.SSE_RETRY_MILLISECONDS
        assert received.data is not None
        assert received.data["id"] == received.id
        assert received.data["type"] == "message.received"
        assert received.data["message"]["text"] == "first"
        assert received.data["message"]["direction"] == "in"
        updated = await stream.until("conversation.updated")
        assert updated.data is not None
        assert updated.data["conversation"]["unreadCount"] == 1
        last_seen = updated.id
        with pytest.raises(TimeoutError):
            await intruder.next(within=0.5)
    # Both clients gone: the gateway cancelled their gRPC streams.
    await until_watchers(live, 0)

    await worker.fan_writes(creator, platform_message_id="s-2", text="second")
    await worker.fan_writes(creator, platform_message_id="s-3", text="third")
    api = Api(live, creator)
    await eventually(
        lambda: api.get("/api/crm/conversations"),
        lambda p: p["conversations"][0]["unreadCount"] == 3,
    )
    async with listening(http_url, creator, headers={"Last-Event-ID": str(last_seen)}) as again:
        texts = [
            (await again.until("message.received")).data["message"]["text"]  # type: ignore[index]
            for _ in range(2)
        ]
        assert texts == ["second", "third"]
    async with listening(http_url, creator, query=f"?lastEventId={last_seen}") as polyfill:
        event = await polyfill.until("message.received")
        assert event.data is not None
        assert event.data["message"]["text"] == "second"
        assert event.id is not None
        assert event.id > last_seen
    await until_watchers(live, 0)

    async with httpx.AsyncClient(base_url=http_url) as client:
        bad = await client.get(
            "/api/crm/stream",
            headers={"authorization": f"Bearer {creator.token}", "Last-Event-ID": "yesterday"},
        )
        assert_problem(bad, 422)
        anonymous = await client.get("/api/crm/stream")
        assert_problem(anonymous, 401)


async def test_the_stream_beats_when_idle_and_ends_at_sign_out(live: Any, http_url: str) -> None:
    creator = await sign_up(live)
    settings = live.runtime.settings
    live.runtime.settings = settings.model_copy(update={"gateway_sse_heartbeat_seconds": 0.1})
    try:
        async with listening(http_url, creator) as stream:
            await until_watchers(live, 1)
            deadline = time.monotonic() + 5
            while len(stream.comments) < 2:
                assert time.monotonic() < deadline, "no heartbeat"
                await asyncio.sleep(0.05)
            assert set(stream.comments) == {"heartbeat"}
            logout = await live.client.post(
                "/api/auth/logout", headers={"authorization": f"Bearer {creator.token}", **ip()}
            )
            assert logout.status_code == 204
            with pytest.raises(EOFError):
                await stream.next(within=5)
        await until_watchers(live, 0)
    finally:
        live.runtime.settings = settings


async def test_the_onlyfans_rules_are_refused_at_the_edge(live: Any) -> None:
    """Before any hop (no OnlyFans worker runs here): the body made from the proto message
    refuses what its rules refuse, naming the member; a valid body goes on to the worker."""
    api = Api(live, await sign_up(live))
    session = {"cookies": {"sess": "s"}, "xBc": "b", "userAgent": "ua"}
    for path, body, field in (
        ("/api/of/connect", {}, "body"),
        (
            "/api/of/connect",
            {"credentials": {"email": "a@b.c", "password": "p"}, "session": session},
            "body",
        ),
        (
            "/api/onboarding/connect-platform",
            {"session": {**session, "cookies": {}}},
            "session.cookies",
        ),
        ("/api/of/connect", {"session": {**session, "xBc": "x" * 257}}, "session.xBc"),
        ("/api/of/connect", {"credentials": {"email": "a@b.c"}}, "credentials.password"),
        ("/api/of/connect/otp", {"code": "1" * 33}, "code"),
    ):
        answer = await api.call("POST", path, json=body)
        assert problem_fields(assert_problem(answer, 422)) == [field], (path, body)
    assert_problem(await api.call("POST", "/api/of/connect/otp", json={"code": "123456"}), 503)
