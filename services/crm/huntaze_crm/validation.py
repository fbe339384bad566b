"""Input checks: each failure is a field violation of one INVALID_ARGUMENT answer."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from huntaze_kit.errors import FieldViolation, InvalidArgument

MAX_TEXT_LENGTH = 5000
MAX_PRICE_CENTS = 100_000_000
MAX_ATTACHMENTS = 20
MAX_URL_LENGTH = 2048
MAX_NAME_LENGTH = 200
MAX_HANDLE_LENGTH = 200
MAX_EMAIL_LENGTH = 320
MAX_NOTES_LENGTH = 10_000
MAX_TAGS = 50
MAX_TAG_LENGTH = 50
MAX_TAG_OPERATION = 50
MAX_CUSTOM_FIELDS_BYTES = 16_384
MAX_PLATFORM_ID_LENGTH = 200
MAX_IDEMPOTENCY_KEY_LENGTH = 200
MAX_SHORTCUT_LENGTH = 64
MAX_QUERY_LENGTH = 200
MAX_BULK_IDS = 1000

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SHORTCUT = re.compile(r"^\S+$")


class Violations:
    """Collects field violations, then raises them together."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        first = self.items[0]
        message = f"{first.field}: {first.description}"
        if len(self.items) > 1:
            message += f" (and {len(self.items) - 1} more)"
        raise InvalidArgument(
            message=message, reason="INVALID_ARGUMENT", violations=list(self.items)
        )


def parse_id(value: str, field: str, violations: Violations | None = None) -> uuid.UUID:
    """A required object id; an id that is not a UUID is INVALID_ARGUMENT (one that is, but
    names nothing of the caller's, is NOT_FOUND later)."""
    local = violations or Violations()
    parsed: uuid.UUID | None = None
    if not value:
        local.add(field, "is required")
    else:
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            local.add(field, "is not a valid id")
    if violations is None:
        local.raise_if_any()
    return parsed or uuid.UUID(int=0)


def parse_ids(values: Iterable[str], field: str, violations: Violations) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    items = list(values)
    if not items:
        violations.add(field, "needs at least one id")
    if len(items) > MAX_BULK_IDS:
        violations.add(field, f"at most {MAX_BULK_IDS} ids")
        return ids
    for index, value in enumerate(items):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            violations.add(f"{field}[{index}]", "is not a valid id")
            continue
        if parsed not in ids:
            ids.append(parsed)
    return ids


def check_length(
    value: str, field: str, maximum: int, violations: Violations, *, required: bool = False
) -> str:
    if required and not value.strip():
        violations.add(field, "is required")
    if len(value) > maximum:
        violations.add(field, f"at most {maximum} characters (got {len(value)})")
    return value


def check_email(value: str, field: str, violations: Violations) -> str:
    email = value.strip()
    if email and (len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email)):
        violations.add(field, "is not a valid email address")
    return email


def check_url(value: str, field: str, violations: Violations) -> str:
    url = value.strip()
    if url and (len(url) > MAX_URL_LENGTH or not url.startswith(("https://", "http://"))):
        violations.add(field, f"must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    return url


def check_price(value: int, field: str, violations: Violations) -> int:
    if value < 0:
        violations.add(field, "must not be negative")
    elif value > MAX_PRICE_CENTS:
        violations.add(field, f"at most {MAX_PRICE_CENTS}")
    return value


def check_shortcut(value: str, field: str, violations: Violations) -> str:
    shortcut = value.strip()
    if not shortcut:
        violations.add(field, "is required")
    elif len(shortcut) > MAX_SHORTCUT_LENGTH or not _SHORTCUT.match(shortcut):
        violations.add(field, f"one word of at most {MAX_SHORTCUT_LENGTH} characters")
    return shortcut


def check_query(value: str, field: str, violations: Violations) -> str:
    query = value.strip()
    if len(query) > MAX_QUERY_LENGTH:
        violations.add(field, f"at most {MAX_QUERY_LENGTH} characters")
    return query


def normalise_tags(
    values: Iterable[str], field: str, violations: Violations, *, maximum: int = MAX_TAGS
) -> list[str]:
    """Trimmed, whitespace collapsed, duplicates dropped (tags differing only in case are one
    tag, spelt as it first comes), in the given order."""
    tags: list[str] = []
    keys: set[str] = set()
    for index, value in enumerate(values):
        tag = " ".join(value.split())
        if not tag:
            violations.add(f"{field}[{index}]", "must not be empty")
        elif len(tag) > MAX_TAG_LENGTH:
            violations.add(f"{field}[{index}]", f"at most {MAX_TAG_LENGTH} characters")
        elif tag.lower() not in keys:
            keys.add(tag.lower())
            tags.append(tag)
    if len(tags) > maximum:
        violations.add(field, f"at most {maximum} tags")
    return tags
