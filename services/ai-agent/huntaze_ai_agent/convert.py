"""Rows and configurations to protobuf messages and back."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import json_format, timestamp_pb2

from huntaze.ai.v1 import ai_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze_ai_agent.configuration import AiConfiguration
from huntaze_ai_agent.models import AuditEntry, Suggestion

_PLATFORMS: dict[crm_pb2.Platform.ValueType, str] = {
    crm_pb2.PLATFORM_ONLYFANS: "onlyfans",
    crm_pb2.PLATFORM_TIKTOK: "tiktok",
    crm_pb2.PLATFORM_INSTAGRAM: "instagram",
    crm_pb2.PLATFORM_REDDIT: "reddit",
}
STATUSES: dict[str, ai_pb2.SuggestionStatus.ValueType] = {
    "pending": ai_pb2.SUGGESTION_STATUS_PENDING,
    "suggested": ai_pb2.SUGGESTION_STATUS_SUGGESTED,
    "scheduled": ai_pb2.SUGGESTION_STATUS_SCHEDULED,
    "sent": ai_pb2.SUGGESTION_STATUS_SENT,
    "accepted": ai_pb2.SUGGESTION_STATUS_ACCEPTED,
    "edited": ai_pb2.SUGGESTION_STATUS_EDITED,
    "rejected": ai_pb2.SUGGESTION_STATUS_REJECTED,
    "cancelled": ai_pb2.SUGGESTION_STATUS_CANCELLED,
    "handed_off": ai_pb2.SUGGESTION_STATUS_HANDED_OFF,
    "ignored": ai_pb2.SUGGESTION_STATUS_IGNORED,
}
STATUS_NAMES = {value: name for name, value in STATUSES.items()}


def platform_name(platform: crm_pb2.Platform.ValueType) -> str:
    return _PLATFORMS.get(platform, "onlyfans")


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def from_timestamp(value: timestamp_pb2.Timestamp) -> datetime | None:
    """None for an unset (zero) timestamp."""
    if value.seconds == 0 and value.nanos == 0:
        return None
    return value.ToDatetime(tzinfo=UTC)


def configuration(config: ai_pb2.AiConfig) -> AiConfiguration:
    """The proto's field names are the model's: the JSON form of one validates as the other
    (so the model's rules judge what the API receives)."""
    document = json_format.MessageToDict(config, preserving_proto_field_name=True)
    return AiConfiguration.model_validate(document)


def config_message(value: AiConfiguration) -> ai_pb2.AiConfig:
    document = value.model_dump(mode="json", exclude_none=True)
    quiet = document.get("guardrails", {}).get("quiet_hours")
    if quiet is not None:  # "HH:MM:SS" in the model, "HH:MM" in the API
        quiet["start"], quiet["end"] = quiet["start"][:5], quiet["end"][:5]
    return json_format.ParseDict(document, ai_pb2.AiConfig())


def suggestion(row: Suggestion) -> ai_pb2.Suggestion:
    return ai_pb2.Suggestion(
        id=str(row.id),
        conversation_id=str(row.conversation_id),
        fan_id=str(row.fan_id),
        message_id=str(row.message_id),
        incoming_text=row.incoming_text,
        text=row.text,
        status=STATUSES[row.status],
        mode=row.mode,
        handoff_reason=row.handoff_reason,
        provider=row.provider,
        model=row.model,
        sent_message_id=str(row.sent_message_id) if row.sent_message_id else None,
        send_after=timestamp(row.send_after),
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def audit_entry(row: AuditEntry) -> ai_pb2.AuditEntry:
    return ai_pb2.AuditEntry(
        id=str(row.id),
        suggestion_id=str(row.suggestion_id),
        conversation_id=str(row.conversation_id),
        fan_id=str(row.fan_id),
        sent_message_id=str(row.sent_message_id),
        text=row.text,
        prompt_fingerprint=row.prompt_fingerprint,
        provider=row.provider,
        model=row.model,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cost_micros=row.cost_micros,
        latency_ms=row.latency_ms,
        approved_by=row.approved_by,
        edited=row.edited,
        created_at=timestamp(row.created_at),
    )
