"""The control API: what fans do shows up where the creator's client reads it."""

from __future__ import annotations

from typing import Any

from huntaze_simulator.config import SimulatorConfig
from huntaze_simulator.testing import PlatformClient, serve


async def subscriber(client: PlatformClient, fan_id: int, kind: str) -> dict[str, Any] | None:
    page = await client.ok("GET", "/subscriptions/subscribers", params={"type": kind, "limit": 20})
    return next((fan for fan in page["list"] if fan["id"] == fan_id), None)


async def test_a_fans_whole_life_is_reflected_in_chats_subscribers_and_earnings() -> None:
    async with serve(SimulatorConfig(send_interval_seconds=0)) as running:
        client = await running.import_session()
        fan = await running.new_fan(name="Life Cycle", username="lifecycle")
        assert (await subscriber(client, fan["id"], "active")) is not None
        assert fan["subscribedOnData"]["subscribesSumm"] == 9.99

        written = await running.fan_writes(fan["id"], "hi there")
        chats = await client.ok("GET", "/chats", params={"limit": 10})
        chat = next(c for c in chats["list"] if c["withUser"]["id"] == fan["id"])
        assert chat["lastMessage"]["id"] == written["id"]
        assert chat["unreadMessagesCount"] == 1
        await client.ok("POST", f"/chats/{fan['id']}/mark-as-read")
        chat = await client.ok("GET", f"/chats/{fan['id']}")
        assert chat["unreadMessagesCount"] == 0

        media = (await client.ok("GET", "/vault/media", params={"limit": 1}))["list"]
        ppv = await client.ok(
            "POST",
            f"/chats/{fan['id']}/messages",
            json={"text": "<p>unlock me</p>", "price": 15, "mediaFiles": [media[0]["id"]]},
        )
        bought = await running.control.post(
            f"/_control/fans/{fan['id']}/purchases", json={"message_id": ppv["id"]}
        )
        assert bought.json()["isOpened"] is True
        again = await running.control.post(
            f"/_control/fans/{fan['id']}/purchases", json={"message_id": ppv["id"]}
        )
        assert again.status_code == 400

        tip = await running.control.post(
            f"/_control/fans/{fan['id']}/tips", json={"amount": 20, "text": "for you"}
        )
        assert tip.json()["isTip"] is True

        earnings = await client.ok("GET", "/payouts/transactions", params={"limit": 10})
        mine = [t for t in earnings["list"] if t["user"]["id"] == fan["id"]]
        assert [(t["type"], t["amount"]) for t in mine] == [
            ("tips", 20.0),
            ("chat_messages", 15.0),
            ("subscribes", 9.99),
        ]
        spender = await subscriber(client, fan["id"], "active")
        assert spender is not None
        data = spender["subscribedOnData"]
        assert (data["tipsSumm"], data["messagesSumm"], data["totalSumm"]) == (20, 15, 44.99)

        await running.control.post(f"/_control/fans/{fan['id']}/unsubscribe")
        assert (await subscriber(client, fan["id"], "active")) is None
        assert (await subscriber(client, fan["id"], "expired")) is not None
        fans_list = await client.ok("GET", "/lists/fans/users", params={"limit": 100})
        assert fan["id"] not in {f["id"] for f in fans_list}

        back = await running.control.post(f"/_control/fans/{fan['id']}/subscribe")
        assert back.json()["subscribedOn"] is True
        actions = [s["action"] for s in back.json()["subscribedOnData"]["subscribes"]]
        assert actions == ["resubscribe", "unsubscribe", "subscribe"]


async def test_the_control_api_lists_what_the_creator_sent() -> None:
    async with serve(SimulatorConfig(send_interval_seconds=0)) as running:
        client = await running.import_session()
        first, second = await running.new_fan(), await running.new_fan()
        one = await client.ok("POST", f"/chats/{first['id']}/messages", json={"text": "<p>a</p>"})
        await client.ok("POST", f"/chats/{second['id']}/messages", json={"text": "<p>b</p>"})
        everything = (await running.control.get("/_control/sent")).json()
        assert [(m["fan_id"], m["text"]) for m in everything] == [
            (first["id"], "<p>a</p>"),
            (second["id"], "<p>b</p>"),
        ]
        later = await running.control.get("/_control/sent", params={"after_id": one["id"]})
        assert [m["fan_id"] for m in later.json()] == [second["id"]]
        only_first = await running.control.get("/_control/sent", params={"fan_id": first["id"]})
        assert len(only_first.json()) == 1


async def test_the_config_changes_at_run_time_and_refuses_unknown_fields() -> None:
    async with serve() as running:
        changed = await running.control.patch("/_control/config", json={"otp_required": True})
        assert changed.json()["otp_required"] is True
        refused = await running.control.patch("/_control/config", json={"no_such_thing": 1})
        assert refused.status_code == 400
        invalid = await running.control.patch("/_control/config", json={"time_units": "hours"})
        assert invalid.status_code == 400
