"""Inbound platform messages, many in one go: a few set-based statements for a whole batch,
with the same effects and events as storing the messages one at a time.

For the messages of a batch, in one transaction (the consumer's):

1. one read finds the platform messages stored before (those are skipped, as are second copies
   within the batch);
2. one `SELECT ... FOR UPDATE` locks the fans of the rest, another their conversations (fans in
   `lock_fans` order, conversations in id order; every writer locks a fan before its
   conversation, so none deadlocks);
3. the batch is played in Python, message after message, exactly as one message at a time
   would have changed fans and conversations, which gives the events with the state after each
   message: `crm.fan.created|updated` and `crm.message.received` for the outbox, `fan.updated`,
   `message.received` and `conversation.updated` for the inbox;
4. the final rows are written: one insert of the new fans, one update of the fans that changed,
   one upsert of the conversations, one insert of the messages (`ON CONFLICT DO NOTHING` on the
   platform message id: a concurrent copy makes the batch fail and be retried one by one), one
   insert of the outbox rows. The inbox rows go to the caller's `PendingInbox`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze.crm.v1 import crm_pb2, events_pb2
from huntaze_crm import convert
from huntaze_crm.repository import PendingInbox, PendingOutbox, driver_connection
from huntaze_crm.service import (
    CONVERSATION_UPDATED,
    FAN_UPDATED,
    MESSAGE_RECEIVED,
    Clock,
    FanProfile,
)

_FAN_COLUMNS = (
    "id, creator_id, platform, platform_fan_id, display_name, custom_display_name, handle,"
    " avatar_url, email, tags, notes, value_cents, subscription_state, subscribed_at,"
    " subscription_expires_at, last_seen_at, last_message_at, custom_fields, created_at,"
    " updated_at"
)
_CONVERSATION_COLUMNS = (
    "id, creator_id, fan_id, platform, unread_count, last_message_at, last_message_preview,"
    " pinned, archived, assigned_member_id, created_at, updated_at"
)

_STORED_MESSAGES = """
SELECT m.creator_id, m.platform, m.platform_message_id
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(creator_id, platform, platform_message_id)
JOIN crm.messages m ON m.creator_id = k.creator_id AND m.platform = k.platform
    AND m.platform_message_id = k.platform_message_id
"""
_LOCK_FANS = f"""
SELECT {", ".join(f"f.{name.strip()}" for name in _FAN_COLUMNS.split(","))}
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(creator_id, platform, platform_fan_id)
JOIN crm.fans f ON f.creator_id = k.creator_id AND f.platform = k.platform
    AND f.platform_fan_id = k.platform_fan_id
ORDER BY f.creator_id, f.platform COLLATE "C", f.platform_fan_id COLLATE "C"
FOR UPDATE OF f
"""  # noqa: S608 (constants only)
# The one order every batch of platform events locks fans in (see `lock_fans`): byte order of
# the key, which Python's tuple order of (UUID, str, str) agrees with.
_LOCK_FANS_IN_ORDER = """
SELECT f.id
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(creator_id, platform, platform_fan_id)
JOIN crm.fans f ON f.creator_id = k.creator_id AND f.platform = k.platform
    AND f.platform_fan_id = k.platform_fan_id
ORDER BY f.creator_id, f.platform COLLATE "C", f.platform_fan_id COLLATE "C"
FOR UPDATE OF f
"""
# The fan of each outgoing message a delivery event names (by id, else by idempotency key).
_FANS_OF_MESSAGES = """
SELECT DISTINCT ON (k.ord) k.ord, f.creator_id, f.platform, f.platform_fan_id
FROM unnest($1::uuid[], $2::uuid[], $3::text[]) WITH ORDINALITY
    AS k(creator_id, message_id, idempotency_key, ord)
JOIN crm.messages m ON m.creator_id = k.creator_id
    AND (m.id = k.message_id OR (k.idempotency_key <> '' AND m.idempotency_key = k.idempotency_key))
JOIN crm.fans f ON f.creator_id = m.creator_id AND f.id = m.fan_id
ORDER BY k.ord, (m.id = k.message_id) DESC
"""
_LOCK_CONVERSATIONS = f"""
SELECT {", ".join(f"c.{name.strip()}" for name in _CONVERSATION_COLUMNS.split(","))}
FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS k(creator_id, fan_id, platform)
JOIN crm.conversations c ON c.creator_id = k.creator_id AND c.fan_id = k.fan_id
    AND c.platform = k.platform
ORDER BY c.id
FOR UPDATE OF c
"""  # noqa: S608 (constants only)
# Columns left out take their defaults, which `_new_fan` mirrors.
_INSERT_FANS = """
INSERT INTO crm.fans (id, creator_id, platform, platform_fan_id, display_name, handle,
                      avatar_url, last_seen_at, last_message_at, created_at, updated_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
                     $11::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING id
"""
# Two statements: the profile columns fire the search vector trigger, the times do not.
_UPDATE_FAN_PROFILES = """
UPDATE crm.fans f
SET display_name = v.display_name, handle = v.handle, avatar_url = v.avatar_url,
    updated_at = v.updated_at
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
    AS v(creator_id, id, display_name, handle, avatar_url, updated_at)
WHERE f.creator_id = v.creator_id AND f.id = v.id
"""
_UPDATE_FAN_TIMES = """
UPDATE crm.fans f
SET last_seen_at = v.last_seen_at, last_message_at = v.last_message_at
FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[])
    AS v(creator_id, id, last_seen_at, last_message_at)
WHERE f.creator_id = v.creator_id AND f.id = v.id
"""
# New conversations are inserted, locked ones updated (their fan is locked: no other writer can
# open the same conversation meanwhile).
_UPSERT_CONVERSATIONS = """
INSERT INTO crm.conversations AS c
    (id, creator_id, fan_id, platform, unread_count, last_message_at, last_message_preview,
     archived, created_at, updated_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int[],
                     $6::timestamptz[], $7::text[], $8::bool[], $9::timestamptz[],
                     $10::timestamptz[])
ON CONFLICT (id) DO UPDATE SET
    unread_count = excluded.unread_count,
    last_message_at = excluded.last_message_at,
    last_message_preview = excluded.last_message_preview,
    archived = excluded.archived,
    updated_at = excluded.updated_at
WHERE c.creator_id = excluded.creator_id
RETURNING id
"""
_INSERT_MESSAGES = """
INSERT INTO crm.messages
    (id, creator_id, conversation_id, fan_id, platform, direction, text, price_cents,
     attachments, delivery_status, platform_message_id, sender_kind, sender_id, created_at,
     sent_at, updated_at)
SELECT m.id, m.creator_id, m.conversation_id, m.fan_id, m.platform, 'in', m.text,
       m.price_cents, m.attachments::jsonb, 'received', m.platform_message_id, 'fan',
       m.sender_id, m.created_at, m.created_at, m.updated_at
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
            $7::int8[], $8::text[], $9::text[], $10::text[], $11::timestamptz[],
            $12::timestamptz[])
    AS m(id, creator_id, conversation_id, fan_id, platform, text, price_cents, attachments,
         platform_message_id, sender_id, created_at, updated_at)
ON CONFLICT DO NOTHING
RETURNING id
"""

_TICK = timedelta(microseconds=1)

FanKey = tuple[uuid.UUID, str, str]  # creator, platform, platform fan id
ConversationKey = tuple[uuid.UUID, uuid.UUID, str]  # creator, fan id, platform


async def lock_fans(session: AsyncSession, keys: Iterable[FanKey]) -> None:
    """Locks the fans of `keys` that exist, in key order. Every batch of platform events (fan
    syncs, purchases, messages) locks its fans this way before anything else, and creates new
    fans in key order (fan syncs and purchases apply fan after fan, `in_fan_order`): two batches
    with fans in common wait for one another instead of each holding a fan the other needs (the
    deadlocks a sync's concurrent fan, purchase and message batches ran into)."""
    unique = sorted(set(keys))
    if not unique:
        return
    connection = await driver_connection(session)
    creators, platforms, fan_ids = zip(*unique, strict=True)
    await connection.fetch(_LOCK_FANS_IN_ORDER, creators, platforms, fan_ids)


async def fans_of_messages(
    session: AsyncSession, refs: Sequence[tuple[uuid.UUID, uuid.UUID | None, str]]
) -> list[FanKey | None]:
    """The fan key of each (creator, message id, idempotency key); None for an unknown
    message."""
    if not refs:
        return []
    connection = await driver_connection(session)
    creators, message_ids, keys = zip(*refs, strict=True)
    found: list[FanKey | None] = [None] * len(refs)
    for row in await connection.fetch(_FANS_OF_MESSAGES, creators, message_ids, keys):
        found[row[0] - 1] = (row[1], row[2], row[3])
    return found


def in_fan_order(keys: Sequence[FanKey | None]) -> list[int]:
    """The indexes of `keys` in `lock_fans` order, each fan's in their own order (a stable
    sort); None (nothing to lock) first."""
    return sorted(range(len(keys)), key=lambda i: (keys[i] is not None, keys[i] or ()))


class ConcurrentWrite(RuntimeError):
    """Another transaction stored one of the batch's rows first: retry (one by one)."""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a fan wrote, as the platform worker reported it (checked already)."""

    creator_id: uuid.UUID
    profile: FanProfile
    platform_message_id: str
    text: str
    price_cents: int
    attachments: list[dict[str, str]]
    sent_at: datetime | None
    request_id: str | None = None

    @property
    def fan_key(self) -> FanKey:
        return (self.creator_id, self.profile.platform, self.profile.platform_fan_id)


@dataclass
class _Changes:
    """The rows the batch creates or changes, by key, as they stand after the batch."""

    fans: dict[FanKey, dict[str, Any]] = field(default_factory=dict)
    conversations: dict[ConversationKey, dict[str, Any]] = field(default_factory=dict)
    new_fans: set[FanKey] = field(default_factory=set)
    renamed_fans: set[FanKey] = field(default_factory=set)
    touched_fans: set[FanKey] = field(default_factory=set)
    touched_conversations: set[ConversationKey] = field(default_factory=set)
    messages: list[dict[str, Any]] = field(default_factory=list)


def _new_fan(item: InboundMessage, profile: dict[str, str], now: datetime) -> dict[str, Any]:
    """A fan row as `_INSERT_FANS` creates it (the other columns at their defaults)."""
    return {
        "id": uuid.uuid4(),
        "creator_id": item.creator_id,
        "platform": item.profile.platform,
        "platform_fan_id": item.profile.platform_fan_id,
        "display_name": "",
        "custom_display_name": "",
        "handle": "",
        "avatar_url": "",
        "email": "",
        "tags": [],
        "notes": "",
        "value_cents": 0,
        "subscription_state": "none",
        "subscribed_at": None,
        "subscription_expires_at": None,
        "last_seen_at": None,
        "last_message_at": None,
        "custom_fields": {},
        "created_at": now,
        "updated_at": now,
        **profile,
    }


class MessageIngest:
    """Stores inbound platform messages in batches (inside the caller's transaction)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def receive(
        self, session: AsyncSession, items: Sequence[InboundMessage], inbox: PendingInbox
    ) -> int:
        """Stores each new platform message of `items` once, in order; returns how many."""
        connection = await driver_connection(session)
        fresh = await self._fresh(connection, items)
        if not fresh:
            return 0
        changes = _Changes()
        await self._lock(connection, fresh, changes)
        outbox = PendingOutbox()
        now = self._clock()
        for item in fresh:
            # Each message its own time, as when they came one at a time: messages without a
            # platform time keep their order.
            now = max(self._clock(), now + _TICK) if changes.messages else now
            self._play(item, now, changes, outbox, inbox)
        await self._write(connection, changes)
        await outbox.write(session)
        return len(fresh)

    async def _fresh(
        self, connection: asyncpg.Connection, items: Sequence[InboundMessage]
    ) -> list[InboundMessage]:
        """The first copy of each platform message that is not stored yet."""
        unique: dict[tuple[uuid.UUID, str, str], InboundMessage] = {}
        for item in items:
            key = (item.creator_id, item.profile.platform, item.platform_message_id)
            unique.setdefault(key, item)
        creators, platforms, ids = zip(*unique, strict=True)
        stored = await connection.fetch(_STORED_MESSAGES, creators, platforms, ids)
        for row in stored:
            unique.pop((row[0], row[1], row[2]), None)
        return list(unique.values())

    async def _lock(
        self, connection: asyncpg.Connection, items: Sequence[InboundMessage], changes: _Changes
    ) -> None:
        """Locks and reads the fans of `items` that exist, then their conversations."""
        keys = list(dict.fromkeys(item.fan_key for item in items))
        creators, platforms, fan_ids = zip(*keys, strict=True)
        for row in await connection.fetch(_LOCK_FANS, creators, platforms, fan_ids):
            fan = dict(row)
            changes.fans[(fan["creator_id"], fan["platform"], fan["platform_fan_id"])] = fan
        if not changes.fans:
            return
        found = list(changes.fans.values())
        rows = await connection.fetch(
            _LOCK_CONVERSATIONS,
            [fan["creator_id"] for fan in found],
            [fan["id"] for fan in found],
            [fan["platform"] for fan in found],
        )
        for row in rows:
            conversation = dict(row)
            key = (conversation["creator_id"], conversation["fan_id"], conversation["platform"])
            changes.conversations[key] = conversation

    def _play(
        self,
        item: InboundMessage,
        now: datetime,
        changes: _Changes,
        outbox: PendingOutbox,
        inbox: PendingInbox,
    ) -> None:
        """One message's effects on the rows in `changes`, and its events."""
        creator_id = item.creator_id
        profile = {
            name: value
            for name, value in (
                ("display_name", item.profile.display_name),
                ("handle", item.profile.handle),
                ("avatar_url", item.profile.avatar_url),
            )
            if value
        }
        key = item.fan_key
        fan = changes.fans.get(key)
        fan_event: tuple[str, events_pb2.FanCreated | events_pb2.FanUpdated] | None = None
        if fan is None:
            fan = changes.fans[key] = _new_fan(item, profile, now)
            changes.new_fans.add(key)
            fan_message = crm_pb2.Fan(**convert.fan_fields(fan))
            fan_event = (
                "crm.fan.created",
                events_pb2.FanCreated(
                    creator_id=str(creator_id),
                    fan=fan_message,
                    occurred_at=convert.timestamp(now),
                ),
            )
        else:
            changed = {name: value for name, value in profile.items() if fan[name] != value}
            if changed:
                fan.update(changed, updated_at=now)
                changes.renamed_fans.add(key)
                fan_message = crm_pb2.Fan(**convert.fan_fields(fan))
                fan_event = (
                    "crm.fan.updated",
                    events_pb2.FanUpdated(
                        creator_id=str(creator_id),
                        fan=fan_message,
                        occurred_at=convert.timestamp(now),
                    ),
                )
        if fan_event is not None:
            subject, event = fan_event
            outbox.add(
                subject,
                event,
                aggregate_type="fan",
                aggregate_id=fan["id"],
                creator_id=creator_id,
                request_id=item.request_id,
            )
            inbox.add(creator_id, FAN_UPDATED, event.fan)

        created_at = item.sent_at or now
        conversation_key = (creator_id, fan["id"], fan["platform"])
        conversation = changes.conversations.get(conversation_key)
        if conversation is None:
            conversation = changes.conversations[conversation_key] = {
                "id": uuid.uuid4(),
                "creator_id": creator_id,
                "fan_id": fan["id"],
                "platform": fan["platform"],
                "unread_count": 0,
                "last_message_at": created_at,
                "last_message_preview": "",
                "pinned": False,
                "archived": False,
                "assigned_member_id": None,
                "created_at": created_at,
                "updated_at": created_at,
            }
        message = {
            "id": uuid.uuid4(),
            "creator_id": creator_id,
            "conversation_id": conversation["id"],
            "fan_id": fan["id"],
            "platform": item.profile.platform,
            "direction": "in",
            "text": item.text,
            "price_cents": max(item.price_cents, 0),
            "attachments": item.attachments,
            "read": False,
            "read_at": None,
            "delivery_status": "received",
            "failure_reason": None,
            "platform_message_id": item.platform_message_id,
            "idempotency_key": None,
            "sender_kind": "fan",
            "sender_id": item.profile.platform_fan_id,
            "created_at": created_at,
            "sent_at": created_at,
            "unlocked_at": None,
            "updated_at": now,
        }
        changes.messages.append(message)

        # The conversation and fan after a new message (as `CrmService._touch_conversation`).
        conversation["updated_at"] = now
        if created_at >= conversation["last_message_at"]:
            conversation["last_message_at"] = created_at
            conversation["last_message_preview"] = convert.preview(item.text)
        conversation["unread_count"] += 1
        conversation["archived"] = False
        changes.touched_conversations.add(conversation_key)
        if fan["last_message_at"] is None or created_at > fan["last_message_at"]:
            fan["last_message_at"] = created_at
            changes.touched_fans.add(key)
        if fan["last_seen_at"] is None or created_at > fan["last_seen_at"]:
            fan["last_seen_at"] = created_at
            changes.touched_fans.add(key)

        message_proto = crm_pb2.Message(**convert.message_fields(message))
        outbox.add(
            "crm.message.received",
            events_pb2.MessageReceived(
                creator_id=str(creator_id),
                message=message_proto,
                occurred_at=convert.timestamp(now),
                # As this message leaves them: the AI agent drafts from it without a call back.
                fan=crm_pb2.Fan(**convert.fan_fields(fan)),
            ),
            aggregate_type="conversation",
            aggregate_id=conversation["id"],
            creator_id=creator_id,
            request_id=item.request_id,
        )
        inbox.add(creator_id, MESSAGE_RECEIVED, message_proto)
        inbox.add(
            creator_id,
            CONVERSATION_UPDATED,
            crm_pb2.Conversation(
                **convert.conversation_fields(conversation, convert.fan_fields(fan))
            ),
        )

    async def _write(self, connection: asyncpg.Connection, changes: _Changes) -> None:
        # Created in key order, like every batch's new fans (`lock_fans`).
        new_fans = [changes.fans[key] for key in sorted(changes.new_fans)]
        if new_fans:
            inserted = await connection.fetch(
                _INSERT_FANS,
                *_columns(
                    new_fans,
                    "id",
                    "creator_id",
                    "platform",
                    "platform_fan_id",
                    "display_name",
                    "handle",
                    "avatar_url",
                    "last_seen_at",
                    "last_message_at",
                    "created_at",
                    "updated_at",
                ),
            )
            if len(inserted) != len(new_fans):
                raise ConcurrentWrite("a fan was created concurrently; retrying")
        renamed = [changes.fans[key] for key in changes.renamed_fans - changes.new_fans]
        if renamed:
            await connection.execute(
                _UPDATE_FAN_PROFILES,
                *_columns(
                    renamed,
                    "creator_id",
                    "id",
                    "display_name",
                    "handle",
                    "avatar_url",
                    "updated_at",
                ),
            )
        touched = [changes.fans[key] for key in changes.touched_fans - changes.new_fans]
        if touched:
            await connection.execute(
                _UPDATE_FAN_TIMES,
                *_columns(touched, "creator_id", "id", "last_seen_at", "last_message_at"),
            )
        conversations = [changes.conversations[key] for key in changes.touched_conversations]
        upserted = await connection.fetch(
            _UPSERT_CONVERSATIONS,
            *_columns(
                conversations,
                "id",
                "creator_id",
                "fan_id",
                "platform",
                "unread_count",
                "last_message_at",
                "last_message_preview",
                "archived",
                "created_at",
                "updated_at",
            ),
        )
        if len(upserted) != len(conversations):
            raise ConcurrentWrite("a conversation changed hands concurrently; retrying")
        messages = changes.messages
        stored = await connection.fetch(
            _INSERT_MESSAGES,
            *_columns(
                messages,
                "id",
                "creator_id",
                "conversation_id",
                "fan_id",
                "platform",
                "text",
                "price_cents",
            ),
            [convert.json_text(message["attachments"]) for message in messages],
            *_columns(messages, "platform_message_id", "sender_id", "created_at", "updated_at"),
        )
        if len(stored) != len(messages):
            raise ConcurrentWrite("a message was stored concurrently; retrying")


def _columns(rows: Sequence[dict[str, Any]], *names: str) -> list[list[Any]]:
    """One list per column name: the arrays `unnest` takes."""
    return [[row[name] for row in rows] for name in names]
