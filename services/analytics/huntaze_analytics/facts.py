"""Events as analytics reads them: every event is stored as it came (type, creator, time, id,
payload); the types listed in `DECODED` are also decoded for the rollups. A type not listed
(a new context's events, say campaigns') is stored and counted per day all the same, and
becomes a rollup by adding its message class here and its effect in `rollups`.

Time: an event counts on the day it happened, not the day it arrived, so each event's time is
the business time its payload carries (a purchase's `occurred_at`, a message's `created_at`),
else its `Huntaze-Occurred-At` header, else the time it arrived.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncpg.pgproto import pgproto
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from huntaze.ai.v1 import events_pb2 as ai_events
from huntaze.auth.v1 import events_pb2 as auth_events
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_kit.consumers import InvalidEvent, ReceivedEvent
from huntaze_kit.streams import Headers

PROFILE_UPDATED = "auth.profile.updated"
FAN_CREATED = "crm.fan.created"
FAN_UPDATED = "crm.fan.updated"
FAN_DELETED = "crm.fan.deleted"
MESSAGE_RECEIVED = "crm.message.received"
MESSAGE_SENT = "crm.message.sent"
MESSAGE_READ = "crm.message.read"
PURCHASE_RECORDED = "crm.purchase.recorded"
SUGGESTION_CREATED = "ai.suggestion.created"
SUGGESTION_RESOLVED = "ai.suggestion.resolved"
REVENUE_ATTRIBUTED = "ai.revenue.attributed"
ACCOUNT_NEEDS_ATTENTION = "onlyfans.account.needs_attention"
ACCOUNT_CONNECTED = "onlyfans.account.connected"
CAMPAIGNS_PREFIX = "campaigns."

DECODED: dict[str, type[Message]] = {
    PROFILE_UPDATED: auth_events.ProfileUpdated,
    FAN_CREATED: crm_events.FanCreated,
    FAN_UPDATED: crm_events.FanUpdated,
    FAN_DELETED: crm_events.FanDeleted,
    MESSAGE_RECEIVED: crm_events.MessageReceived,
    MESSAGE_SENT: crm_events.MessageSent,
    MESSAGE_READ: crm_events.MessageRead,
    PURCHASE_RECORDED: crm_events.PurchaseRecorded,
    SUGGESTION_CREATED: ai_events.SuggestionCreated,
    SUGGESTION_RESOLVED: ai_events.SuggestionResolved,
    REVENUE_ATTRIBUTED: ai_events.RevenueAttributed,
    ACCOUNT_NEEDS_ATTENTION: of_events.AccountNeedsAttention,
    ACCOUNT_CONNECTED: of_events.AccountConnected,
}

# What analytics reads of each context. Auth's other events carry tokens and addresses that
# analytics has no use for, so they are not stored.
SUBJECTS: dict[str, tuple[str, ...]] = {
    "auth": (PROFILE_UPDATED, "auth.onboarding.completed"),
    "crm": ("crm.>",),
    "onlyfans": ("onlyfans.>",),
    "ai": ("ai.>",),
    "campaigns": ("campaigns.>",),
}

PLATFORMS = {
    crm_pb2.PLATFORM_ONLYFANS: "onlyfans",
    crm_pb2.PLATFORM_TIKTOK: "tiktok",
    crm_pb2.PLATFORM_INSTAGRAM: "instagram",
    crm_pb2.PLATFORM_REDDIT: "reddit",
}
SUBSCRIPTION_STATES = {
    crm_pb2.SUBSCRIPTION_STATE_NONE: "none",
    crm_pb2.SUBSCRIPTION_STATE_ACTIVE: "active",
    crm_pb2.SUBSCRIPTION_STATE_CANCELLED: "cancelled",
    crm_pb2.SUBSCRIPTION_STATE_EXPIRED: "expired",
}
# Subscribed now, whether it renews or not.
SUBSCRIBED = frozenset({"active", "cancelled"})
PURCHASE_COLUMNS = {
    crm_pb2.PURCHASE_KIND_SUBSCRIPTION: "subscription_cents",
    crm_pb2.PURCHASE_KIND_RENEWAL: "renewal_cents",
    crm_pb2.PURCHASE_KIND_TIP: "tip_cents",
    crm_pb2.PURCHASE_KIND_PPV_UNLOCK: "ppv_cents",
}
ATTENTION_REASONS = {
    of_events.ATTENTION_REASON_WRONG_PASSWORD: "wrong_password",
    of_events.ATTENTION_REASON_CHALLENGE: "challenge",
    of_events.ATTENTION_REASON_STALE_RULES: "stale_rules",
    of_events.ATTENTION_REASON_SESSION_ENDED: "session_ended",
    of_events.ATTENTION_REASON_OTP_REQUIRED: "otp_required",
}


def platform_name(platform: crm_pb2.Platform.ValueType) -> str:
    return PLATFORMS.get(platform, "other")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as the events table holds it, with its decoded payload when analytics reads
    its type."""

    event_id: uuid.UUID
    event_type: str
    message_type: str
    creator_id: uuid.UUID | None
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    payload: bytes
    message: Any = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: Timestamp) -> datetime | None:
    """A set Timestamp as an aware datetime; None when unset. (What `ToDatetime(tzinfo=UTC)`
    answers, without its detours through naive time: every event has one or two.)"""
    seconds, nanos = value.seconds, value.nanos
    if not seconds and not nanos:
        return None
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def decode(event_type: str, message_type: str, payload: bytes) -> Message | None:
    """The payload of a type analytics reads; None for the others. InvalidEvent when a type
    analytics reads comes with another message or a payload that does not parse."""
    cls = DECODED.get(event_type)
    if cls is None:
        return None
    if message_type != cls.DESCRIPTOR.full_name:
        raise InvalidEvent(f"{event_type} should carry a {cls.DESCRIPTOR.full_name}")
    message = cls()
    try:
        message.ParseFromString(payload)
    except DecodeError as error:
        raise InvalidEvent(f"payload is not a valid {cls.DESCRIPTOR.full_name}") from error
    return message


# The business time of the types that carry one besides `occurred_at`.
_BUSINESS_TIMES: dict[type[Message], Callable[[Any], Timestamp]] = {
    crm_events.PurchaseRecorded: lambda m: m.purchase.occurred_at,
    crm_events.MessageReceived: lambda m: m.message.created_at,
    crm_events.MessageSent: lambda m: m.message.sent_at,
    crm_events.FanCreated: lambda m: m.fan.created_at,
}


def business_time(message: Message | None) -> datetime | None:
    """When the event happened by its own account."""
    if message is None:
        return None
    found: datetime | None = None
    business = _BUSINESS_TIMES.get(type(message))
    if business is not None:
        found = timestamp(business(message))
    if found is None and "occurred_at" in message.DESCRIPTOR.fields_by_name:
        found = timestamp(message.occurred_at)  # type: ignore[attr-defined]
    return found


@functools.lru_cache(maxsize=1 << 18)
def parse_uuid(value: str) -> uuid.UUID | None:
    """A UUID from its text, None when it is not one (ids repeat: parsed once each).

    Parsed by asyncpg's own UUID (a `uuid.UUID`, the type it reads uuid columns as), which
    parses, hashes and is sent back to PostgreSQL many times faster; the spellings only
    `uuid.UUID` reads (braces, `urn:uuid:`) still parse."""
    try:
        fast: uuid.UUID = pgproto.UUID(value)
    except ValueError:
        pass
    else:
        return fast
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _creator(raw: str | None, message: Message | None) -> uuid.UUID | None:
    found = parse_uuid(raw) if raw else None
    if found is None and message is not None:
        if "creator_id" in message.DESCRIPTOR.fields_by_name:
            found = parse_uuid(message.creator_id)  # type: ignore[attr-defined]
        if found is None and isinstance(message, auth_events.ProfileUpdated):
            found = parse_uuid(message.user_id)  # a creator's id is their user id
    return found


def from_received(event: ReceivedEvent, *, now: datetime) -> StoredEvent:
    message = decode(event.subject, event.message_type, event.payload)
    return StoredEvent(
        event_id=event.event_id,
        event_type=event.subject,
        message_type=event.message_type,
        creator_id=_creator(event.creator_id, message),
        aggregate_type=event.headers.get(Headers.AGGREGATE_TYPE, ""),
        aggregate_id=event.headers.get(Headers.AGGREGATE_ID, ""),
        occurred_at=business_time(message) or event.occurred_at or now,
        payload=event.payload,
        message=message,
    )


def from_row(row: Sequence[Any]) -> StoredEvent:
    """An event read back from the events table (columns as `rollups.STORED_COLUMNS`)."""
    event_id, event_type, message_type, creator_id, aggregate_type, aggregate_id = row[:6]
    occurred_at, payload = row[6], bytes(row[7])
    return StoredEvent(
        event_id=event_id,
        event_type=event_type,
        message_type=message_type,
        creator_id=creator_id,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        occurred_at=occurred_at,
        payload=payload,
        message=decode(event_type, message_type, payload),
    )


# Response times go into buckets growing by a quarter: bucket 0 is under a second, bucket k
# covers [1.25^(k-1), 1.25^k) seconds; the last one holds everything longer (about 1.7 years).
BUCKET_GROWTH = 1.25
LAST_BUCKET = 80


def response_bucket(seconds: float) -> int:
    if seconds < 1:
        return 0
    return min(LAST_BUCKET, math.floor(math.log(seconds) / math.log(BUCKET_GROWTH)) + 1)


def bucket_bounds(bucket: int) -> tuple[float, float]:
    if bucket == 0:
        return 0.0, 1.0
    return BUCKET_GROWTH ** (bucket - 1), BUCKET_GROWTH**bucket


def percentile(buckets: dict[int, int], fraction: float) -> float | None:
    """The `fraction` quantile of a response-time histogram, interpolated inside its bucket
    (within a quarter of the exact value)."""
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = fraction * total
    seen = 0
    for bucket in sorted(buckets):
        count = buckets[bucket]
        if seen + count >= rank:
            low, high = bucket_bounds(bucket)
            inside = (rank - seen) / count if count else 0.0
            return round(low + (high - low) * inside, 1)
        seen += count
    return round(bucket_bounds(max(buckets))[1], 1)
