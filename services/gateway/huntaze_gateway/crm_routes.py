"""`/api/crm/*` and `/api/messages/*`: HTTP/JSON in, the CRM service's gRPC API out.

Thin like the auth routes: the gateway checks the shape of the input, verifies the access token
locally, forwards it as `authorization` metadata, and turns the answer into camelCase JSON. Every
rule (what a valid fan is, who may see what) is the CRM's; its errors become problem documents
through the one mapping in `problems`. Field violations of list filters are renamed to the query
parameters they came from (`page.page_token` -> `cursor`).

Answers are written straight from the protobuf messages with orjson (no second validation pass);
the pydantic models below describe them in the OpenAPI document, and the tests hold the two
together. Enum values are lower-case names (`onlyfans`, `ppv_unlock`); sort names are the field
sorted by (`lastMessageAt`), ascending, or descending after a `-` (`-lastMessageAt`).
`GET /api/crm/stream` relays the CRM's `WatchInbox` as Server-Sent Events.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import grpc
import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from google.protobuf import struct_pb2
from pydantic import AfterValidator, Field, field_validator

from huntaze.common.v1 import common_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze_gateway.auth_routes import ApiModel, CurrentCaller, problems
from huntaze_gateway.problems import PROBLEM_MEDIA_TYPE, VALIDATION, ApiProblem, camel_field
from huntaze_gateway.sse import EventStreamResponse, Stream, frame, relay
from huntaze_gateway.state import runtime_of
from huntaze_kit.errors import FieldViolation, InvalidArgument
from huntaze_kit.rich_status import from_rpc_error

if TYPE_CHECKING:
    from huntaze.crm.v1.crm_pb2_grpc import CrmServiceAsyncStub

crm_router = APIRouter(prefix="/api/crm", tags=["crm"])
messages_router = APIRouter(prefix="/api/messages", tags=["messages"])

_BODY = (400, 413, 422)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAX_LIMIT = 200
MAX_CURSOR = 1024
MAX_ID = 64
MAX_JSON_DEPTH = 16
SSE_RETRY_MILLISECONDS = 3000

V = TypeVar("V", bound=int)
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Enums: proto values <-> lower-case names.


def _by_name(values: Iterable[tuple[str, V]], prefix: str) -> dict[str, V]:
    return {
        name.removeprefix(prefix).lower(): value
        for name, value in values
        if not name.endswith("_UNSPECIFIED")
    }


def _names(by_name: Mapping[str, int]) -> dict[int, str]:
    return {value: name for name, value in by_name.items()}


PLATFORMS = _by_name(crm_pb2.Platform.items(), "PLATFORM_")
SUBSCRIPTION_STATES = _by_name(crm_pb2.SubscriptionState.items(), "SUBSCRIPTION_STATE_")
DIRECTIONS = _by_name(crm_pb2.MessageDirection.items(), "MESSAGE_DIRECTION_")
DELIVERY_STATUSES = _by_name(crm_pb2.DeliveryStatus.items(), "DELIVERY_STATUS_")
SENDER_KINDS = _by_name(crm_pb2.SenderKind.items(), "SENDER_KIND_")
ATTACHMENT_KINDS = _by_name(crm_pb2.AttachmentKind.items(), "ATTACHMENT_KIND_")
PURCHASE_KINDS = _by_name(crm_pb2.PurchaseKind.items(), "PURCHASE_KIND_")
FAN_LIST_KINDS = _by_name(crm_pb2.FanListKind.items(), "FAN_LIST_KIND_")
# `sort=field` ascending, `sort=-field` descending.
FAN_SORTS: dict[str, crm_pb2.FanSort.ValueType] = {
    "-createdAt": crm_pb2.FAN_SORT_CREATED_AT_DESC,
    "createdAt": crm_pb2.FAN_SORT_CREATED_AT_ASC,
    "-lastMessageAt": crm_pb2.FAN_SORT_LAST_MESSAGE_AT_DESC,
    "lastMessageAt": crm_pb2.FAN_SORT_LAST_MESSAGE_AT_ASC,
    "-valueCents": crm_pb2.FAN_SORT_VALUE_CENTS_DESC,
    "valueCents": crm_pb2.FAN_SORT_VALUE_CENTS_ASC,
    "displayName": crm_pb2.FAN_SORT_DISPLAY_NAME_ASC,
    "-displayName": crm_pb2.FAN_SORT_DISPLAY_NAME_DESC,
    "-lastSeenAt": crm_pb2.FAN_SORT_LAST_SEEN_AT_DESC,
    "lastSeenAt": crm_pb2.FAN_SORT_LAST_SEEN_AT_ASC,
}
CONVERSATION_SORTS: dict[str, crm_pb2.ConversationSort.ValueType] = {
    "-lastMessageAt": crm_pb2.CONVERSATION_SORT_LAST_MESSAGE_AT_DESC,
    "lastMessageAt": crm_pb2.CONVERSATION_SORT_LAST_MESSAGE_AT_ASC,
    "pinnedFirst": crm_pb2.CONVERSATION_SORT_PINNED_FIRST,
    "-unreadCount": crm_pb2.CONVERSATION_SORT_UNREAD_COUNT_DESC,
    "unreadCount": crm_pb2.CONVERSATION_SORT_UNREAD_COUNT_ASC,
}
ARCHIVE_FILTERS: dict[str, crm_pb2.ArchiveFilter.ValueType] = {
    "false": crm_pb2.ARCHIVE_FILTER_EXCLUDE_ARCHIVED,
    "true": crm_pb2.ARCHIVE_FILTER_ONLY_ARCHIVED,
    "all": crm_pb2.ARCHIVE_FILTER_ALL,
}
_PLATFORM_NAMES = _names(PLATFORMS)
_SUBSCRIPTION_STATE_NAMES = _names(SUBSCRIPTION_STATES)
_DIRECTION_NAMES = _names(DIRECTIONS)
_DELIVERY_STATUS_NAMES = _names(DELIVERY_STATUSES)
_SENDER_KIND_NAMES = _names(SENDER_KINDS)
_ATTACHMENT_KIND_NAMES = _names(ATTACHMENT_KINDS)
_PURCHASE_KIND_NAMES = _names(PURCHASE_KINDS)
_FAN_LIST_KIND_NAMES = _names(FAN_LIST_KINDS)
UNSPECIFIED = "unspecified"

# The same names as types, for input validation and the OpenAPI document (a test checks that
# they match the proto enums).
PlatformName = Literal["onlyfans", "tiktok", "instagram", "reddit"]
SubscriptionStateName = Literal["none", "active", "cancelled", "expired"]
AttachmentKindName = Literal["image", "video", "audio", "file"]
FanListKindName = Literal["static", "dynamic"]
FanSortName = Literal[
    "-createdAt",
    "createdAt",
    "-lastMessageAt",
    "lastMessageAt",
    "-valueCents",
    "valueCents",
    "displayName",
    "-displayName",
    "-lastSeenAt",
    "lastSeenAt",
]
ConversationSortName = Literal[
    "-lastMessageAt", "lastMessageAt", "pinnedFirst", "-unreadCount", "unreadCount"
]
ArchivedName = Literal["false", "true", "all"]


# ---------------------------------------------------------------------------------------------
# Input.


def _clean_text(value: str) -> str:
    """Query text must be valid UTF-8 without NUL (PostgreSQL and protobuf refuse them)."""
    if "\x00" in value:
        raise ValueError("contains characters that are not allowed (NUL)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("contains characters that are not allowed (surrogates)") from error
    return value


def _json_problem(value: Any, depth: int) -> str | None:
    """What makes `value` unfit for a JSON column (NUL or surrogates in text, numbers that are
    not finite, nesting deeper than `MAX_JSON_DEPTH`), or None."""
    if depth > MAX_JSON_DEPTH:
        return f"nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        try:
            _clean_text(value)
        except ValueError as error:
            return str(error)
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite"
    if isinstance(value, dict):
        for key, item in value.items():
            found = _json_problem(key, depth) or _json_problem(item, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _json_problem(item, depth + 1)
            if found:
                return found
    return None


QueryText = Annotated[str, AfterValidator(_clean_text)]
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
ObjectId = Annotated[str, Field(min_length=1, max_length=MAX_ID, description="A UUID.")]
Cursor = Annotated[
    str,
    Query(max_length=MAX_CURSOR, description="`nextCursor` of the previous page (same filters)."),
]
Limit = Annotated[
    int | None, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1 to {MAX_LIMIT}; default 50.")
]


def _path_id(name: str) -> Any:
    # Checked by the CRM (any other string is a 422 on the id, a UUID of nothing a 404).
    return Path(description=f"The {name}'s id (a UUID).")


FanIdPath = Annotated[str, _path_id("fan")]
ConversationIdPath = Annotated[str, _path_id("conversation")]
MessageIdPath = Annotated[str, _path_id("message")]
QuickReplyIdPath = Annotated[str, _path_id("quick reply")]
ListIdPath = Annotated[str, _path_id("list")]


class CustomFieldsModel(ApiModel):
    """Checks a free-form JSON object (`customFields`)."""

    @field_validator("custom_fields", mode="after", check_fields=False)
    @classmethod
    def _storable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            found = _json_problem(value, 1)
            if found:
                raise ValueError(found)
        return value


class AttachmentIn(ApiModel):
    kind: AttachmentKindName
    url: str = Field(default="", description="An http(s) URL; or give `platformMediaId`.")
    platform_media_id: str = ""
    mime_type: str = ""
    thumbnail_url: str = ""


class SegmentIn(ApiModel):
    """Fans matching every condition that is set."""

    min_value_cents: Int64 | None = Field(default=None, description="Lifetime spend, at least.")
    max_value_cents: Int64 | None = Field(default=None, description="Lifetime spend, at most.")
    tags_any: list[str] = Field(default_factory=list, description="At least one of these tags.")
    tags_all: list[str] = Field(default_factory=list, description="Every one of these tags.")
    subscription_states: list[SubscriptionStateName] = Field(default_factory=list)
    last_active_within_days: Int32 | None = Field(
        default=None, description="Seen, or wrote, within this many days."
    )
    platforms: list[PlatformName] = Field(default_factory=list)


class CreateFanBody(CustomFieldsModel):
    platform: PlatformName
    platform_fan_id: str = Field(default="", description="The fan's account id on the platform.")
    display_name: str = ""
    handle: str = ""
    avatar_url: str = ""
    email: str = ""
    tags: list[str] = Field(default_factory=list)
    notes: str = ""
    custom_fields: dict[str, Any] | None = None


class UpdateFanBody(CustomFieldsModel):
    """Members that are present replace the fan's; absent ones stay as they are."""

    display_name: str | None = None
    handle: str | None = None
    avatar_url: str | None = None
    email: str | None = None
    notes: str | None = None
    tags: list[str] | None = Field(default=None, description="Replaces every tag.")
    custom_fields: dict[str, Any] | None = None


class FanTagsBody(ApiModel):
    fan_ids: list[str] = Field(description="At most 1,000 fans; all or nothing.")
    add_tags: list[str] = Field(default_factory=list)
    remove_tags: list[str] = Field(default_factory=list)


class UpdateConversationBody(ApiModel):
    """Members that are present change; `assignedMemberId: null` unassigns."""

    pinned: bool | None = None
    archived: bool | None = None
    assigned_member_id: str | None = Field(default=None, description="A team member's user id.")


class ReplyBody(ApiModel):
    conversation_id: ObjectId | None = Field(default=None, description="Or give `fanId`.")
    fan_id: ObjectId | None = Field(
        default=None, description="Writes to the fan's conversation, opened when it has none."
    )
    text: str = Field(default="", description="At most 5,000 characters; may be empty with media.")
    price_cents: Int64 = Field(default=0, description="Pay-per-view price; 0 for a free message.")
    attachments: list[AttachmentIn] = Field(default_factory=list)
    idempotency_key: str | None = Field(
        default=None,
        description=(
            "The same key always answers the same message (or send the `Idempotency-Key` "
            "header). Required in one of the two places."
        ),
    )


class CreateQuickReplyBody(ApiModel):
    shortcut: str = Field(description="One word, e.g. `/thanks`; unique.")
    text: str


class UpdateQuickReplyBody(ApiModel):
    shortcut: str | None = None
    text: str | None = None


class CreateListBody(ApiModel):
    name: str
    kind: FanListKindName
    segment: SegmentIn | None = Field(
        default=None, description="Required for a dynamic list; not allowed for a static one."
    )


class UpdateListBody(ApiModel):
    name: str | None = None
    segment: SegmentIn | None = Field(default=None, description="Dynamic lists only.")


class ListMembersBody(ApiModel):
    fan_ids: list[str] = Field(description="At most 1,000 fans; all or nothing.")


class PreviewBody(ApiModel):
    segment: SegmentIn


# ---------------------------------------------------------------------------------------------
# Output: the models document the answers; the functions below write them.


class FanOut(ApiModel):
    id: str
    platform: str = Field(description="`onlyfans`, `tiktok`, `instagram` or `reddit`.")
    platform_fan_id: str | None
    display_name: str = Field(description="The creator's name for the fan when set, else theirs.")
    platform_display_name: str = Field(description="The fan's name on the platform.")
    custom_display_name: str | None = Field(description="The creator's name for the fan.")
    handle: str
    avatar_url: str
    email: str
    tags: list[str]
    notes: str
    value_cents: int = Field(description="Lifetime spend: the sum of the fan's purchases.")
    subscription_state: str = Field(description="`none`, `active`, `cancelled` or `expired`.")
    subscribed_at: datetime | None
    subscription_expires_at: datetime | None
    last_seen_at: datetime | None
    last_message_at: datetime | None
    custom_fields: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None


class AttachmentOut(ApiModel):
    kind: str = Field(description="`image`, `video`, `audio` or `file`.")
    url: str | None
    platform_media_id: str | None
    mime_type: str | None
    thumbnail_url: str | None


class MessageOut(ApiModel):
    id: str
    conversation_id: str
    fan_id: str
    platform: str
    direction: str = Field(description="`in` (from the fan) or `out`.")
    text: str
    price_cents: int
    attachments: list[AttachmentOut]
    read: bool
    read_at: datetime | None
    delivery_status: str = Field(
        description="`received` (inbound), or `queued`, `sending`, `sent`, `failed`."
    )
    failure_reason: str | None
    platform_message_id: str | None
    idempotency_key: str | None
    sender_kind: str = Field(description="`fan`, `creator`, `ai`, `automation` or `team_member`.")
    sender_id: str | None
    created_at: datetime | None
    sent_at: datetime | None
    unlocked_at: datetime | None
    updated_at: datetime | None


class ConversationOut(ApiModel):
    id: str
    fan_id: str
    platform: str
    unread_count: int
    last_message_at: datetime | None
    last_message_preview: str
    pinned: bool
    archived: bool
    assigned_member_id: str | None
    created_at: datetime | None
    updated_at: datetime | None
    fan: FanOut | None


class PurchaseOut(ApiModel):
    id: str
    fan_id: str
    message_id: str | None = Field(description="The message that sold it, when known.")
    platform: str
    kind: str = Field(description="`tip`, `ppv_unlock`, `subscription` or `renewal`.")
    amount_cents: int
    currency: str
    platform_transaction_id: str
    occurred_at: datetime | None
    created_at: datetime | None


class QuickReplyOut(ApiModel):
    id: str
    shortcut: str
    text: str
    created_at: datetime | None
    updated_at: datetime | None


class SegmentOut(ApiModel):
    min_value_cents: int | None
    max_value_cents: int | None
    tags_any: list[str]
    tags_all: list[str]
    subscription_states: list[str]
    last_active_within_days: int | None
    platforms: list[str]


class FanListOut(ApiModel):
    id: str
    name: str
    kind: str = Field(description="`static` or `dynamic`.")
    segment: SegmentOut | None
    member_count: int = Field(description="Static: its members; dynamic: the fans matching now.")
    created_at: datetime | None
    updated_at: datetime | None


class FansPage(ApiModel):
    fans: list[FanOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class ConversationsPage(ApiModel):
    conversations: list[ConversationOut]
    next_cursor: str | None


class MessagesPage(ApiModel):
    messages: list[MessageOut]
    next_cursor: str | None


class PurchasesPage(ApiModel):
    purchases: list[PurchaseOut]
    next_cursor: str | None


class QuickRepliesPage(ApiModel):
    quick_replies: list[QuickReplyOut]
    next_cursor: str | None


class FanListsPage(ApiModel):
    lists: list[FanListOut]
    next_cursor: str | None


class ReplyOut(ApiModel):
    message: MessageOut
    created: bool = Field(description="False: the key was used before; this is that message.")


class UpdatedCountOut(ApiModel):
    updated_count: int


class AddedCountOut(ApiModel):
    added_count: int


class RemovedCountOut(ApiModel):
    removed_count: int


class FanCountOut(ApiModel):
    fan_count: int


class MessagesReadOut(ApiModel):
    conversation_id: str
    message_ids: list[str]
    read_at: datetime | None


class AiNoticeOut(ApiModel):
    """What the AI agent did in a conversation: a draft (`suggested`, or `scheduled` to be
    sent by the autopilot at `sendAfter`), its outcome, or a hand-off to a person (`reason`)."""

    suggestion_id: str
    conversation_id: str
    fan_id: str
    message_id: str
    text: str
    status: str
    reason: str | None
    send_after: datetime | None


class InboxEventOut(ApiModel):
    """The `data` of each event of `GET /api/crm/stream`; the member set is the one the `type`
    names."""

    id: int
    type: str = Field(
        description=(
            "`message.received`, `message.status_changed`, `message.read`, `fan.updated`, "
            "`conversation.updated`, `ai.suggestion_created`, `ai.suggestion_resolved`, "
            "`ai.handoff_requested` or `inbox.reset` (events were missed: reload the inbox)."
        )
    )
    created_at: datetime | None
    message: MessageOut | None = None
    messages_read: MessagesReadOut | None = None
    fan: FanOut | None = None
    conversation: ConversationOut | None = None
    reset: dict[str, Any] | None = None
    ai: AiNoticeOut | None = None


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(message: Any, name: str) -> datetime | None:
    """A Timestamp field as an aware datetime (None when unset); cheaper than `ToDatetime`,
    which counts when a page holds hundreds of them."""
    if not message.HasField(name):
        return None
    stamp = getattr(message, name)
    return _EPOCH + timedelta(0, stamp.seconds, stamp.nanos // 1000)


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _struct(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None


def _struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _value(item) for key, item in struct.fields.items()}


def fan_json(fan: crm_pb2.Fan) -> dict[str, Any]:
    return {
        "id": fan.id,
        "platform": _PLATFORM_NAMES.get(fan.platform, UNSPECIFIED),
        "platformFanId": fan.platform_fan_id or None,
        "displayName": fan.display_name,
        "platformDisplayName": fan.platform_display_name,
        "customDisplayName": fan.custom_display_name or None,
        "handle": fan.handle,
        "avatarUrl": fan.avatar_url,
        "email": fan.email,
        "tags": list(fan.tags),
        "notes": fan.notes,
        "valueCents": fan.value_cents,
        "subscriptionState": _SUBSCRIPTION_STATE_NAMES.get(fan.subscription_state, UNSPECIFIED),
        "subscribedAt": _time(fan, "subscribed_at"),
        "subscriptionExpiresAt": _time(fan, "subscription_expires_at"),
        "lastSeenAt": _time(fan, "last_seen_at"),
        "lastMessageAt": _time(fan, "last_message_at"),
        "customFields": _struct(fan.custom_fields) if fan.custom_fields.fields else {},
        "createdAt": _time(fan, "created_at"),
        "updatedAt": _time(fan, "updated_at"),
    }


def attachment_json(attachment: crm_pb2.Attachment) -> dict[str, Any]:
    return {
        "kind": _ATTACHMENT_KIND_NAMES.get(attachment.kind, UNSPECIFIED),
        "url": attachment.url or None,
        "platformMediaId": attachment.platform_media_id or None,
        "mimeType": attachment.mime_type or None,
        "thumbnailUrl": attachment.thumbnail_url or None,
    }


def message_json(message: crm_pb2.Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "conversationId": message.conversation_id,
        "fanId": message.fan_id,
        "platform": _PLATFORM_NAMES.get(message.platform, UNSPECIFIED),
        "direction": _DIRECTION_NAMES.get(message.direction, UNSPECIFIED),
        "text": message.text,
        "priceCents": message.price_cents,
        "attachments": [attachment_json(a) for a in message.attachments],
        "read": message.read,
        "readAt": _time(message, "read_at"),
        "deliveryStatus": _DELIVERY_STATUS_NAMES.get(message.delivery_status, UNSPECIFIED),
        "failureReason": message.failure_reason or None,
        "platformMessageId": message.platform_message_id or None,
        "idempotencyKey": message.idempotency_key or None,
        "senderKind": _SENDER_KIND_NAMES.get(message.sender_kind, UNSPECIFIED),
        "senderId": message.sender_id or None,
        "createdAt": _time(message, "created_at"),
        "sentAt": _time(message, "sent_at"),
        "unlockedAt": _time(message, "unlocked_at"),
        "updatedAt": _time(message, "updated_at"),
    }


def conversation_json(conversation: crm_pb2.Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "fanId": conversation.fan_id,
        "platform": _PLATFORM_NAMES.get(conversation.platform, UNSPECIFIED),
        "unreadCount": conversation.unread_count,
        "lastMessageAt": _time(conversation, "last_message_at"),
        "lastMessagePreview": conversation.last_message_preview,
        "pinned": conversation.pinned,
        "archived": conversation.archived,
        "assignedMemberId": conversation.assigned_member_id or None,
        "createdAt": _time(conversation, "created_at"),
        "updatedAt": _time(conversation, "updated_at"),
        "fan": fan_json(conversation.fan) if conversation.HasField("fan") else None,
    }


def purchase_json(purchase: crm_pb2.Purchase) -> dict[str, Any]:
    return {
        "id": purchase.id,
        "fanId": purchase.fan_id,
        "messageId": purchase.message_id or None,
        "platform": _PLATFORM_NAMES.get(purchase.platform, UNSPECIFIED),
        "kind": _PURCHASE_KIND_NAMES.get(purchase.kind, UNSPECIFIED),
        "amountCents": purchase.amount_cents,
        "currency": purchase.currency,
        "platformTransactionId": purchase.platform_transaction_id,
        "occurredAt": _time(purchase, "occurred_at"),
        "createdAt": _time(purchase, "created_at"),
    }


def quick_reply_json(reply: crm_pb2.QuickReply) -> dict[str, Any]:
    return {
        "id": reply.id,
        "shortcut": reply.shortcut,
        "text": reply.text,
        "createdAt": _time(reply, "created_at"),
        "updatedAt": _time(reply, "updated_at"),
    }


def segment_json(segment: crm_pb2.SegmentFilter) -> dict[str, Any]:
    return {
        "minValueCents": (segment.min_value_cents if segment.HasField("min_value_cents") else None),
        "maxValueCents": (segment.max_value_cents if segment.HasField("max_value_cents") else None),
        "tagsAny": list(segment.tags_any),
        "tagsAll": list(segment.tags_all),
        "subscriptionStates": [
            _SUBSCRIPTION_STATE_NAMES.get(s, UNSPECIFIED) for s in segment.subscription_states
        ],
        "lastActiveWithinDays": (
            segment.last_active_within_days if segment.HasField("last_active_within_days") else None
        ),
        "platforms": [_PLATFORM_NAMES.get(p, UNSPECIFIED) for p in segment.platforms],
    }


def fan_list_json(fan_list: crm_pb2.FanList) -> dict[str, Any]:
    return {
        "id": fan_list.id,
        "name": fan_list.name,
        "kind": _FAN_LIST_KIND_NAMES.get(fan_list.kind, UNSPECIFIED),
        "segment": segment_json(fan_list.segment) if fan_list.HasField("segment") else None,
        "memberCount": fan_list.member_count,
        "createdAt": _time(fan_list, "created_at"),
        "updatedAt": _time(fan_list, "updated_at"),
    }


def inbox_event_json(event: crm_pb2.InboxEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "createdAt": _time(event, "created_at"),
    }
    payload = event.WhichOneof("payload")
    if payload == "message":
        body["message"] = message_json(event.message)
    elif payload == "messages_read":
        read = event.messages_read
        body["messagesRead"] = {
            "conversationId": read.conversation_id,
            "messageIds": list(read.message_ids),
            "readAt": _time(read, "read_at"),
        }
    elif payload == "fan":
        body["fan"] = fan_json(event.fan)
    elif payload == "conversation":
        body["conversation"] = conversation_json(event.conversation)
    elif payload == "reset":
        body["reset"] = {}
    elif payload == "ai":
        notice = event.ai
        body["ai"] = {
            "suggestionId": notice.suggestion_id,
            "conversationId": notice.conversation_id,
            "fanId": notice.fan_id,
            "messageId": notice.message_id,
            "text": notice.text,
            "status": notice.status,
            "reason": notice.reason or None,
            "sendAfter": _time(notice, "send_after"),
        }
    return body


def _next_cursor(page: common_pb2.PageResponse) -> str | None:
    return page.next_page_token or None


def _page_of(
    key: str,
    items: Iterable[T],
    to_json: Callable[[T], dict[str, Any]],
    page: common_pb2.PageResponse,
) -> JsonResponse:
    """One page of a list answer: the items under `key`, and the cursor of the next page."""
    return _ok({key: [to_json(item) for item in items], "nextCursor": _next_cursor(page)})


# ---------------------------------------------------------------------------------------------
# Calls.


def _crm(request: Request) -> CrmServiceAsyncStub:
    return runtime_of(request).crm


def _page(cursor: str, limit: int | None) -> common_pb2.PageRequest:
    return common_pb2.PageRequest(page_size=limit or 0, page_token=cursor)


# Field names of the CRM's list requests -> this API's query parameters, located as the
# gateway's own validation locates them (`query.limit`). A key also renames the fields below it
# (`filter.tags_any[0]` with `"filter": "query"` -> `query.tags_any[0]`, then camelCase).
PAGE_FIELDS: Mapping[str, str] = {
    "page.page_token": "query.cursor",
    "page.page_size": "query.limit",
}


def _rename(field: str, renames: Mapping[str, str]) -> str:
    for old, new in renames.items():
        if field == old:
            return new
        for separator in (".", "["):
            if field.startswith(old + separator):
                return new + field[len(old) :]
    return field


async def _listing(call: Awaitable[T], renames: Mapping[str, str]) -> T:
    """Awaits a list call; its field violations are named as this API's query parameters."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        details = from_rpc_error(error)
        if (
            details.code != grpc.StatusCode.INVALID_ARGUMENT
            or details.reason is None
            or not details.violations
        ):
            raise
        violations = [
            FieldViolation(camel_field(_rename(v.field, renames)), v.description)
            for v in details.violations
        ]
        first = violations[0]
        message = f"{first.field}: {first.description}"
        if len(violations) > 1:
            message += f" (and {len(violations) - 1} more)"
        raise InvalidArgument(
            message=message, reason=details.reason, violations=violations
        ) from None


def _segment(segment: SegmentIn) -> crm_pb2.SegmentFilter:
    message = crm_pb2.SegmentFilter(
        tags_any=segment.tags_any,
        tags_all=segment.tags_all,
        subscription_states=[SUBSCRIPTION_STATES[s] for s in segment.subscription_states],
        platforms=[PLATFORMS[p] for p in segment.platforms],
    )
    if segment.min_value_cents is not None:
        message.min_value_cents = segment.min_value_cents
    if segment.max_value_cents is not None:
        message.max_value_cents = segment.max_value_cents
    if segment.last_active_within_days is not None:
        message.last_active_within_days = segment.last_active_within_days
    return message


def _attachment(attachment: AttachmentIn) -> crm_pb2.Attachment:
    return crm_pb2.Attachment(
        kind=ATTACHMENT_KINDS[attachment.kind],
        url=attachment.url,
        platform_media_id=attachment.platform_media_id,
        mime_type=attachment.mime_type,
        thumbnail_url=attachment.thumbnail_url,
    )


def _custom_fields(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _ok(content: Any, status_code: int = 200) -> JsonResponse:
    return JsonResponse(content, status_code=status_code)


_NO_CONTENT = 204


# ---------------------------------------------------------------------------------------------
# Conversations.


@crm_router.get(
    "/conversations",
    response_model=ConversationsPage,
    summary="List conversations",
    responses=problems(401, 422),
)
async def list_conversations(
    caller: CurrentCaller,
    request: Request,
    *,
    cursor: Cursor = "",
    limit: Limit = None,
    unread: Annotated[bool, Query(description="Only conversations with unread messages.")] = False,
    platform: Annotated[PlatformName | None, Query(description="One platform only.")] = None,
    search: Annotated[
        QueryText, Query(description="Words in the fan's name, handle, tags or the messages.")
    ] = "",
    archived: Annotated[
        ArchivedName, Query(description="`false` (default): hide archived; `true`: only them.")
    ] = "false",
    pinned: Annotated[
        bool | None, Query(description="Only pinned (`true`) or unpinned (`false`) ones.")
    ] = None,
    sort: Annotated[
        ConversationSortName,
        Query(description="`-field`: descending. Most recent activity first (default)."),
    ] = "-lastMessageAt",
) -> Response:
    """The creator's conversations with their fan, most recent activity first by default."""
    message = crm_pb2.ListConversationsRequest(
        page=_page(cursor, limit),
        unread_only=unread,
        platform=PLATFORMS[platform] if platform is not None else crm_pb2.PLATFORM_UNSPECIFIED,
        query=search,
        archive_filter=ARCHIVE_FILTERS[archived],
        sort=CONVERSATION_SORTS[sort],
    )
    if pinned is not None:
        message.pinned = pinned
    reply = await _listing(
        _crm(request).ListConversations(message, **caller.options),
        {**PAGE_FIELDS, "query": "query.search", "archive_filter": "query.archived"},
    )
    return _page_of("conversations", reply.conversations, conversation_json, reply.page)


@crm_router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationOut,
    summary="Get a conversation",
    responses=problems(401, 404, 422),
)
async def get_conversation(
    caller: CurrentCaller, request: Request, conversation_id: ConversationIdPath
) -> Response:
    """The conversation and its fan."""
    reply = await _crm(request).GetConversation(
        crm_pb2.GetConversationRequest(conversation_id=conversation_id), **caller.options
    )
    return _ok(conversation_json(reply))


@crm_router.patch(
    "/conversations/{conversation_id}",
    response_model=ConversationOut,
    summary="Pin, archive or assign a conversation",
    responses=problems(*_BODY, 401, 403, 404),
)
async def update_conversation(
    body: UpdateConversationBody,
    caller: CurrentCaller,
    request: Request,
    conversation_id: ConversationIdPath,
) -> Response:
    """Changes the members that are present; `assignedMemberId: null` (or `""`) unassigns."""
    message = crm_pb2.UpdateConversationRequest(conversation_id=conversation_id)
    if body.pinned is not None:
        message.pinned = body.pinned
    if body.archived is not None:
        message.archived = body.archived
    if "assigned_member_id" in body.model_fields_set:
        message.assigned_member_id = body.assigned_member_id or ""
    reply = await _crm(request).UpdateConversation(message, **caller.options)
    return _ok(conversation_json(reply))


@crm_router.post(
    "/conversations/{conversation_id}/read",
    response_model=ConversationOut,
    summary="Mark a whole conversation read",
    responses=problems(401, 403, 404, 422),
)
async def mark_conversation_read(
    caller: CurrentCaller, request: Request, conversation_id: ConversationIdPath
) -> Response:
    """Every inbound message of the conversation becomes read; the unread count drops to 0."""
    reply = await _crm(request).MarkConversationRead(
        crm_pb2.MarkConversationReadRequest(conversation_id=conversation_id), **caller.options
    )
    return _ok(conversation_json(reply))


@crm_router.get(
    "/conversations/{conversation_id}/messages",
    response_model=MessagesPage,
    summary="List a conversation's messages",
    responses=problems(401, 404, 422),
)
async def list_messages(
    caller: CurrentCaller,
    request: Request,
    conversation_id: ConversationIdPath,
    cursor: Cursor = "",
    limit: Limit = None,
) -> Response:
    """Newest first; `nextCursor` pages back in time."""
    reply = await _listing(
        _crm(request).ListMessages(
            crm_pb2.ListMessagesRequest(conversation_id=conversation_id, page=_page(cursor, limit)),
            **caller.options,
        ),
        PAGE_FIELDS,
    )
    return _page_of("messages", reply.messages, message_json, reply.page)


# ---------------------------------------------------------------------------------------------
# Fans.


@crm_router.get(
    "/fans",
    response_model=FansPage,
    summary="List fans",
    responses=problems(401, 422),
)
async def list_fans(
    caller: CurrentCaller,
    request: Request,
    *,
    cursor: Cursor = "",
    limit: Limit = None,
    search: Annotated[
        QueryText, Query(description="Words in the name, handle, email, notes or tags.")
    ] = "",
    sort: Annotated[
        FanSortName, Query(description="`-field`: descending. Newest first (default).")
    ] = "-createdAt",
    platforms: Annotated[list[PlatformName] | None, Query(alias="platforms")] = None,
    subscription_states: Annotated[
        list[SubscriptionStateName] | None, Query(alias="subscriptionStates")
    ] = None,
    tags_any: Annotated[
        list[QueryText] | None, Query(alias="tagsAny", description="At least one of these.")
    ] = None,
    tags_all: Annotated[
        list[QueryText] | None, Query(alias="tagsAll", description="Every one of these.")
    ] = None,
    min_value_cents: Annotated[
        int | None, Query(alias="minValueCents", ge=-INT64_MAX - 1, le=INT64_MAX)
    ] = None,
    max_value_cents: Annotated[
        int | None, Query(alias="maxValueCents", ge=-INT64_MAX - 1, le=INT64_MAX)
    ] = None,
    last_active_within_days: Annotated[
        int | None, Query(alias="lastActiveWithinDays", ge=-INT32_MAX - 1, le=INT32_MAX)
    ] = None,
) -> Response:
    """Filters (repeat a parameter for several values) combine with AND."""
    message = crm_pb2.ListFansRequest(page=_page(cursor, limit), query=search, sort=FAN_SORTS[sort])
    segment = message.filter
    segment.tags_any.extend(tags_any or ())
    segment.tags_all.extend(tags_all or ())
    segment.subscription_states.extend(SUBSCRIPTION_STATES[s] for s in subscription_states or ())
    segment.platforms.extend(PLATFORMS[p] for p in platforms or ())
    if min_value_cents is not None:
        segment.min_value_cents = min_value_cents
    if max_value_cents is not None:
        segment.max_value_cents = max_value_cents
    if last_active_within_days is not None:
        segment.last_active_within_days = last_active_within_days
    if segment.ByteSize() == 0:
        message.ClearField("filter")
    reply = await _listing(
        _crm(request).ListFans(message, **caller.options),
        {**PAGE_FIELDS, "query": "query.search", "filter": "query"},
    )
    return _page_of("fans", reply.fans, fan_json, reply.page)


@crm_router.post(
    "/fans",
    status_code=201,
    response_model=FanOut,
    summary="Add a fan",
    responses=problems(*_BODY, 401, 403, 409),
)
async def create_fan(body: CreateFanBody, caller: CurrentCaller, request: Request) -> Response:
    """A fan added by hand (the platform workers add the others). A platform account id is
    unique per creator and platform: 409 `FAN_EXISTS`."""
    message = crm_pb2.CreateFanRequest(
        platform=PLATFORMS[body.platform],
        platform_fan_id=body.platform_fan_id,
        display_name=body.display_name,
        handle=body.handle,
        avatar_url=body.avatar_url,
        email=body.email,
        tags=body.tags,
        notes=body.notes,
    )
    if body.custom_fields is not None:
        message.custom_fields.CopyFrom(_custom_fields(body.custom_fields))
    reply = await _crm(request).CreateFan(message, **caller.options)
    return _ok(fan_json(reply), 201)


@crm_router.post(
    "/fans/tags",
    response_model=UpdatedCountOut,
    summary="Add and remove tags on many fans",
    responses=problems(*_BODY, 401, 403, 404),
)
async def update_fan_tags(body: FanTagsBody, caller: CurrentCaller, request: Request) -> Response:
    """All or nothing: an unknown fan id is a 404 and changes nothing."""
    reply = await _crm(request).UpdateFanTags(
        crm_pb2.UpdateFanTagsRequest(
            fan_ids=body.fan_ids, add_tags=body.add_tags, remove_tags=body.remove_tags
        ),
        **caller.options,
    )
    return _ok({"updatedCount": reply.updated_count})


@crm_router.get(
    "/fans/{fan_id}",
    response_model=FanOut,
    summary="Get a fan",
    responses=problems(401, 404, 422),
)
async def get_fan(caller: CurrentCaller, request: Request, fan_id: FanIdPath) -> Response:
    """The fan's profile, tags, notes, spend and subscription."""
    reply = await _crm(request).GetFan(crm_pb2.GetFanRequest(fan_id=fan_id), **caller.options)
    return _ok(fan_json(reply))


@crm_router.patch(
    "/fans/{fan_id}",
    response_model=FanOut,
    summary="Update a fan",
    responses=problems(*_BODY, 401, 403, 404),
)
async def update_fan(
    body: UpdateFanBody, caller: CurrentCaller, request: Request, fan_id: FanIdPath
) -> Response:
    """Members that are present replace the fan's (`tags` replaces every tag); spend and
    subscription come from the platform and cannot be set."""
    message = crm_pb2.UpdateFanRequest(fan_id=fan_id)
    if body.display_name is not None:
        message.display_name = body.display_name
    if body.handle is not None:
        message.handle = body.handle
    if body.avatar_url is not None:
        message.avatar_url = body.avatar_url
    if body.email is not None:
        message.email = body.email
    if body.notes is not None:
        message.notes = body.notes
    if body.tags is not None:
        message.tags.CopyFrom(crm_pb2.TagSet(tags=body.tags))
    if body.custom_fields is not None:
        message.custom_fields.CopyFrom(_custom_fields(body.custom_fields))
    reply = await _crm(request).UpdateFan(message, **caller.options)
    return _ok(fan_json(reply))


@crm_router.delete(
    "/fans/{fan_id}",
    status_code=_NO_CONTENT,
    response_class=Response,
    summary="Delete a fan",
    responses=problems(401, 403, 404, 422),
)
async def delete_fan(caller: CurrentCaller, request: Request, fan_id: FanIdPath) -> Response:
    """Deletes the fan with their conversation, messages, purchases and list memberships."""
    await _crm(request).DeleteFan(crm_pb2.DeleteFanRequest(fan_id=fan_id), **caller.options)
    return Response(status_code=_NO_CONTENT)


@crm_router.get(
    "/fans/{fan_id}/purchases",
    response_model=PurchasesPage,
    summary="List a fan's purchases",
    responses=problems(401, 404, 422),
)
async def list_fan_purchases(
    caller: CurrentCaller,
    request: Request,
    fan_id: FanIdPath,
    cursor: Cursor = "",
    limit: Limit = None,
) -> Response:
    """Tips, pay-per-view unlocks, subscriptions and renewals, newest first."""
    reply = await _listing(
        _crm(request).ListFanPurchases(
            crm_pb2.ListFanPurchasesRequest(fan_id=fan_id, page=_page(cursor, limit)),
            **caller.options,
        ),
        PAGE_FIELDS,
    )
    return _page_of("purchases", reply.purchases, purchase_json, reply.page)


# ---------------------------------------------------------------------------------------------
# Messages.


@messages_router.post(
    "/reply",
    status_code=201,
    response_model=ReplyOut,
    summary="Reply in a conversation",
    responses={
        200: {"model": ReplyOut, "description": "The key was used before: the earlier message."},
        **problems(*_BODY, 401, 403, 404, 409),
    },
)
async def reply(
    body: ReplyBody,
    caller: CurrentCaller,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(alias="idempotency-key", description="Or `idempotencyKey` in the body."),
    ] = None,
) -> Response:
    """Stores the message as queued and asks the platform worker to deliver it; its
    `deliveryStatus` then moves to `sending`, `sent` or `failed` (see the event stream). A retry
    with the same idempotency key answers the same message with 200 and sends nothing again."""
    key = body.idempotency_key
    if idempotency_key is not None:
        if key is not None and key != idempotency_key:
            raise ApiProblem(
                VALIDATION,
                code="VALIDATION_FAILED",
                detail="The Idempotency-Key header and `idempotencyKey` differ.",
                errors=[
                    FieldViolation("idempotencyKey", "differs from the Idempotency-Key header")
                ],
            )
        key = idempotency_key
    answer = await _crm(request).SendMessage(
        crm_pb2.SendMessageRequest(
            conversation_id=body.conversation_id or "",
            fan_id=body.fan_id or "",
            text=body.text,
            price_cents=body.price_cents,
            attachments=[_attachment(a) for a in body.attachments],
            idempotency_key=key or "",
        ),
        **caller.options,
    )
    return _ok(
        {"message": message_json(answer.message), "created": answer.created},
        201 if answer.created else 200,
    )


@messages_router.get(
    "/search",
    response_model=MessagesPage,
    summary="Search messages",
    responses=problems(401, 404, 422),
)
async def search_messages(
    caller: CurrentCaller,
    request: Request,
    *,
    q: Annotated[
        QueryText,
        Query(min_length=1, description='Words, "quoted phrases", OR, -excluded.'),
    ],
    conversation_id: Annotated[
        str, Query(alias="conversationId", max_length=MAX_ID, description="One conversation.")
    ] = "",
    cursor: Cursor = "",
    limit: Limit = None,
) -> Response:
    """Full-text search over message texts, newest first."""
    reply = await _listing(
        _crm(request).SearchMessages(
            crm_pb2.SearchMessagesRequest(
                query=q, conversation_id=conversation_id, page=_page(cursor, limit)
            ),
            **caller.options,
        ),
        {**PAGE_FIELDS, "query": "query.q"},
    )
    return _page_of("messages", reply.messages, message_json, reply.page)


@messages_router.post(
    "/{message_id}/read",
    response_model=MessageOut,
    summary="Mark a message read",
    responses=problems(401, 403, 404, 422),
)
async def mark_message_read(
    caller: CurrentCaller, request: Request, message_id: MessageIdPath
) -> Response:
    """An inbound message becomes read (the conversation's unread count follows)."""
    reply = await _crm(request).MarkMessageRead(
        crm_pb2.MarkMessageReadRequest(message_id=message_id), **caller.options
    )
    return _ok(message_json(reply))


# ---------------------------------------------------------------------------------------------
# Quick replies.


@crm_router.get(
    "/quick-replies",
    response_model=QuickRepliesPage,
    summary="List quick replies",
    responses=problems(401, 422),
)
async def list_quick_replies(
    caller: CurrentCaller,
    request: Request,
    prefix: Annotated[QueryText, Query(description="Only shortcuts starting with this.")] = "",
    cursor: Cursor = "",
    limit: Limit = None,
) -> Response:
    """By shortcut."""
    reply = await _listing(
        _crm(request).ListQuickReplies(
            crm_pb2.ListQuickRepliesRequest(page=_page(cursor, limit), shortcut_prefix=prefix),
            **caller.options,
        ),
        {**PAGE_FIELDS, "shortcut_prefix": "query.prefix"},
    )
    return _page_of("quickReplies", reply.quick_replies, quick_reply_json, reply.page)


@crm_router.post(
    "/quick-replies",
    status_code=201,
    response_model=QuickReplyOut,
    summary="Create a quick reply",
    responses=problems(*_BODY, 401, 403, 409),
)
async def create_quick_reply(
    body: CreateQuickReplyBody, caller: CurrentCaller, request: Request
) -> Response:
    """A shortcut is unique per creator: 409 `SHORTCUT_TAKEN`."""
    reply = await _crm(request).CreateQuickReply(
        crm_pb2.CreateQuickReplyRequest(shortcut=body.shortcut, text=body.text), **caller.options
    )
    return _ok(quick_reply_json(reply), 201)


@crm_router.get(
    "/quick-replies/{quick_reply_id}",
    response_model=QuickReplyOut,
    summary="Get a quick reply",
    responses=problems(401, 404, 422),
)
async def get_quick_reply(
    caller: CurrentCaller, request: Request, quick_reply_id: QuickReplyIdPath
) -> Response:
    """One quick reply."""
    reply = await _crm(request).GetQuickReply(
        crm_pb2.GetQuickReplyRequest(quick_reply_id=quick_reply_id), **caller.options
    )
    return _ok(quick_reply_json(reply))


@crm_router.patch(
    "/quick-replies/{quick_reply_id}",
    response_model=QuickReplyOut,
    summary="Update a quick reply",
    responses=problems(*_BODY, 401, 403, 404, 409),
)
async def update_quick_reply(
    body: UpdateQuickReplyBody,
    caller: CurrentCaller,
    request: Request,
    quick_reply_id: QuickReplyIdPath,
) -> Response:
    """Members that are present replace the quick reply's."""
    message = crm_pb2.UpdateQuickReplyRequest(quick_reply_id=quick_reply_id)
    if body.shortcut is not None:
        message.shortcut = body.shortcut
    if body.text is not None:
        message.text = body.text
    reply = await _crm(request).UpdateQuickReply(message, **caller.options)
    return _ok(quick_reply_json(reply))


@crm_router.delete(
    "/quick-replies/{quick_reply_id}",
    status_code=_NO_CONTENT,
    response_class=Response,
    summary="Delete a quick reply",
    responses=problems(401, 403, 404, 422),
)
async def delete_quick_reply(
    caller: CurrentCaller, request: Request, quick_reply_id: QuickReplyIdPath
) -> Response:
    """Gone for good."""
    await _crm(request).DeleteQuickReply(
        crm_pb2.DeleteQuickReplyRequest(quick_reply_id=quick_reply_id), **caller.options
    )
    return Response(status_code=_NO_CONTENT)


# ---------------------------------------------------------------------------------------------
# Fan lists.


@crm_router.get(
    "/lists",
    response_model=FanListsPage,
    summary="List fan lists",
    responses=problems(401, 422),
)
async def list_fan_lists(
    caller: CurrentCaller,
    request: Request,
    kind: Annotated[FanListKindName | None, Query(description="One kind only.")] = None,
    cursor: Cursor = "",
    limit: Limit = None,
) -> Response:
    """Static lists and saved segments, by name, with their member counts."""
    reply = await _listing(
        _crm(request).ListFanLists(
            crm_pb2.ListFanListsRequest(
                page=_page(cursor, limit),
                kind=FAN_LIST_KINDS[kind]
                if kind is not None
                else crm_pb2.FAN_LIST_KIND_UNSPECIFIED,
            ),
            **caller.options,
        ),
        PAGE_FIELDS,
    )
    return _page_of("lists", reply.lists, fan_list_json, reply.page)


@crm_router.post(
    "/lists",
    status_code=201,
    response_model=FanListOut,
    summary="Create a fan list",
    responses=problems(*_BODY, 401, 403),
)
async def create_fan_list(
    body: CreateListBody, caller: CurrentCaller, request: Request
) -> Response:
    """A static list (members added by hand) or a dynamic one (a saved segment)."""
    message = crm_pb2.CreateFanListRequest(name=body.name, kind=FAN_LIST_KINDS[body.kind])
    if body.segment is not None:
        message.segment.CopyFrom(_segment(body.segment))
    reply = await _crm(request).CreateFanList(message, **caller.options)
    return _ok(fan_list_json(reply), 201)


@crm_router.post(
    "/lists/preview",
    response_model=FanCountOut,
    summary="Count the fans a segment matches",
    responses=problems(*_BODY, 401, 403),
)
async def preview_segment(body: PreviewBody, caller: CurrentCaller, request: Request) -> Response:
    """How many fans match the segment now (before saving it as a dynamic list)."""
    reply = await _crm(request).PreviewSegment(
        crm_pb2.PreviewSegmentRequest(segment=_segment(body.segment)), **caller.options
    )
    return _ok({"fanCount": reply.fan_count})


@crm_router.get(
    "/lists/{list_id}",
    response_model=FanListOut,
    summary="Get a fan list",
    responses=problems(401, 404, 422),
)
async def get_fan_list(caller: CurrentCaller, request: Request, list_id: ListIdPath) -> Response:
    """The list and its member count."""
    reply = await _crm(request).GetFanList(
        crm_pb2.GetFanListRequest(list_id=list_id), **caller.options
    )
    return _ok(fan_list_json(reply))


@crm_router.patch(
    "/lists/{list_id}",
    response_model=FanListOut,
    summary="Rename a list or change its segment",
    responses=problems(*_BODY, 401, 403, 404),
)
async def update_fan_list(
    body: UpdateListBody, caller: CurrentCaller, request: Request, list_id: ListIdPath
) -> Response:
    """`segment` replaces a dynamic list's segment (a static list has none)."""
    message = crm_pb2.UpdateFanListRequest(list_id=list_id)
    if body.name is not None:
        message.name = body.name
    if body.segment is not None:
        message.segment.CopyFrom(_segment(body.segment))
    reply = await _crm(request).UpdateFanList(message, **caller.options)
    return _ok(fan_list_json(reply))


@crm_router.delete(
    "/lists/{list_id}",
    status_code=_NO_CONTENT,
    response_class=Response,
    summary="Delete a fan list",
    responses=problems(401, 403, 404, 422),
)
async def delete_fan_list(caller: CurrentCaller, request: Request, list_id: ListIdPath) -> Response:
    """The list goes; its fans stay."""
    await _crm(request).DeleteFanList(
        crm_pb2.DeleteFanListRequest(list_id=list_id), **caller.options
    )
    return Response(status_code=_NO_CONTENT)


@crm_router.get(
    "/lists/{list_id}/members",
    response_model=FansPage,
    summary="List a list's fans",
    responses=problems(401, 404, 422),
)
async def list_fan_list_members(
    caller: CurrentCaller,
    request: Request,
    list_id: ListIdPath,
    cursor: Cursor = "",
    limit: Limit = None,
) -> Response:
    """A static list's members, or the fans a dynamic list's segment matches now."""
    reply = await _listing(
        _crm(request).ListFanListMembers(
            crm_pb2.ListFanListMembersRequest(list_id=list_id, page=_page(cursor, limit)),
            **caller.options,
        ),
        PAGE_FIELDS,
    )
    return _page_of("fans", reply.fans, fan_json, reply.page)


@crm_router.post(
    "/lists/{list_id}/members",
    response_model=AddedCountOut,
    summary="Add fans to a static list",
    responses=problems(*_BODY, 401, 403, 404, 409),
)
async def add_fan_list_members(
    body: ListMembersBody, caller: CurrentCaller, request: Request, list_id: ListIdPath
) -> Response:
    """All or nothing; fans already in the list are not counted. A dynamic list: 409."""
    reply = await _crm(request).AddFanListMembers(
        crm_pb2.AddFanListMembersRequest(list_id=list_id, fan_ids=body.fan_ids), **caller.options
    )
    return _ok({"addedCount": reply.added_count})


@crm_router.delete(
    "/lists/{list_id}/members",
    response_model=RemovedCountOut,
    summary="Remove fans from a static list",
    responses=problems(*_BODY, 401, 403, 404, 409),
)
async def remove_fan_list_members(
    body: ListMembersBody, caller: CurrentCaller, request: Request, list_id: ListIdPath
) -> Response:
    """All or nothing; fans that were not members are not counted."""
    reply = await _crm(request).RemoveFanListMembers(
        crm_pb2.RemoveFanListMembersRequest(list_id=list_id, fan_ids=body.fan_ids),
        **caller.options,
    )
    return _ok({"removedCount": reply.removed_count})


# ---------------------------------------------------------------------------------------------
# The real-time inbox.


def _problem_documents(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`problems(...)` for a route whose own answer is not JSON: the error answers are still
    problem documents (and so is the 500 every route may answer)."""
    documented = {**problems(*statuses), 500: {"description": "Unexpected error."}}
    return {
        status: {
            "description": spec["description"],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, spec in documented.items()
    }


def _render_event(event: crm_pb2.InboxEvent) -> bytes:
    return frame(
        orjson.dumps(inbox_event_json(event), option=orjson.OPT_UTC_Z),
        event=event.type,
        event_id=event.id,
    )


@crm_router.get(
    "/stream",
    response_class=EventStreamResponse,
    summary="The inbox as Server-Sent Events",
    responses={
        200: {
            "description": (
                "An endless `text/event-stream`: `id:` the event id, `event:` its type, "
                "`data:` an `InboxEventOut` as JSON."
            ),
            "model": InboxEventOut,
        },
        **_problem_documents(401, 403, 422),
    },
)
async def inbox_stream(
    caller: CurrentCaller,
    request: Request,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="last-event-id",
            ge=0,
            le=INT64_MAX,
            description="The last event seen (browsers send it when they reconnect).",
        ),
    ] = None,
    last_event_id_param: Annotated[
        int | None,
        Query(
            alias="lastEventId",
            ge=0,
            le=INT64_MAX,
            description="The same, for clients that cannot set headers; the header wins.",
        ),
    ] = None,
) -> EventStreamResponse:
    """New messages, delivery status changes, reads, fan and conversation updates as they
    happen. Reconnecting with `Last-Event-ID` first replays what was missed (the last 24 hours,
    at most 1,000 events; beyond that an `inbox.reset` event says to reload). A comment line is
    sent when idle; the stream ends when the access token expires (reconnect with a fresh one).
    A failure upstream ends it with a `stream.error` event holding a problem document."""
    runtime = runtime_of(request)
    after = last_event_id if last_event_id is not None else last_event_id_param or 0
    metadata = caller.options["metadata"]
    call = runtime.crm.WatchInbox(
        crm_pb2.WatchInboxRequest(
            after_event_id=after,
            resume=last_event_id is not None or last_event_id_param is not None,
        ),
        metadata=metadata,
        timeout=None,
    )
    revocations = runtime.verifier.revocations
    session_id = caller.principal.session_id
    path = request.url.path

    def render_error(error: grpc.aio.AioRpcError) -> bytes:
        answer = runtime.problems.from_error_details(from_rpc_error(error), path)
        return bytes(answer.body)

    stream = Stream(
        call=call,
        render=_render_event,
        render_error=render_error,
        heartbeat_seconds=runtime.settings.gateway_sse_heartbeat_seconds,
        retry_milliseconds=SSE_RETRY_MILLISECONDS,
        expires_at=caller.principal.expires_at,
        revoked=lambda: session_id is not None and revocations.is_revoked(session_id),
    )
    return EventStreamResponse(relay(stream))
