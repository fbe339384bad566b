"""Checks every draft passes before anyone sees it, whichever provider wrote it and whatever the
fan asked for: length, banned words and topics, no way to pay or talk off the platform, prices
within the creator's range, and no piece of the system prompt."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from huntaze_ai_agent.configuration import AiConfiguration

Rule = Literal[
    "empty",
    "too_long",
    "banned_word",
    "banned_topic",
    "link",
    "contact_details",
    "payment_off_platform",
    "price_out_of_range",
    "prompt_leak",
]


@dataclass(frozen=True)
class Violation:
    rule: Rule
    detail: str


_URL = re.compile(
    r"(?:https?://|www\.)\S+"
    r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|io|me|ly|co|app|link|gg|tv|xyz|to|cc|us)\b"
    r"(?:/\S*)?",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[\w.+-]+\s*(?:@|\(at\)|\[at\])\s*[\w-]+\s*(?:\.|\(dot\)|\[dot\])\s*\w+")
_PHONE = re.compile(r"(?:\+?\d[\s().-]*){8,}")
# Social handles, and cashtags (`$name`, a payment handle) as opposed to prices (`$25`).
_HANDLE = re.compile(r"(?<![\w@$])[@$][A-Za-z_][A-Za-z0-9_.]{2,}")
_PAYMENT = re.compile(
    r"\b(?:pay\s*pal|cash\s*app|venmo|zelle|western\s+union|wire\s+transfer|bank\s+transfer"
    r"|iban|bitcoin|btc|eth|usdt|crypto|wallet\s+address|gift\s*card|apple\s+pay|revolut)\b",
    re.IGNORECASE,
)
_MESSENGERS = re.compile(
    r"\b(?:snap\s*chat|my\s+snap|telegram|whats\s*app|kik|discord|wickr|skype|insta(?:gram)?"
    r"|twitter|tiktok|fansly|my\s+number|text\s+me\s+(?:at|on)|dm\s+me\s+on)\b",
    re.IGNORECASE,
)
_PRICE = re.compile(
    r"(?:\$|usd\s*)\s*(\d{1,6}(?:[.,]\d{1,2})?)|(\d{1,6}(?:[.,]\d{1,2})?)\s*(?:\$|usd|dollars?)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9']+")

# A run of this many words copied from the system prompt counts as a leak.
LEAK_RUN_WORDS = 6
# Digits and signs that disguise a word from a plain match (l33t).
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)


def normalise(text: str) -> str:
    """Lower case, accents and compatibility forms folded, zero-width characters dropped."""
    folded = unicodedata.normalize("NFKD", text)
    return "".join(
        ch for ch in folded if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf"
    ).lower()


@functools.lru_cache(maxsize=8192)
def _phrase_pattern(phrase: str) -> str | None:
    """A phrase as a pattern of its words, whatever separates them (None: it has no word)."""
    words = _WORD.findall(normalise(phrase))
    if not words:
        return None
    return r"\b" + r"[\W_]*".join(re.escape(word) for word in words) + r"\b"


@functools.lru_cache(maxsize=1024)
def _any_phrase(phrases: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern matching any of `phrases`: most replies contain none, found in one search."""
    patterns = [p for p in map(_phrase_pattern, phrases) if p is not None]
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def _phrases_in(texts: tuple[str, ...], phrases: tuple[str, ...]) -> list[str]:
    """The phrases found in any of `texts`, in their order."""
    anything = _any_phrase(phrases)
    if anything is None or not any(anything.search(text) for text in texts):
        return []
    found = []
    for phrase in phrases:
        pattern = _phrase_pattern(phrase)
        if pattern is not None and any(re.search(pattern, text) for text in texts):
            found.append(phrase)
    return found


@functools.lru_cache(maxsize=256)
def _prompt_runs(system_prompt: str) -> frozenset[tuple[str, ...]]:
    prompt_words = _WORD.findall(normalise(system_prompt))
    return frozenset(
        tuple(prompt_words[i : i + LEAK_RUN_WORDS])
        for i in range(len(prompt_words) - LEAK_RUN_WORDS + 1)
    )


def _leaks(text: str, system_prompt: str) -> bool:
    runs = _prompt_runs(system_prompt)
    words = _WORD.findall(normalise(text))
    return any(
        tuple(words[i : i + LEAK_RUN_WORDS]) in runs for i in range(len(words) - LEAK_RUN_WORDS + 1)
    )


def _prices_cents(text: str) -> list[int]:
    prices = []
    for match in _PRICE.finditer(text):
        amount = (match.group(1) or match.group(2)).replace(",", ".")
        prices.append(round(float(amount) * 100))
    return prices


def check_reply(
    text: str, *, configuration: AiConfiguration, system_prompt: str
) -> list[Violation]:
    """Every rule `text` breaks; empty when it may be shown or sent."""
    violations: list[Violation] = []
    stripped = text.strip()
    if not stripped:
        return [Violation("empty", "the reply is empty")]
    limit = configuration.response_style.max_length
    if len(stripped) > limit:
        violations.append(Violation("too_long", f"{len(stripped)} characters, limit {limit}"))
    plain = normalise(stripped)
    unleeted = plain.translate(_LEET)
    rails = configuration.guardrails
    for word in _phrases_in((plain, unleeted), tuple(rails.banned_words)):
        violations.append(Violation("banned_word", word))
    for topic in _phrases_in((plain,), tuple(rails.banned_topics)):
        violations.append(Violation("banned_topic", topic))
    if _URL.search(plain):
        violations.append(Violation("link", "a link or web address"))
    if _EMAIL.search(plain) or _PHONE.search(plain) or _HANDLE.search(plain):
        violations.append(Violation("contact_details", "an email address, phone or handle"))
    if _PAYMENT.search(plain) or _MESSENGERS.search(plain):
        violations.append(Violation("payment_off_platform", "a way to pay or talk elsewhere"))
    for cents in _prices_cents(plain):
        if not rails.ppv_min_cents <= cents <= rails.ppv_max_cents:
            violations.append(Violation("price_out_of_range", f"{cents / 100:.2f}"))
    if _leaks(stripped, system_prompt):
        violations.append(Violation("prompt_leak", "repeats the instructions"))
    return violations
