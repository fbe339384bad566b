"""What the campaigns service consumes, each event applied once: from the CRM (stream CRM,
`campaigns-crm-events`) delivery outcomes of its sends, fans' replies and purchases (which stop
their sequences; purchases are attributed to campaigns), and new subscribers (welcome
campaigns); from the OnlyFans worker (stream ONLYFANS, `campaigns-platform-events`) what became
of its mass messages: queued or failed, the queue's figures, unsent."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze.onlyfans.v1 import events_pb2 as platform_events
from huntaze_campaigns import convert
from huntaze_campaigns.models import SCHEMA
from huntaze_campaigns.service import CampaignsService
from huntaze_campaigns.streams import CRM, ONLYFANS
from huntaze_kit.consumers import EventConsumer, InvalidEvent, ReceivedEvent

MESSAGE_SENT = "crm.message.sent"
MESSAGE_FAILED = "crm.message.failed"
MESSAGE_RECEIVED = "crm.message.received"
PURCHASE_RECORDED = "crm.purchase.recorded"
FAN_CREATED = "crm.fan.created"
FAN_UPDATED = "crm.fan.updated"
MASS_QUEUED = "onlyfans.mass_message.queued"
MASS_FAILED = "onlyfans.mass_message.failed"
MASS_STATS = "onlyfans.mass_message.stats"
MASS_UNSENT = "onlyfans.mass_message.unsent"
MASS_UNSEND_FAILED = "onlyfans.mass_message.unsend_failed"


def _creator(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidEvent("creator_id is not a UUID") from None


class CrmEvents:
    def __init__(self, service: CampaignsService) -> None:
        self._service = service

    async def handle(self, session: AsyncSession, event: ReceivedEvent) -> None:
        service = self._service
        if event.subject == MESSAGE_SENT:
            sent = event.parse(crm_events.MessageSent)
            await service.delivered(session, message=sent.message, failed_reason=None)
        elif event.subject == MESSAGE_FAILED:
            failed = event.parse(crm_events.MessageFailed)
            await service.delivered(
                session, message=failed.message, failed_reason=failed.reason or "failed"
            )
        elif event.subject == MESSAGE_RECEIVED:
            received = event.parse(crm_events.MessageReceived)
            await service.stop_sequences(
                session,
                creator_id=_creator(received.creator_id),
                fan_id=_creator(received.message.fan_id),
                at=convert.from_timestamp(received.message.created_at) or service.clock(),
                reason="replied",
            )
        elif event.subject == PURCHASE_RECORDED:
            await service.purchase_recorded(session, event=event.parse(crm_events.PurchaseRecorded))
        elif event.subject in (FAN_CREATED, FAN_UPDATED):
            changed: crm_events.FanCreated | crm_events.FanUpdated = (
                event.parse(crm_events.FanCreated)
                if event.subject == FAN_CREATED
                else event.parse(crm_events.FanUpdated)
            )
            await service.fan_subscribed(
                session, creator_id=_creator(changed.creator_id), fan=changed.fan
            )
        else:
            raise InvalidEvent(f"unexpected subject {event.subject}")


def crm_consumer(
    *,
    nats: NatsClient,
    session_factory: async_sessionmaker[AsyncSession],
    service: CampaignsService,
    batch: int = 128,
) -> EventConsumer:
    return EventConsumer(
        nats=nats,
        session_factory=session_factory,
        schema=SCHEMA,
        durable="campaigns-crm-events",
        stream=CRM.name,
        filter_subjects=[
            MESSAGE_SENT,
            MESSAGE_FAILED,
            MESSAGE_RECEIVED,
            PURCHASE_RECORDED,
            FAN_CREATED,
            FAN_UPDATED,
        ],
        handler=CrmEvents(service).handle,
        batch=batch,
    )


class PlatformEvents:
    def __init__(self, service: CampaignsService) -> None:
        self._service = service

    async def handle(self, session: AsyncSession, event: ReceivedEvent) -> None:
        service = self._service
        if event.subject == MASS_QUEUED:
            await service.mass_queued(session, event=event.parse(platform_events.MassMessageQueued))
        elif event.subject == MASS_FAILED:
            await service.mass_failed(session, event=event.parse(platform_events.MassMessageFailed))
        elif event.subject == MASS_STATS:
            await service.mass_stats(session, event=event.parse(platform_events.MassMessageStats))
        elif event.subject in (MASS_UNSENT, MASS_UNSEND_FAILED):
            await service.mass_unsent(
                session,
                event=event.parse(platform_events.MassMessageUnsent),
                failed=event.subject == MASS_UNSEND_FAILED,
            )
        else:
            raise InvalidEvent(f"unexpected subject {event.subject}")


def platform_consumer(
    *,
    nats: NatsClient,
    session_factory: async_sessionmaker[AsyncSession],
    service: CampaignsService,
    batch: int = 128,
) -> EventConsumer:
    return EventConsumer(
        nats=nats,
        session_factory=session_factory,
        schema=SCHEMA,
        durable="campaigns-platform-events",
        stream=ONLYFANS.name,
        filter_subjects=[MASS_QUEUED, MASS_FAILED, MASS_STATS, MASS_UNSENT, MASS_UNSEND_FAILED],
        handler=PlatformEvents(service).handle,
        batch=batch,
    )
