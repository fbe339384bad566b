"""What the CRM consumes from the platform workers (stream ONLYFANS) and the AI agent (stream
AI), each event applied once.

* `crm-platform-messages`: `onlyfans.message.received` (a fan wrote: fan and conversation upserted,
  message stored once by its platform id) and `onlyfans.message.sending|sent|failed` (delivery
  status of an outgoing message, found by message id or idempotency key), and
  `onlyfans.mass_message.queued|failed|unsent` (each fan's copy of a campaign's mass message,
  recorded by `RecordMassMessage`, sent, failed, or taken back after it was sent: `unsent`, once,
  a `message.status_changed` on the inbox stream).
* `crm-purchases`: `onlyfans.purchase.recorded` (stored once by platform transaction id; the fan's
  spend recomputed as the sum of their purchases; linked to the message that sold it).
* `crm-fan-sync`: `onlyfans.fan.synced` (the subscriber list: fan and subscription upserted).
* `crm-account-notices`: `onlyfans.account.needs_attention` and `onlyfans.account.connected` (put
  on the inbox stream: the creator sees a banner while the account waits for them, and its end).
* `crm-ai-notices`: `ai.suggestion.created|resolved`, `ai.handoff.requested` (put on the inbox
  stream, so the creator sees drafts and hand-offs as they happen).

Each batch of fan syncs, purchases or messages first locks every fan it touches that exists, in
one order (`ingest.lock_fans`); fan syncs and purchases then apply fan after fan in that order
(each fan's events in their own order), so they create new fans in that order too. The three
consumers' batches of one sync then wait for each other instead of deadlocking. (A batch of
messages keeps its events' order for the inbox: two of its runs of received messages, split by a
delivery event, may create two new fans out of key order; a deadlock there is retried.)

Besides the consumers' `processed_events` (the same event id twice is skipped), every effect is
idempotent by the platform's own ids, so the same fact published twice under two event ids is
stored once too.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.protobuf.message import Message as ProtoMessage
from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.ai.v1 import ai_pb2
from huntaze.ai.v1 import events_pb2 as ai_events
from huntaze.crm.v1 import crm_pb2
from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_crm import convert
from huntaze_crm.ingest import (
    FanKey,
    InboundMessage,
    MessageIngest,
    fans_of_messages,
    in_fan_order,
    lock_fans,
)
from huntaze_crm.models import SCHEMA
from huntaze_crm.repository import PendingInbox
from huntaze_crm.service import (
    ACCOUNT_CONNECTED,
    ACCOUNT_NEEDS_ATTENTION,
    AI_HANDOFF_REQUESTED,
    AI_SUGGESTION_CREATED,
    AI_SUGGESTION_RESOLVED,
    CrmService,
    FanProfile,
    stored_attachments,
)
from huntaze_crm.streams import AI, ONLYFANS
from huntaze_crm.validation import Violations
from huntaze_kit.consumers import BatchHandler, EventConsumer, InvalidEvent, ReceivedEvent
from huntaze_kit.logging import request_context

PLATFORM = "onlyfans"

MESSAGE_RECEIVED = "onlyfans.message.received"
MESSAGE_SENDING = "onlyfans.message.sending"
MESSAGE_SENT = "onlyfans.message.sent"
MESSAGE_FAILED = "onlyfans.message.failed"
MASS_MESSAGE_QUEUED = "onlyfans.mass_message.queued"
MASS_MESSAGE_FAILED = "onlyfans.mass_message.failed"
MASS_MESSAGE_UNSENT = "onlyfans.mass_message.unsent"
PURCHASE_RECORDED = "onlyfans.purchase.recorded"
FAN_SYNCED = "onlyfans.fan.synced"
ACCOUNT_NEEDS_ATTENTION_SUBJECT = "onlyfans.account.needs_attention"
ACCOUNT_CONNECTED_SUBJECT = "onlyfans.account.connected"

_PURCHASE_KINDS = {
    of_events.PURCHASE_KIND_TIP: "tip",
    of_events.PURCHASE_KIND_PPV_UNLOCK: "ppv_unlock",
    of_events.PURCHASE_KIND_SUBSCRIPTION: "subscription",
    of_events.PURCHASE_KIND_RENEWAL: "renewal",
}
_SUBSCRIPTION_STATES = {
    of_events.SUBSCRIPTION_STATE_NONE: "none",
    of_events.SUBSCRIPTION_STATE_ACTIVE: "active",
    of_events.SUBSCRIPTION_STATE_CANCELLED: "cancelled",
    of_events.SUBSCRIPTION_STATE_EXPIRED: "expired",
}
_MEDIA_KINDS = {
    of_events.MEDIA_KIND_IMAGE: crm_pb2.ATTACHMENT_KIND_IMAGE,
    of_events.MEDIA_KIND_VIDEO: crm_pb2.ATTACHMENT_KIND_VIDEO,
    of_events.MEDIA_KIND_AUDIO: crm_pb2.ATTACHMENT_KIND_AUDIO,
    of_events.MEDIA_KIND_FILE: crm_pb2.ATTACHMENT_KIND_FILE,
}
_ATTENTION_REASONS = {
    value.number: value.name.removeprefix("ATTENTION_REASON_").lower()
    for value in of_events.AttentionReason.DESCRIPTOR.values
}
_MAX_ID_LENGTH = 200
_MASS_EVENTS: dict[str, type[ProtoMessage]] = {
    MASS_MESSAGE_QUEUED: of_events.MassMessageQueued,
    MASS_MESSAGE_FAILED: of_events.MassMessageFailed,
    MASS_MESSAGE_UNSENT: of_events.MassMessageUnsent,
}
# The status each mass-message outcome moves the CRM messages it names to.
_MASS_STATUSES = {
    MASS_MESSAGE_QUEUED: "sent",
    MASS_MESSAGE_FAILED: "failed",
    MASS_MESSAGE_UNSENT: "unsent",
}
_DELIVERY_EVENTS: dict[str, type[ProtoMessage]] = {
    MESSAGE_SENDING: of_events.MessageSending,
    MESSAGE_SENT: of_events.MessageSent,
    MESSAGE_FAILED: of_events.MessageFailed,
}
_MAX_NOTICE_LENGTH = 500


@functools.lru_cache(maxsize=4096)
def _creator_uuid(value: str) -> uuid.UUID | None:
    """The creator id of a payload (the same few creators come again and again: parsed once)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _creator(event: ReceivedEvent, payload_creator: str) -> uuid.UUID:
    """The creator of the event; its header, when present, must agree with the payload."""
    if event.creator_id and event.creator_id != payload_creator:
        raise InvalidEvent("the creator header and the payload disagree")
    creator_id = _creator_uuid(payload_creator)
    if creator_id is None:
        raise InvalidEvent(f"creator_id {payload_creator!r} is not a UUID")
    return creator_id


def _platform_id(value: str, name: str) -> str:
    cleaned = value.strip()
    if not cleaned or len(cleaned) > _MAX_ID_LENGTH:
        raise InvalidEvent(f"{name} is missing or too long")
    return cleaned


def _profile(fan: of_events.FanProfile) -> FanProfile:
    return FanProfile(
        platform=PLATFORM,
        platform_fan_id=_platform_id(fan.platform_fan_id, "fan.platform_fan_id"),
        display_name=fan.display_name.strip()[:200],
        handle=fan.handle.strip()[:200],
        avatar_url=fan.avatar_url.strip()[:2048],
    )


def _attachments(media: Any) -> list[crm_pb2.Attachment]:
    return [
        crm_pb2.Attachment(
            kind=_MEDIA_KINDS.get(item.kind, crm_pb2.ATTACHMENT_KIND_FILE),
            url=item.url,
            platform_media_id=item.platform_media_id,
            mime_type=item.mime_type,
            thumbnail_url=item.thumbnail_url,
        )
        for item in media
        if item.url or item.platform_media_id
    ]


class PlatformEvents:
    """The handlers, bound to the use cases. Each takes a batch of events (a single event is a
    batch of one): the events are applied in order, their inbox events written together at
    the end (the creator's inbox lock is then held only from there to the commit), and runs
    of received messages are stored by set-based statements (`ingest`)."""

    def __init__(self, service: CrmService) -> None:
        self._service = service
        self._ingest = MessageIngest(service.clock)

    def _parse(self, event: ReceivedEvent, message_type: type[ProtoMessage]) -> Any:
        return event.parse(message_type)

    def _inbound(self, event: ReceivedEvent) -> InboundMessage:
        received: of_events.MessageReceived = self._parse(event, of_events.MessageReceived)
        return InboundMessage(
            creator_id=_creator(event, received.creator_id),
            profile=_profile(received.fan),
            platform_message_id=_platform_id(received.platform_message_id, "platform_message_id"),
            text=received.text,
            price_cents=received.price_cents,
            attachments=stored_attachments(_attachments(received.media), Violations()),
            sent_at=convert.from_timestamp(received.sent_at),
            request_id=event.request_id,
        )

    def _delivery_ref(self, event: ReceivedEvent) -> tuple[uuid.UUID, uuid.UUID | None, str]:
        """The creator, message id and idempotency key a delivery event names."""
        kind = _DELIVERY_EVENTS.get(event.subject)
        if kind is None:
            raise InvalidEvent(f"unexpected subject {event.subject}")
        parsed: Any = self._parse(event, kind)
        try:
            message_id = uuid.UUID(parsed.message_id) if parsed.message_id else None
        except ValueError:
            message_id = None
        return _creator(event, parsed.creator_id), message_id, parsed.idempotency_key

    async def messages(self, session: AsyncSession, events: Sequence[ReceivedEvent]) -> None:
        inbox = PendingInbox()
        inbound: dict[int, InboundMessage] = {}
        refs: list[tuple[int, tuple[uuid.UUID, uuid.UUID | None, str]]] = []
        for index, event in enumerate(events):
            if event.subject == MESSAGE_RECEIVED:
                inbound[index] = self._inbound(event)
            elif event.subject in _MASS_EVENTS:
                creator_id, message_ids, _, _ = self._mass_outcome(event)
                refs += [(index, (creator_id, message_id, "")) for message_id in message_ids]
            else:
                refs.append((index, self._delivery_ref(event)))
        keys: list[FanKey | None] = [item.fan_key for item in inbound.values()]
        keys += await fans_of_messages(session, [ref for _, ref in refs])
        # The fans locked in key order first; the events then apply in their own order (the
        # inbox shows them as they came), each run of received messages creating its new fans
        # in key order.
        await lock_fans(session, (key for key in keys if key is not None))
        received: list[InboundMessage] = []
        for index, event in enumerate(events):
            if index in inbound:
                received.append(inbound[index])
                continue
            if received:
                await self._ingest.receive(session, received, inbox)
                received = []
            with request_context(event.request_id):
                await self._delivery(session, event, inbox)
        if received:
            await self._ingest.receive(session, received, inbox)
        await inbox.write(session, self._service.clock())

    def _mass_outcome(
        self, event: ReceivedEvent
    ) -> tuple[uuid.UUID, list[uuid.UUID], str, datetime | None]:
        """A mass message's outcome: the creator, the CRM messages it names, the reason they
        failed (`failed` only) and when."""
        parsed: Any = self._parse(event, _MASS_EVENTS[event.subject])
        message_ids = []
        for raw in parsed.message_ids:
            try:
                message_ids.append(uuid.UUID(raw))
            except ValueError:
                raise InvalidEvent(f"message id {raw!r} is not a UUID") from None
        return (
            _creator(event, parsed.creator_id),
            message_ids,
            parsed.reason if event.subject == MASS_MESSAGE_FAILED else "",
            convert.from_timestamp(parsed.occurred_at),
        )

    async def _delivery(
        self, session: AsyncSession, event: ReceivedEvent, inbox: PendingInbox
    ) -> None:
        if event.subject in _MASS_EVENTS:
            # Each fan's copy of a campaign's mass message (`RecordMassMessage`) moves on.
            creator_id, message_ids, reason, at = self._mass_outcome(event)
            for message_id in message_ids:
                await self._service.update_delivery(
                    session,
                    creator_id=creator_id,
                    message_id=str(message_id),
                    idempotency_key="",
                    # Only a sent copy is unsent; a repeated or late outcome changes nothing.
                    status=_MASS_STATUSES[event.subject],
                    sent_at=at,
                    reason=reason or "OnlyFans did not queue the mass message.",
                    inbox=inbox,
                )
            return
        if event.subject == MESSAGE_SENDING:
            sending: of_events.MessageSending = self._parse(event, of_events.MessageSending)
            await self._service.update_delivery(
                session,
                creator_id=_creator(event, sending.creator_id),
                message_id=sending.message_id,
                idempotency_key=sending.idempotency_key,
                status="sending",
                inbox=inbox,
            )
        elif event.subject == MESSAGE_SENT:
            sent: of_events.MessageSent = self._parse(event, of_events.MessageSent)
            await self._service.update_delivery(
                session,
                creator_id=_creator(event, sent.creator_id),
                message_id=sent.message_id,
                idempotency_key=sent.idempotency_key,
                status="sent",
                platform_message_id=sent.platform_message_id.strip()[:_MAX_ID_LENGTH],
                sent_at=convert.from_timestamp(sent.sent_at),
                inbox=inbox,
            )
        elif event.subject == MESSAGE_FAILED:
            failed: of_events.MessageFailed = self._parse(event, of_events.MessageFailed)
            await self._service.update_delivery(
                session,
                creator_id=_creator(event, failed.creator_id),
                message_id=failed.message_id,
                idempotency_key=failed.idempotency_key,
                status="failed",
                reason=failed.reason,
                inbox=inbox,
            )
        else:
            raise InvalidEvent(f"unexpected subject {event.subject}")

    async def _in_fan_order(
        self, session: AsyncSession, events: Sequence[ReceivedEvent], kind: type[ProtoMessage]
    ) -> list[ReceivedEvent]:
        """The events of fans (fan syncs, purchases) in `lock_fans` order, their fans locked."""
        keys: list[FanKey | None] = []
        for event in events:
            parsed: Any = self._parse(event, kind)
            profile = _profile(parsed.fan)
            keys.append(
                (_creator(event, parsed.creator_id), profile.platform, profile.platform_fan_id)
            )
        await lock_fans(session, (key for key in keys if key is not None))
        return [events[index] for index in in_fan_order(keys)]

    async def purchases(self, session: AsyncSession, events: Sequence[ReceivedEvent]) -> None:
        inbox = PendingInbox()
        for event in await self._in_fan_order(session, events, of_events.PurchaseRecorded):
            with request_context(event.request_id):
                await self._purchase(session, event, inbox)
        await inbox.write(session, self._service.clock())

    async def _purchase(
        self, session: AsyncSession, event: ReceivedEvent, inbox: PendingInbox
    ) -> None:
        purchase: of_events.PurchaseRecorded = self._parse(event, of_events.PurchaseRecorded)
        kind = _PURCHASE_KINDS.get(purchase.kind)
        if kind is None:
            raise InvalidEvent(f"unknown purchase kind {purchase.kind}")
        if purchase.amount_cents < 0:
            raise InvalidEvent("negative amount")
        currency = (purchase.currency or "USD").upper()
        if len(currency) != 3 or not currency.isalpha() or not currency.isascii():
            raise InvalidEvent(f"currency {purchase.currency!r} is not ISO 4217")
        await self._service.record_purchase(
            session,
            creator_id=_creator(event, purchase.creator_id),
            profile=_profile(purchase.fan),
            platform_transaction_id=_platform_id(
                purchase.platform_transaction_id, "platform_transaction_id"
            ),
            kind=kind,
            amount_cents=purchase.amount_cents,
            currency=currency,
            platform_message_id=purchase.platform_message_id.strip()[:_MAX_ID_LENGTH],
            occurred_at=convert.from_timestamp(purchase.purchased_at),
            inbox=inbox,
        )

    async def fans(self, session: AsyncSession, events: Sequence[ReceivedEvent]) -> None:
        inbox = PendingInbox()
        for event in await self._in_fan_order(session, events, of_events.FanSynced):
            with request_context(event.request_id):
                await self._fan(session, event, inbox)
        await inbox.write(session, self._service.clock())

    async def _fan(self, session: AsyncSession, event: ReceivedEvent, inbox: PendingInbox) -> None:
        synced: of_events.FanSynced = self._parse(event, of_events.FanSynced)
        subscription: dict[str, Any] = {}
        state = _SUBSCRIPTION_STATES.get(synced.subscription_state)
        if state is not None:
            subscription["subscription_state"] = state
        for column, stamp in (
            ("subscribed_at", synced.subscribed_at),
            ("subscription_expires_at", synced.expires_at),
            ("last_seen_at", synced.last_seen_at),
        ):
            value = convert.from_timestamp(stamp)
            if value is not None:
                subscription[column] = value
        await self._service.sync_fan(
            session,
            creator_id=_creator(event, synced.creator_id),
            profile=_profile(synced.fan),
            subscription=subscription,
            inbox=inbox,
        )


class AccountNotices:
    """The platform worker's word on the creator's account, put on the inbox stream: a banner
    while the account needs the creator, taken down when it is connected again. (Nothing is
    stored besides the inbox event: the worker keeps the account's state.)"""

    def __init__(self, service: CrmService) -> None:
        self._service = service

    async def apply(self, session: AsyncSession, events: Sequence[ReceivedEvent]) -> None:
        inbox = PendingInbox()
        for event in events:
            if event.subject == ACCOUNT_NEEDS_ATTENTION_SUBJECT:
                attention = event.parse(of_events.AccountNeedsAttention)
                inbox.add(
                    _creator(event, attention.creator_id),
                    ACCOUNT_NEEDS_ATTENTION,
                    crm_pb2.AccountNotice(
                        platform=PLATFORM,
                        state="needs_attention",
                        reason=_ATTENTION_REASONS.get(attention.reason, "unspecified"),
                        message=attention.message.strip()[:_MAX_NOTICE_LENGTH],
                    ),
                )
            elif event.subject == ACCOUNT_CONNECTED_SUBJECT:
                connected = event.parse(of_events.AccountConnected)
                inbox.add(
                    _creator(event, connected.creator_id),
                    ACCOUNT_CONNECTED,
                    crm_pb2.AccountNotice(
                        platform=PLATFORM,
                        state="connected",
                        username=connected.username.strip()[:_MAX_ID_LENGTH],
                    ),
                )
            else:
                raise InvalidEvent(f"unexpected subject {event.subject}")
        await inbox.write(session, self._service.clock())


def platform_consumers(
    *,
    nats: NatsClient,
    session_factory: async_sessionmaker[AsyncSession],
    service: CrmService,
    batch: int = 128,
    concurrency: int = 1,
) -> list[EventConsumer]:
    """The durable consumers of the ONLYFANS stream."""
    events = PlatformEvents(service)

    def consumer(durable: str, subjects: list[str], handler: BatchHandler) -> EventConsumer:
        return EventConsumer(
            nats=nats,
            session_factory=session_factory,
            schema=SCHEMA,
            durable=durable,
            stream=ONLYFANS.name,
            filter_subjects=subjects,
            batch_handler=handler,
            batch=batch,
            concurrency=concurrency,
        )

    return [
        consumer(
            "crm-platform-messages",
            [
                MESSAGE_RECEIVED,
                MESSAGE_SENDING,
                MESSAGE_SENT,
                MESSAGE_FAILED,
                MASS_MESSAGE_QUEUED,
                MASS_MESSAGE_FAILED,
                MASS_MESSAGE_UNSENT,
            ],
            events.messages,
        ),
        consumer("crm-purchases", [PURCHASE_RECORDED], events.purchases),
        consumer("crm-fan-sync", [FAN_SYNCED], events.fans),
        consumer(
            "crm-account-notices",
            [ACCOUNT_NEEDS_ATTENTION_SUBJECT, ACCOUNT_CONNECTED_SUBJECT],
            AccountNotices(service).apply,
        ),
    ]


AI_SUBJECTS = {
    "ai.suggestion.created": AI_SUGGESTION_CREATED,
    "ai.suggestion.resolved": AI_SUGGESTION_RESOLVED,
    "ai.handoff.requested": AI_HANDOFF_REQUESTED,
}
_AI_EVENTS: dict[str, type[ProtoMessage]] = {
    "ai.suggestion.created": ai_events.SuggestionCreated,
    "ai.suggestion.resolved": ai_events.SuggestionResolved,
    "ai.handoff.requested": ai_events.HandoffRequested,
}
_AI_STATUSES = {
    value.number: value.name.removeprefix("SUGGESTION_STATUS_").lower()
    for value in ai_pb2.SuggestionStatus.DESCRIPTOR.values
}


class AiNotices:
    """The AI agent's suggestions and hand-offs, put on the creator's inbox stream."""

    def __init__(self, service: CrmService) -> None:
        self._service = service

    async def apply(self, session: AsyncSession, events: Sequence[ReceivedEvent]) -> None:
        inbox = PendingInbox()
        for event in events:
            kind = AI_SUBJECTS.get(event.subject)
            if kind is None:
                raise InvalidEvent(f"unexpected subject {event.subject}")
            parsed: Any = event.parse(_AI_EVENTS[event.subject])
            suggestion = parsed.suggestion
            inbox.add(
                _creator(event, parsed.creator_id),
                kind,
                crm_pb2.AiNotice(
                    suggestion_id=suggestion.id,
                    conversation_id=suggestion.conversation_id,
                    fan_id=suggestion.fan_id,
                    message_id=suggestion.message_id,
                    text=suggestion.text,
                    status=_AI_STATUSES.get(suggestion.status, ""),
                    reason=suggestion.handoff_reason,
                    send_after=suggestion.send_after if suggestion.HasField("send_after") else None,
                ),
            )
        await inbox.write(session, self._service.clock())


def ai_consumer(
    *,
    nats: NatsClient,
    session_factory: async_sessionmaker[AsyncSession],
    service: CrmService,
    batch: int = 128,
) -> EventConsumer:
    """The durable consumer of the AI stream (`crm-ai-notices`)."""
    return EventConsumer(
        nats=nats,
        session_factory=session_factory,
        schema=SCHEMA,
        durable="crm-ai-notices",
        stream=AI.name,
        filter_subjects=list(AI_SUBJECTS),
        batch_handler=AiNotices(service).apply,
        batch=batch,
    )
