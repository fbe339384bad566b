"""The configuration model, the decision taken before any draft, and the output checks on
ordinary replies (they must not refuse what creators normally write)."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from pydantic import ValidationError

from huntaze_ai_agent.checks import check_reply
from huntaze_ai_agent.configuration import (
    DEFAULT_RISK_WORDS,
    AiConfiguration,
    Guardrails,
    QuietHours,
)
from huntaze_ai_agent.guardrails import (
    Decision,
    asks_for_custom,
    decide,
    in_quiet_hours,
    quiet_hours_end,
)
from huntaze_ai_agent.prompts import FanProfile, system_prompt

NOON_UTC = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FAN = FanProfile(fan_id="fan-1", spend_cents=10_000)


def test_an_empty_document_is_the_default_configuration() -> None:
    configuration = AiConfiguration.model_validate({})

    assert configuration.mode == "suggest"
    assert configuration.platforms == ["onlyfans"]
    assert configuration.guardrails.banned_words == list(DEFAULT_RISK_WORDS)
    assert AiConfiguration.model_validate(configuration.model_dump(mode="json")) == configuration


@pytest.mark.parametrize(
    "document",
    [
        {"mode": "always"},
        {"guardrails": {"ppv_min_cents": 900, "ppv_max_cents": 100}},
        {
            "guardrails": {
                "quiet_hours": {"start": "23:00", "end": "07:00", "timezone": "Mars/Base"}
            }
        },
        {"platforms": ["myspace"]},
        {"response_style": {"max_length": 5}},
        {"unknown": 1},
    ],
)
def test_invalid_configurations_are_refused(document: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AiConfiguration.model_validate(document)


def test_the_risk_words_are_editable() -> None:
    configuration = AiConfiguration(guardrails=Guardrails(banned_words=["lingerie"]))
    prompt = system_prompt(configuration)

    def rules(text: str) -> list[str]:
        return [
            v.rule for v in check_reply(text, configuration=configuration, system_prompt=prompt)
        ]

    assert rules("new lingerie set!") == ["banned_word"]
    # Off the list, a risk word is no banned word; asking to talk elsewhere is refused anyway.
    assert rules("so forced to smile") == []
    assert rules("add me on kik") == ["payment_off_platform"]


def test_the_mode_per_fan_overrides_the_creators() -> None:
    configuration = AiConfiguration(
        mode="autopilot", fan_modes={"fan-2": "off", "fan-3": "suggest"}
    )

    def action(fan_id: str) -> str:
        fan = FanProfile(fan_id=fan_id)
        return decide(
            configuration, fan=fan, platform="onlyfans", incoming="hi", now=NOON_UTC
        ).action

    assert [action("fan-1"), action("fan-2"), action("fan-3")] == ["autopilot", "ignore", "suggest"]


def test_off_and_other_platforms_are_ignored() -> None:
    off = AiConfiguration(mode="off")
    on = AiConfiguration(mode="autopilot")

    assert decide(off, fan=FAN, platform="onlyfans", incoming="hi", now=NOON_UTC).action == "ignore"
    assert decide(on, fan=FAN, platform="reddit", incoming="hi", now=NOON_UTC).action == "ignore"


def test_big_spenders_custom_requests_and_banned_topics_go_to_a_person() -> None:
    configuration = AiConfiguration(
        mode="autopilot",
        guardrails=Guardrails(handoff_spend_cents=50_000, banned_topics=["politics"]),
    )
    whale = FanProfile(fan_id="fan-1", spend_cents=50_001)

    def decision(fan: FanProfile, text: str) -> Decision:
        return decide(configuration, fan=fan, platform="onlyfans", incoming=text, now=NOON_UTC)

    assert decision(whale, "hi") == Decision("handoff", "spend_threshold")
    assert decision(FAN, "Can you make me a video saying my name?") == Decision(
        "handoff", "custom_request"
    )
    assert decision(FAN, "What do you think about POLITICS?") == Decision("handoff", "banned_topic")
    assert decision(FAN, "hi there") == Decision("autopilot")


@pytest.mark.parametrize(
    ("text", "custom"),
    [
        ("I want a custom video", True),
        ("could I get something personalized?", True),
        ("pic of you wearing red heels", True),
        ("can you film me a short clip", True),
        ("you look amazing today", False),
        ("customer service was slow lol", False),
    ],
)
def test_custom_requests_are_recognised(text: str, custom: bool) -> None:
    assert asks_for_custom(text) is custom


def test_quiet_hours_hold_in_the_creators_timezone_across_midnight() -> None:
    night = QuietHours(start=time(23), end=time(7), timezone="America/New_York")

    assert in_quiet_hours(night, datetime(2026, 11, 30, 5, 0, tzinfo=UTC))  # 00:00 in New York
    assert in_quiet_hours(night, datetime(2026, 11, 30, 11, 59, tzinfo=UTC))  # 06:59
    assert not in_quiet_hours(night, datetime(2026, 11, 30, 12, 0, tzinfo=UTC))  # 07:00
    assert not in_quiet_hours(night, datetime(2026, 11, 30, 3, 59, tzinfo=UTC))  # 22:59
    assert not in_quiet_hours(None, NOON_UTC)


def test_quiet_hours_end_in_the_creators_timezone_across_midnight() -> None:
    night = QuietHours(start=time(23), end=time(7), timezone="America/New_York")
    seven_in_new_york = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    # Before midnight there, they end the next morning; after it, the same morning.
    assert quiet_hours_end(night, datetime(2026, 11, 30, 4, 30, tzinfo=UTC)) == seven_in_new_york
    assert quiet_hours_end(night, datetime(2026, 11, 30, 11, 59, tzinfo=UTC)) == seven_in_new_york
    assert quiet_hours_end(night, datetime(2026, 11, 30, 12, 0, tzinfo=UTC)) is None
    # Summer time: 07:00 in New York is 11:00 UTC.
    assert quiet_hours_end(night, datetime(2026, 7, 1, 5, 0, tzinfo=UTC)) == datetime(
        2026, 7, 1, 11, 0, tzinfo=UTC
    )
    day = QuietHours(start=time(11), end=time(13), timezone="UTC")
    assert quiet_hours_end(day, NOON_UTC) == NOON_UTC.replace(hour=13)
    assert quiet_hours_end(None, NOON_UTC) is None


def test_the_autopilot_keeps_drafting_during_quiet_hours() -> None:
    """The reply waits for their end instead (the agent's send time)."""
    quiet = QuietHours(start=time(11), end=time(13), timezone="UTC")
    configuration = AiConfiguration(mode="autopilot", guardrails=Guardrails(quiet_hours=quiet))

    decision = decide(configuration, fan=FAN, platform="onlyfans", incoming="hey", now=NOON_UTC)

    assert decision == Decision("autopilot")


@pytest.mark.parametrize(
    "reply",
    [
        "Hey babe 😘 how was your day?",
        "I just posted a new set, unlock it for $15 💕",
        "Good morning sunshine! Did you sleep well?",
        "You're too sweet, 25 dollars and it's yours tonight",
        "Haha oh snap, you got me there",
        "Call me your favourite dancer then 💃",
    ],
)
def test_ordinary_replies_pass(reply: str) -> None:
    configuration = AiConfiguration()

    assert (
        check_reply(reply, configuration=configuration, system_prompt=system_prompt(configuration))
        == []
    )
