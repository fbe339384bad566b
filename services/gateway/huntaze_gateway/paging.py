"""Cursor pages over HTTP: `cursor` and `limit` in, `{<items>: [...], "nextCursor": ...}` out.

A list RPC takes a `huntaze.common.v1.PageRequest page` and answers its items with a
`PageResponse page`; the service's field violations of a list request are named after the query
parameters they came from (`page.page_token` -> `query.cursor`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Annotated, TypeVar

import grpc
from fastapi import Query
from google.protobuf.message import Message

from huntaze.common.v1 import common_pb2
from huntaze_gateway.codec import JsonResponse, to_json
from huntaze_gateway.problems import camel_field
from huntaze_kit.errors import FieldViolation, InvalidArgument
from huntaze_kit.rich_status import from_rpc_error

T = TypeVar("T")

MAX_LIMIT = 200
MAX_CURSOR = 1024

Cursor = Annotated[
    str,
    Query(max_length=MAX_CURSOR, description="`nextCursor` of the previous page (same filters)."),
]
Limit = Annotated[
    int | None, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1 to {MAX_LIMIT}; default 50.")
]

# Field names of the list requests -> this API's query parameters, located as the gateway's own
# validation locates them (`query.limit`). A key also renames the fields below it
# (`filter.tags_any[0]` with `"filter": "query"` -> `query.tags_any[0]`, then camelCase).
PAGE_FIELDS: Mapping[str, str] = {
    "page.page_token": "query.cursor",
    "page.page_size": "query.limit",
}


def page_request(cursor: str, limit: int | None) -> common_pb2.PageRequest:
    return common_pb2.PageRequest(page_size=limit or 0, page_token=cursor)


def page_answer(key: str, items: Iterable[Message], page: common_pb2.PageResponse) -> JsonResponse:
    """One page of a list answer: the items under `key`, and the cursor of the next page."""
    return JsonResponse(
        {key: [to_json(item) for item in items], "nextCursor": page.next_page_token or None}
    )


def _rename(field: str, renames: Mapping[str, str]) -> str:
    for old, new in renames.items():
        if field == old:
            return new
        for separator in (".", "["):
            if field.startswith(old + separator):
                return new + field[len(old) :]
    return field


async def listing(call: Awaitable[T], renames: Mapping[str, str] = PAGE_FIELDS) -> T:
    """Awaits a list call; its field violations are named as this API's query parameters."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        details = from_rpc_error(error)
        if (
            details.code != grpc.StatusCode.INVALID_ARGUMENT
            or details.reason is None
            or not details.violations
        ):
            raise
        violations = [
            FieldViolation(camel_field(_rename(v.field, renames)), v.description)
            for v in details.violations
        ]
        raise InvalidArgument.for_violations(violations, reason=details.reason) from None
