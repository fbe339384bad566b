"""Input checks the proto's field rules cannot make (lengths, counts and ranges are rules on the
request fields, checked before a method runs): each failure is a field violation of one
INVALID_ARGUMENT answer."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from huntaze_kit.errors import FieldViolation, InvalidArgument

MAX_EMAIL_LENGTH = 320
# A fan's tags as a whole (a request that replaces them sends a `TagSet`, without rules).
MAX_TAGS = 50
MAX_TAG_LENGTH = 50
MAX_CUSTOM_FIELDS_BYTES = 16_384

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SHORTCUT = re.compile(r"^\S+$")


class Violations:
    """Collects field violations, then raises them together."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument.for_violations(self.items)


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
    for index, value in enumerate(items):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            violations.add(f"{field}[{index}]", "is not a valid id")
            continue
        if parsed not in ids:
            ids.append(parsed)
    return ids


def check_required(value: str, field: str, violations: Violations) -> str:
    if not value.strip():
        violations.add(field, "is required")
    return value


def check_email(value: str, field: str, violations: Violations) -> str:
    email = value.strip()
    if email and (len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email)):
        violations.add(field, "is not a valid email address")
    return email


def check_url(value: str, field: str, violations: Violations) -> str:
    url = value.strip()
    if url and not url.startswith(("https://", "http://")):
        violations.add(field, "must be an http(s) URL")
    return url


def check_shortcut(value: str, field: str, violations: Violations) -> str:
    shortcut = value.strip()
    if not shortcut:
        violations.add(field, "is required")
    elif not _SHORTCUT.match(shortcut):
        violations.add(field, "must be one word")
    return shortcut


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
