"""What the agent does with an incoming message before any draft: nothing, a suggestion, an
autopilot send, or a hand-off to a person."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from huntaze_ai_agent.checks import normalise
from huntaze_ai_agent.configuration import AiConfiguration, QuietHours
from huntaze_ai_agent.prompts import FanProfile

HandoffReason = Literal["spend_threshold", "custom_request", "banned_topic"]
Action = Literal["ignore", "suggest", "autopilot", "handoff"]

# How fans ask for made-to-order content: that is a negotiation a person should lead.
_CUSTOM_REQUEST = re.compile(
    r"\b(?:custom(?:s|ised|ized)?|personali[sz]ed|made\s+(?:just\s+)?for\s+me|just\s+for\s+me"
    r"|say\s+my\s+name|special\s+request|request\s+a\s+(?:video|pic|photo)"
    r"|(?:video|pic|photo|clip)s?\s+of\s+you\s+(?:saying|wearing|doing)"
    r"|can\s+you\s+(?:make|film|record|shoot)\s+(?:me\s+)?a)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: HandoffReason | None = None


def asks_for_custom(text: str) -> bool:
    return _CUSTOM_REQUEST.search(normalise(text)) is not None


def in_quiet_hours(quiet_hours: QuietHours | None, now: datetime) -> bool:
    """True when `now` falls inside the creator's quiet hours (which may span midnight)."""
    if quiet_hours is None:
        return False
    local: time = now.astimezone(ZoneInfo(quiet_hours.timezone)).time()
    start, end = quiet_hours.start, quiet_hours.end
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def quiet_hours_end(quiet_hours: QuietHours | None, now: datetime) -> datetime | None:
    """When the quiet hours `now` falls in end (UTC); None outside them."""
    if quiet_hours is None or not in_quiet_hours(quiet_hours, now):
        return None
    zone = ZoneInfo(quiet_hours.timezone)
    local = now.astimezone(zone)
    end = datetime.combine(local.date(), quiet_hours.end, tzinfo=zone)
    if end <= local:  # they end tomorrow (they span midnight)
        end = datetime.combine(local.date() + timedelta(days=1), quiet_hours.end, tzinfo=zone)
    return end.astimezone(UTC)


def decide(
    configuration: AiConfiguration,
    *,
    fan: FanProfile,
    platform: str,
    incoming: str,
    now: datetime,
) -> Decision:
    """The action for one incoming message. (During quiet hours the autopilot still drafts: its
    reply waits for their end, see `quiet_hours_end`.)"""
    mode = configuration.mode_for(fan.fan_id)
    if mode == "off" or not configuration.acts_on(platform):
        return Decision("ignore")
    rails = configuration.guardrails
    reason: HandoffReason | None = None
    text = normalise(incoming)
    if rails.handoff_spend_cents is not None and fan.spend_cents > rails.handoff_spend_cents:
        reason = "spend_threshold"
    elif rails.handoff_custom_requests and asks_for_custom(incoming):
        reason = "custom_request"
    elif any(normalise(topic) in text for topic in rails.banned_topics):
        reason = "banned_topic"
    if reason is not None:
        return Decision("handoff", reason)
    return Decision(mode)
