"""The WebSocket: a connected creator client receives each fan message as `api2_chat_message`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from huntaze_simulator.testing import PlatformClient, Simulator


async def open_socket(client: PlatformClient, token: str | None = None) -> ClientConnection:
    me = await client.ok("GET", "/users/me")
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    socket = await connect(
        me["wsUrl"], additional_headers={"Cookie": cookie, "User-Agent": client.user_agent}
    )
    await socket.send(json.dumps({"act": "connect", "token": token or me["wsAuthToken"]}))
    return socket


async def next_event(socket: ClientConnection) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), timeout=5))
    return event


async def test_a_fan_message_is_pushed_to_the_creator(simulator: Simulator) -> None:
    client = await simulator.import_session()
    fan = await simulator.new_fan(name="Pushy Fan")
    async with await open_socket(client) as socket:
        assert (await next_event(socket))["connected"] is True
        await socket.send(json.dumps({"act": "get_onlines", "ids": []}))
        assert await next_event(socket) == {"online": []}
        written = await simulator.fan_writes(fan["id"], "are you there? <3")
        pushed = (await next_event(socket))["api2_chat_message"]
    assert pushed["id"] == written["id"]
    assert pushed["text"] == "<p>are you there? &lt;3</p>"
    assert pushed["fromUser"]["id"] == fan["id"]
    assert pushed["fromUser"]["name"] == "Pushy Fan"


async def test_a_tip_is_pushed_as_a_chat_message(simulator: Simulator) -> None:
    client = await simulator.import_session()
    fan = await simulator.new_fan()
    async with await open_socket(client) as socket:
        await next_event(socket)
        await simulator.control.post(f"/_control/fans/{fan['id']}/tips", json={"amount": 25})
        pushed = (await next_event(socket))["api2_chat_message"]
    assert pushed["isTip"] is True
    assert pushed["tipAmount"] == 25


async def test_a_wrong_token_is_refused(simulator: Simulator) -> None:
    client = await simulator.import_session()
    async with await open_socket(client, token="not-the-token") as socket:
        assert await next_event(socket) == {"error": 1}
        with pytest.raises(ConnectionClosed):
            await next_event(socket)


async def test_the_socket_closes_when_its_session_ends(simulator: Simulator) -> None:
    client = await simulator.import_session()
    async with await open_socket(client) as socket:
        await next_event(socket)
        await simulator.control.delete(f"/_control/sessions/{client.cookies['sess']}")
        with pytest.raises(ConnectionClosed):
            await next_event(socket)
