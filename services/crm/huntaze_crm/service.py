"""The CRM's use cases. Each public method is one transaction, and this is the only layer that
commits. Inputs are checked here (INVALID_ARGUMENT with field violations named after the request
fields); an id of another creator's object is NOT_FOUND, like an unknown one.

Every change writes, in its own transaction, the integration events for other services (the
outbox) and the events for the creator's open inboxes (`inbox_events`, written last).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf.message import Message as ProtoMessage
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.crm.v1 import crm_pb2, events_pb2
from huntaze_crm import convert, models
from huntaze_crm.audiences import AudienceFan, AudienceQuery, resolve_audience
from huntaze_crm.automation import (
    AUTOMATED_SENDERS,
    BUDGET_EXHAUSTED,
    FanUsage,
    budget_of,
    check_budget,
    set_budget,
    usage_of,
)
from huntaze_crm.automation import WINDOW as AUTOMATION_WINDOW
from huntaze_crm.models import SCHEMA
from huntaze_crm.pagination import Page
from huntaze_crm.reads import CONVERSATION_ORDERS, ConversationFilter, CrmReader
from huntaze_crm.repository import (
    FAN_LIST_SORT,
    FAN_SORTS,
    MESSAGE_SORT,
    PURCHASE_SORT,
    QUICK_REPLY_SORT,
    ConversationRow,
    CrmRepository,
    PendingInbox,
)
from huntaze_crm.segments import Segment
from huntaze_crm.validation import (
    MAX_CUSTOM_FIELDS_BYTES,
    MAX_TAGS,
    Violations,
    check_email,
    check_required,
    check_shortcut,
    check_url,
    normalise_tags,
    parse_id,
    parse_ids,
)
from huntaze_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from huntaze_kit.outbox import record_event

Clock = Callable[[], datetime]

# Inbox event types (the SSE event names).
MESSAGE_RECEIVED = "message.received"
MESSAGE_STATUS_CHANGED = "message.status_changed"
MESSAGE_READ = "message.read"
FAN_UPDATED = "fan.updated"
CONVERSATION_UPDATED = "conversation.updated"
INBOX_RESET = "inbox.reset"
# What the AI agent did (its ai.* events), shown on the inbox.
AI_SUGGESTION_CREATED = "ai.suggestion_created"
AI_SUGGESTION_RESOLVED = "ai.suggestion_resolved"
AI_HANDOFF_REQUESTED = "ai.handoff_requested"
# The creator's platform account, as its worker reports it: a banner, and its end.
ACCOUNT_NEEDS_ATTENTION = "account.needs_attention"
ACCOUNT_CONNECTED = "account.connected"

# Automated messages one fan may receive per rolling day, unless the creator chose otherwise.
DEFAULT_AUTOMATION_BUDGET = 20
MAX_AUTOMATION_BUDGET = 1000

_FAN_SORT_NAMES: dict[int, str] = {
    crm_pb2.FAN_SORT_UNSPECIFIED: "created_at_desc",
    crm_pb2.FAN_SORT_CREATED_AT_DESC: "created_at_desc",
    crm_pb2.FAN_SORT_LAST_MESSAGE_AT_DESC: "last_message_at_desc",
    crm_pb2.FAN_SORT_VALUE_CENTS_DESC: "value_cents_desc",
    crm_pb2.FAN_SORT_DISPLAY_NAME_ASC: "display_name_asc",
    crm_pb2.FAN_SORT_LAST_SEEN_AT_DESC: "last_seen_at_desc",
    crm_pb2.FAN_SORT_CREATED_AT_ASC: "created_at_asc",
    crm_pb2.FAN_SORT_LAST_MESSAGE_AT_ASC: "last_message_at_asc",
    crm_pb2.FAN_SORT_VALUE_CENTS_ASC: "value_cents_asc",
    crm_pb2.FAN_SORT_DISPLAY_NAME_DESC: "display_name_desc",
    crm_pb2.FAN_SORT_LAST_SEEN_AT_ASC: "last_seen_at_asc",
}
_CONVERSATION_SORT_NAMES: dict[int, str] = {
    crm_pb2.CONVERSATION_SORT_UNSPECIFIED: "last_message_at_desc",
    crm_pb2.CONVERSATION_SORT_LAST_MESSAGE_AT_DESC: "last_message_at_desc",
    crm_pb2.CONVERSATION_SORT_PINNED_FIRST: "pinned_first",
    crm_pb2.CONVERSATION_SORT_UNREAD_COUNT_DESC: "unread_count_desc",
    crm_pb2.CONVERSATION_SORT_LAST_MESSAGE_AT_ASC: "last_message_at_asc",
    crm_pb2.CONVERSATION_SORT_UNREAD_COUNT_ASC: "unread_count_asc",
}
_ARCHIVE_FILTERS: dict[int, bool | None] = {
    crm_pb2.ARCHIVE_FILTER_UNSPECIFIED: False,
    crm_pb2.ARCHIVE_FILTER_EXCLUDE_ARCHIVED: False,
    crm_pb2.ARCHIVE_FILTER_ONLY_ARCHIVED: True,
    crm_pb2.ARCHIVE_FILTER_ALL: None,
}
# Delivery status transitions an outgoing message may take (a late success wins over a failure).
_NEXT_STATUSES = {
    "queued": {"sending", "sent", "failed"},
    "sending": {"sent", "failed"},
    "failed": {"sent"},
    # A campaign's mass message taken back (`onlyfans.mass_message.unsent`); final.
    "sent": {"unsent"},
    "unsent": set(),
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def _not_found(what: str) -> NotFound:
    return NotFound(
        message=f"{what} not found.", reason=f"{what.upper().replace(' ', '_')}_NOT_FOUND"
    )


# Unknown fans named one by one in a bulk call's answer, at most.
MAX_NAMED_FANS = 20


def _fans_not_found(fan_ids: Sequence[str], found: set[uuid.UUID], field: str) -> NotFound:
    """The fans of a bulk request (all valid ids) that are not the caller's, each named with
    its first place in the request (`fan_ids[3]`)."""
    missing: dict[uuid.UUID, int] = {}
    for index, value in enumerate(fan_ids):
        fan_id = uuid.UUID(value)
        if fan_id not in found:
            missing.setdefault(fan_id, index)
    named = list(missing.items())[:MAX_NAMED_FANS]
    listed = ", ".join(str(fan_id) for fan_id, _ in named)
    if len(missing) == 1:
        message = f"Fan {listed} not found."
    else:
        more = len(missing) - len(named)
        message = f"Fans not found: {listed}" + (f" and {more} more." if more else ".")
    return NotFound(
        message=message,
        reason="FAN_NOT_FOUND",
        violations=[
            FieldViolation(f"{field}[{index}]", f"no fan {fan_id}") for fan_id, index in named
        ],
    )


@dataclass(frozen=True)
class Sender:
    """Who writes an outgoing message: `creator`, `team_member`, `ai` or `automation`, and
    the user id or service name."""

    kind: str
    id: str


@dataclass(frozen=True)
class FanProfile:
    """A fan as a platform describes them (from an inbound event)."""

    platform: str
    platform_fan_id: str
    display_name: str = ""
    handle: str = ""
    avatar_url: str = ""


@dataclass(frozen=True)
class FanPatch:
    """UpdateFan: the fields to replace; None leaves a field as it is."""

    # The creator's own name for the fan ("": none, the platform's is shown).
    display_name: str | None = None
    handle: str | None = None
    avatar_url: str | None = None
    email: str | None = None
    notes: str | None = None
    tags: Sequence[str] | None = None
    custom_fields: dict[str, Any] | None = None


@dataclass
class _Effects:
    """Events of one transaction: outbox rows now, inbox rows at the end (`finish`)."""

    session: AsyncSession
    creator_id: uuid.UUID
    now: datetime
    inbox: list[tuple[str, bytes]] = field(default_factory=list)
    # When set, `finish` leaves the inbox rows to it (written once at the end of a batch).
    pending: PendingInbox | None = None

    async def publish(
        self, subject: str, event: ProtoMessage, *, aggregate_type: str, aggregate_id: uuid.UUID
    ) -> None:
        await record_event(
            self.session,
            schema=SCHEMA,
            subject=subject,
            event=event,
            aggregate_type=aggregate_type,
            aggregate_id=str(aggregate_id),
            creator_id=str(self.creator_id),
        )

    def notify(self, kind: str, payload: ProtoMessage) -> None:
        self.inbox.append((kind, payload.SerializeToString(deterministic=True)))

    async def fan_changed(self, fan: models.Fan, *, created: bool = False) -> None:
        message = convert.fan(fan)
        occurred = convert.timestamp(self.now)
        if created:
            await self.publish(
                "crm.fan.created",
                events_pb2.FanCreated(
                    creator_id=str(self.creator_id), fan=message, occurred_at=occurred
                ),
                aggregate_type="fan",
                aggregate_id=fan.id,
            )
        else:
            await self.publish(
                "crm.fan.updated",
                events_pb2.FanUpdated(
                    creator_id=str(self.creator_id), fan=message, occurred_at=occurred
                ),
                aggregate_type="fan",
                aggregate_id=fan.id,
            )
        self.notify(FAN_UPDATED, message)

    async def finish(self, repo: CrmRepository) -> None:
        events = [(self.creator_id, kind, payload) for kind, payload in self.inbox]
        self.inbox = []
        if self.pending is not None:
            self.pending.events += events
        else:
            await repo.append_inbox_events(events=events, now=self.now)


@dataclass(frozen=True)
class MassRecipient:
    """One fan's answer to `record_mass_message`: their message, or why they are left out."""

    fan_id: uuid.UUID
    message: models.Message | None
    refused_reason: str
    platform_fan_id: str


class CrmService:
    """Use cases over one creator's data; `creator_id` is always the caller's creator."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        reader: CrmReader,
        clock: Clock = utc_now,
        automation_budget: int = DEFAULT_AUTOMATION_BUDGET,
    ) -> None:
        self._sessions = sessions
        self._reader = reader
        self._clock = clock
        self._automation_budget = automation_budget

    @property
    def clock(self) -> Clock:
        return self._clock

    # --- fans ------------------------------------------------------------------------------------

    async def list_fans(
        self,
        *,
        creator_id: uuid.UUID,
        segment: crm_pb2.SegmentFilter | None,
        query: str,
        sort: int,
        page: Page,
    ) -> tuple[list[models.Fan], str]:
        violations = Violations()
        query = query.strip()
        sort_name = _FAN_SORT_NAMES.get(sort)
        if sort_name is None:
            violations.add("sort", f"{sort} is not a valid value")
        violations.raise_if_any()
        parsed = Segment.from_proto(segment, "filter") if segment is not None else None
        order = FAN_SORTS[sort_name or "created_at_desc"]
        async with self._sessions() as session:
            rows = await CrmRepository(session).list_fans(
                creator_id=creator_id,
                segment=parsed,
                query=query,
                sort=order,
                page=page,
                now=self._clock(),
            )
        return order.paginate(rows, page)

    async def get_fan(self, *, creator_id: uuid.UUID, fan_id: str) -> models.Fan:
        fan_uuid = parse_id(fan_id, "fan_id")
        async with self._sessions() as session:
            fan = await CrmRepository(session).get_fan(creator_id=creator_id, fan_id=fan_uuid)
        if fan is None:
            raise _not_found("Fan")
        return fan

    async def get_fans(self, *, creator_id: uuid.UUID, fan_ids: Sequence[str]) -> list[models.Fan]:
        violations = Violations()
        ids = parse_ids(fan_ids, "fan_ids", violations)
        violations.raise_if_any()
        async with self._sessions() as session:
            fans = await CrmRepository(session).get_fans(creator_id=creator_id, fan_ids=ids)
        if len(fans) != len(set(ids)):  # all or nothing, like the other calls naming many fans
            raise _not_found("Fan")
        return fans

    async def create_fan(
        self,
        *,
        creator_id: uuid.UUID,
        platform: int,
        platform_fan_id: str,
        display_name: str,
        handle: str,
        avatar_url: str,
        email: str,
        tags: Sequence[str],
        notes: str,
        custom_fields: dict[str, Any] | None,
    ) -> models.Fan:
        violations = Violations()
        platform_name = convert.PLATFORM.db(platform)
        if platform_name is None:
            violations.add("platform", "is required (a valid platform)")
        values = _fan_values(
            violations,
            FanPatch(
                display_name=display_name,
                handle=handle,
                avatar_url=avatar_url,
                email=email,
                notes=notes,
                tags=tags,
                custom_fields=custom_fields or {},
            ),
        )
        violations.raise_if_any()
        now = self._clock()
        async with self._sessions() as session:
            repo = CrmRepository(session)
            fan = await repo.insert_fan(
                creator_id=creator_id,
                values={
                    **values,
                    "platform": platform_name,
                    "platform_fan_id": platform_fan_id.strip() or None,
                },
                now=now,
            )
            if fan is None:
                raise AlreadyExists(
                    message="A fan with this platform account already exists.",
                    reason="FAN_EXISTS",
                )
            effects = _Effects(session, creator_id, now)
            await effects.fan_changed(fan, created=True)
            await effects.finish(repo)
            await session.commit()
        return fan

    async def update_fan(
        self, *, creator_id: uuid.UUID, fan_id: str, patch: FanPatch
    ) -> models.Fan:
        violations = Violations()
        fan_uuid = parse_id(fan_id, "fan_id", violations)
        values = _fan_values(violations, patch)
        violations.raise_if_any()
        now = self._clock()
        async with self._sessions() as session:
            repo = CrmRepository(session)
            current = await repo.get_fan(creator_id=creator_id, fan_id=fan_uuid, for_update=True)
            if current is None:
                raise _not_found("Fan")
            changed = {k: v for k, v in values.items() if getattr(current, k) != v}
            if not changed:
                return current
            fan = await repo.update_fan(
                creator_id=creator_id, fan_id=fan_uuid, values={**changed, "updated_at": now}
            )
            if fan is None:
                raise _not_found("Fan")
            effects = _Effects(session, creator_id, now)
            await effects.fan_changed(fan)
            await effects.finish(repo)
            await session.commit()
        return fan

    async def delete_fan(self, *, creator_id: uuid.UUID, fan_id: str) -> None:
        fan_uuid = parse_id(fan_id, "fan_id")
        now = self._clock()
        async with self._sessions() as session:
            fan = await CrmRepository(session).delete_fan(creator_id=creator_id, fan_id=fan_uuid)
            if fan is None:
                raise _not_found("Fan")
            await _Effects(session, creator_id, now).publish(
                "crm.fan.deleted",
                events_pb2.FanDeleted(
                    creator_id=str(creator_id),
                    fan_id=str(fan.id),
                    platform=convert.PLATFORM.proto(fan.platform),  # type: ignore[arg-type]
                    platform_fan_id=fan.platform_fan_id or "",
                    occurred_at=convert.timestamp(now),
                ),
                aggregate_type="fan",
                aggregate_id=fan.id,
            )
            await session.commit()

    async def list_fan_purchases(
        self, *, creator_id: uuid.UUID, fan_id: str, page: Page
    ) -> tuple[list[models.Purchase], str]:
        fan_uuid = parse_id(fan_id, "fan_id")
        async with self._sessions() as session:
            repo = CrmRepository(session)
            if await repo.get_fan(creator_id=creator_id, fan_id=fan_uuid) is None:
                raise _not_found("Fan")
            rows = await repo.list_purchases(creator_id=creator_id, fan_id=fan_uuid, page=page)
        return PURCHASE_SORT.paginate(rows, page)

    async def update_fan_tags(
        self,
        *,
        creator_id: uuid.UUID,
        fan_ids: Sequence[str],
        add_tags: Sequence[str],
        remove_tags: Sequence[str],
    ) -> int:
        violations = Violations()
        ids = parse_ids(fan_ids, "fan_ids", violations)
        add = normalise_tags(add_tags, "add_tags", violations)
        remove = normalise_tags(remove_tags, "remove_tags", violations)
        if not add and not remove:
            violations.add("add_tags", "give tags to add or to remove")
        violations.raise_if_any()
        now = self._clock()
        async with self._sessions() as session:
            repo = CrmRepository(session)
            found = await repo.existing_fan_ids(creator_id=creator_id, fan_ids=ids, for_update=True)
            if len(found) != len(ids):
                raise _fans_not_found(fan_ids, found, "fan_ids")
            changed = await repo.change_tags(
                creator_id=creator_id, fan_ids=ids, add=add, remove=remove, now=now
            )
            too_many = [fan for fan in changed if len(fan.tags) > MAX_TAGS]
            if too_many:
                raise InvalidArgument.for_field(
                    "add_tags", f"a fan would have more than {MAX_TAGS} tags"
                )
            effects = _Effects(session, creator_id, now)
            for fan in changed:
                await effects.fan_changed(fan)
            await effects.finish(repo)
            await session.commit()
        return len(changed)

    # --- conversations ---------------------------------------------------------------------------

    async def list_conversations(
        self,
        *,
        creator_id: uuid.UUID,
        unread_only: bool,
        platform: int,
        pinned: bool | None = None,
        query: str,
        archive_filter: int,
        sort: int,
        page: Page,
    ) -> tuple[list[asyncpg.Record], str]:
        """A page of conversations, each record with its fan's columns (`reads`), and the next
        page's token."""
        violations = Violations()
        query = query.strip()
        platform_name = convert.PLATFORM.db(platform)
        if platform != crm_pb2.PLATFORM_UNSPECIFIED and platform_name is None:
            violations.add("platform", f"{platform} is not a valid value")
        sort_name = _CONVERSATION_SORT_NAMES.get(sort)
        if sort_name is None:
            violations.add("sort", f"{sort} is not a valid value")
        if archive_filter not in _ARCHIVE_FILTERS:
            violations.add("archive_filter", f"{archive_filter} is not a valid value")
        violations.raise_if_any()
        return await self._reader.list_conversations(
            creator_id=creator_id,
            where=ConversationFilter(
                unread_only=unread_only,
                platform=platform_name,
                archived=_ARCHIVE_FILTERS[archive_filter],
                pinned=pinned,
                query=query,
            ),
            order=CONVERSATION_ORDERS[sort_name or "last_message_at_desc"],
            page=page,
        )

    async def get_conversation(
        self, *, creator_id: uuid.UUID, conversation_id: str
    ) -> ConversationRow:
        conversation_uuid = parse_id(conversation_id, "conversation_id")
        async with self._sessions() as session:
            row = await CrmRepository(session).get_conversation_with_fan(
                creator_id=creator_id, conversation_id=conversation_uuid
            )
        if row is None:
            raise _not_found("Conversation")
        return row

    async def update_conversation(
        self,
        *,
        creator_id: uuid.UUID,
        conversation_id: str,
        pinned: bool | None,
        archived: bool | None,
        assigned_member_id: str | None,
    ) -> ConversationRow:
        violations = Violations()
        conversation_uuid = parse_id(conversation_id, "conversation_id", violations)
        values: dict[str, Any] = {}
        if pinned is not None:
            values["pinned"] = pinned
        if archived is not None:
            values["archived"] = archived
        if assigned_member_id is not None:
            values["assigned_member_id"] = (
                parse_id(assigned_member_id, "assigned_member_id", violations)
                if assigned_member_id
                else None
            )
        violations.raise_if_any()
        now = self._clock()
        async with self._sessions() as session:
            repo = CrmRepository(session)
            current = await repo.get_conversation(
                creator_id=creator_id, conversation_id=conversation_uuid, for_update=True
            )
            if current is None:
                raise _not_found("Conversation")
            changed = {k: v for k, v in values.items() if getattr(current, k) != v}
            if changed:
                await repo.update_conversation(
                    creator_id=creator_id,
                    conversation_id=conversation_uuid,
                    values={**changed, "updated_at": now},
                )
            row = await repo.get_conversation_with_fan(
                creator_id=creator_id, conversation_id=conversation_uuid
            )
            assert row is not None
            if changed:
                effects = _Effects(session, creator_id, now)
                effects.notify(CONVERSATION_UPDATED, convert.conversation(*row))
                await effects.finish(repo)
                await session.commit()
        return row

    async def mark_conversation_read(
        self, *, creator_id: uuid.UUID, conversation_id: str
    ) -> ConversationRow:
        conversation_uuid = parse_id(conversation_id, "conversation_id")
        async with self._sessions() as session:
            repo = CrmRepository(session)
            conversation = await repo.get_conversation(
                creator_id=creator_id, conversation_id=conversation_uuid, for_update=True
            )
            if conversation is None:
                raise _not_found("Conversation")
            await self._mark_read(repo, creator_id, conversation, None)
            row = await repo.get_conversation_with_fan(
                creator_id=creator_id, conversation_id=conversation_uuid
            )
            assert row is not None
            await session.commit()
        return row

    async def _mark_read(
        self,
        repo: CrmRepository,
        creator_id: uuid.UUID,
        conversation: models.Conversation,
        message_ids: Sequence[uuid.UUID] | None,
    ) -> None:
        now = self._clock()
        read_ids = await repo.mark_read(
            creator_id=creator_id,
            conversation_id=conversation.id,
            message_ids=message_ids,
            now=now,
        )
        if not read_ids:
            return
        unread = await repo.count_unread(creator_id=creator_id, conversation_id=conversation.id)
        await repo.update_conversation(
            creator_id=creator_id,
            conversation_id=conversation.id,
            values={"unread_count": unread, "updated_at": now},
        )
        row = await repo.get_conversation_with_fan(
            creator_id=creator_id, conversation_id=conversation.id
        )
        assert row is not None
        effects = _Effects(repo.session, creator_id, now)
        ids = [str(message_id) for message_id in read_ids]
        await effects.publish(
            "crm.message.read",
            events_pb2.MessageRead(
                creator_id=str(creator_id),
                conversation_id=str(conversation.id),
                fan_id=str(conversation.fan_id),
                message_ids=ids,
                read_at=convert.timestamp(now),
                occurred_at=convert.timestamp(now),
            ),
            aggregate_type="conversation",
            aggregate_id=conversation.id,
        )
        effects.notify(
            MESSAGE_READ,
            crm_pb2.MessagesRead(
                conversation_id=str(conversation.id),
                message_ids=ids,
                read_at=convert.timestamp(now),
            ),
        )
        effects.notify(CONVERSATION_UPDATED, convert.conversation(*row))
        await effects.finish(repo)

    # --- messages --------------------------------------------------------------------------------

    async def list_messages(
        self, *, creator_id: uuid.UUID, conversation_id: str, page: Page
    ) -> tuple[list[models.Message], str]:
        conversation_uuid = parse_id(conversation_id, "conversation_id")
        return await self._messages(creator_id, conversation_uuid, "", page)

    async def recent_messages(
        self, *, creator_id: uuid.UUID, conversation_ids: Sequence[str], limit: int
    ) -> dict[uuid.UUID, list[models.Message]]:
        """The last `limit` messages of each conversation, newest first; all or nothing, like
        the calls naming many fans."""
        violations = Violations()
        ids = parse_ids(conversation_ids, "conversation_ids", violations)
        violations.raise_if_any()
        async with self._sessions() as session:
            repo = CrmRepository(session)
            found = await repo.count_conversations(creator_id=creator_id, conversation_ids=ids)
            if found != len(set(ids)):
                raise _not_found("Conversation")
            rows = await repo.recent_messages(
                creator_id=creator_id, conversation_ids=ids, limit=limit
            )
        recent: dict[uuid.UUID, list[models.Message]] = {conversation: [] for conversation in ids}
        for row in rows:
            recent[row.conversation_id].append(row)
        return recent

    async def search_messages(
        self, *, creator_id: uuid.UUID, query: str, conversation_id: str, page: Page
    ) -> tuple[list[models.Message], str]:
        violations = Violations()
        query = query.strip()
        if not query:
            violations.add("query", "is required")
        conversation_uuid = (
            parse_id(conversation_id, "conversation_id", violations) if conversation_id else None
        )
        violations.raise_if_any()
        return await self._messages(creator_id, conversation_uuid, query, page)

    async def _messages(
        self,
        creator_id: uuid.UUID,
        conversation_id: uuid.UUID | None,
        query: str,
        page: Page,
    ) -> tuple[list[models.Message], str]:
        async with self._sessions() as session:
            repo = CrmRepository(session)
            if conversation_id is not None and (
                await repo.get_conversation(creator_id=creator_id, conversation_id=conversation_id)
                is None
            ):
                raise _not_found("Conversation")
            rows = await repo.list_messages(
                creator_id=creator_id, conversation_id=conversation_id, query=query, page=page
            )
        return MESSAGE_SORT.paginate(rows, page)

    async def get_message(self, *, creator_id: uuid.UUID, message_id: str) -> models.Message:
        message_uuid = parse_id(message_id, "message_id")
        async with self._sessions() as session:
            message = await CrmRepository(session).get_message(
                creator_id=creator_id, message_id=message_uuid
            )
        if message is None:
            raise _not_found("Message")
        return message

    async def mark_message_read(self, *, creator_id: uuid.UUID, message_id: str) -> models.Message:
        message_uuid = parse_id(message_id, "message_id")
        async with self._sessions() as session:
            repo = CrmRepository(session)
            message = await repo.get_message(creator_id=creator_id, message_id=message_uuid)
            if message is None:
                raise _not_found("Message")
            if message.direction != "in" or message.read:
                return message
            conversation = await repo.get_conversation(
                creator_id=creator_id, conversation_id=message.conversation_id, for_update=True
            )
            assert conversation is not None
            await self._mark_read(repo, creator_id, conversation, [message.id])
            updated = await repo.get_message(creator_id=creator_id, message_id=message_uuid)
            assert updated is not None
            await session.commit()
        return updated

    async def send_message(
        self,
        *,
        creator_id: uuid.UUID,
        sender: Sender,
        conversation_id: str,
        fan_id: str,
        text: str,
        price_cents: int,
        attachments: Sequence[crm_pb2.Attachment],
        idempotency_key: str,
    ) -> tuple[models.Message, bool]:
        """The queued message and whether it is new (False: the key's earlier message)."""
        violations = Violations()
        conversation_uuid: uuid.UUID | None = None
        fan_uuid: uuid.UUID | None = None
        if conversation_id and fan_id:
            violations.add("fan_id", "give conversation_id or fan_id, not both")
        elif conversation_id:
            conversation_uuid = parse_id(conversation_id, "conversation_id", violations)
        elif fan_id:
            fan_uuid = parse_id(fan_id, "fan_id", violations)
        else:
            violations.add("conversation_id", "is required (or fan_id)")
        checked_attachments = stored_attachments(attachments, violations)
        if not text.strip() and not checked_attachments:
            violations.add("text", "is required when there are no attachments")
        key = idempotency_key.strip()
        check_required(key, "idempotency_key", violations)
        violations.raise_if_any()

        now = self._clock()
        async with self._sessions() as session:
            repo = CrmRepository(session)
            earlier = await repo.get_message_by_idempotency_key(
                creator_id=creator_id, idempotency_key=key
            )
            if earlier is not None:
                _same_request(earlier, conversation_uuid, fan_uuid, text, price_cents)
                return earlier, False
            conversation, fan = await self._send_target(
                repo, creator_id, conversation_uuid, fan_uuid, now
            )
            if not fan.platform_fan_id:
                raise FailedPrecondition(
                    message="This fan has no platform account to write to.",
                    reason="FAN_NOT_ON_PLATFORM",
                )
            if sender.kind in AUTOMATED_SENDERS:
                await check_budget(
                    session,
                    creator_id=creator_id,
                    conversation_id=conversation.id,
                    now=now,
                    default=self._automation_budget,
                )
            message = await repo.insert_message(
                creator_id=creator_id,
                values={
                    "conversation_id": conversation.id,
                    "fan_id": fan.id,
                    "platform": fan.platform,
                    "direction": "out",
                    "text": text,
                    "price_cents": price_cents,
                    "attachments": checked_attachments,
                    "read": True,
                    "delivery_status": "queued",
                    "idempotency_key": key,
                    "sender_kind": sender.kind,
                    "sender_id": sender.id,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if message is None:  # a concurrent request with the same key won
                await session.rollback()
                winner = await repo.get_message_by_idempotency_key(
                    creator_id=creator_id, idempotency_key=key
                )
                if winner is None:
                    raise _not_found("Message")
                return winner, False
            conversation_row = await self._touch_conversation(
                repo,
                creator_id=creator_id,
                conversation=conversation,
                fan=fan,
                message=message,
                now=now,
                inbound=False,
            )
            effects = _Effects(session, creator_id, now)
            await effects.publish(
                "crm.message.send_requested",
                events_pb2.MessageSendRequested(
                    creator_id=str(creator_id),
                    message_id=str(message.id),
                    conversation_id=str(conversation.id),
                    fan_id=str(fan.id),
                    platform=convert.PLATFORM.proto(fan.platform),  # type: ignore[arg-type]
                    platform_fan_id=fan.platform_fan_id,
                    text=text,
                    price_cents=price_cents,
                    attachments=[convert.attachment(a) for a in checked_attachments],
                    idempotency_key=key,
                    sender_kind=convert.SENDER_KIND.proto(sender.kind),  # type: ignore[arg-type]
                    sender_id=sender.id,
                    occurred_at=convert.timestamp(now),
                ),
                aggregate_type="conversation",
                aggregate_id=conversation.id,
            )
            effects.notify(MESSAGE_STATUS_CHANGED, convert.message(message))
            effects.notify(CONVERSATION_UPDATED, convert.conversation(*conversation_row))
            await effects.finish(repo)
            await session.commit()
        return message, True

    async def record_mass_message(
        self,
        *,
        creator_id: uuid.UUID,
        sender: Sender,
        fan_ids: Sequence[str],
        text: str,
        price_cents: int,
        attachments: Sequence[crm_pb2.Attachment],
        idempotency_key: str,
    ) -> list[MassRecipient]:
        """One automated message to many fans that the platform's mass-message queue delivers:
        per fan (in fan key order, as the platform event batches lock fans), the budget checked
        and an outgoing message stored as `sending` under `<key>:<fan id>`, with no send request
        (the caller's queue sends it). A fan seen under the key before answers its message."""
        violations = Violations()
        ids = parse_ids(fan_ids, "fan_ids", violations)
        checked_attachments = stored_attachments(attachments, violations)
        if not text.strip() and not checked_attachments:
            violations.add("text", "is required when there are no attachments")
        key = idempotency_key.strip()
        check_required(key, "idempotency_key", violations)
        violations.raise_if_any()
        if sender.kind not in AUTOMATED_SENDERS:
            raise InvalidArgument.for_field("sender_kind", "a mass message is automated")
        now = self._clock()
        answers: dict[uuid.UUID, MassRecipient] = {}
        async with self._sessions() as session:
            repo = CrmRepository(session)
            # Three reads for the whole chunk: the fans, locked in key order; the messages of
            # a retry; each fan's automated messages of the last 24 hours (the budget's count,
            # under those locks, as SendMessage checks it).
            fans = list(
                (
                    await session.scalars(
                        select(models.Fan)
                        .where(models.Fan.creator_id == creator_id, models.Fan.id.in_(ids))
                        .order_by(
                            models.Fan.platform.collate("C"),
                            models.Fan.platform_fan_id.collate("C"),
                        )
                        .with_for_update()
                    )
                ).all()
            )
            for missing in set(ids) - {fan.id for fan in fans}:
                answers[missing] = MassRecipient(missing, None, "FAN_NOT_FOUND", "")
            keys = {fan.id: f"{key}:{fan.id}" for fan in fans}
            earlier = {
                message.fan_id: message
                for message in await session.scalars(
                    select(models.Message).where(
                        models.Message.creator_id == creator_id,
                        models.Message.idempotency_key.in_(list(keys.values())),
                    )
                )
            }
            limit = await budget_of(session, creator_id=creator_id, default=self._automation_budget)
            counted = await session.execute(
                select(models.Message.fan_id, func.count())
                .where(
                    models.Message.creator_id == creator_id,
                    models.Message.fan_id.in_([fan.id for fan in fans]),
                    models.Message.created_at > now - AUTOMATION_WINDOW,
                    models.Message.sender_kind.in_(AUTOMATED_SENDERS),
                )
                .group_by(models.Message.fan_id)
            )
            used: dict[uuid.UUID, int] = {fan_id: int(count) for fan_id, count in counted.all()}
            effects = _Effects(session, creator_id, now)
            for fan in fans:
                fan_key = keys[fan.id]
                if fan.id in earlier:
                    answers[fan.id] = MassRecipient(
                        fan.id, earlier[fan.id], "", fan.platform_fan_id or ""
                    )
                    continue
                if not fan.platform_fan_id:
                    answers[fan.id] = MassRecipient(fan.id, None, "FAN_NOT_ON_PLATFORM", "")
                    continue
                if used.get(fan.id, 0) >= limit:
                    answers[fan.id] = MassRecipient(
                        fan.id, None, BUDGET_EXHAUSTED, fan.platform_fan_id or ""
                    )
                    continue
                conversation, _ = await repo.open_conversation(
                    creator_id=creator_id, fan=fan, now=now
                )
                message = await repo.insert_message(
                    creator_id=creator_id,
                    values={
                        "conversation_id": conversation.id,
                        "fan_id": fan.id,
                        "platform": fan.platform,
                        "direction": "out",
                        "text": text,
                        "price_cents": price_cents,
                        "attachments": checked_attachments,
                        "read": True,
                        "delivery_status": "sending",
                        "idempotency_key": fan_key,
                        "sender_kind": sender.kind,
                        "sender_id": sender.id,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
                if message is None:  # a concurrent request with the same key: ask again
                    raise Unavailable(
                        message="The mass message is being recorded; try again.",
                        reason="CONCURRENT_REQUEST",
                        retry_after_seconds=1.0,
                    )
                conversation_row = await self._touch_conversation(
                    repo,
                    creator_id=creator_id,
                    conversation=conversation,
                    fan=fan,
                    message=message,
                    now=now,
                    inbound=False,
                )
                effects.notify(MESSAGE_STATUS_CHANGED, convert.message(message))
                effects.notify(CONVERSATION_UPDATED, convert.conversation(*conversation_row))
                answers[fan.id] = MassRecipient(fan.id, message, "", fan.platform_fan_id or "")
            await effects.finish(repo)
            await session.commit()
        return [answers[fan_id] for fan_id in ids]

    async def automation_budget(self, *, creator_id: uuid.UUID) -> int:
        async with self._sessions() as session:
            return await budget_of(session, creator_id=creator_id, default=self._automation_budget)

    async def update_automation_budget(
        self, *, creator_id: uuid.UUID, messages_per_fan_per_day: int
    ) -> int:
        if not 0 <= messages_per_fan_per_day <= MAX_AUTOMATION_BUDGET:
            raise InvalidArgument.for_field(
                "budget.messages_per_fan_per_day", f"must be between 0 and {MAX_AUTOMATION_BUDGET}"
            )
        async with self._sessions() as session:
            await set_budget(
                session,
                creator_id=creator_id,
                messages_per_fan_per_day=messages_per_fan_per_day,
            )
            await session.commit()
        return messages_per_fan_per_day

    async def fan_automation_usage(self, *, creator_id: uuid.UUID, fan_id: str) -> FanUsage:
        fan = await self.get_fan(creator_id=creator_id, fan_id=fan_id)
        async with self._sessions() as session:
            return await usage_of(
                session,
                creator_id=creator_id,
                fan_id=fan.id,
                now=self._clock(),
                default=self._automation_budget,
            )

    async def resolve_audience(
        self,
        *,
        creator_id: uuid.UUID,
        list_id: str,
        subscription_states: Sequence[str],
        silent_for_days: int,
        start_after: str,
        limit: int,
        recent_sends_within_hours: int,
    ) -> list[AudienceFan]:
        """A page of a campaign's audience (see `audiences`)."""
        violations = Violations()
        list_uuid = parse_id(list_id, "list_id", violations) if list_id else None
        after = parse_id(start_after, "start_after", violations) if start_after else None
        violations.raise_if_any()
        query = AudienceQuery(
            list_id=list_uuid,
            subscription_states=tuple(subscription_states),
            silent_for_days=silent_for_days,
            after_fan_id=after,
            limit=limit,
            recent_sends_within=(
                timedelta(hours=recent_sends_within_hours) if recent_sends_within_hours else None
            ),
        )
        async with self._sessions() as session:
            return await resolve_audience(
                session, creator_id=creator_id, query=query, now=self._clock()
            )

    async def _send_target(
        self,
        repo: CrmRepository,
        creator_id: uuid.UUID,
        conversation_id: uuid.UUID | None,
        fan_id: uuid.UUID | None,
        now: datetime,
    ) -> tuple[models.Conversation, models.Fan]:
        """The conversation to write in and its fan, both locked (the fan first, as every
        writer does, so that concurrent writers never deadlock): by conversation id, or the
        fan's conversation, opened when missing."""
        if conversation_id is not None:
            found = await repo.get_conversation(
                creator_id=creator_id, conversation_id=conversation_id
            )
            if found is None:
                raise _not_found("Conversation")
            fan_id = found.fan_id
        assert fan_id is not None
        fan = await repo.get_fan(creator_id=creator_id, fan_id=fan_id, for_update=True)
        if fan is None:
            raise _not_found("Fan")
        if conversation_id is not None:
            conversation = await repo.get_conversation(
                creator_id=creator_id, conversation_id=conversation_id, for_update=True
            )
            if conversation is None:  # deleted meanwhile
                raise _not_found("Conversation")
            return conversation, fan
        conversation, _ = await repo.open_conversation(creator_id=creator_id, fan=fan, now=now)
        return conversation, fan

    async def _touch_conversation(
        self,
        repo: CrmRepository,
        *,
        creator_id: uuid.UUID,
        conversation: models.Conversation,
        fan: models.Fan,
        message: models.Message,
        now: datetime,
        inbound: bool,
    ) -> ConversationRow:
        """After a new message: last message time and preview (when it is the newest), unread
        count, and the fan's last message time."""
        values: dict[str, Any] = {"updated_at": now}
        newest = message.created_at >= conversation.last_message_at
        if newest:
            values["last_message_at"] = message.created_at
            values["last_message_preview"] = convert.preview(message.text)
        if inbound:
            values["unread_count"] = conversation.unread_count + 1
            values["archived"] = False
        updated = await repo.update_conversation(
            creator_id=creator_id, conversation_id=conversation.id, values=values
        )
        assert updated is not None
        fan_values: dict[str, Any] = {}
        if fan.last_message_at is None or message.created_at > fan.last_message_at:
            fan_values["last_message_at"] = message.created_at
        if inbound and (fan.last_seen_at is None or message.created_at > fan.last_seen_at):
            fan_values["last_seen_at"] = message.created_at
        if fan_values:
            refreshed = await repo.update_fan(
                creator_id=creator_id, fan_id=fan.id, values=fan_values
            )
            assert refreshed is not None
            fan = refreshed
        return updated, fan

    # --- quick replies ---------------------------------------------------------------------------

    async def list_quick_replies(
        self, *, creator_id: uuid.UUID, shortcut_prefix: str, page: Page
    ) -> tuple[list[models.QuickReply], str]:
        prefix = shortcut_prefix.strip()
        async with self._sessions() as session:
            rows = await CrmRepository(session).list_quick_replies(
                creator_id=creator_id, shortcut_prefix=prefix, page=page
            )
        return QUICK_REPLY_SORT.paginate(rows, page)

    async def get_quick_reply(
        self, *, creator_id: uuid.UUID, quick_reply_id: str
    ) -> models.QuickReply:
        reply_uuid = parse_id(quick_reply_id, "quick_reply_id")
        async with self._sessions() as session:
            reply = await CrmRepository(session).get_quick_reply(
                creator_id=creator_id, quick_reply_id=reply_uuid
            )
        if reply is None:
            raise _not_found("Quick reply")
        return reply

    async def create_quick_reply(
        self, *, creator_id: uuid.UUID, shortcut: str, text: str
    ) -> models.QuickReply:
        violations = Violations()
        shortcut = check_shortcut(shortcut, "shortcut", violations)
        check_required(text, "text", violations)
        violations.raise_if_any()
        async with self._sessions() as session:
            reply = await CrmRepository(session).insert_quick_reply(
                creator_id=creator_id, shortcut=shortcut, text=text, now=self._clock()
            )
            if reply is None:
                raise _shortcut_taken()
            await session.commit()
        return reply

    async def update_quick_reply(
        self,
        *,
        creator_id: uuid.UUID,
        quick_reply_id: str,
        shortcut: str | None,
        text: str | None,
    ) -> models.QuickReply:
        violations = Violations()
        reply_uuid = parse_id(quick_reply_id, "quick_reply_id", violations)
        values: dict[str, Any] = {}
        if shortcut is not None:
            values["shortcut"] = check_shortcut(shortcut, "shortcut", violations)
        if text is not None:
            values["text"] = check_required(text, "text", violations)
        violations.raise_if_any()
        async with self._sessions() as session:
            repo = CrmRepository(session)
            if "shortcut" in values and await repo.shortcut_taken(
                creator_id=creator_id, shortcut=values["shortcut"], other_than=reply_uuid
            ):
                if await repo.get_quick_reply(creator_id=creator_id, quick_reply_id=reply_uuid):
                    raise _shortcut_taken()
                raise _not_found("Quick reply")
            try:
                reply = await repo.update_quick_reply(
                    creator_id=creator_id,
                    quick_reply_id=reply_uuid,
                    values={**values, "updated_at": self._clock()},
                )
            except IntegrityError as err:  # the shortcut was taken concurrently
                raise _shortcut_taken() from err
            if reply is None:
                raise _not_found("Quick reply")
            await session.commit()
        return reply

    async def delete_quick_reply(self, *, creator_id: uuid.UUID, quick_reply_id: str) -> None:
        reply_uuid = parse_id(quick_reply_id, "quick_reply_id")
        async with self._sessions() as session:
            if not await CrmRepository(session).delete_quick_reply(
                creator_id=creator_id, quick_reply_id=reply_uuid
            ):
                raise _not_found("Quick reply")
            await session.commit()

    # --- fan lists -------------------------------------------------------------------------------

    async def list_fan_lists(
        self, *, creator_id: uuid.UUID, kind: int, page: Page
    ) -> tuple[list[tuple[models.FanList, int]], str]:
        kind_name = convert.FAN_LIST_KIND.db(kind)
        if kind != crm_pb2.FAN_LIST_KIND_UNSPECIFIED and kind_name is None:
            raise InvalidArgument.for_field("kind", f"{kind} is not a valid value")
        async with self._sessions() as session:
            repo = CrmRepository(session)
            rows = await repo.list_fan_lists(creator_id=creator_id, kind=kind_name, page=page)
            kept, token = FAN_LIST_SORT.paginate(rows, page)
            counted = [(row, await self._member_count(repo, creator_id, row)) for row in kept]
        return counted, token

    async def _member_count(
        self, repo: CrmRepository, creator_id: uuid.UUID, fan_list: models.FanList
    ) -> int:
        if fan_list.kind == "dynamic" and fan_list.segment is not None:
            return await repo.count_fans(
                creator_id=creator_id,
                segment=Segment.from_json(fan_list.segment),
                now=self._clock(),
            )
        return await repo.count_members(creator_id=creator_id, list_id=fan_list.id)

    async def get_fan_list(
        self, *, creator_id: uuid.UUID, list_id: str
    ) -> tuple[models.FanList, int]:
        list_uuid = parse_id(list_id, "list_id")
        async with self._sessions() as session:
            repo = CrmRepository(session)
            fan_list = await repo.get_fan_list(creator_id=creator_id, list_id=list_uuid)
            if fan_list is None:
                raise _not_found("List")
            return fan_list, await self._member_count(repo, creator_id, fan_list)

    async def create_fan_list(
        self,
        *,
        creator_id: uuid.UUID,
        name: str,
        kind: int,
        segment: crm_pb2.SegmentFilter | None,
    ) -> tuple[models.FanList, int]:
        violations = Violations()
        name = " ".join(name.split())
        check_required(name, "name", violations)
        kind_name = convert.FAN_LIST_KIND.db(kind)
        if kind_name is None:
            violations.add("kind", "is required (static or dynamic)")
        elif kind_name == "dynamic" and segment is None:
            violations.add("segment", "is required for a dynamic list")
        elif kind_name == "static" and segment is not None:
            violations.add("segment", "only dynamic lists have a segment")
        violations.raise_if_any()
        stored = Segment.from_proto(segment, "segment").to_json() if segment is not None else None
        assert kind_name is not None
        async with self._sessions() as session:
            repo = CrmRepository(session)
            fan_list = await repo.insert_fan_list(
                creator_id=creator_id, name=name, kind=kind_name, segment=stored, now=self._clock()
            )
            count = await self._member_count(repo, creator_id, fan_list)
            await session.commit()
        return fan_list, count

    async def update_fan_list(
        self,
        *,
        creator_id: uuid.UUID,
        list_id: str,
        name: str | None,
        segment: crm_pb2.SegmentFilter | None,
    ) -> tuple[models.FanList, int]:
        violations = Violations()
        list_uuid = parse_id(list_id, "list_id", violations)
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = " ".join(name.split())
            check_required(values["name"], "name", violations)
        violations.raise_if_any()
        if segment is not None:
            values["segment"] = Segment.from_proto(segment, "segment").to_json()
        async with self._sessions() as session:
            repo = CrmRepository(session)
            current = await repo.get_fan_list(
                creator_id=creator_id, list_id=list_uuid, for_update=True
            )
            if current is None:
                raise _not_found("List")
            if segment is not None and current.kind != "dynamic":
                raise InvalidArgument.for_field("segment", "only dynamic lists have a segment")
            fan_list = await repo.update_fan_list(
                creator_id=creator_id,
                list_id=list_uuid,
                values={**values, "updated_at": self._clock()},
            )
            assert fan_list is not None
            count = await self._member_count(repo, creator_id, fan_list)
            await session.commit()
        return fan_list, count

    async def delete_fan_list(self, *, creator_id: uuid.UUID, list_id: str) -> None:
        list_uuid = parse_id(list_id, "list_id")
        async with self._sessions() as session:
            if not await CrmRepository(session).delete_fan_list(
                creator_id=creator_id, list_id=list_uuid
            ):
                raise _not_found("List")
            await session.commit()

    async def list_fan_list_members(
        self, *, creator_id: uuid.UUID, list_id: str, page: Page
    ) -> tuple[list[models.Fan], str]:
        list_uuid = parse_id(list_id, "list_id")
        order = FAN_SORTS["created_at_desc"]
        async with self._sessions() as session:
            repo = CrmRepository(session)
            fan_list = await repo.get_fan_list(creator_id=creator_id, list_id=list_uuid)
            if fan_list is None:
                raise _not_found("List")
            if fan_list.kind == "dynamic" and fan_list.segment is not None:
                rows = await repo.list_fans(
                    creator_id=creator_id,
                    segment=Segment.from_json(fan_list.segment),
                    query="",
                    sort=order,
                    page=page,
                    now=self._clock(),
                )
            else:
                rows = await repo.list_members(
                    creator_id=creator_id, list_id=list_uuid, sort=order, page=page
                )
        return order.paginate(rows, page)

    async def change_fan_list_members(
        self, *, creator_id: uuid.UUID, list_id: str, fan_ids: Sequence[str], add: bool
    ) -> int:
        violations = Violations()
        list_uuid = parse_id(list_id, "list_id", violations)
        ids = parse_ids(fan_ids, "fan_ids", violations)
        violations.raise_if_any()
        async with self._sessions() as session:
            repo = CrmRepository(session)
            fan_list = await repo.get_fan_list(
                creator_id=creator_id, list_id=list_uuid, for_update=True
            )
            if fan_list is None:
                raise _not_found("List")
            found = await repo.existing_fan_ids(creator_id=creator_id, fan_ids=ids)
            if len(found) != len(ids):
                raise _fans_not_found(fan_ids, found, "fan_ids")
            if fan_list.kind != "static":
                raise FailedPrecondition(
                    message="A dynamic list's members follow its segment.",
                    reason="LIST_IS_DYNAMIC",
                )
            if add:
                changed = await repo.add_members(
                    creator_id=creator_id, list_id=list_uuid, fan_ids=ids, now=self._clock()
                )
            else:
                changed = await repo.remove_members(
                    creator_id=creator_id, list_id=list_uuid, fan_ids=ids
                )
            await session.commit()
        return changed

    async def preview_segment(
        self, *, creator_id: uuid.UUID, segment: crm_pb2.SegmentFilter
    ) -> int:
        parsed = Segment.from_proto(segment, "segment")
        async with self._sessions() as session:
            return await CrmRepository(session).count_fans(
                creator_id=creator_id, segment=parsed, now=self._clock()
            )

    # --- platform events (run inside a consumer's transaction; the consumer commits) ------------

    async def upsert_platform_fan(
        self,
        repo: CrmRepository,
        effects: _Effects,
        profile: FanProfile,
        *,
        subscription: dict[str, Any] | None = None,
    ) -> models.Fan:
        """The fan of a platform account, created or brought up to date (locked)."""
        creator_id = effects.creator_id
        fan = await repo.get_fan_by_platform_id(
            creator_id=creator_id,
            platform=profile.platform,
            platform_fan_id=profile.platform_fan_id,
            for_update=True,
        )
        profile_values = {
            key: value
            for key, value in (
                ("display_name", profile.display_name),
                ("handle", profile.handle),
                ("avatar_url", profile.avatar_url),
            )
            if value
        }
        if fan is None:
            fan = await repo.insert_fan(
                creator_id=creator_id,
                values={
                    "platform": profile.platform,
                    "platform_fan_id": profile.platform_fan_id,
                    **profile_values,
                    **(subscription or {}),
                },
                now=effects.now,
            )
            if fan is None:  # a concurrent event created it: let the consumer retry
                raise RuntimeError("fan created concurrently; retrying")
            await effects.fan_changed(fan, created=True)
            return fan
        values = {**profile_values, **(subscription or {})}
        changed = {k: v for k, v in values.items() if getattr(fan, k) != v}
        if changed:
            updated = await repo.update_fan(
                creator_id=creator_id,
                fan_id=fan.id,
                values={**changed, "updated_at": effects.now},
            )
            assert updated is not None
            fan = updated
            await effects.fan_changed(fan)
        return fan

    async def update_delivery(
        self,
        session: AsyncSession,
        *,
        creator_id: uuid.UUID,
        message_id: str,
        idempotency_key: str,
        status: str,
        platform_message_id: str = "",
        sent_at: datetime | None = None,
        reason: str = "",
        inbox: PendingInbox | None = None,
    ) -> models.Message | None:
        """Moves an outgoing message to `status`; None when the message is unknown or the
        change would go backwards (a late or repeated event). With `inbox`, the inbox events
        are left to it."""
        repo = CrmRepository(session)
        now = self._clock()
        message: models.Message | None = None
        try:
            message_uuid = uuid.UUID(message_id) if message_id else None
        except ValueError:
            message_uuid = None
        if message_uuid is not None:
            message = await repo.get_message(creator_id=creator_id, message_id=message_uuid)
        if message is None and idempotency_key:
            message = await repo.get_message_by_idempotency_key(
                creator_id=creator_id, idempotency_key=idempotency_key
            )
        if message is None or message.direction != "out":
            return None
        # The fan first, as every writer locks it: a purchase of this fan recorded at the same
        # time then commits before or after this change, never unseen by both (which would
        # leave the purchase unlinked); then the message itself, read again under the lock.
        await repo.get_fan(creator_id=creator_id, fan_id=message.fan_id, for_update=True)
        message = await repo.get_message(
            creator_id=creator_id, message_id=message.id, for_update=True
        )
        if message is None:
            return None
        if status not in _NEXT_STATUSES.get(message.delivery_status, set()):
            return None
        values: dict[str, Any] = {"delivery_status": status, "updated_at": now}
        if status == "sent":
            values["sent_at"] = sent_at or now
            values["failure_reason"] = None
            if platform_message_id:
                values["platform_message_id"] = platform_message_id
        if status == "failed":
            values["failure_reason"] = (reason or "Delivery failed.")[:1000]
        updated = await repo.update_message(
            creator_id=creator_id, message_id=message.id, values=values
        )
        assert updated is not None
        effects = _Effects(session, creator_id, now, pending=inbox)
        message_proto = convert.message(updated)
        if status == "sent":
            if platform_message_id:
                await self._link_purchases(repo, effects, updated)
            await effects.publish(
                "crm.message.sent",
                events_pb2.MessageSent(
                    creator_id=str(creator_id),
                    message=message_proto,
                    occurred_at=convert.timestamp(now),
                ),
                aggregate_type="conversation",
                aggregate_id=updated.conversation_id,
            )
        elif status == "failed":
            await effects.publish(
                "crm.message.failed",
                events_pb2.MessageFailed(
                    creator_id=str(creator_id),
                    message=message_proto,
                    reason=values["failure_reason"],
                    occurred_at=convert.timestamp(now),
                ),
                aggregate_type="conversation",
                aggregate_id=updated.conversation_id,
            )
        effects.notify(MESSAGE_STATUS_CHANGED, message_proto)
        await effects.finish(repo)
        return updated

    async def _link_purchases(
        self, repo: CrmRepository, effects: _Effects, message: models.Message
    ) -> None:
        """Purchases recorded before the message's platform id was known point to it now."""
        assert message.platform_message_id is not None
        linked = await repo.link_purchases(
            creator_id=effects.creator_id,
            platform=message.platform,
            platform_message_id=message.platform_message_id,
            message_id=message.id,
        )
        unlock = [p for p in linked if p.kind == "ppv_unlock"]
        if unlock and message.unlocked_at is None:
            await repo.update_message(
                creator_id=effects.creator_id,
                message_id=message.id,
                values={"unlocked_at": min(p.occurred_at for p in unlock)},
            )

    async def record_purchase(
        self,
        session: AsyncSession,
        *,
        creator_id: uuid.UUID,
        profile: FanProfile,
        platform_transaction_id: str,
        kind: str,
        amount_cents: int,
        currency: str,
        platform_message_id: str,
        occurred_at: datetime | None,
        inbox: PendingInbox | None = None,
    ) -> models.Purchase | None:
        """Stores a purchase once and recomputes the fan's spend; None when seen before. With
        `inbox`, the inbox events are left to it."""
        repo = CrmRepository(session)
        now = self._clock()
        existing = await repo.get_purchase_by_transaction(
            creator_id=creator_id,
            platform=profile.platform,
            platform_transaction_id=platform_transaction_id,
        )
        if existing is not None:
            return None
        effects = _Effects(session, creator_id, now, pending=inbox)
        fan = await self.upsert_platform_fan(repo, effects, profile)
        message: models.Message | None = None
        if platform_message_id:
            message = await repo.get_message_by_platform_id(
                creator_id=creator_id,
                platform=profile.platform,
                platform_message_id=platform_message_id,
            )
        when = occurred_at or now
        purchase = await repo.insert_purchase(
            creator_id=creator_id,
            values={
                "fan_id": fan.id,
                "message_id": message.id if message is not None else None,
                "platform": profile.platform,
                "kind": kind,
                "amount_cents": amount_cents,
                "currency": currency,
                "platform_transaction_id": platform_transaction_id,
                "platform_message_id": platform_message_id or None,
                "occurred_at": when,
                "created_at": now,
            },
        )
        if purchase is None:
            raise RuntimeError("purchase stored concurrently; retrying")
        if message is not None and kind == "ppv_unlock" and message.unlocked_at is None:
            unlocked = await repo.update_message(
                creator_id=creator_id,
                message_id=message.id,
                values={"unlocked_at": when, "updated_at": now},
            )
            assert unlocked is not None
            effects.notify(MESSAGE_STATUS_CHANGED, convert.message(unlocked))
        fan_after = await repo.recompute_fan_value(creator_id=creator_id, fan_id=fan.id, now=now)
        assert fan_after is not None
        await effects.publish(
            "crm.purchase.recorded",
            events_pb2.PurchaseRecorded(
                creator_id=str(creator_id),
                purchase=convert.purchase(purchase),
                fan_value_cents=fan_after.value_cents,
                occurred_at=convert.timestamp(now),
            ),
            aggregate_type="fan",
            aggregate_id=fan.id,
        )
        await effects.fan_changed(fan_after)
        await effects.finish(repo)
        return purchase

    async def sync_fan(
        self,
        session: AsyncSession,
        *,
        creator_id: uuid.UUID,
        profile: FanProfile,
        subscription: dict[str, Any],
        inbox: PendingInbox | None = None,
    ) -> models.Fan:
        """Brings a fan up to date with the platform's subscriber list. With `inbox`, the inbox
        events are left to it."""
        repo = CrmRepository(session)
        effects = _Effects(session, creator_id, self._clock(), pending=inbox)
        fan = await self.upsert_platform_fan(repo, effects, profile, subscription=subscription)
        await effects.finish(repo)
        return fan


# --- helpers -------------------------------------------------------------------------------------


def _shortcut_taken() -> AlreadyExists:
    return AlreadyExists(
        message="A quick reply with this shortcut already exists.", reason="SHORTCUT_TAKEN"
    )


def _fan_values(violations: Violations, patch: FanPatch) -> dict[str, Any]:
    """The checked columns of the fields `patch` sets."""
    values: dict[str, Any] = {}
    if patch.display_name is not None:
        # The creator's own name for the fan: a platform sync writes `display_name`.
        values["custom_display_name"] = patch.display_name.strip()
    if patch.handle is not None:
        values["handle"] = patch.handle.strip()
    if patch.avatar_url is not None:
        values["avatar_url"] = check_url(patch.avatar_url, "avatar_url", violations)
    if patch.email is not None:
        values["email"] = check_email(patch.email, "email", violations)
    if patch.notes is not None:
        values["notes"] = patch.notes
    if patch.tags is not None:
        values["tags"] = normalise_tags(patch.tags, "tags", violations)
    if patch.custom_fields is not None:
        size = len(json.dumps(patch.custom_fields, separators=(",", ":")))
        if size > MAX_CUSTOM_FIELDS_BYTES:
            violations.add("custom_fields", f"at most {MAX_CUSTOM_FIELDS_BYTES} bytes of JSON")
        values["custom_fields"] = patch.custom_fields
    return values


def stored_attachments(
    attachments: Sequence[crm_pb2.Attachment], violations: Violations
) -> list[dict[str, str]]:
    """The JSON stored for `attachments`, each checked (problems go to `violations`)."""
    stored: list[dict[str, str]] = []
    for index, item in enumerate(attachments):
        name = f"attachments[{index}]"
        if convert.ATTACHMENT_KIND.db(item.kind) is None:
            violations.add(f"{name}.kind", f"{item.kind} is not a valid value")
        if not item.url and not item.platform_media_id:
            violations.add(f"{name}.url", "give a url or a platform_media_id")
        check_url(item.url, f"{name}.url", violations)
        check_url(item.thumbnail_url, f"{name}.thumbnail_url", violations)
        stored.append(convert.attachment_dict(item))
    return stored


def _same_request(
    earlier: models.Message,
    conversation_id: uuid.UUID | None,
    fan_id: uuid.UUID | None,
    text: str,
    price_cents: int,
) -> None:
    """A reused idempotency key must come with the same request."""
    same_target = (conversation_id is None or earlier.conversation_id == conversation_id) and (
        fan_id is None or earlier.fan_id == fan_id
    )
    if not same_target or earlier.text != text or earlier.price_cents != price_cents:
        raise InvalidArgument.for_field(
            "idempotency_key",
            "was already used for a different message",
            reason="IDEMPOTENCY_KEY_REUSED",
        )
