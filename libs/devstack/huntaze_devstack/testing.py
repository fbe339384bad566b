"""Helpers shared by the test suites of every service and the cross-service tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

import httpx
import orjson
from google.protobuf.message import Message
from nats.js import JetStreamContext
from prometheus_client.parser import text_string_to_metric_families

from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_kit.streams import Headers

PROBLEM_JSON = "application/problem+json"
T = TypeVar("T")
_LINK_TOKEN = re.compile(r"/(verify-email|reset-password)\?token=([^\s\"'<>&]+)")


def email_links(message: EmailMessage) -> list[tuple[str, str]]:
    """The (kind, token) of every `/verify-email?token=` or `/reset-password?token=` link."""
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return []
    return [(kind, unquote(token)) for kind, token in _LINK_TOKEN.findall(body.get_content())]


def token_from_email(message: EmailMessage, kind: str = "verify-email") -> str:
    """The token of the `/verify-email?token=` (or `/reset-password?token=`) link."""
    for found_kind, token in email_links(message):
        if found_kind == kind:
            return token
    raise AssertionError(f"no {kind} link in:\n{message}")


async def eventually(
    probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], within: float = 20.0
) -> T:
    """Calls `probe` until `check` accepts its value; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"not met within {within} s; last: {value!r}"
        await asyncio.sleep(0.05)


class Scrape:
    """One reading of a Prometheus `/metrics` endpoint."""

    def __init__(self, exposition: str) -> None:
        self._values = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly these labels; 0 when it was never recorded."""
        return self._values.get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(url)
    response.raise_for_status()
    return Scrape(response.text)


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """The RFC 9457 problem document of `response`, checked for its status (and `code`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body


def problem_fields(body: dict[str, Any]) -> list[str]:
    """The fields a problem document's `errors` name."""
    return [error["field"] for error in body.get("errors") or []]


class HasId(Protocol):
    @property
    def id(self) -> str: ...


@dataclass
class PlatformEvents:
    """Publishes what the OnlyFans worker publishes, with the headers of a Huntaze event."""

    js: JetStreamContext

    async def publish(
        self,
        subject: str,
        event: Message,
        *,
        creator_id: str,
        aggregate_id: str,
        aggregate_type: str = "fan",
        event_id: str | None = None,
        msg_id: str | None = None,
    ) -> str:
        identifier = event_id or str(uuid.uuid4())
        headers = {
            Headers.MSG_ID: msg_id or identifier,
            Headers.EVENT_ID: identifier,
            Headers.EVENT_TYPE: event.DESCRIPTOR.full_name,
            Headers.CREATOR_ID: creator_id,
            Headers.AGGREGATE_TYPE: aggregate_type,
            Headers.AGGREGATE_ID: aggregate_id,
        }
        await self.js.publish(subject, event.SerializeToString(), headers=headers)
        return identifier

    async def fan_writes(
        self,
        creator: HasId,
        *,
        platform_message_id: str,
        text: str = "hi there",
        platform_fan_id: str = "of-fan-1",
        display_name: str = "Lily",
        handle: str = "@lily",
        event_id: str | None = None,
        msg_id: str | None = None,
    ) -> str:
        """A fan's message arrived on the platform."""
        event = of_events.MessageReceived(
            creator_id=creator.id,
            platform_message_id=platform_message_id,
            fan=of_events.FanProfile(
                platform_fan_id=platform_fan_id, display_name=display_name, handle=handle
            ),
            text=text,
        )
        event.sent_at.GetCurrentTime()
        return await self.publish(
            "onlyfans.message.received",
            event,
            creator_id=creator.id,
            aggregate_id=platform_fan_id,
            event_id=event_id,
            msg_id=msg_id,
        )

    async def fan_pays(
        self,
        creator: HasId,
        *,
        transaction_id: str,
        cents: int,
        platform_fan_id: str,
        currency: str = "USD",
        event_id: str | None = None,
    ) -> str:
        """A fan tipped on the platform."""
        event = of_events.PurchaseRecorded(
            creator_id=creator.id,
            platform_transaction_id=transaction_id,
            fan=of_events.FanProfile(platform_fan_id=platform_fan_id),
            kind=of_events.PURCHASE_KIND_TIP,
            amount_cents=cents,
            currency=currency,
        )
        return await self.publish(
            "onlyfans.purchase.recorded",
            event,
            creator_id=creator.id,
            aggregate_id=platform_fan_id,
            event_id=event_id,
        )


@dataclass
class SseEvent:
    id: int | None
    type: str | None
    data: dict[str, Any] | None


class EventStreamReader:
    """Parses a Server-Sent Events response in a task of its own (so that waiting with a
    timeout never breaks the stream); comments and the `retry:` hint are kept for inspection."""

    def __init__(self, response: httpx.Response, *, wait: float = 20.0) -> None:
        self.response = response
        self.comments: list[str] = []
        self.retry: int | None = None
        self._wait = wait
        self._events: asyncio.Queue[SseEvent | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        event_id: int | None = None
        kind: str | None = None
        data: list[str] = []
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if data or kind:
                        decoded = orjson.loads("".join(data)) if data else None
                        self._events.put_nowait(SseEvent(event_id, kind, decoded))
                    event_id, kind, data = None, None, []
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    self.comments.append(value)
                elif name == "id":
                    event_id = int(value)
                elif name == "event":
                    kind = value
                elif name == "data":
                    data.append(value)
                elif name == "retry":
                    self.retry = int(value)
        except httpx.HTTPError:
            pass
        finally:
            self._events.put_nowait(None)

    async def next(self, within: float | None = None) -> SseEvent:
        """The next event; EOFError when the stream ended, TimeoutError after `within` s."""
        async with asyncio.timeout(within or self._wait):
            event = await self._events.get()
        if event is None:
            self._events.put_nowait(None)
            raise EOFError("the stream ended")
        return event

    async def until(self, kind: str, within: float | None = None) -> SseEvent:
        """The next event of type `kind`, skipping the others."""
        async with asyncio.timeout(within or self._wait):
            while True:
                event = await self.next(within)
                if event.type == kind:
                    return event

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def inbox_stream(
    base_url: str, token: str, *, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[EventStreamReader]:
    """The gateway's `GET /api/crm/stream` as the creator of `token`, being read."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30.0) as client,
        client.stream(
            "GET",
            "/api/crm/stream" + query,
            headers={"authorization": f"Bearer {token}", **(headers or {})},
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        reader = EventStreamReader(response)
        try:
            yield reader
        finally:
            await reader.close()
