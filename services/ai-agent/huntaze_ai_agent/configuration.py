"""A creator's AI configuration: the voice to write in, when to act, and the rules no reply may
break. Stored as one JSON document per creator (the seed's `ai_configs`); every field has a
default, so an empty document is a valid configuration."""

from __future__ import annotations

from datetime import time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

Mode = Literal["off", "suggest", "autopilot"]
Platform = Literal["onlyfans", "tiktok", "instagram", "reddit"]

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ReplyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]

# Words that get creator accounts flagged or banned when they appear in messages: the platforms'
# prohibited content, and off-platform dealings. A creator may edit the list; this is its start.
DEFAULT_RISK_WORDS: tuple[str, ...] = (
    "underage",
    "minor",
    "child",
    "kid",
    "schoolgirl",
    "incest",
    "rape",
    "forced",
    "bestiality",
    "drugged",
    "unconscious",
    "escort",
    "meetup",
    "meet up",
    "in person",
    "paypal",
    "cashapp",
    "cash app",
    "venmo",
    "zelle",
    "western union",
    "bitcoin",
    "crypto",
    "snapchat",
    "telegram",
    "whatsapp",
    "kik",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResponseStyle(_Strict):
    """How replies read."""

    tone: str = Field(default="warm, playful", max_length=200)
    use_emoji: bool = True
    max_length: int = Field(default=300, ge=20, le=2000, description="Characters per reply.")
    language: str = Field(default="the fan's language", max_length=50)


class CustomResponse(_Strict):
    """A reply the creator wrote for a kind of message (the trigger says which)."""

    trigger: ShortText
    reply: ReplyText


class QuietHours(_Strict):
    """Hours in the creator's timezone when the autopilot sends nothing."""

    start: time
    end: time
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown timezone {value!r}") from error
        return value


class Guardrails(_Strict):
    """When a person takes over, and what a reply may never say or offer."""

    handoff_spend_cents: int | None = Field(
        default=None, ge=0, description="Hand off fans whose lifetime spend passes this."
    )
    handoff_custom_requests: bool = True
    banned_topics: list[ShortText] = Field(default_factory=list, max_length=200)
    banned_words: list[ShortText] = Field(
        default_factory=lambda: list(DEFAULT_RISK_WORDS), max_length=1000
    )
    quiet_hours: QuietHours | None = None
    ppv_min_cents: int = Field(default=300, ge=0)
    ppv_max_cents: int = Field(default=5000, ge=0)

    @model_validator(mode="after")
    def _price_range(self) -> Guardrails:
        if self.ppv_min_cents > self.ppv_max_cents:
            raise ValueError("ppv_min_cents must not exceed ppv_max_cents")
        return self


class Budget(_Strict):
    """What the creator lets the LLM spend per calendar month (UTC); None: no limit."""

    monthly_tokens: int | None = Field(default=None, ge=0)
    monthly_cost_micros: int | None = Field(
        default=None, ge=0, description="Millionths of a US dollar."
    )


class AiConfiguration(_Strict):
    """Everything a creator decides about their AI replies."""

    personality: str = Field(default="", max_length=4000)
    response_style: ResponseStyle = Field(default_factory=ResponseStyle)
    platforms: list[Platform] = Field(default_factory=lambda: list[Platform](["onlyfans"]))
    custom_responses: list[CustomResponse] = Field(default_factory=list, max_length=500)
    dos: list[ShortText] = Field(default_factory=list, max_length=100)
    donts: list[ShortText] = Field(default_factory=list, max_length=100)
    mode: Mode = "suggest"
    fan_modes: dict[str, Mode] = Field(
        default_factory=dict, description="Per-fan overrides of `mode`, by fan id."
    )
    guardrails: Guardrails = Field(default_factory=Guardrails)
    budget: Budget = Field(default_factory=Budget)

    def mode_for(self, fan_id: str) -> Mode:
        """The mode for one fan: their override, else the creator's."""
        return self.fan_modes.get(fan_id, self.mode)

    def acts_on(self, platform: str) -> bool:
        return platform in self.platforms
