"""Segments: the fan filters of dynamic lists, list filters and `PreviewSegment`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, func, literal, true
from sqlalchemy.dialects.postgresql import ARRAY

from huntaze.crm.v1 import crm_pb2
from huntaze_crm import convert
from huntaze_crm.models import Fan
from huntaze_crm.validation import Violations, normalise_tags


@dataclass(frozen=True)
class Segment:
    """A validated segment; every condition that is set must hold."""

    min_value_cents: int | None = None
    max_value_cents: int | None = None
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    subscription_states: tuple[str, ...] = ()
    last_active_within_days: int | None = None
    platforms: tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, message: crm_pb2.SegmentFilter, field: str) -> Segment:
        """Raises InvalidArgument (with every violation) when the filter is not valid."""
        violations = Violations()
        min_value = message.min_value_cents if message.HasField("min_value_cents") else None
        max_value = message.max_value_cents if message.HasField("max_value_cents") else None
        if min_value is not None and max_value is not None and min_value > max_value:
            violations.add(f"{field}.max_value_cents", "must not be below the minimum")
        within = (
            message.last_active_within_days if message.HasField("last_active_within_days") else None
        )
        states = _enum_names(
            message.subscription_states,
            convert.SUBSCRIPTION_STATE,
            f"{field}.subscription_states",
            violations,
        )
        platforms = _enum_names(
            message.platforms, convert.PLATFORM, f"{field}.platforms", violations
        )
        tags_any = normalise_tags(message.tags_any, f"{field}.tags_any", violations)
        tags_all = normalise_tags(message.tags_all, f"{field}.tags_all", violations)
        violations.raise_if_any()
        return cls(
            min_value_cents=min_value,
            max_value_cents=max_value,
            tags_any=tuple(tags_any),
            tags_all=tuple(tags_all),
            subscription_states=states,
            last_active_within_days=within,
            platforms=platforms,
        )

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> Segment:
        return cls(
            min_value_cents=stored.get("min_value_cents"),
            max_value_cents=stored.get("max_value_cents"),
            tags_any=tuple(stored.get("tags_any", ())),
            tags_all=tuple(stored.get("tags_all", ())),
            subscription_states=tuple(stored.get("subscription_states", ())),
            last_active_within_days=stored.get("last_active_within_days"),
            platforms=tuple(stored.get("platforms", ())),
        )

    def to_json(self) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "min_value_cents": self.min_value_cents,
            "max_value_cents": self.max_value_cents,
            "tags_any": list(self.tags_any),
            "tags_all": list(self.tags_all),
            "subscription_states": list(self.subscription_states),
            "last_active_within_days": self.last_active_within_days,
            "platforms": list(self.platforms),
        }
        return {key: value for key, value in stored.items() if value not in (None, [])}

    def to_proto(self) -> crm_pb2.SegmentFilter:
        message = crm_pb2.SegmentFilter(
            tags_any=list(self.tags_any),
            tags_all=list(self.tags_all),
            subscription_states=[
                convert.SUBSCRIPTION_STATE.proto(s)  # type: ignore[misc]
                for s in self.subscription_states
            ],
            platforms=[convert.PLATFORM.proto(p) for p in self.platforms],  # type: ignore[misc]
        )
        if self.min_value_cents is not None:
            message.min_value_cents = self.min_value_cents
        if self.max_value_cents is not None:
            message.max_value_cents = self.max_value_cents
        if self.last_active_within_days is not None:
            message.last_active_within_days = self.last_active_within_days
        return message

    def condition(self, *, now: datetime) -> ColumnElement[bool]:
        """The SQL condition on `Fan` rows (the caller adds the creator)."""
        parts: list[ColumnElement[bool]] = []
        if self.min_value_cents is not None:
            parts.append(Fan.value_cents >= self.min_value_cents)
        if self.max_value_cents is not None:
            parts.append(Fan.value_cents <= self.max_value_cents)
        if self.tags_any:
            parts.append(tag_keys(Fan.tags).overlap(tag_keys(self.tags_any)))
        if self.tags_all:
            parts.append(tag_keys(Fan.tags).contains(tag_keys(self.tags_all)))
        if self.subscription_states:
            parts.append(Fan.subscription_state.in_(self.subscription_states))
        if self.last_active_within_days is not None:
            since = now - timedelta(days=self.last_active_within_days)
            parts.append(func.greatest(Fan.last_seen_at, Fan.last_message_at) >= since)
        if self.platforms:
            parts.append(Fan.platform.in_(self.platforms))
        return and_(true(), *parts)


def tag_keys(tags: Any) -> ColumnElement[list[str]]:
    """`crm.tag_keys(tags)`: the tags (a column, or a tuple of tags) lower-cased, as the fans'
    tags are indexed (tags are compared without regard to case)."""
    values = literal(list(tags), ARRAY(Text)) if isinstance(tags, tuple) else tags
    result: ColumnElement[list[str]] = func.crm.tag_keys(values, type_=ARRAY(Text))
    return result


def _enum_names(
    values: Any, mapping: convert.EnumMap, field: str, violations: Violations
) -> tuple[str, ...]:
    names: list[str] = []
    for index, value in enumerate(values):
        name = mapping.db(int(value))
        if name is None:
            violations.add(f"{field}[{index}]", f"{value} is not a valid value")
        elif name not in names:
            names.append(name)
    return tuple(names)
