"""The creator's API: every endpoint's shape and paging, over a generated creator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from huntaze_devstack.testing import eventually
from huntaze_simulator.config import SimulatorConfig
from huntaze_simulator.demo import DemoShape
from huntaze_simulator.testing import PlatformClient, Simulator, is_platform_error, serve


@pytest.fixture(scope="module")
async def busy() -> AsyncIterator[Simulator]:
    """A creator with 80 fans and six months of history; sends are not throttled here."""
    async with serve(SimulatorConfig(send_interval_seconds=0), demo=DemoShape(fans=80)) as running:
        yield running


@pytest.fixture
async def client(busy: Simulator) -> PlatformClient:
    return await busy.import_session()


async def test_me_names_the_account_and_its_socket(client: PlatformClient, busy: Simulator) -> None:
    me = await client.ok("GET", "/users/me")
    creator = busy.platform.data.creator
    assert me["id"] == creator.id
    assert me["username"] == creator.username
    assert me["isAuth"] is True
    assert me["isPerformer"] is True
    assert me["wsUrl"] == f"{busy.base_url.replace('http', 'ws')}/ws3/"
    assert len(me["wsAuthToken"]) == 40
    assert me["subscribersCount"] == sum(f.active for f in busy.platform.data.fans.values())
    assert me["chatMessagesCount"] > 0


async def test_chats_page_by_offset_until_has_more_is_false(client: PlatformClient) -> None:
    seen: list[int] = []
    offset = 0
    while True:
        page = await client.ok(
            "GET",
            "/chats",
            params={"limit": 10, "offset": offset, "order": "recent", "skip_users": "all"},
        )
        assert set(page) == {"list", "hasMore", "nextOffset"}
        seen += [chat["withUser"]["id"] for chat in page["list"]]
        for chat in page["list"]:
            assert chat["withUser"] == {"id": chat["withUser"]["id"], "_view": "s"}
            assert chat["lastMessage"]["id"] > 0
            assert isinstance(chat["unreadMessagesCount"], int)
        if not page["hasMore"]:
            break
        offset = page["nextOffset"]
    assert len(seen) == len(set(seen)) > 20
    last_ids = []
    for fan_id in seen:
        chat = await client.ok("GET", f"/chats/{fan_id}")
        last_ids.append(chat["lastMessage"]["id"])
    assert last_ids == sorted(last_ids, reverse=True)


async def test_chats_carry_full_users_without_skip_users_and_filter_unread(
    client: PlatformClient,
) -> None:
    page = await client.ok("GET", "/chats", params={"limit": 5})
    assert {"id", "username", "name", "avatar"} <= set(page["list"][0]["withUser"])
    unread = await client.ok("GET", "/chats", params={"limit": 100, "filter": "unread"})
    assert unread["list"]
    assert all(chat["unreadMessagesCount"] > 0 for chat in unread["list"])
    bad = await client.call("GET", "/chats", params={"filter": "nonsense"})
    assert is_platform_error(bad, status=400, code=0, message="Invalid filter")


async def test_messages_walk_back_by_cursor_in_short_pages(
    client: PlatformClient, busy: Simulator
) -> None:
    fan_id = max(busy.platform.data.messages, key=lambda f: len(busy.platform.data.messages[f]))
    expected = [m.id for m in reversed(busy.platform.data.messages[fan_id])]
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 10, "order": "desc"}
    pages = 0
    while True:
        page = await client.ok("GET", f"/chats/{fan_id}/messages", params=params)
        pages += 1
        seen += [m["id"] for m in page["list"]]
        if not page["hasMore"]:
            break
        # A page can be short and still have more after it.
        assert len(page["list"]) < 10
        params["id"] = page["list"][-1]["id"]
    assert seen == expected
    assert pages > 1
    message = page["list"][0]
    assert message["text"].startswith("<p>")
    for key in (
        "id",
        "text",
        "price",
        "isFree",
        "lockedText",
        "fromUser",
        "createdAt",
        "media",
        "mediaCount",
        "isOpened",
        "isTip",
        "isFromQueue",
        "queueId",
        "canPurchase",
    ):
        assert key in message


async def test_messages_walk_forward_by_offset(client: PlatformClient, busy: Simulator) -> None:
    fan_id = next(iter(busy.platform.data.messages))
    page = await client.ok(
        "GET", f"/chats/{fan_id}/messages", params={"limit": 100, "order": "asc", "offset": 1}
    )
    stored = busy.platform.data.messages[fan_id]
    assert [m["id"] for m in page["list"]] == [m.id for m in stored][1:]


async def test_a_sent_message_lands_in_the_chat(client: PlatformClient, busy: Simulator) -> None:
    fan = await busy.new_fan(name="New Fan")
    media = (await client.ok("GET", "/vault/media", params={"limit": 2}))["list"]
    body = {
        "text": "<p>just for you</p>",
        "lockedText": False,
        "mediaFiles": [media[0]["id"], media[1]["id"]],
        "price": 12.5,
        "previews": [media[1]["id"]],
        "rfTag": [],
        "rfGuest": [],
        "rfPartner": [],
        "isForward": False,
    }
    sent = await client.ok("POST", f"/chats/{fan['id']}/messages", json=body)
    assert sent["text"] == "<p>just for you</p>"
    assert sent["price"] == 12.5
    assert sent["isFree"] is False
    assert sent["mediaCount"] == 2
    assert sent["fromUser"]["id"] == busy.platform.data.creator.id
    chat = await client.ok("GET", f"/chats/{fan['id']}/messages")
    assert chat["list"][0]["id"] == sent["id"]


async def test_a_send_is_refused_when_the_platform_would(
    client: PlatformClient, busy: Simulator
) -> None:
    fan = await busy.new_fan()
    no_media = await client.call(
        "POST", f"/chats/{fan['id']}/messages", json={"text": "<p>x</p>", "price": 10}
    )
    assert no_media.json()["error"]["message"] == "A paid message needs media"
    unknown_media = await client.call(
        "POST", f"/chats/{fan['id']}/messages", json={"text": "x", "mediaFiles": [1]}
    )
    assert unknown_media.status_code == 400
    await busy.control.post(f"/_control/fans/{fan['id']}/unsubscribe")
    gone = await client.call("POST", f"/chats/{fan['id']}/messages", json={"text": "<p>x</p>"})
    assert is_platform_error(gone, status=400, code=0, message="Cannot send message to this user")


async def test_subscribers_come_at_most_twenty_a_page(
    client: PlatformClient, busy: Simulator
) -> None:
    active = {f.id for f in busy.platform.data.fans.values() if f.active}
    seen: list[int] = []
    offset = 0
    while True:
        page = await client.ok(
            "GET",
            "/subscriptions/subscribers",
            params={"type": "active", "limit": 50, "offset": offset},
        )
        assert len(page["list"]) <= 20
        seen += [fan["id"] for fan in page["list"]]
        if not page["hasMore"]:
            break
        offset += len(page["list"])
    assert set(seen) == active
    assert len(seen) == len(active)
    fan = page["list"][0]
    data = fan["subscribedOnData"]
    for key in (
        "price",
        "subscribePrice",
        "expiredAt",
        "subscribeAt",
        "lastActivity",
        "totalSumm",
        "tipsSumm",
        "messagesSumm",
        "subscribesSumm",
        "subscribes",
    ):
        assert key in data
    expired = await client.ok("GET", "/subscriptions/subscribers", params={"type": "expired"})
    assert all(f["subscribedOnExpiredNow"] for f in expired["list"])


async def test_transactions_page_by_marker(client: PlatformClient, busy: Simulator) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 10, "startDate": "2000-01-01T00:00:00+00:00"}
    while True:
        page = await client.ok("GET", "/payouts/transactions", params=params)
        seen += [txn["id"] for txn in page["list"]]
        if not page["hasMore"]:
            break
        params["marker"] = page["nextMarker"]
    assert len(seen) == len(set(seen)) == len(busy.platform.data.transactions)
    txn = page["list"][0]
    assert {
        "id",
        "type",
        "amount",
        "fee",
        "net",
        "currency",
        "description",
        "status",
        "createdAt",
        "user",
    } <= set(txn)
    assert txn["net"] == round(txn["amount"] - txn["fee"], 2)
    recent = await client.ok("GET", "/payouts/transactions", params={"limit": 100, "type": "tips"})
    assert all(t["type"] == "tips" for t in recent["list"])


async def test_lists_are_a_bare_array_unless_infinite(client: PlatformClient) -> None:
    bare = await client.ok("GET", "/lists", params={"limit": 100})
    assert isinstance(bare, list)
    assert {"fans", "following"} <= {item["id"] for item in bare}
    infinite = await client.ok("GET", "/lists", params={"limit": 2, "format": "infinite"})
    assert set(infinite) == {"list", "hasMore"}
    assert infinite["hasMore"] is True
    created = await client.ok("POST", "/lists", json={"name": "Weekend"})
    fans = await client.ok("GET", "/lists/fans/users", params={"limit": 1})
    await client.ok("POST", f"/lists/{created['id']}/users/{fans[0]['id']}")
    members = await client.ok("GET", f"/lists/{created['id']}/users")
    assert [m["id"] for m in members] == [fans[0]["id"]]
    emptied = await client.ok("DELETE", f"/lists/{created['id']}/users/{fans[0]['id']}")
    assert emptied["usersCount"] == 0
    built_in = await client.call("POST", f"/lists/fans/users/{fans[0]['id']}")
    assert is_platform_error(built_in, status=400, code=0, message="This list cannot be changed")


async def test_a_mass_message_reaches_a_list_minus_the_excluded(
    client: PlatformClient, busy: Simulator
) -> None:
    target = await client.ok("POST", "/lists", json={"name": "Blast"})
    excluded = await client.ok("POST", "/lists", json={"name": "Not them"})
    fans = [await busy.new_fan() for _ in range(4)]
    for fan in fans:
        await client.ok("POST", f"/lists/{target['id']}/users/{fan['id']}")
    await client.ok("POST", f"/lists/{excluded['id']}/users/{fans[0]['id']}")
    queued = await client.ok(
        "POST",
        "/messages/queue",
        json={
            "text": "<p>hello all</p>",
            "lockedText": False,
            "mediaFiles": [],
            "price": 0,
            "previews": [],
            "userLists": [target["id"]],
            "excludedLists": [excluded["id"]],
        },
    )
    assert {
        "id",
        "date",
        "isReady",
        "isDone",
        "total",
        "pending",
        "canUnsend",
        "hasError",
        "isCanceled",
    } <= set(queued)
    assert queued["total"] == 3
    state = await eventually(
        lambda: client.ok("GET", f"/messages/queue/{queued['id']}"), lambda s: s["isDone"]
    )
    assert state["pending"] == 0
    copies = (await busy.control.get("/_control/sent", params={"after_id": 0})).json()
    delivered = {m["fan_id"] for m in copies if m["queue_id"] == queued["id"]}
    assert delivered == {fan["id"] for fan in fans[1:]}
    chat = await client.ok("GET", f"/chats/{fans[1]['id']}/messages")
    assert chat["list"][0]["isFromQueue"] is True
    assert chat["list"][0]["queueId"] == queued["id"]
    stats = await client.ok("GET", "/messages/queue/stats", params={"limit": 10, "offset": 0})
    assert stats["list"][0]["id"] == queued["id"]
    assert stats["list"][0]["sentCount"] == 3


async def test_a_scheduled_mass_message_waits_for_its_date(
    client: PlatformClient, busy: Simulator
) -> None:
    fan = await busy.new_fan()
    queued = await client.ok(
        "POST",
        "/messages/queue",
        json={
            "text": "<p>later</p>",
            "userIds": [fan["id"]],
            "scheduledDate": "2099-01-01T00:00:00+00:00",
        },
    )
    state = await client.ok("GET", f"/messages/queue/{queued['id']}")
    assert state["pending"] == 1
    canceled = await client.ok("DELETE", f"/messages/queue/{queued['id']}")
    assert canceled["isCanceled"] is True


async def test_a_mass_message_can_be_deleted_for_a_day_after_it_went_out(
    client: PlatformClient, busy: Simulator
) -> None:
    fans = [await busy.new_fan() for _ in range(2)]

    async def queue(text: str) -> dict[str, Any]:
        queued: dict[str, Any] = await client.ok(
            "POST",
            "/messages/queue",
            json={"text": text, "userIds": [fan["id"] for fan in fans]},
        )
        await eventually(
            lambda: client.ok("GET", f"/messages/queue/{queued['id']}"), lambda s: s["isDone"]
        )
        return queued

    kept = await queue("<p>stays</p>")
    taken_back = await queue("<p>taken back</p>")
    state = await client.ok("GET", f"/messages/queue/{taken_back['id']}")
    assert state["canUnsend"] is True
    assert 86000 < state["unsendSeconds"] <= 86400
    deleted = await client.ok("DELETE", f"/messages/queue/{taken_back['id']}")
    assert deleted["isCanceled"] is True
    chat = await client.ok("GET", f"/chats/{fans[0]['id']}/messages")
    assert [m["queueId"] for m in chat["list"] if m["isFromQueue"]] == [kept["id"]]
    again = await client.call("DELETE", f"/messages/queue/{taken_back['id']}")
    assert again.status_code == 400

    await busy.advance(86400 + 60)
    state = await client.ok("GET", f"/messages/queue/{kept['id']}")
    assert (state["canUnsend"], state["unsendSeconds"]) == (False, 0)
    late = await client.call("DELETE", f"/messages/queue/{kept['id']}")
    assert is_platform_error(
        late, status=400, code=0, message="This message can no longer be deleted"
    )
    chat = await client.ok("GET", f"/chats/{fans[1]['id']}/messages")
    assert [m["queueId"] for m in chat["list"] if m["isFromQueue"]] == [kept["id"]]


async def test_an_unknown_path_answers_in_the_platforms_shape(client: PlatformClient) -> None:
    missing = await client.get("/no/such/path")
    assert is_platform_error(missing, status=404, code=0, message="Not Found")
