"""The platform's WebSocket: a client connects with `{"act": "connect", "token": wsAuthToken}` and
its session cookie, then receives `{"api2_chat_message": {...}}` for every fan message."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from huntaze_simulator import views
from huntaze_simulator.model import Message
from huntaze_simulator.platform import Platform

PROTOCOL_VERSION = "5.0"
SOCKET_QUEUE_SIZE = 1000
# Close code for a socket whose session is gone (the platform's own code is not documented).
SESSION_ENDED_CLOSE = 4001


@dataclass(eq=False)
class Subscriber:
    """One connected socket (compared by identity)."""

    sess: str
    outbox: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(SOCKET_QUEUE_SIZE)
    )


class PushHub:
    """Fans' messages out to every connected socket; sockets of an ended session are closed."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.subscribers: set[Subscriber] = set()
        platform.fan_message_listeners.append(self._on_fan_message)
        platform.session_end_listeners.append(self._on_session_end)

    def _on_fan_message(self, message: Message) -> None:
        if not self.subscribers:
            return
        event = {"api2_chat_message": views.message(self.platform, message, full_users=True)}
        for subscriber in self.subscribers:
            # A reader that stopped reading loses events rather than stalling the platform.
            with contextlib.suppress(asyncio.QueueFull):
                subscriber.outbox.put_nowait(event)

    def _on_session_end(self, sess: str) -> None:
        for subscriber in self.subscribers:
            if subscriber.sess == sess:
                with contextlib.suppress(asyncio.QueueFull):
                    subscriber.outbox.put_nowait(None)

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            hello = json.loads(await websocket.receive_text())
        except (WebSocketDisconnect, ValueError):
            return
        session = self.platform.live_session(websocket.cookies.get("sess"))
        if (
            not isinstance(hello, dict)
            or hello.get("act") != "connect"
            or session is None
            or hello.get("token") != session.ws_token
        ):
            await websocket.send_json({"error": 1})
            await websocket.close(code=SESSION_ENDED_CLOSE)
            return
        subscriber = Subscriber(sess=session.sess)
        self.subscribers.add(subscriber)
        await websocket.send_json({"connected": True, "v": PROTOCOL_VERSION})
        tasks = {
            asyncio.create_task(self._send(websocket, subscriber)),
            asyncio.create_task(self._receive(websocket)),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.subscribers.discard(subscriber)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, websocket: WebSocket, subscriber: Subscriber) -> None:
        while True:
            event = await subscriber.outbox.get()
            if event is None:
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await websocket.close(code=SESSION_ENDED_CLOSE)
                return
            await websocket.send_json(event)

    async def _receive(self, websocket: WebSocket) -> None:
        """Answers the two heartbeats clients use; anything else is ignored."""
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                try:
                    request = json.loads(await websocket.receive_text())
                except ValueError:
                    continue
                act = request.get("act") if isinstance(request, dict) else None
                if act == "get_onlines":
                    await websocket.send_json({"online": []})
                elif act == "ping":
                    await websocket.send_json({"pong": True})
