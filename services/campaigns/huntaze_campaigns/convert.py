"""Rows <-> protobuf messages, and the enum names stored in the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze_campaigns.models import KINDS, NICHES, STATUSES, Campaign, Template
from huntaze_campaigns.repository import Results
from huntaze_campaigns.templates import variables_of


def _names(enum: Any, prefix: str, names: tuple[str, ...]) -> dict[int, str]:
    return {enum.Value(f"{prefix}{name.upper()}"): name for name in names}


KIND_NAMES = _names(pb.CampaignKind, "CAMPAIGN_KIND_", KINDS)
STATUS_NAMES = _names(pb.CampaignStatus, "CAMPAIGN_STATUS_", STATUSES)
NICHE_NAMES = _names(pb.Niche, "NICHE_", NICHES)
_KINDS = {name: value for value, name in KIND_NAMES.items()}
_STATUSES = {name: value for value, name in STATUS_NAMES.items()}
_NICHES = {name: value for value, name in NICHE_NAMES.items()}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def from_timestamp(value: timestamp_pb2.Timestamp) -> datetime | None:
    if value.seconds == 0 and value.nanos == 0:
        return None
    return value.ToDatetime(tzinfo=UTC)


def campaign(row: Campaign) -> pb.Campaign:
    exclusions = row.exclusions or {}
    return pb.Campaign(
        id=str(row.id),
        name=row.name,
        kind=_KINDS[row.kind],  # type: ignore[arg-type]
        status=_STATUSES[row.status],  # type: ignore[arg-type]
        list_id=str(row.list_id) if row.list_id else "",
        silent_for_days=row.silent_for_days,
        exclusions=pb.Exclusions(
            automated_within_hours=int(exclusions.get("automated_within_hours") or 0),
            human_within_hours=int(exclusions.get("human_within_hours") or 0),
            bought_in_campaign_ids=list(exclusions.get("bought_in_campaign_ids", [])),
        ),
        variants=[
            pb.Variant(
                key=str(v["key"]),
                text=str(v["text"]),
                price_cents=int(v.get("price_cents") or 0),
                weight=int(v.get("weight") or 0),
                platform_media_ids=list(v.get("platform_media_ids", [])),
            )
            for v in row.variants
        ],
        steps=[
            pb.Step(
                delay_minutes=int(s["delay_minutes"]),
                text=str(s["text"]),
                price_cents=int(s.get("price_cents") or 0),
                platform_media_ids=list(s.get("platform_media_ids", [])),
            )
            for s in row.steps
        ],
        holdout_percent=row.holdout_percent,
        attribution_window_hours=row.attribution_window_hours,
        timezone=row.timezone,
        template_id=str(row.template_id) if row.template_id else "",
        send_at=timestamp(row.send_at),
        audience_count=row.audience_count,
        holdout_count=row.holdout_count,
        excluded_count=row.excluded_count,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
        completed_at=timestamp(row.completed_at),
        mass_message=row.mass_message,
        unsent_at=timestamp(row.unsent_at),
    )


def variant_fields(message: pb.Variant) -> dict[str, Any]:
    return {
        "key": message.key,
        "text": message.text,
        "price_cents": message.price_cents,
        "weight": message.weight,
        "platform_media_ids": list(message.platform_media_ids),
    }


def step_fields(message: pb.Step) -> dict[str, Any]:
    return {
        "delay_minutes": message.delay_minutes,
        "text": message.text,
        "price_cents": message.price_cents,
        "platform_media_ids": list(message.platform_media_ids),
    }


def exclusion_fields(message: pb.Exclusions) -> dict[str, Any]:
    return {
        "automated_within_hours": message.automated_within_hours,
        "human_within_hours": message.human_within_hours,
        "bought_in_campaign_ids": list(message.bought_in_campaign_ids),
    }


def template(row: Template, results: Results) -> pb.Template:
    return pb.Template(
        id=str(row.id),
        niche=_NICHES[row.niche],  # type: ignore[arg-type]
        name=row.name,
        text=row.text,
        price_cents=row.price_cents,
        variables=variables_of(row.text),
        results=pb.TemplateResults(
            campaigns=results.campaigns,
            recipients=results.recipients,
            purchases=results.purchases,
            revenue_cents=results.revenue_cents,
            conversion=results.converted / results.recipients if results.recipients else 0.0,
        ),
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )
