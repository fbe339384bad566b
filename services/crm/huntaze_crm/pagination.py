"""Keyset pagination with opaque cursors.

A cursor is URL-safe base64 of JSON: the name of the sort it belongs to and the sort key of the
last row of the page. The next page is the rows strictly after that key in the sort order, so
pages stay stable while rows are added. A cursor from another sort, or anything that does not
decode, is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import ColumnElement, literal, tuple_

from huntaze.common.v1 import common_pb2
from huntaze_kit.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_TOKEN_LENGTH = 1024
# Sort keys never hold NULL: nullable times sort as this instant (before every real one).
NULL_TIME = datetime(1970, 1, 1, tzinfo=UTC)

PAGE_SIZE_FIELD = "page.page_size"
PAGE_TOKEN_FIELD = "page.page_token"

Row = TypeVar("Row")
KeyValue = datetime | int | str | bool | uuid.UUID


@dataclass(frozen=True)
class Page:
    """What a list request asks for: how many rows, and after which sort key."""

    size: int
    token: str


def page_request(request: common_pb2.PageRequest) -> Page:
    size = request.page_size
    if size < 0:
        raise InvalidArgument.for_field(PAGE_SIZE_FIELD, "must not be negative")
    if size > MAX_PAGE_SIZE:
        raise InvalidArgument.for_field(PAGE_SIZE_FIELD, f"at most {MAX_PAGE_SIZE}")
    if len(request.page_token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument.for_field(PAGE_TOKEN_FIELD, "is not a valid page token")
    return Page(size=size or DEFAULT_PAGE_SIZE, token=request.page_token)


@dataclass(frozen=True)
class Sort(Generic[Row]):
    """An order over rows: SQL expressions (all ascending or all descending, the last one
    unique) and how to read the same key from a fetched row."""

    name: str
    # Column attributes or SQL expressions (each has `.desc()` and `.type`).
    columns: Sequence[Any]
    descending: bool
    # The Python type of each key value, checked when a cursor is decoded.
    types: tuple[type, ...]
    key: Callable[[Row], tuple[KeyValue, ...]]

    def reversed(self) -> Sort[Row]:
        """The same order the other way round (a cursor of one is refused by the other)."""
        direction = "asc" if self.descending else "desc"
        return replace(self, name=f"{self.name}:{direction}", descending=not self.descending)

    def order_by(self) -> list[ColumnElement[Any]]:
        return [column.desc() if self.descending else column.asc() for column in self.columns]

    def after(self, page: Page) -> ColumnElement[bool] | None:
        """The condition selecting rows after the page's cursor; None on the first page."""
        if not page.token:
            return None
        values = decode_cursor(page.token, self.name, self.types)
        bound = tuple_(
            *(
                literal(value, type_=column.type)
                for value, column in zip(values, self.columns, strict=True)
            )
        )
        current = tuple_(*self.columns)
        return current < bound if self.descending else current > bound

    def paginate(self, rows: Sequence[Row], page: Page) -> tuple[list[Row], str]:
        """The rows of the page (fetched with `page.size + 1`) and the next page's token."""
        if len(rows) <= page.size:
            return list(rows), ""
        kept = list(rows[: page.size])
        return kept, encode_cursor(self.name, self.key(kept[-1]))


def _encode_value(value: KeyValue) -> list[Any]:
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", value]
    if isinstance(value, datetime):
        return ["t", value.astimezone(UTC).isoformat()]
    if isinstance(value, uuid.UUID):
        return ["u", str(value)]
    return ["s", value]


def _decode_value(item: Any) -> KeyValue:
    if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str):
        raise ValueError("bad key value")
    kind, raw = item
    if kind == "b" and isinstance(raw, bool):
        return raw
    if kind == "i" and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind == "t" and isinstance(raw, str):
        parsed = datetime.fromisoformat(raw)
        if parsed.tzinfo is None:
            raise ValueError("naive time")
        return parsed
    if kind == "u" and isinstance(raw, str):
        return uuid.UUID(raw)
    if kind == "s" and isinstance(raw, str):
        return raw
    raise ValueError("bad key value")


def encode_cursor(sort_name: str, values: tuple[KeyValue, ...]) -> str:
    body = orjson.dumps({"s": sort_name, "k": [_encode_value(v) for v in values]})
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode_cursor(token: str, sort_name: str, types: tuple[type, ...]) -> tuple[KeyValue, ...]:
    try:
        body = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = orjson.loads(body)
        if not isinstance(decoded, dict) or decoded.get("s") != sort_name:
            raise ValueError("cursor of another list or sort")
        raw = decoded.get("k")
        if not isinstance(raw, list) or len(raw) != len(types):
            raise ValueError("bad key")
        values = tuple(_decode_value(item) for item in raw)
        for value, expected in zip(values, types, strict=True):
            if type(value) is not expected:
                raise ValueError("bad key type")
        return values
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as err:
        raise InvalidArgument.for_field(
            PAGE_TOKEN_FIELD, "is not a valid page token (pass the previous page's token as given)"
        ) from err
