"""The reads on every request's path, straight on asyncpg: the conversation list and the inbox
events behind `WatchInbox`.

Each is one statement on a pool in autocommit (`huntaze_kit.db.create_read_pool`: no BEGIN, no
ROLLBACK, no reset query when a connection goes back), returning exactly the columns the
answer needs, which `convert` turns into protobuf messages without ORM objects in between.

Tenant isolation holds here as in `repository`: every method takes the creator id, and every
statement is filtered by it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from huntaze.crm.v1 import crm_pb2
from huntaze_crm import convert
from huntaze_crm.models import PREFIX_TSQUERY, fan_shown_name, like_prefix
from huntaze_crm.pagination import KeyValue, Page, decode_cursor, encode_cursor
from huntaze_kit.db import CONNECTION_LOST_ERRORS


class InboxRecord(NamedTuple):
    """One row of `crm.inbox_events`: what `WatchInbox` streams."""

    id: int
    type: str
    payload: bytes
    # None for an `inbox.reset` (made for a watcher, never stored).
    created_at: datetime | None


@dataclass(frozen=True)
class ConversationOrder:
    """A conversation list order: SQL columns (all descending or all ascending, the last one
    unique), the record columns of the same key, and the cursor's name and value types."""

    name: str
    columns: tuple[str, ...]
    keys: tuple[str, ...]
    types: tuple[type, ...]
    descending: bool = True

    def key(self, record: asyncpg.Record) -> tuple[KeyValue, ...]:
        return tuple(record[name] for name in self.keys)

    def reversed(self) -> ConversationOrder:
        """The same order the other way round (a cursor of one is refused by the other)."""
        direction = "asc" if self.descending else "desc"
        return replace(self, name=f"{self.name}:{direction}", descending=not self.descending)


CONVERSATION_ORDERS: dict[str, ConversationOrder] = {
    "last_message_at_desc": ConversationOrder(
        "conversations.last_message_at",
        ("c.last_message_at", "c.id"),
        ("last_message_at", "id"),
        (datetime, uuid.UUID),
    ),
    "pinned_first": ConversationOrder(
        "conversations.pinned",
        ("c.pinned", "c.last_message_at", "c.id"),
        ("pinned", "last_message_at", "id"),
        (bool, datetime, uuid.UUID),
    ),
    "unread_count_desc": ConversationOrder(
        "conversations.unread_count",
        ("c.unread_count", "c.last_message_at", "c.id"),
        ("unread_count", "last_message_at", "id"),
        (int, datetime, uuid.UUID),
    ),
}
CONVERSATION_ORDERS["last_message_at_asc"] = CONVERSATION_ORDERS["last_message_at_desc"].reversed()
CONVERSATION_ORDERS["unread_count_asc"] = CONVERSATION_ORDERS["unread_count_desc"].reversed()

# The conversation's columns under their own names, the fan's prefixed with `f_`
# (`convert.fan_fields(record, "f_")`).
_CONVERSATION_COLUMNS = (
    "c.id, c.fan_id, c.platform, c.unread_count, c.last_message_at, c.last_message_preview,"
    " c.pinned, c.archived, c.assigned_member_id, c.created_at, c.updated_at,"
    " f.id AS f_id, f.platform AS f_platform, f.platform_fan_id AS f_platform_fan_id,"
    " f.display_name AS f_display_name, f.custom_display_name AS f_custom_display_name,"
    " f.handle AS f_handle, f.avatar_url AS f_avatar_url,"
    " f.email AS f_email, f.tags AS f_tags, f.notes AS f_notes, f.value_cents AS f_value_cents,"
    " f.subscription_state AS f_subscription_state, f.subscribed_at AS f_subscribed_at,"
    " f.subscription_expires_at AS f_subscription_expires_at, f.last_seen_at AS f_last_seen_at,"
    " f.last_message_at AS f_last_message_at, f.custom_fields AS f_custom_fields,"
    " f.created_at AS f_created_at, f.updated_at AS f_updated_at"
)


@dataclass(frozen=True)
class ConversationFilter:
    """What a conversation list asks for, besides its creator, order and page."""

    unread_only: bool = False
    platform: str | None = None
    archived: bool | None = False
    pinned: bool | None = None
    query: str = ""


@functools.lru_cache(maxsize=256)
def _conversations_sql(
    order: ConversationOrder,
    *,
    unread_only: bool,
    platform: bool,
    archived: bool | None,
    pinned: bool,
    query: bool,
    after: bool,
) -> str:
    """The statement of one shape of the list (a few dozen shapes; asyncpg prepares each
    once per connection). Parameters: $1 creator, $2 limit, then the filters' values."""
    conditions = ["c.creator_id = $1"]
    position = 2

    def parameter() -> str:
        nonlocal position
        position += 1
        return f"${position}"

    if unread_only:
        conditions.append("c.unread_count > 0")
    if archived is not None:
        conditions.append("c.archived" if archived else "NOT c.archived")
    if platform:
        conditions.append(f"c.platform = {parameter()}")
    if pinned:
        conditions.append(f"c.pinned = {parameter()}")
    if query:
        tsquery = f"{PREFIX_TSQUERY}({parameter()})"
        name_prefix = f"lower({fan_shown_name('f')}) LIKE lower({parameter()})"
        in_messages = f"m.conversation_id = c.id AND m.search_vector @@ {tsquery}"
        matches = f"EXISTS (SELECT 1 FROM crm.messages m WHERE m.creator_id = $1 AND {in_messages})"  # noqa: S608
        conditions.append(f"(f.search_vector @@ {tsquery} OR {name_prefix} OR {matches})")
    if after:
        bound = ", ".join(parameter() for _ in order.columns)
        comparison = "<" if order.descending else ">"
        conditions.append(f"({', '.join(order.columns)}) {comparison} ({bound})")
    direction = "DESC" if order.descending else "ASC"
    return (
        f"SELECT {_CONVERSATION_COLUMNS} FROM crm.conversations c"  # noqa: S608 (no input)
        " JOIN crm.fans f ON f.creator_id = c.creator_id AND f.id = c.fan_id"
        f" WHERE {' AND '.join(conditions)}"
        f" ORDER BY {', '.join(f'{column} {direction}' for column in order.columns)}"
        " LIMIT $2"
    )


_INBOX_AFTER = (
    "SELECT id, type, payload, created_at FROM crm.inbox_events"
    " WHERE creator_id = $1 AND id > $2 ORDER BY id LIMIT $3"
)
_LATEST_INBOX_ID = "SELECT coalesce(max(id), 0) FROM crm.inbox_events WHERE creator_id = $1"
_PRUNED_THROUGH = "SELECT pruned_through_id FROM crm.inbox_retention WHERE creator_id = $1"


class CrmReader:
    """Creator-scoped reads on an asyncpg pool in autocommit."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """The rows of a read-only `query`, tried once more on a fresh connection when its
        connection was lost (every pooled one is then replaced: they were likely lost
        together, e.g. PostgreSQL restarted)."""
        try:
            rows: list[asyncpg.Record] = await self._pool.fetch(query, *args)
        except CONNECTION_LOST_ERRORS:
            await self._pool.expire_connections()
            rows = await self._pool.fetch(query, *args)
        return rows

    async def list_conversations(
        self,
        *,
        creator_id: uuid.UUID,
        where: ConversationFilter,
        order: ConversationOrder,
        page: Page,
    ) -> tuple[list[asyncpg.Record], str]:
        """One page of the creator's conversations, each with its fan's columns, and the
        next page's token ("" on the last page)."""
        after = decode_cursor(page.token, order.name, order.types) if page.token else ()
        args: list[Any] = [creator_id, page.size + 1]
        if where.platform is not None:
            args.append(where.platform)
        if where.pinned is not None:
            args.append(where.pinned)
        if where.query:
            args.extend((where.query, like_prefix(where.query)))
        args.extend(after)
        statement = _conversations_sql(
            order,
            unread_only=where.unread_only,
            platform=where.platform is not None,
            archived=where.archived,
            pinned=where.pinned is not None,
            query=bool(where.query),
            after=bool(after),
        )
        rows = await self._fetch(statement, *args)
        if len(rows) <= page.size:
            return rows, ""
        kept = rows[: page.size]
        return kept, encode_cursor(order.name, order.key(kept[-1]))

    async def inbox_events_after(
        self, *, creator_id: uuid.UUID, after_id: int, limit: int
    ) -> list[InboxRecord]:
        rows = await self._fetch(_INBOX_AFTER, creator_id, after_id, limit)
        return [InboxRecord(*row) for row in rows]

    async def latest_inbox_event_id(self, *, creator_id: uuid.UUID) -> int:
        rows = await self._fetch(_LATEST_INBOX_ID, creator_id)
        return int(rows[0][0])

    async def inbox_pruned_through(self, *, creator_id: uuid.UUID) -> int:
        rows = await self._fetch(_PRUNED_THROUGH, creator_id)
        return int(rows[0][0]) if rows else 0


def conversation_messages(rows: Sequence[asyncpg.Record]) -> list[crm_pb2.Conversation]:
    """The conversations of `list_conversations`, with their fans, as protobuf messages."""
    return [
        crm_pb2.Conversation(**convert.conversation_fields(row, convert.fan_fields(row, "f_")))
        for row in rows
    ]
