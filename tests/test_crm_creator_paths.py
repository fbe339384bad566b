"""What a new creator trips over in the CRM, through the gateway (auth, crm and the gateway as
real processes): tags that differ only in case, search by the start of a word, the creator's
name for a fan against the platform's, `Last-Event-ID: 0`, writing to a fan first, the unknown
fan of a bulk call, and sorting both ways."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from huntaze_devstack.testing import (
    PlatformEvents,
    assert_problem,
    eventually,
    inbox_stream,
    problem_fields,
)

pytestmark = pytest.mark.slow


class Creator:
    """A signed-in creator's HTTP client."""

    def __init__(self, user_id: str, token: str, client: httpx.AsyncClient) -> None:
        self.id = user_id
        self.token = token
        self.client = client

    async def get(self, path: str) -> Any:
        response = await self.client.get(path)
        assert response.status_code == 200, f"GET {path}: {response.text}"
        return response.json()

    async def post(self, path: str, body: dict[str, Any], status: int = 201) -> Any:
        response = await self.client.post(path, json=body)
        assert response.status_code == status, f"POST {path}: {response.text}"
        return response.json()

    async def add_fan(self, **body: Any) -> dict[str, Any]:
        fan: dict[str, Any] = await self.post("/api/crm/fans", {"platform": "onlyfans", **body})
        return fan


@pytest.fixture
async def creator(suite: Any) -> AsyncIterator[Creator]:
    async with suite.signed_in() as (user_id, token, client):
        yield Creator(user_id, token, client)


async def test_tags_differing_only_in_case_or_spaces_are_one_tag(creator: Creator) -> None:
    ann = await creator.add_fan(platformFanId="of-ann", displayName="Ann", tags=[" VIP ", "Vip"])
    assert ann["tags"] == ["VIP"]
    bob = await creator.add_fan(platformFanId="of-bob", displayName="Bob", tags=["vip"])
    await creator.add_fan(platformFanId="of-cy", displayName="Cy", tags=["new"])

    for spelling in ("vip", "VIP", "%20Vip%20"):
        page = await creator.get(f"/api/crm/fans?tagsAny={spelling}&sort=displayName")
        assert [fan["displayName"] for fan in page["fans"]] == ["Ann", "Bob"], spelling
    tagged = await creator.post(
        "/api/crm/fans/tags", {"fanIds": [ann["id"], bob["id"]], "addTags": ["vip"]}, 200
    )
    assert tagged == {"updatedCount": 0}
    untagged = await creator.post(
        "/api/crm/fans/tags", {"fanIds": [ann["id"]], "removeTags": ["vIP"]}, 200
    )
    assert untagged == {"updatedCount": 1}
    assert (await creator.get(f"/api/crm/fans/{ann['id']}"))["tags"] == []


async def test_search_finds_the_start_of_names_handles_and_messages(
    creator: Creator, worker: PlatformEvents
) -> None:
    await creator.add_fan(platformFanId="of-lily", displayName="Lily")
    await worker.fan_writes(
        creator,
        platform_message_id="pm-1",
        platform_fan_id="of-marco",
        display_name="Marco Rossi",
        handle="@marcor",
        text="See you tonight",
    )
    messages = await eventually(
        lambda: creator.get("/api/messages/search?q=tonight"), lambda p: len(p["messages"]) == 1
    )
    marco_id = messages["messages"][0]["fanId"]

    for search in ("Mar", "marco", "ross", "@marc"):
        page = await creator.get(f"/api/crm/fans?search={search}")
        assert [fan["id"] for fan in page["fans"]] == [marco_id], search
    for search in ("Mar", "tonig"):
        page = await creator.get(f"/api/crm/conversations?search={search}")
        assert [c["fanId"] for c in page["conversations"]] == [marco_id], search
    found = await creator.get("/api/messages/search?q=toni")
    assert found["messages"] == messages["messages"]


async def test_a_platform_sync_keeps_the_creators_name_for_a_fan(
    creator: Creator, worker: PlatformEvents
) -> None:
    fan = await creator.add_fan(platformFanId="of-marco", displayName="Marco Rossi")
    await worker.fan_writes(
        creator, platform_message_id="pm-1", platform_fan_id="of-marco", display_name="Marco R."
    )
    page = await eventually(
        lambda: creator.get("/api/crm/conversations"), lambda p: len(p["conversations"]) == 1
    )
    shown = page["conversations"][0]["fan"]
    assert shown["id"] == fan["id"]
    assert shown["displayName"] == "Marco Rossi"
    got = await creator.get(f"/api/crm/fans/{fan['id']}")
    assert (got["displayName"], got["customDisplayName"], got["platformDisplayName"]) == (
        "Marco Rossi",
        "Marco Rossi",
        "Marco R.",
    )
    cleared = await creator.client.patch(f"/api/crm/fans/{fan['id']}", json={"displayName": ""})
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["displayName"], cleared.json()["customDisplayName"]) == (
        "Marco R.",
        None,
    )


async def test_last_event_id_0_replays_what_is_kept(suite: Any, creator: Creator) -> None:
    ann = await creator.add_fan(platformFanId="of-ann", displayName="Ann")
    bob = await creator.add_fan(platformFanId="of-bob", displayName="Bob")
    for query, headers in (("", {"Last-Event-ID": "0"}), ("?lastEventId=0", {})):
        async with inbox_stream(
            suite.gateway_url, creator.token, query=query, headers=headers
        ) as stream:
            replayed = [await stream.until("fan.updated", within=5.0) for _ in range(2)]
        assert [e.data["fan"]["id"] for e in replayed if e.data] == [ann["id"], bob["id"]]
    # A first connection, without Last-Event-ID, follows what happens from now on only.
    async with inbox_stream(suite.gateway_url, creator.token) as live:
        with pytest.raises(TimeoutError):
            await live.next(within=1.0)


async def test_writing_first_to_a_fan_added_by_hand_opens_the_conversation(
    creator: Creator,
) -> None:
    fan = await creator.add_fan(platformFanId="of-new", displayName="New Fan")
    sent = await creator.post(
        "/api/messages/reply", {"fanId": fan["id"], "text": "Welcome!", "idempotencyKey": "w-1"}
    )
    assert sent["created"] is True
    assert sent["message"]["fanId"] == fan["id"]
    assert sent["message"]["deliveryStatus"] == "queued"
    conversation = await creator.get(f"/api/crm/conversations/{sent['message']['conversationId']}")
    assert conversation["fan"]["id"] == fan["id"]
    assert conversation["lastMessagePreview"] == "Welcome!"
    # The next message goes to the same conversation, by fan or by conversation.
    again = await creator.post(
        "/api/messages/reply", {"fanId": fan["id"], "text": "Hi", "idempotencyKey": "w-2"}
    )
    assert again["message"]["conversationId"] == conversation["id"]
    neither = await creator.client.post(
        "/api/messages/reply", json={"text": "Hi", "idempotencyKey": "w-3"}
    )
    assert problem_fields(assert_problem(neither, 422)) == ["conversationId"]


async def test_a_bulk_tag_call_names_the_unknown_fan(creator: Creator) -> None:
    fan = await creator.add_fan(platformFanId="of-ann", displayName="Ann")
    unknown = str(uuid.uuid4())
    response = await creator.client.post(
        "/api/crm/fans/tags", json={"fanIds": [fan["id"], unknown], "addTags": ["vip"]}
    )
    problem = assert_problem(response, 404, "FAN_NOT_FOUND")
    assert unknown in problem["detail"]
    assert problem["errors"] == [{"field": "fanIds[1]", "message": f"no fan {unknown}"}]
    assert (await creator.get(f"/api/crm/fans/{fan['id']}"))["tags"] == []


async def test_lists_sort_both_ways(creator: Creator) -> None:
    fans = [
        await creator.add_fan(platformFanId=f"of-{name}", displayName=name)
        for name in ("Bea", "Ann", "Cleo")
    ]
    for sort, names in (
        ("displayName", ["Ann", "Bea", "Cleo"]),
        ("-displayName", ["Cleo", "Bea", "Ann"]),
        ("createdAt", ["Bea", "Ann", "Cleo"]),
        ("-createdAt", ["Cleo", "Ann", "Bea"]),
    ):
        page = await creator.get(f"/api/crm/fans?sort={sort}&limit=2")
        rest = await creator.get(f"/api/crm/fans?sort={sort}&limit=2&cursor={page['nextCursor']}")
        assert [fan["displayName"] for fan in page["fans"] + rest["fans"]] == names, sort
    for index, fan in enumerate(fans):
        await creator.post(
            "/api/messages/reply",
            {"fanId": fan["id"], "text": "hi", "idempotencyKey": f"s-{index}"},
        )
    for sort, order in (("lastMessageAt", fans), ("-lastMessageAt", fans[::-1])):
        page = await creator.get(f"/api/crm/conversations?sort={sort}")
        assert [c["fanId"] for c in page["conversations"]] == [f["id"] for f in order], sort
    refused = await creator.client.get("/api/crm/fans?sort=--displayName")
    assert problem_fields(assert_problem(refused, 422)) == ["query.sort"]
