"""What the agent consumes from the CRM (stream CRM), each event applied once
(`ai-crm-events`): incoming fan messages (a suggestion to draft), the creator's own replies
(open suggestions of the conversation cancelled; the reply joins the style index) and purchases
(revenue attributed to a recent AI message)."""

from __future__ import annotations

from collections.abc import Sequence

from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze_ai_agent.models import SCHEMA
from huntaze_ai_agent.service import AiAgentService
from huntaze_ai_agent.streams import CRM
from huntaze_kit.consumers import EventConsumer, InvalidEvent, ReceivedEvent

MESSAGE_RECEIVED = "crm.message.received"
SEND_REQUESTED = "crm.message.send_requested"
PURCHASE_RECORDED = "crm.purchase.recorded"


class CrmEvents:
    def __init__(self, service: AiAgentService) -> None:
        self._service = service

    async def handle_batch(self, session: AsyncSession, events: Sequence[ReceivedEvent]) -> None:
        """In order; each run of incoming messages is recorded in one statement."""
        incoming: list[tuple[crm_events.MessageReceived, str | None]] = []
        for event in events:
            if event.subject == MESSAGE_RECEIVED:
                received = event.parse(crm_events.MessageReceived)
                if received.message.text.strip():
                    incoming.append((received, event.request_id))
                continue
            await self._service.record_incoming(session, events=incoming)
            incoming = []
            await self._other(session, event)
        await self._service.record_incoming(session, events=incoming)

    async def _other(self, session: AsyncSession, event: ReceivedEvent) -> None:
        if event.subject == SEND_REQUESTED:
            await self._service.creator_replied(
                session, event=event.parse(crm_events.MessageSendRequested)
            )
        elif event.subject == PURCHASE_RECORDED:
            await self._service.purchase_recorded(
                session, event=event.parse(crm_events.PurchaseRecorded)
            )
        else:
            raise InvalidEvent(f"unexpected subject {event.subject}")


def crm_consumer(
    *,
    nats: NatsClient,
    session_factory: async_sessionmaker[AsyncSession],
    service: AiAgentService,
    batch: int = 128,
) -> EventConsumer:
    return EventConsumer(
        nats=nats,
        session_factory=session_factory,
        schema=SCHEMA,
        durable="ai-crm-events",
        stream=CRM.name,
        filter_subjects=[MESSAGE_RECEIVED, SEND_REQUESTED, PURCHASE_RECORDED],
        batch_handler=CrmEvents(service).handle_batch,
        batch=batch,
    )
