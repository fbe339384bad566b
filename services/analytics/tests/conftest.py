"""Fixtures of the analytics tests: the analytics process (its consumers and gRPC server, in
this event loop) on a fresh database and NATS, and a publisher of the events the other services
publish, with their headers, on their streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats
import pytest
from google.protobuf.message import Message
from nats.js import JetStreamContext

from huntaze.ai.v1 import ai_pb2
from huntaze.ai.v1 import events_pb2 as ai_events
from huntaze.auth.v1 import events_pb2 as auth_events
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_analytics.config import AnalyticsSettings
from huntaze_analytics.models import DERIVED_TABLES, SCHEMA
from huntaze_analytics.server import MIGRATIONS_PACKAGE, AnalyticsServer
from huntaze_analytics.service import AnalyticsService
from huntaze_devstack.testing import eventually
from huntaze_kit.db import libpq_url
from huntaze_kit.migrations import upgrade_async
from huntaze_kit.streams import Headers, context_stream, ensure_streams

# The tests' "now": a Monday afternoon in New York (UTC-5).
NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    """An aware UTC datetime from `YYYY-MM-DD HH:MM`."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def stamp(message: Any, name: str, when: datetime | None) -> None:
    if when is not None:
        getattr(message, name).FromDatetime(when)


@dataclass
class Published:
    subject: str
    message: Message
    creator_id: str
    event_id: str
    aggregate_type: str
    aggregate_id: str


@dataclass
class Publisher:
    """Publishes events as the other services' outbox relays do, and remembers them."""

    js: JetStreamContext
    sent: list[Published] = field(default_factory=list)

    async def publish(
        self,
        subject: str,
        message: Message,
        *,
        creator_id: str,
        aggregate_type: str = "fan",
        aggregate_id: str = "",
        event_id: str | None = None,
        msg_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Published:
        event_id = event_id or str(uuid.uuid4())
        headers = {
            Headers.MSG_ID: msg_id or event_id,
            Headers.EVENT_ID: event_id,
            Headers.EVENT_TYPE: message.DESCRIPTOR.full_name,
            Headers.CREATOR_ID: creator_id,
            Headers.AGGREGATE_TYPE: aggregate_type,
            Headers.AGGREGATE_ID: aggregate_id or event_id,
        }
        if occurred_at is not None:
            headers[Headers.OCCURRED_AT] = occurred_at.isoformat()
        await self.js.publish(subject, message.SerializeToString(), headers=headers)
        published = Published(
            subject, message, creator_id, event_id, aggregate_type, aggregate_id or event_id
        )
        self.sent.append(published)
        return published

    async def again(self, published: Published) -> None:
        """The same event once more (a relay's retry after the duplicate window)."""
        await self.publish(
            published.subject,
            published.message,
            creator_id=published.creator_id,
            aggregate_type=published.aggregate_type,
            aggregate_id=published.aggregate_id,
            event_id=published.event_id,
            msg_id=str(uuid.uuid4()),
        )

    # -- the events of each service ------------------------------------------------------------

    async def timezone(self, creator: str, name: str) -> Published:
        event = auth_events.ProfileUpdated(user_id=creator, display_name="Ada", timezone=name)
        event.occurred_at.GetCurrentTime()
        return await self.publish(
            "auth.profile.updated", event, creator_id=creator, aggregate_type="user"
        )

    async def fan(
        self,
        creator: str,
        fan_id: str,
        *,
        created: bool = True,
        state: int = crm_pb2.SUBSCRIPTION_STATE_ACTIVE,
        expires_at: datetime | None = None,
        when: datetime,
        name: str = "Lily",
        platform: int = crm_pb2.PLATFORM_ONLYFANS,
    ) -> Published:
        fan = crm_pb2.Fan(id=fan_id, platform=platform, display_name=name, subscription_state=state)
        stamp(fan, "subscription_expires_at", expires_at)
        stamp(fan, "created_at", when)
        if created:
            event: Message = crm_events.FanCreated(creator_id=creator, fan=fan)
            subject = "crm.fan.created"
        else:
            event = crm_events.FanUpdated(creator_id=creator, fan=fan)
            subject = "crm.fan.updated"
        stamp(event, "occurred_at", when)
        return await self.publish(subject, event, creator_id=creator, aggregate_id=fan_id)

    async def purchase(
        self,
        creator: str,
        fan_id: str,
        cents: int,
        *,
        when: datetime,
        kind: int = crm_pb2.PURCHASE_KIND_TIP,
        platform: int = crm_pb2.PLATFORM_ONLYFANS,
    ) -> Published:
        purchase = crm_pb2.Purchase(
            id=str(uuid.uuid4()),
            fan_id=fan_id,
            platform=platform,
            kind=kind,
            amount_cents=cents,
            currency="USD",
        )
        stamp(purchase, "occurred_at", when)
        event = crm_events.PurchaseRecorded(creator_id=creator, purchase=purchase)
        event.occurred_at.GetCurrentTime()  # recorded now, whenever it happened
        return await self.publish(
            "crm.purchase.recorded", event, creator_id=creator, aggregate_id=fan_id
        )

    async def fan_writes(
        self, creator: str, fan_id: str, conversation_id: str, *, when: datetime
    ) -> Published:
        message = crm_pb2.Message(
            id=str(uuid.uuid4()),
            conversation_id=conversation_id,
            fan_id=fan_id,
            direction=crm_pb2.MESSAGE_DIRECTION_IN,
            text="hey",
            sender_kind=crm_pb2.SENDER_KIND_FAN,
        )
        stamp(message, "created_at", when)
        event = crm_events.MessageReceived(creator_id=creator, message=message)
        event.occurred_at.GetCurrentTime()
        return await self.publish(
            "crm.message.received",
            event,
            creator_id=creator,
            aggregate_type="conversation",
            aggregate_id=conversation_id,
        )

    async def reply(
        self,
        creator: str,
        fan_id: str,
        conversation_id: str,
        *,
        when: datetime,
        sender: int = crm_pb2.SENDER_KIND_CREATOR,
    ) -> Published:
        message = crm_pb2.Message(
            id=str(uuid.uuid4()),
            conversation_id=conversation_id,
            fan_id=fan_id,
            direction=crm_pb2.MESSAGE_DIRECTION_OUT,
            text="hi!",
            sender_kind=sender,
            delivery_status=crm_pb2.DELIVERY_STATUS_SENT,
        )
        stamp(message, "created_at", when)
        stamp(message, "sent_at", when)
        event = crm_events.MessageSent(creator_id=creator, message=message)
        event.occurred_at.GetCurrentTime()
        return await self.publish(
            "crm.message.sent",
            event,
            creator_id=creator,
            aggregate_type="conversation",
            aggregate_id=conversation_id,
        )

    async def read(
        self, creator: str, conversation_id: str, message_ids: list[str], *, when: datetime
    ) -> Published:
        event = crm_events.MessageRead(
            creator_id=creator, conversation_id=conversation_id, message_ids=message_ids
        )
        stamp(event, "occurred_at", when)
        return await self.publish(
            "crm.message.read",
            event,
            creator_id=creator,
            aggregate_type="conversation",
            aggregate_id=conversation_id,
        )

    async def suggestion(
        self, creator: str, *, outcome: str | None, when: datetime, autopilot: bool = False
    ) -> Published:
        suggestion = ai_pb2.Suggestion(
            id=str(uuid.uuid4()),
            status=(
                ai_pb2.SUGGESTION_STATUS_SCHEDULED
                if autopilot
                else ai_pb2.SUGGESTION_STATUS_SUGGESTED
            ),
            mode="autopilot" if autopilot else "suggest",
        )
        if outcome is None:
            created = ai_events.SuggestionCreated(creator_id=creator, suggestion=suggestion)
            stamp(created, "occurred_at", when)
            return await self.publish(
                "ai.suggestion.created", created, creator_id=creator, aggregate_type="suggestion"
            )
        resolved = ai_events.SuggestionResolved(
            creator_id=creator, suggestion=suggestion, outcome=outcome
        )
        stamp(resolved, "occurred_at", when)
        return await self.publish(
            "ai.suggestion.resolved", resolved, creator_id=creator, aggregate_type="suggestion"
        )

    async def attributed(self, creator: str, cents: int, *, when: datetime) -> Published:
        event = ai_events.RevenueAttributed(
            creator_id=creator, fan_id=str(uuid.uuid4()), amount_cents=cents
        )
        stamp(event, "occurred_at", when)
        return await self.publish(
            "ai.revenue.attributed", event, creator_id=creator, aggregate_type="suggestion"
        )

    async def needs_attention(self, creator: str, *, when: datetime) -> Published:
        event = of_events.AccountNeedsAttention(
            creator_id=creator,
            reason=of_events.ATTENTION_REASON_WRONG_PASSWORD,
            message="The platform refused the password.",
        )
        stamp(event, "occurred_at", when)
        return await self.publish(
            "onlyfans.account.needs_attention", event, creator_id=creator, aggregate_type="account"
        )

    async def campaign(
        self, creator: str, campaign_id: str, what: str, *, when: datetime
    ) -> Published:
        """A campaigns event, whatever its payload: analytics stores and counts it by type."""
        event = auth_events.OnboardingCompleted(user_id=creator)  # any message will do
        stamp(event, "occurred_at", when)
        return await self.publish(
            f"campaigns.campaign.{what}",
            event,
            creator_id=creator,
            aggregate_type="campaign",
            aggregate_id=campaign_id,
            occurred_at=when,
        )


@dataclass
class Running:
    server: AnalyticsServer
    database_url: str
    publisher: Publisher

    @property
    def service(self) -> AnalyticsService:
        assert self.server.service is not None
        return self.server.service

    def applied(self) -> int:
        return sum(c.processed + c.duplicates for c in self.server.consumers)

    async def settle(self, expected: int | None = None) -> None:
        """Waits until every published event was applied (or found a duplicate)."""
        target = len(self.publisher.sent) if expected is None else expected

        async def applied() -> int:
            return self.applied()

        await eventually(applied, lambda count: count >= target, within=30.0)

    async def derived(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every derived table, in a stable order."""
        conn = await asyncpg.connect(libpq_url(self.database_url))
        try:
            found = {}
            for table in DERIVED_TABLES:
                # A day whose count of last-active fans fell back to 0 may stay as a 0 row.
                empty = " WHERE fans <> 0" if table.name == "active_days" else ""
                rows = await conn.fetch(f"SELECT * FROM {SCHEMA}.{table.name}{empty}")
                found[table.name] = sorted(
                    tuple(v for k, v in row.items() if k != "updated_at") for row in rows
                )
            return found
        finally:
            await conn.close()


@pytest.fixture
async def analytics(database_url: str, nats_url: str) -> AsyncIterator[Running]:
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    server = AnalyticsServer(
        AnalyticsSettings(
            database_url=database_url,
            nats_url=nats_url,
            analytics_grpc_port=0,
            analytics_metrics_port=0,
            grace_seconds=1,
        ),
        clock=lambda: NOW,
    )
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await ensure_streams(js, [context_stream(c) for c in ("auth", "crm", "onlyfans", "ai")])
        await server.start()
        try:
            yield Running(server, database_url, Publisher(js))
        finally:
            await server.stop()
    finally:
        await client.close()
    await asyncio.sleep(0)
