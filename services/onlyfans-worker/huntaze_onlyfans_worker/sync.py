"""Sync: what changed on the platform since the cursors, as the events the CRM consumes.

Subscribers -> `onlyfans.fan.synced` (all of them each time: states change without a trace);
chats whose newest message is past the chat's cursor -> `onlyfans.message.received` for each new
fan message; transactions since the newest one seen -> `onlyfans.purchase.recorded`; the queue
statistics of the mass messages queued in the last week -> `onlyfans.mass_message.stats`. Each
page's events and the cursor it advances commit together, so an interrupted sync resumes where it
stopped; the CRM stores each message and purchase once by its platform id.
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze.onlyfans.v1 import events_pb2
from huntaze_kit.logging import get_logger
from huntaze_onlyfans_worker.accounts import Accounts, timestamp
from huntaze_onlyfans_worker.driver import (
    PlatformChat,
    PlatformFan,
    PlatformMedia,
    PlatformMessage,
    PlatformSubscriber,
    PlatformTransaction,
    TransactionKind,
)
from huntaze_onlyfans_worker.models import Connection, SendAttempt, SyncCursor

log = get_logger(__name__)

MESSAGE_RECEIVED = "onlyfans.message.received"
FAN_SYNCED = "onlyfans.fan.synced"
PURCHASE_RECORDED = "onlyfans.purchase.recorded"
MASS_MESSAGE_STATS = "onlyfans.mass_message.stats"
# Mass messages whose figures each sync reads again (those queued this recently), and how many
# of the platform's newest queue statistics it reads to find them.
MASS_STATS_FOR = timedelta(days=7)
MASS_STATS_LIMIT = 50
# A first sync reads purchases this far back.
FIRST_SYNC_HISTORY = timedelta(days=3 * 365)
# Purchases are read again from a little before the newest one seen (the CRM deduplicates).
TRANSACTIONS_OVERLAP = timedelta(hours=1)

PURCHASE_KINDS = {
    TransactionKind.SUBSCRIPTION: events_pb2.PURCHASE_KIND_SUBSCRIPTION,
    TransactionKind.RENEWAL: events_pb2.PURCHASE_KIND_RENEWAL,
    TransactionKind.TIP: events_pb2.PURCHASE_KIND_TIP,
    TransactionKind.MESSAGE: events_pb2.PURCHASE_KIND_PPV_UNLOCK,
}
MEDIA_KINDS = {
    "photo": events_pb2.MEDIA_KIND_IMAGE,
    "gif": events_pb2.MEDIA_KIND_IMAGE,
    "video": events_pb2.MEDIA_KIND_VIDEO,
    "audio": events_pb2.MEDIA_KIND_AUDIO,
}


def fan_profile(fan: PlatformFan | None, platform_fan_id: str) -> events_pb2.FanProfile:
    if fan is None:
        return events_pb2.FanProfile(platform_fan_id=platform_fan_id)
    return events_pb2.FanProfile(
        platform_fan_id=fan.platform_fan_id,
        display_name=fan.display_name,
        handle=fan.handle,
        avatar_url=fan.avatar_url,
    )


def _media(item: PlatformMedia) -> events_pb2.Media:
    return events_pb2.Media(
        kind=MEDIA_KINDS.get(item.kind, events_pb2.MEDIA_KIND_FILE),
        url=item.url,
        platform_media_id=item.platform_media_id,
    )


class Syncer:
    """Syncs one account at a time through `Accounts.drive`."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def record_message(
        self, session: AsyncSession, creator_id: uuid.UUID, message: PlatformMessage
    ) -> None:
        """`onlyfans.message.received` for a fan's message (synced or pushed)."""
        await self.accounts.record(
            session,
            creator_id,
            MESSAGE_RECEIVED,
            events_pb2.MessageReceived(
                creator_id=str(creator_id),
                platform_message_id=message.platform_message_id,
                fan=fan_profile(message.fan, message.platform_fan_id),
                text=message.text,
                price_cents=message.price_cents,
                media=[_media(item) for item in message.media],
                sent_at=timestamp(message.created_at),
                occurred_at=timestamp(self.accounts.clock()),
            ),
            aggregate_type="chat",
            aggregate_id=f"{creator_id}:{message.platform_fan_id}",
        )

    async def sync(self, creator_id: uuid.UUID) -> None:
        fans = await self._subscribers(creator_id)
        messages = await self._chats(creator_id)
        purchases = await self._transactions(creator_id)
        await self._mass_stats(creator_id)
        async with self.accounts.sessions() as session, session.begin():
            connection = await session.get(Connection, creator_id, with_for_update=True)
            if connection is not None:
                connection.last_synced_at = self.accounts.clock()
        log.info(
            "onlyfans.synced",
            creator_id=str(creator_id),
            fans=fans,
            messages=messages,
            purchases=purchases,
        )

    async def _subscribers(self, creator_id: uuid.UUID) -> int:
        cursor: str | None = None
        count = 0
        while True:
            page = await self.accounts.drive(
                creator_id, functools.partial(self.accounts.driver.subscribers, cursor=cursor)
            )
            async with self.accounts.sessions() as session, session.begin():
                for subscriber in page.items:
                    await self._record_fan(session, creator_id, subscriber)
            count += len(page.items)
            if page.next_cursor is None:
                return count
            cursor = page.next_cursor

    async def _record_fan(
        self, session: AsyncSession, creator_id: uuid.UUID, subscriber: PlatformSubscriber
    ) -> None:
        state = (
            events_pb2.SUBSCRIPTION_STATE_ACTIVE
            if subscriber.active
            else events_pb2.SUBSCRIPTION_STATE_EXPIRED
        )
        event = events_pb2.FanSynced(
            creator_id=str(creator_id),
            fan=fan_profile(subscriber.fan, subscriber.fan.platform_fan_id),
            subscription_state=state,
            occurred_at=timestamp(self.accounts.clock()),
        )
        for name, moment in (
            ("subscribed_at", subscriber.subscribed_at),
            ("expires_at", subscriber.expires_at),
            ("last_seen_at", subscriber.last_seen_at),
        ):
            if moment is not None:
                getattr(event, name).CopyFrom(timestamp(moment))
        await self.accounts.record(
            session,
            creator_id,
            FAN_SYNCED,
            event,
            aggregate_type="fan",
            aggregate_id=f"{creator_id}:{subscriber.fan.platform_fan_id}",
        )

    async def _cursors(self, creator_id: uuid.UUID, kind: str) -> dict[str, str]:
        async with self.accounts.sessions() as session:
            rows = await session.execute(
                select(SyncCursor.key, SyncCursor.position).where(
                    SyncCursor.creator_id == creator_id, SyncCursor.kind == kind
                )
            )
            return {row.key: row.position for row in rows}

    @staticmethod
    async def _advance(
        session: AsyncSession, creator_id: uuid.UUID, kind: str, key: str, position: str
    ) -> None:
        await session.execute(
            insert(SyncCursor)
            .values(creator_id=creator_id, kind=kind, key=key, position=position)
            .on_conflict_do_update(
                index_elements=[SyncCursor.creator_id, SyncCursor.kind, SyncCursor.key],
                set_={"position": position, "updated_at": text("now()")},
            )
        )

    async def _chats(self, creator_id: uuid.UUID) -> int:
        """Chats come newest first: the first one whose newest message is at its cursor, and
        every older one, has nothing new."""
        cursors = await self._cursors(creator_id, "chat")
        changed: list[PlatformChat] = []
        cursor: str | None = None
        caught_up = False
        while not caught_up:
            page = await self.accounts.drive(
                creator_id, functools.partial(self.accounts.driver.chats, cursor=cursor)
            )
            for chat in page.items:
                if chat.last_message_id is None:
                    continue
                if cursors.get(chat.platform_fan_id) == chat.last_message_id:
                    caught_up = True
                    break
                changed.append(chat)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        count = 0
        for chat in changed:
            count += await self._chat(
                creator_id, chat.platform_fan_id, cursors.get(chat.platform_fan_id)
            )
        return count

    async def _chat(self, creator_id: uuid.UUID, fan_id: str, after: str | None) -> int:
        count = 0
        while True:
            page = await self.accounts.drive(
                creator_id,
                functools.partial(
                    self.accounts.driver.messages_after,
                    platform_fan_id=fan_id,
                    after_message_id=after,
                ),
            )
            if not page.items:
                return count
            async with self.accounts.sessions() as session, session.begin():
                for message in page.items:
                    if not message.from_creator:
                        await self.record_message(session, creator_id, message)
                        count += 1
                after = page.items[-1].platform_message_id
                await self._advance(session, creator_id, "chat", fan_id, after)
            if page.next_cursor is None:
                return count

    async def _transactions(self, creator_id: uuid.UUID) -> int:
        stored = (await self._cursors(creator_id, "transactions")).get("")
        since = (
            datetime.fromisoformat(stored) - TRANSACTIONS_OVERLAP
            if stored
            else self.accounts.clock() - FIRST_SYNC_HISTORY
        )
        newest = datetime.fromisoformat(stored) if stored else None
        cursor: str | None = None
        count = 0
        while True:
            page = await self.accounts.drive(
                creator_id,
                functools.partial(self.accounts.driver.transactions, since=since, cursor=cursor),
            )
            async with self.accounts.sessions() as session, session.begin():
                for item in page.items:
                    await self._record_purchase(session, creator_id, item)
                    if newest is None or item.created_at > newest:
                        newest = item.created_at
            count += len(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        if newest is not None:
            async with self.accounts.sessions() as session, session.begin():
                await self._advance(
                    session, creator_id, "transactions", "", newest.astimezone(UTC).isoformat()
                )
        return count

    async def _mass_stats(self, creator_id: uuid.UUID) -> None:
        """`onlyfans.mass_message.stats` for the mass messages queued lately (sent, viewed and
        bought copies, and whether they were deleted), as the platform's queue reports them."""
        async with self.accounts.sessions() as session:
            recent = (
                await session.scalars(
                    select(SendAttempt).where(
                        SendAttempt.creator_id == creator_id,
                        SendAttempt.idempotency_key.startswith("mass:"),
                        SendAttempt.state == "sent",
                        SendAttempt.updated_at > self.accounts.clock() - MASS_STATS_FOR,
                    )
                )
            ).all()
        keys = {attempt.platform_message_id: attempt.idempotency_key for attempt in recent}
        if not keys:
            return
        stats = await self.accounts.drive(
            creator_id,
            functools.partial(self.accounts.driver.mass_message_stats, limit=MASS_STATS_LIMIT),
        )
        async with self.accounts.sessions() as session, session.begin():
            for item in stats:
                key = keys.get(item.platform_queue_id)
                if key is None:
                    continue
                await self.accounts.record(
                    session,
                    creator_id,
                    MASS_MESSAGE_STATS,
                    events_pb2.MassMessageStats(
                        creator_id=str(creator_id),
                        idempotency_key=key.removeprefix("mass:"),
                        platform_queue_id=item.platform_queue_id,
                        sent=item.sent,
                        viewed=item.viewed,
                        purchased=item.purchased,
                        canceled=item.canceled,
                        occurred_at=timestamp(self.accounts.clock()),
                    ),
                    aggregate_type="mass_message",
                    aggregate_id=key,
                )

    async def _record_purchase(
        self, session: AsyncSession, creator_id: uuid.UUID, item: PlatformTransaction
    ) -> None:
        await self.accounts.record(
            session,
            creator_id,
            PURCHASE_RECORDED,
            events_pb2.PurchaseRecorded(
                creator_id=str(creator_id),
                platform_transaction_id=item.platform_transaction_id,
                fan=fan_profile(item.fan, item.fan.platform_fan_id),
                kind=PURCHASE_KINDS[item.kind],
                amount_cents=item.amount_cents,
                currency=item.currency,
                platform_message_id=item.platform_message_id,
                purchased_at=timestamp(item.created_at),
                occurred_at=timestamp(self.accounts.clock()),
            ),
            aggregate_type="fan",
            aggregate_id=f"{creator_id}:{item.fan.platform_fan_id}",
        )
