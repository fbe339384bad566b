"""Message templates: the ones every creator starts with (per niche), and the variables a text
may use. `{name}` is the fan's first name (empty when the platform shows none)."""

from __future__ import annotations

import re
from dataclasses import dataclass

VARIABLES = ("name",)
_VARIABLE = re.compile(r"{(\w*)}")


@dataclass(frozen=True)
class SeedTemplate:
    key: str
    niche: str
    name: str
    text: str
    price_cents: int = 0


SEEDS: tuple[SeedTemplate, ...] = (
    SeedTemplate(
        "general-welcome",
        "general",
        "Welcome",
        "Hey {name}, thank you for subscribing! Tell me what you'd love to see next 💕",
    ),
    SeedTemplate(
        "general-comeback",
        "general",
        "We miss you",
        "Hey {name}, it's been a while! I saved something new for you, come say hi 😘",
    ),
    SeedTemplate(
        "fitness-plan",
        "fitness",
        "Workout plan",
        "{name}, my full 4-week home workout plan is ready. Unlock it and start today 💪",
        1500,
    ),
    SeedTemplate(
        "fitness-checkin",
        "fitness",
        "Weekly check-in",
        "Hey {name}! How was your training this week? Reply and I'll send you a tip 🏋️",
    ),
    SeedTemplate(
        "gaming-clip",
        "gaming",
        "Exclusive clip",
        "{name}, my best clutch of the month, uncut, only here. Want it? 🎮",
        800,
    ),
    SeedTemplate(
        "gaming-stream",
        "gaming",
        "Stream tonight",
        "Hey {name}, I'm live tonight and saving you a spot in the squad 🎧",
    ),
    SeedTemplate(
        "adult-ppv",
        "adult",
        "Private set",
        "{name}, I just shot a private set I haven't shown anyone yet... unlock it 🔥",
        2500,
    ),
    SeedTemplate(
        "adult-tease",
        "adult",
        "Thinking of you",
        "Hey {name}, I was thinking about you today 😏 what are you up to?",
    ),
    SeedTemplate(
        "fashion-lookbook",
        "fashion",
        "Lookbook",
        "{name}, my new lookbook is out: 20 outfits, the links and the stories behind them 👗",
        1000,
    ),
    SeedTemplate(
        "fashion-vote",
        "fashion",
        "Pick my outfit",
        "Hey {name}! Help me choose tomorrow's outfit: A or B? 💃",
    ),
)


def variables_of(text: str) -> list[str]:
    """The variables a text uses, in order of first use."""
    found: list[str] = []
    for name in _VARIABLE.findall(text):
        if name not in found:
            found.append(name)
    return found


def unknown_variables(text: str) -> list[str]:
    return [name for name in variables_of(text) if name not in VARIABLES]


def first_name(display_name: str) -> str:
    parts = display_name.strip().split()
    return parts[0] if parts else ""


def render(text: str, *, display_name: str) -> str:
    """The text for one fan: each variable replaced (spaces left by an empty one tidied)."""
    values = {"name": first_name(display_name)}
    rendered = _VARIABLE.sub(lambda match: values.get(match.group(1), match.group(0)), text)
    return re.sub(r" +([,.!?])", r"\1", re.sub(r"  +", " ", rendered)).strip()
