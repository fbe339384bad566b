"""Queries of the `crm` schema, one creator at a time.

Tenant isolation lives here: every method takes the creator id, and every statement is filtered
by it, so no method can read or change another creator's rows; a method never takes an object id
without the creator it must belong to. Methods work inside the caller's transaction and never
commit: the service layer decides where a transaction ends.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVarTuple

import asyncpg
import orjson
from google.protobuf.message import Message as ProtoMessage
from sqlalchemy import (
    ColumnElement,
    Select,
    Uuid,
    bindparam,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from huntaze_crm.models import (
    SCHEMA,
    Conversation,
    Fan,
    FanList,
    FanListMember,
    Message,
    Purchase,
    QuickReply,
    like_prefix,
)
from huntaze_crm.pagination import NULL_TIME, Page, Sort
from huntaze_crm.segments import Segment
from huntaze_kit.outbox import new_event_id
from huntaze_kit.streams import Headers

INBOX_CHANNEL = f"{SCHEMA}_inbox"  # as in the statements below

ConversationRow = tuple[Conversation, Fan]
_Ts = TypeVarTuple("_Ts")


def _search(vector: Any, query: str) -> ColumnElement[bool]:
    """`vector @@ prefix_tsquery(query)`: the words of `query` (web-search syntax), each
    matching whole words or their starts."""
    result: ColumnElement[bool] = vector.op("@@")(func.crm.prefix_tsquery(query))
    return result


# The name a fan is shown by (`models.fan_shown_name`).
_FAN_SHOWN_NAME: ColumnElement[str] = func.coalesce(
    func.nullif(Fan.custom_display_name, ""), Fan.display_name
)


def _fan_matches(query: str) -> ColumnElement[bool]:
    """A fan search: the words of `query` in the fan's names, handle, tags, email or notes, or
    `query` as the start of the name shown."""
    return or_(
        _search(Fan.search_vector, query),
        func.lower(_FAN_SHOWN_NAME).like(func.lower(like_prefix(query))),
    )


# --- sorts -----------------------------------------------------------------------------------

_FAN_SORTS: dict[str, Sort[Fan]] = {
    "created_at_desc": Sort(
        "fans.created_at",
        (Fan.created_at, Fan.id),
        True,
        (datetime, uuid.UUID),
        lambda f: (f.created_at, f.id),
    ),
    "last_message_at_desc": Sort(
        "fans.last_message_at",
        (func.coalesce(Fan.last_message_at, NULL_TIME), Fan.id),
        True,
        (datetime, uuid.UUID),
        lambda f: (f.last_message_at or NULL_TIME, f.id),
    ),
    "value_cents_desc": Sort(
        "fans.value_cents",
        (Fan.value_cents, Fan.id),
        True,
        (int, uuid.UUID),
        lambda f: (f.value_cents, f.id),
    ),
    "display_name_asc": Sort(
        "fans.display_name",
        (_FAN_SHOWN_NAME, Fan.id),
        False,
        (str, uuid.UUID),
        lambda f: (f.custom_display_name or f.display_name, f.id),
    ),
    "last_seen_at_desc": Sort(
        "fans.last_seen_at",
        (func.coalesce(Fan.last_seen_at, NULL_TIME), Fan.id),
        True,
        (datetime, uuid.UUID),
        lambda f: (f.last_seen_at or NULL_TIME, f.id),
    ),
}

# Each order and its reverse, by `<field>_asc` / `<field>_desc`.
FAN_SORTS: dict[str, Sort[Fan]] = {
    **_FAN_SORTS,
    **{
        name.rsplit("_", 1)[0] + ("_asc" if sort.descending else "_desc"): sort.reversed()
        for name, sort in _FAN_SORTS.items()
    },
}

MESSAGE_SORT: Sort[Message] = Sort(
    "messages.created_at",
    (Message.created_at, Message.id),
    True,
    (datetime, uuid.UUID),
    lambda m: (m.created_at, m.id),
)

PURCHASE_SORT: Sort[Purchase] = Sort(
    "purchases.occurred_at",
    (Purchase.occurred_at, Purchase.id),
    True,
    (datetime, uuid.UUID),
    lambda p: (p.occurred_at, p.id),
)

QUICK_REPLY_SORT: Sort[QuickReply] = Sort(
    "quick_replies.shortcut",
    (QuickReply.shortcut, QuickReply.id),
    False,
    (str, uuid.UUID),
    lambda q: (q.shortcut, q.id),
)

FAN_LIST_SORT: Sort[FanList] = Sort(
    "fan_lists.name",
    (FanList.name, FanList.id),
    False,
    (str, uuid.UUID),
    lambda f: (f.name, f.id),
)


def _page(query: Select[*_Ts], sort: Sort[Any], page: Page) -> Select[*_Ts]:
    after = sort.after(page)
    if after is not None:
        query = query.where(after)
    return query.order_by(*sort.order_by()).limit(page.size + 1)


def _inbox_lock_key(creator_id: uuid.UUID) -> int:
    return zlib.crc32(f"huntaze-crm-inbox:{creator_id}".encode()) - 2**31


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under `session`, inside its transaction (begun here when no
    statement has begun it yet), for set-based statements without SQLAlchemy in between."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        await session.execute(select(literal(1)))  # SQLAlchemy begins on the first statement
    return driver


# One statement appends the events and signals the watchers. It first takes the creators'
# inbox locks, in one order (the subquery sorts the keys), so that two writers never
# deadlock: the locks are a one-time filter of the rows (an InitPlan, run before the first row
# is read), so they are held before any event id is drawn.
_APPEND_INBOX_EVENTS = """
WITH appended AS (
    INSERT INTO crm.inbox_events (creator_id, type, payload, created_at)
    SELECT e.creator_id, e.type, e.payload, $4
    FROM unnest($1::uuid[], $2::text[], $3::bytea[]) WITH ORDINALITY
        AS e(creator_id, type, payload, position)
    WHERE (
        SELECT count(*) FROM (
            SELECT pg_advisory_xact_lock(keys.k)
            FROM (SELECT unnest($5::bigint[]) AS k ORDER BY 1) AS keys
        ) AS locked
    ) >= 0
    ORDER BY e.position
    RETURNING id, creator_id
)
SELECT pg_notify('crm_inbox', creator_id::text || ':' || max(id))
FROM appended GROUP BY creator_id
"""
_APPEND_OUTBOX_EVENTS = """
INSERT INTO crm.outbox
    (id, subject, message_type, aggregate_type, aggregate_id, creator_id, payload, headers)
SELECT e.id, e.subject, e.message_type, e.aggregate_type, e.aggregate_id, e.creator_id,
       e.payload, e.headers::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::bytea[], $8::text[]) WITH ORDINALITY
    AS e(id, subject, message_type, aggregate_type, aggregate_id, creator_id, payload, headers,
         position)
ORDER BY e.position
"""


@dataclass
class PendingInbox:
    """Inbox events of several changes in one transaction, appended together at its end (one
    lock per creator, held from there to the commit only)."""

    events: list[tuple[uuid.UUID, str, bytes]] = field(default_factory=list)

    def add(self, creator_id: uuid.UUID, kind: str, payload: ProtoMessage) -> None:
        self.events.append((creator_id, kind, payload.SerializeToString(deterministic=True)))

    async def write(self, session: AsyncSession, now: datetime) -> None:
        events, self.events = self.events, []
        await CrmRepository(session).append_inbox_events(events=events, now=now)


@dataclass
class PendingOutbox:
    """Outbox events (see `huntaze_kit.outbox.record_event`) written by one statement."""

    rows: list[tuple[uuid.UUID, str, str, str, str, str, bytes, str]] = field(default_factory=list)

    def add(
        self,
        subject: str,
        event: ProtoMessage,
        *,
        aggregate_type: str,
        aggregate_id: uuid.UUID,
        creator_id: uuid.UUID,
        request_id: str | None,
    ) -> None:
        headers = orjson.dumps({Headers.REQUEST_ID: request_id} if request_id else {}).decode()
        self.rows.append(
            (
                new_event_id(),
                subject,
                event.DESCRIPTOR.full_name,
                aggregate_type,
                str(aggregate_id),
                str(creator_id),
                event.SerializeToString(deterministic=True),
                headers,
            )
        )

    async def write(self, session: AsyncSession) -> None:
        rows, self.rows = self.rows, []
        if rows:
            connection = await driver_connection(session)
            await connection.execute(_APPEND_OUTBOX_EVENTS, *zip(*rows, strict=True))


class CrmRepository:
    """The creator-scoped queries of one unit of work (one `AsyncSession`)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- fans ------------------------------------------------------------------------------------

    async def get_fan(
        self, *, creator_id: uuid.UUID, fan_id: uuid.UUID, for_update: bool = False
    ) -> Fan | None:
        query = select(Fan).where(Fan.creator_id == creator_id, Fan.id == fan_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query)).one_or_none()

    async def get_fans(self, *, creator_id: uuid.UUID, fan_ids: Sequence[uuid.UUID]) -> list[Fan]:
        found = await self.session.scalars(
            select(Fan).where(Fan.creator_id == creator_id, Fan.id.in_(fan_ids))
        )
        return list(found.all())

    async def get_fan_by_platform_id(
        self,
        *,
        creator_id: uuid.UUID,
        platform: str,
        platform_fan_id: str,
        for_update: bool = False,
    ) -> Fan | None:
        query = select(Fan).where(
            Fan.creator_id == creator_id,
            Fan.platform == platform,
            Fan.platform_fan_id == platform_fan_id,
        )
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query)).one_or_none()

    async def insert_fan(
        self, *, creator_id: uuid.UUID, values: dict[str, Any], now: datetime
    ) -> Fan | None:
        """A new fan; None when the platform account id is taken (also by a concurrent insert)."""
        statement = (
            pg_insert(Fan)
            .values(
                id=uuid.uuid4(), creator_id=creator_id, created_at=now, updated_at=now, **values
            )
            .on_conflict_do_nothing()
            .returning(Fan)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def update_fan(
        self, *, creator_id: uuid.UUID, fan_id: uuid.UUID, values: dict[str, Any]
    ) -> Fan | None:
        statement = (
            update(Fan)
            .where(Fan.creator_id == creator_id, Fan.id == fan_id)
            .values(**values)
            .returning(Fan)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def delete_fan(self, *, creator_id: uuid.UUID, fan_id: uuid.UUID) -> Fan | None:
        statement = delete(Fan).where(Fan.creator_id == creator_id, Fan.id == fan_id).returning(Fan)
        return (await self.session.scalars(statement)).one_or_none()

    def _fan_query(
        self, creator_id: uuid.UUID, segment: Segment | None, query: str, now: datetime
    ) -> Select[Fan]:
        statement = select(Fan).where(Fan.creator_id == creator_id)
        if segment is not None:
            statement = statement.where(segment.condition(now=now))
        if query:
            statement = statement.where(_fan_matches(query))
        return statement

    async def list_fans(
        self,
        *,
        creator_id: uuid.UUID,
        segment: Segment | None,
        query: str,
        sort: Sort[Fan],
        page: Page,
        now: datetime,
    ) -> Sequence[Fan]:
        statement = _page(self._fan_query(creator_id, segment, query, now), sort, page)
        return (await self.session.scalars(statement)).all()

    async def count_fans(self, *, creator_id: uuid.UUID, segment: Segment, now: datetime) -> int:
        statement = select(func.count()).where(
            Fan.creator_id == creator_id, segment.condition(now=now)
        )
        return int((await self.session.execute(statement)).scalar_one())

    async def existing_fan_ids(
        self, *, creator_id: uuid.UUID, fan_ids: Sequence[uuid.UUID], for_update: bool = False
    ) -> set[uuid.UUID]:
        statement = select(Fan.id).where(Fan.creator_id == creator_id, Fan.id.in_(fan_ids))
        if for_update:
            statement = statement.order_by(Fan.id).with_for_update()
        return set((await self.session.scalars(statement)).all())

    async def change_tags(
        self,
        *,
        creator_id: uuid.UUID,
        fan_ids: Sequence[uuid.UUID],
        add: Sequence[str],
        remove: Sequence[str],
        now: datetime,
    ) -> Sequence[Fan]:
        """Adds then removes tags (order kept, no duplicates); returns the fans that changed.
        Tags are compared without regard to case: one already there keeps its spelling."""
        merged = func.array_cat(Fan.tags, literal(list(add), type_=Fan.tags.type))
        tag = func.unnest(merged).table_valued("t", with_ordinality="n").render_derived()
        key = func.lower(tag.c.t)
        first_spelling = func.array_agg(aggregate_order_by(tag.c.t, tag.c.n), type_=Fan.tags.type)
        computed = func.array(
            select(first_spelling[1])
            .where(~key.in_([func.lower(value) for value in remove]) if remove else true())
            .group_by(key)
            .order_by(func.min(tag.c.n))
            .scalar_subquery()
        )
        statement = (
            update(Fan)
            .where(
                Fan.creator_id == creator_id,
                Fan.id.in_(fan_ids),
                Fan.tags.is_distinct_from(computed),
            )
            .values(tags=computed, updated_at=now)
            .returning(Fan)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).all()

    async def recompute_fan_value(
        self, *, creator_id: uuid.UUID, fan_id: uuid.UUID, now: datetime
    ) -> Fan | None:
        """Sets the fan's spend to the sum of their purchases."""
        total = (
            select(func.coalesce(func.sum(Purchase.amount_cents), 0))
            .where(Purchase.creator_id == creator_id, Purchase.fan_id == fan_id)
            .scalar_subquery()
        )
        return await self.update_fan(
            creator_id=creator_id, fan_id=fan_id, values={"value_cents": total, "updated_at": now}
        )

    # --- conversations ---------------------------------------------------------------------------

    async def get_conversation(
        self, *, creator_id: uuid.UUID, conversation_id: uuid.UUID, for_update: bool = False
    ) -> Conversation | None:
        query = select(Conversation).where(
            Conversation.creator_id == creator_id, Conversation.id == conversation_id
        )
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query)).one_or_none()

    async def get_conversation_with_fan(
        self, *, creator_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> ConversationRow | None:
        query = (
            select(Conversation, Fan)
            .join(
                Fan, (Fan.creator_id == Conversation.creator_id) & (Fan.id == Conversation.fan_id)
            )
            .where(Conversation.creator_id == creator_id, Conversation.id == conversation_id)
        )
        row = (await self.session.execute(query)).one_or_none()
        return None if row is None else (row[0], row[1])

    async def open_conversation(
        self, *, creator_id: uuid.UUID, fan: Fan, now: datetime
    ) -> tuple[Conversation, bool]:
        """The fan's conversation on their platform, locked; created when missing."""
        inserted = (
            await self.session.scalars(
                pg_insert(Conversation)
                .values(
                    id=uuid.uuid4(),
                    creator_id=creator_id,
                    fan_id=fan.id,
                    platform=fan.platform,
                    last_message_at=now,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(
                    index_elements=[
                        Conversation.creator_id,
                        Conversation.fan_id,
                        Conversation.platform,
                    ]
                )
                .returning(Conversation.id)
            )
        ).one_or_none()
        query = (
            select(Conversation)
            .where(
                Conversation.creator_id == creator_id,
                Conversation.fan_id == fan.id,
                Conversation.platform == fan.platform,
            )
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        conversation = (await self.session.scalars(query)).one()
        return conversation, inserted is not None

    async def update_conversation(
        self, *, creator_id: uuid.UUID, conversation_id: uuid.UUID, values: dict[str, Any]
    ) -> Conversation | None:
        statement = (
            update(Conversation)
            .where(Conversation.creator_id == creator_id, Conversation.id == conversation_id)
            .values(**values)
            .returning(Conversation)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def count_unread(self, *, creator_id: uuid.UUID, conversation_id: uuid.UUID) -> int:
        statement = select(func.count()).where(
            Message.creator_id == creator_id,
            Message.conversation_id == conversation_id,
            Message.direction == "in",
            Message.read.is_(False),
        )
        return int((await self.session.execute(statement)).scalar_one())

    # --- messages --------------------------------------------------------------------------------

    async def get_message(
        self, *, creator_id: uuid.UUID, message_id: uuid.UUID, for_update: bool = False
    ) -> Message | None:
        query = select(Message).where(Message.creator_id == creator_id, Message.id == message_id)
        if for_update:
            # Locked rows are read afresh, not taken from the session's identity map.
            query = query.with_for_update().execution_options(populate_existing=True)
        return (await self.session.scalars(query)).one_or_none()

    async def get_message_by_platform_id(
        self, *, creator_id: uuid.UUID, platform: str, platform_message_id: str
    ) -> Message | None:
        query = select(Message).where(
            Message.creator_id == creator_id,
            Message.platform == platform,
            Message.platform_message_id == platform_message_id,
        )
        return (await self.session.scalars(query)).one_or_none()

    async def get_message_by_idempotency_key(
        self, *, creator_id: uuid.UUID, idempotency_key: str, for_update: bool = False
    ) -> Message | None:
        query = select(Message).where(
            Message.creator_id == creator_id, Message.idempotency_key == idempotency_key
        )
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query)).one_or_none()

    async def insert_message(
        self, *, creator_id: uuid.UUID, values: dict[str, Any]
    ) -> Message | None:
        """A new message; None when its platform id or idempotency key is already stored."""
        statement = (
            pg_insert(Message)
            .values(id=uuid.uuid4(), creator_id=creator_id, **values)
            .on_conflict_do_nothing()
            .returning(Message)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def update_message(
        self, *, creator_id: uuid.UUID, message_id: uuid.UUID, values: dict[str, Any]
    ) -> Message | None:
        statement = (
            update(Message)
            .where(Message.creator_id == creator_id, Message.id == message_id)
            .values(**values)
            .returning(Message)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def mark_read(
        self,
        *,
        creator_id: uuid.UUID,
        conversation_id: uuid.UUID,
        message_ids: Sequence[uuid.UUID] | None,
        now: datetime,
    ) -> list[uuid.UUID]:
        """Marks unread inbound messages read (those of `message_ids`, or all of the
        conversation); returns the ids that changed."""
        statement = (
            update(Message)
            .where(
                Message.creator_id == creator_id,
                Message.conversation_id == conversation_id,
                Message.direction == "in",
                Message.read.is_(False),
            )
            .values(read=True, read_at=now, updated_at=now)
            .returning(Message.id)
        )
        if message_ids is not None:
            statement = statement.where(Message.id.in_(message_ids))
        return list((await self.session.scalars(statement)).all())

    async def list_messages(
        self, *, creator_id: uuid.UUID, conversation_id: uuid.UUID | None, query: str, page: Page
    ) -> Sequence[Message]:
        statement = select(Message).where(Message.creator_id == creator_id)
        if conversation_id is not None:
            statement = statement.where(Message.conversation_id == conversation_id)
        if query:
            statement = statement.where(_search(Message.search_vector, query))
        return (await self.session.scalars(_page(statement, MESSAGE_SORT, page))).all()

    async def recent_messages(
        self, *, creator_id: uuid.UUID, conversation_ids: Sequence[uuid.UUID], limit: int
    ) -> Sequence[Message]:
        """The last `limit` messages of each conversation (newest first in each), in one
        statement: an index range scan per conversation."""
        ids = bindparam("conversation_ids", list(conversation_ids), type_=ARRAY(Uuid))
        asked = func.unnest(ids).table_valued("id").render_derived(name="asked")
        last = (
            select(Message)
            .where(Message.creator_id == creator_id, Message.conversation_id == asked.c.id)
            .order_by(Message.created_at.desc(), Message.id.desc())
            .limit(limit)
            .lateral("last")
        )
        message = aliased(Message, last)
        statement = select(message).select_from(asked).join(last, true())
        return (await self.session.scalars(statement)).all()

    async def count_conversations(
        self, *, creator_id: uuid.UUID, conversation_ids: Sequence[uuid.UUID]
    ) -> int:
        found = await self.session.scalar(
            select(func.count())
            .select_from(Conversation)
            .where(Conversation.creator_id == creator_id, Conversation.id.in_(conversation_ids))
        )
        return int(found or 0)

    # --- purchases -------------------------------------------------------------------------------

    async def get_purchase_by_transaction(
        self, *, creator_id: uuid.UUID, platform: str, platform_transaction_id: str
    ) -> Purchase | None:
        query = select(Purchase).where(
            Purchase.creator_id == creator_id,
            Purchase.platform == platform,
            Purchase.platform_transaction_id == platform_transaction_id,
        )
        return (await self.session.scalars(query)).one_or_none()

    async def insert_purchase(
        self, *, creator_id: uuid.UUID, values: dict[str, Any]
    ) -> Purchase | None:
        """A new purchase; None when its platform transaction is already stored."""
        statement = (
            pg_insert(Purchase)
            .values(id=uuid.uuid4(), creator_id=creator_id, **values)
            .on_conflict_do_nothing()
            .returning(Purchase)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def link_purchases(
        self,
        *,
        creator_id: uuid.UUID,
        platform: str,
        platform_message_id: str,
        message_id: uuid.UUID,
    ) -> Sequence[Purchase]:
        """Links purchases recorded before their message's platform id was known."""
        statement = (
            update(Purchase)
            .where(
                Purchase.creator_id == creator_id,
                Purchase.platform == platform,
                Purchase.platform_message_id == platform_message_id,
                Purchase.message_id.is_(None),
            )
            .values(message_id=message_id)
            .returning(Purchase)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).all()

    async def list_purchases(
        self, *, creator_id: uuid.UUID, fan_id: uuid.UUID, page: Page
    ) -> Sequence[Purchase]:
        statement = select(Purchase).where(
            Purchase.creator_id == creator_id, Purchase.fan_id == fan_id
        )
        return (await self.session.scalars(_page(statement, PURCHASE_SORT, page))).all()

    # --- quick replies ---------------------------------------------------------------------------

    async def get_quick_reply(
        self, *, creator_id: uuid.UUID, quick_reply_id: uuid.UUID
    ) -> QuickReply | None:
        query = select(QuickReply).where(
            QuickReply.creator_id == creator_id, QuickReply.id == quick_reply_id
        )
        return (await self.session.scalars(query)).one_or_none()

    async def insert_quick_reply(
        self, *, creator_id: uuid.UUID, shortcut: str, text: str, now: datetime
    ) -> QuickReply | None:
        """None when the shortcut is taken."""
        statement = (
            pg_insert(QuickReply)
            .values(
                id=uuid.uuid4(),
                creator_id=creator_id,
                shortcut=shortcut,
                text=text,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
            .returning(QuickReply)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def shortcut_taken(
        self, *, creator_id: uuid.UUID, shortcut: str, other_than: uuid.UUID
    ) -> bool:
        query = select(QuickReply.id).where(
            QuickReply.creator_id == creator_id,
            QuickReply.shortcut == shortcut,
            QuickReply.id != other_than,
        )
        return (await self.session.scalars(query)).first() is not None

    async def update_quick_reply(
        self, *, creator_id: uuid.UUID, quick_reply_id: uuid.UUID, values: dict[str, Any]
    ) -> QuickReply | None:
        statement = (
            update(QuickReply)
            .where(QuickReply.creator_id == creator_id, QuickReply.id == quick_reply_id)
            .values(**values)
            .returning(QuickReply)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def delete_quick_reply(self, *, creator_id: uuid.UUID, quick_reply_id: uuid.UUID) -> bool:
        statement = (
            delete(QuickReply)
            .where(QuickReply.creator_id == creator_id, QuickReply.id == quick_reply_id)
            .returning(QuickReply.id)
        )
        return (await self.session.scalars(statement)).one_or_none() is not None

    async def list_quick_replies(
        self, *, creator_id: uuid.UUID, shortcut_prefix: str, page: Page
    ) -> Sequence[QuickReply]:
        statement = select(QuickReply).where(QuickReply.creator_id == creator_id)
        if shortcut_prefix:
            statement = statement.where(
                QuickReply.shortcut.startswith(shortcut_prefix, autoescape=True)
            )
        return (await self.session.scalars(_page(statement, QUICK_REPLY_SORT, page))).all()

    # --- fan lists -------------------------------------------------------------------------------

    async def get_fan_list(
        self, *, creator_id: uuid.UUID, list_id: uuid.UUID, for_update: bool = False
    ) -> FanList | None:
        query = select(FanList).where(FanList.creator_id == creator_id, FanList.id == list_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.scalars(query)).one_or_none()

    async def insert_fan_list(
        self,
        *,
        creator_id: uuid.UUID,
        name: str,
        kind: str,
        segment: dict[str, Any] | None,
        now: datetime,
    ) -> FanList:
        statement = (
            pg_insert(FanList)
            .values(
                id=uuid.uuid4(),
                creator_id=creator_id,
                name=name,
                kind=kind,
                segment=segment,
                created_at=now,
                updated_at=now,
            )
            .returning(FanList)
        )
        return (await self.session.scalars(statement)).one()

    async def update_fan_list(
        self, *, creator_id: uuid.UUID, list_id: uuid.UUID, values: dict[str, Any]
    ) -> FanList | None:
        statement = (
            update(FanList)
            .where(FanList.creator_id == creator_id, FanList.id == list_id)
            .values(**values)
            .returning(FanList)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def delete_fan_list(self, *, creator_id: uuid.UUID, list_id: uuid.UUID) -> bool:
        statement = (
            delete(FanList)
            .where(FanList.creator_id == creator_id, FanList.id == list_id)
            .returning(FanList.id)
        )
        return (await self.session.scalars(statement)).one_or_none() is not None

    async def list_fan_lists(
        self, *, creator_id: uuid.UUID, kind: str | None, page: Page
    ) -> Sequence[FanList]:
        statement = select(FanList).where(FanList.creator_id == creator_id)
        if kind is not None:
            statement = statement.where(FanList.kind == kind)
        return (await self.session.scalars(_page(statement, FAN_LIST_SORT, page))).all()

    async def count_members(self, *, creator_id: uuid.UUID, list_id: uuid.UUID) -> int:
        statement = select(func.count()).where(
            FanListMember.creator_id == creator_id, FanListMember.list_id == list_id
        )
        return int((await self.session.execute(statement)).scalar_one())

    async def add_members(
        self,
        *,
        creator_id: uuid.UUID,
        list_id: uuid.UUID,
        fan_ids: Sequence[uuid.UUID],
        now: datetime,
    ) -> int:
        statement = (
            pg_insert(FanListMember)
            .values(
                [
                    {
                        "creator_id": creator_id,
                        "list_id": list_id,
                        "fan_id": fan_id,
                        "added_at": now,
                    }
                    for fan_id in fan_ids
                ]
            )
            .on_conflict_do_nothing()
            .returning(FanListMember.fan_id)
        )
        return len((await self.session.scalars(statement)).all())

    async def remove_members(
        self, *, creator_id: uuid.UUID, list_id: uuid.UUID, fan_ids: Sequence[uuid.UUID]
    ) -> int:
        statement = (
            delete(FanListMember)
            .where(
                FanListMember.creator_id == creator_id,
                FanListMember.list_id == list_id,
                FanListMember.fan_id.in_(fan_ids),
            )
            .returning(FanListMember.fan_id)
        )
        return len((await self.session.scalars(statement)).all())

    async def list_members(
        self, *, creator_id: uuid.UUID, list_id: uuid.UUID, sort: Sort[Fan], page: Page
    ) -> Sequence[Fan]:
        member = exists().where(
            FanListMember.creator_id == creator_id,
            FanListMember.list_id == list_id,
            FanListMember.fan_id == Fan.id,
        )
        statement = select(Fan).where(Fan.creator_id == creator_id, member)
        return (await self.session.scalars(_page(statement, sort, page))).all()

    # --- inbox events ----------------------------------------------------------------------------

    async def append_inbox_events(
        self, *, events: Sequence[tuple[uuid.UUID, str, bytes]], now: datetime
    ) -> None:
        """Appends `(creator id, type, payload)` events to their creators' inboxes, in order,
        and signals the watchers at commit.

        Call it last in the transaction: it takes each creator's inbox lock, held until
        commit, so that event ids increase in commit order within a creator's inbox (a
        watcher resuming after id N then never misses an event committed later with a smaller
        id). The locks are taken in one order (by key), so two writers never deadlock on them.
        """
        if not events:
            return
        connection = await driver_connection(self.session)
        keys = sorted({_inbox_lock_key(creator) for creator in {c for c, _, _ in events}})
        creators, kinds, payloads = zip(*events, strict=True)
        await connection.execute(_APPEND_INBOX_EVENTS, creators, kinds, payloads, now, keys)
