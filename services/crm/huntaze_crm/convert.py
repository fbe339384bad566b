"""Rows <-> protobuf messages, and the enum names stored in the database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import orjson
from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.json_format import MessageToDict

from huntaze.crm.v1 import crm_pb2
from huntaze_crm import models

if TYPE_CHECKING:
    from huntaze_crm.audiences import AudienceFan

E = TypeVar("E", bound=int)


class EnumMap:
    """One proto enum <-> the names stored in the database (`PLATFORM_ONLYFANS`: `onlyfans`)."""

    def __init__(self, enum: Any, prefix: str, names: Sequence[str]) -> None:
        self.prefix = prefix
        self.to_db: dict[int, str] = {}
        for name in names:
            self.to_db[enum.Value(f"{prefix}{name.upper()}")] = name
        self.from_db: dict[str, int] = {name: value for value, name in self.to_db.items()}

    def db(self, value: int) -> str | None:
        """The stored name of `value`; None for UNSPECIFIED and for unknown numbers."""
        return self.to_db.get(value)

    def proto(self, name: str) -> int:
        return self.from_db[name]


PLATFORM = EnumMap(crm_pb2.Platform, "PLATFORM_", models.PLATFORMS)
SUBSCRIPTION_STATE = EnumMap(
    crm_pb2.SubscriptionState, "SUBSCRIPTION_STATE_", models.SUBSCRIPTION_STATES
)
DIRECTION = EnumMap(crm_pb2.MessageDirection, "MESSAGE_DIRECTION_", models.DIRECTIONS)
DELIVERY_STATUS = EnumMap(crm_pb2.DeliveryStatus, "DELIVERY_STATUS_", models.DELIVERY_STATUSES)
SENDER_KIND = EnumMap(crm_pb2.SenderKind, "SENDER_KIND_", models.SENDER_KINDS)
PURCHASE_KIND = EnumMap(crm_pb2.PurchaseKind, "PURCHASE_KIND_", models.PURCHASE_KINDS)
FAN_LIST_KIND = EnumMap(crm_pb2.FanListKind, "FAN_LIST_KIND_", models.FAN_LIST_KINDS)
ATTACHMENT_KINDS = ("image", "video", "audio", "file")
ATTACHMENT_KIND = EnumMap(crm_pb2.AttachmentKind, "ATTACHMENT_KIND_", ATTACHMENT_KINDS)

PREVIEW_LENGTH = 140


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Columns(Protocol):
    """A row read by column name: an asyncpg record, a dict, or an ORM object's `_Attributes`."""

    def __getitem__(self, key: str, /) -> Any: ...


class _Attributes:
    """An ORM object read like a row (`view["text"]` is `obj.text`), so that one converter serves
    ORM objects and the records of the hot paths alike."""

    __slots__ = ("_obj",)

    def __init__(self, obj: object) -> None:
        self._obj = obj

    def __getitem__(self, key: str) -> Any:
        return getattr(self._obj, key)


def time_fields(value: datetime | None) -> dict[str, int] | None:
    """The fields of a `Timestamp` (None for NULL). Message constructors take them as a dict,
    several times faster than `Timestamp.FromDatetime`."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.astimezone(UTC)
    delta = value - _EPOCH
    return {"seconds": delta.days * 86_400 + delta.seconds, "nanos": delta.microseconds * 1000}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    fields = time_fields(value)
    return None if fields is None else timestamp_pb2.Timestamp(**fields)


def json_text(value: Any) -> str:
    """`value` as JSON text (for a JSONB parameter of a statement on asyncpg directly)."""
    return orjson.dumps(value).decode()


def _json_object(value: Any) -> dict[str, Any]:
    """A JSONB object as read: decoded already (the engine's codec), or JSON text (asyncpg)."""
    if isinstance(value, str | bytes):
        if value in ("{}", b"{}"):
            return {}
        decoded = orjson.loads(value)
        return decoded if isinstance(decoded, dict) else {}
    return dict(value) if value else {}


def from_timestamp(value: timestamp_pb2.Timestamp) -> datetime | None:
    """None for an unset (zero) timestamp."""
    if value.seconds == 0 and value.nanos == 0:
        return None
    return value.ToDatetime(tzinfo=UTC)


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(dict(value))
    return result


def struct_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return MessageToDict(value)


def preview(text: str) -> str:
    """The start of a message for conversation lists, on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_LENGTH else flat[: PREVIEW_LENGTH - 1] + "…"


def attachment_dict(attachment: crm_pb2.Attachment) -> dict[str, str]:
    """The JSON stored for an (already validated) attachment."""
    stored = {
        "kind": ATTACHMENT_KIND.db(attachment.kind) or "file",
        "url": attachment.url,
        "platform_media_id": attachment.platform_media_id,
        "mime_type": attachment.mime_type,
        "thumbnail_url": attachment.thumbnail_url,
    }
    return {key: value for key, value in stored.items() if value}


def attachment(stored: Mapping[str, Any]) -> crm_pb2.Attachment:
    kind = ATTACHMENT_KIND.from_db.get(str(stored.get("kind", "")), 0)
    return crm_pb2.Attachment(
        kind=kind,  # type: ignore[arg-type]
        url=_text_or_none(stored.get("url")),
        platform_media_id=_text_or_none(stored.get("platform_media_id")),
        mime_type=_text_or_none(stored.get("mime_type")),
        thumbnail_url=_text_or_none(stored.get("thumbnail_url")),
    )


def _text_or_none(value: Any) -> str | None:
    """Optional text fields are left unset (absent, not empty) when there is no text."""
    return str(value) if value else None


def fan_fields(row: Columns, prefix: str = "") -> dict[str, Any]:
    """The fields of a `Fan` message from the fan columns of `row` (named `prefix` + column)."""
    p = prefix
    return {
        "id": str(row[p + "id"]),
        "platform": PLATFORM.from_db[row[p + "platform"]],
        "platform_fan_id": row[p + "platform_fan_id"] or None,
        # The creator's own name for the fan when set, else the platform's.
        "display_name": row[p + "custom_display_name"] or row[p + "display_name"],
        "platform_display_name": row[p + "display_name"],
        "custom_display_name": row[p + "custom_display_name"] or None,
        "handle": row[p + "handle"],
        "avatar_url": row[p + "avatar_url"],
        "email": row[p + "email"],
        "tags": row[p + "tags"],
        "notes": row[p + "notes"],
        "value_cents": row[p + "value_cents"],
        "subscription_state": SUBSCRIPTION_STATE.from_db[row[p + "subscription_state"]],
        "subscribed_at": time_fields(row[p + "subscribed_at"]),
        "subscription_expires_at": time_fields(row[p + "subscription_expires_at"]),
        "last_seen_at": time_fields(row[p + "last_seen_at"]),
        "last_message_at": time_fields(row[p + "last_message_at"]),
        # Left unset when empty (an empty Struct either way; unset is cheaper to build).
        "custom_fields": _json_object(row[p + "custom_fields"]) or None,
        "created_at": time_fields(row[p + "created_at"]),
        "updated_at": time_fields(row[p + "updated_at"]),
    }


def fan(row: models.Fan) -> crm_pb2.Fan:
    return crm_pb2.Fan(**fan_fields(_Attributes(row)))


def conversation_fields(row: Columns, fan: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of a `Conversation` message from the conversation columns of `row`, with
    the fields of its fan (`fan_fields`) when given."""
    assigned = row["assigned_member_id"]
    return {
        "id": str(row["id"]),
        "fan_id": str(row["fan_id"]),
        "platform": PLATFORM.from_db[row["platform"]],
        "unread_count": row["unread_count"],
        "last_message_at": time_fields(row["last_message_at"]),
        "last_message_preview": row["last_message_preview"],
        "pinned": row["pinned"],
        "archived": row["archived"],
        "assigned_member_id": str(assigned) if assigned else None,
        "created_at": time_fields(row["created_at"]),
        "updated_at": time_fields(row["updated_at"]),
        "fan": fan,
    }


def conversation(row: models.Conversation, fan_row: models.Fan | None) -> crm_pb2.Conversation:
    fan_message = fan_fields(_Attributes(fan_row)) if fan_row is not None else None
    return crm_pb2.Conversation(**conversation_fields(_Attributes(row), fan_message))


def message_fields(row: Columns) -> dict[str, Any]:
    """The fields of a `Message` message from the message columns of `row`."""
    return {
        "id": str(row["id"]),
        "conversation_id": str(row["conversation_id"]),
        "fan_id": str(row["fan_id"]),
        "platform": PLATFORM.from_db[row["platform"]],
        "direction": DIRECTION.from_db[row["direction"]],
        "text": row["text"],
        "price_cents": row["price_cents"],
        "attachments": [attachment(item) for item in row["attachments"]],
        "read": row["read"],
        "read_at": time_fields(row["read_at"]),
        "delivery_status": DELIVERY_STATUS.from_db[row["delivery_status"]],
        "failure_reason": row["failure_reason"] or None,
        "platform_message_id": row["platform_message_id"] or None,
        "idempotency_key": row["idempotency_key"] or None,
        "sender_kind": SENDER_KIND.from_db[row["sender_kind"]],
        "sender_id": row["sender_id"] or None,
        "created_at": time_fields(row["created_at"]),
        "sent_at": time_fields(row["sent_at"]),
        "unlocked_at": time_fields(row["unlocked_at"]),
        "updated_at": time_fields(row["updated_at"]),
    }


def message(row: models.Message) -> crm_pb2.Message:
    return crm_pb2.Message(**message_fields(_Attributes(row)))


def purchase(row: models.Purchase) -> crm_pb2.Purchase:
    return crm_pb2.Purchase(
        id=str(row.id),
        fan_id=str(row.fan_id),
        message_id=str(row.message_id) if row.message_id else None,
        platform=PLATFORM.proto(row.platform),  # type: ignore[arg-type]
        kind=PURCHASE_KIND.proto(row.kind),  # type: ignore[arg-type]
        amount_cents=row.amount_cents,
        currency=row.currency,
        platform_transaction_id=row.platform_transaction_id,
        occurred_at=timestamp(row.occurred_at),
        created_at=timestamp(row.created_at),
    )


def quick_reply(row: models.QuickReply) -> crm_pb2.QuickReply:
    return crm_pb2.QuickReply(
        id=str(row.id),
        shortcut=row.shortcut,
        text=row.text,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def audience_fan(row: AudienceFan) -> crm_pb2.AudienceFan:
    return crm_pb2.AudienceFan(
        fan_id=str(row.fan_id),
        platform=cast(crm_pb2.Platform.ValueType, PLATFORM.proto(row.platform)),
        platform_fan_id=row.platform_fan_id,
        display_name=row.display_name,
        subscription_state=cast(
            crm_pb2.SubscriptionState.ValueType, SUBSCRIPTION_STATE.proto(row.subscription_state)
        ),
        last_automated_at=timestamp(row.last_automated_at),
        last_human_at=timestamp(row.last_human_at),
    )
