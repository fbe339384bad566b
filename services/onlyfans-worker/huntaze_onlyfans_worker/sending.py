"""Sending: `crm.message.send_requested` and the campaigns' mass-message commands
(`campaigns.mass_message.send_requested`, each delivered once, and
`campaigns.mass_message.unsend_requested`, each deleted once through the effect ledger).

The idempotency key is committed (`send_attempts`, state `sending`) before the platform is asked.
The outcome (`sent` or `failed`) commits with the consumer's inbox row and the outcome event. So a
redelivered command whose attempt is `sent` or `failed` changes nothing, and one whose attempt is
still `sending` means a worker stopped mid-send: before sending again, the chat's newest messages
are read, and a creator's message with the same text and price, dated after that attempt began,
is taken as the delivered copy.

Remaining risk: a copy the platform accepted but does not list among the chat's newest
`RECONCILE_LIMIT` messages (many messages since, or a platform that hides it) is sent a second
time; and a message with the same text and price the creator sent by hand in that window is taken
for ours, so ours is not sent. A mass message interrupted mid-send is matched the same way
against the platform's newest `RECONCILE_QUEUES` queue statistics (text, price, a date after the
attempt began), with the same risks; none matching, it is queued.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze.campaigns.v1 import events_pb2 as campaign_events
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze.onlyfans.v1 import events_pb2
from huntaze_kit.consumers import InvalidEvent, ReceivedEvent
from huntaze_kit.effects import EffectLedger, EffectOutcome
from huntaze_kit.logging import get_logger
from huntaze_onlyfans_worker.accounts import (
    AccountElsewhere,
    AccountPaused,
    Accounts,
    timestamp,
)
from huntaze_onlyfans_worker.driver import (
    PlatformMessage,
    PlatformRefused,
    PlatformUnavailable,
    SendThrottled,
)
from huntaze_onlyfans_worker.models import SendAttempt

log = get_logger(__name__)

T = TypeVar("T")

MESSAGE_SENDING = "onlyfans.message.sending"
MESSAGE_SENT = "onlyfans.message.sent"
MESSAGE_FAILED = "onlyfans.message.failed"
MASS_MESSAGE_QUEUED = "onlyfans.mass_message.queued"
MASS_MESSAGE_FAILED = "onlyfans.mass_message.failed"
MASS_MESSAGE_UNSENT = "onlyfans.mass_message.unsent"
MASS_MESSAGE_UNSEND_FAILED = "onlyfans.mass_message.unsend_failed"
UNSEND_EFFECT = "unsend_mass_message"
MASS_SEND_REQUESTED = "campaigns.mass_message.send_requested"
MASS_UNSEND_REQUESTED = "campaigns.mass_message.unsend_requested"
RECONCILE_LIMIT = 50
# The newest mass messages read to find one queued before a crash.
RECONCILE_QUEUES = 20
# Platform and worker clocks may disagree this much when matching a copy to an attempt.
CLOCK_SKEW = timedelta(minutes=5)
THROTTLE_RETRIES = 3


@dataclass(frozen=True)
class Pacing:
    interval: float
    jitter: float
    throttle: float


@dataclass(frozen=True)
class _Begun:
    # The state found: None for a new key, else `sending`, `sent` or `failed`.
    previous: str | None
    # When an interrupted attempt began (set when `previous` is `sending`).
    interrupted_at: datetime | None


def _creator(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidEvent(f"creator_id {raw!r} is not a UUID") from None


class Sender:
    """The send and mass-message handlers (kit `EventConsumer` handlers: they never commit the
    consumer's session)."""

    def __init__(self, accounts: Accounts, pacing: Pacing, ledger: EffectLedger) -> None:
        self.accounts = accounts
        self.pacing = pacing
        # The unsend commands' deletes, once per event (`worker-campaigns`).
        self.ledger = ledger

    async def _begin(
        self, creator_id: uuid.UUID, key: str, *, message_id: str, platform_fan_id: str
    ) -> _Begun:
        """Records the attempt and commits it, before anything is sent."""
        now = self.accounts.clock()
        async with self.accounts.sessions() as session, session.begin():
            row = await session.scalar(
                select(SendAttempt).where(SendAttempt.idempotency_key == key).with_for_update()
            )
            if row is None:
                session.add(
                    SendAttempt(
                        idempotency_key=key,
                        creator_id=creator_id,
                        message_id=message_id,
                        platform_fan_id=platform_fan_id,
                        state="sending",
                        attempts=1,
                        started_at=now,
                    )
                )
                if message_id:
                    await self.accounts.record(
                        session,
                        creator_id,
                        MESSAGE_SENDING,
                        events_pb2.MessageSending(
                            creator_id=str(creator_id),
                            message_id=message_id,
                            idempotency_key=key,
                            occurred_at=timestamp(now),
                        ),
                        aggregate_type="message",
                        aggregate_id=message_id,
                    )
                return _Begun(previous=None, interrupted_at=None)
            if row.creator_id != creator_id:
                raise InvalidEvent("the idempotency key belongs to another creator")
            if row.state != "sending":
                return _Begun(previous=row.state, interrupted_at=None)
            interrupted_at = row.started_at
            row.started_at, row.attempts, row.updated_at = now, row.attempts + 1, now
            return _Begun(previous="sending", interrupted_at=interrupted_at)

    async def _finish(
        self,
        session: AsyncSession,
        key: str,
        *,
        state: str,
        platform_id: str = "",
        reason: str = "",
    ) -> None:
        row = await session.get(SendAttempt, key, with_for_update=True)
        assert row is not None
        row.state, row.platform_message_id, row.reason = state, platform_id, reason
        row.updated_at = self.accounts.clock()

    async def _ready(self, creator_id: uuid.UUID) -> str | None:
        """None when this process drives the account; else why it cannot be sent now.
        `AccountElsewhere` (a retry) when another process drives it."""
        if await self.accounts.holds_lease(creator_id):
            return None
        connection = await self.accounts.connection(creator_id)
        if connection is None or connection.state != "connected":
            reason = connection.reason if connection is not None and connection.reason else ""
            return "Connect your OnlyFans account to send messages." + (
                f" ({reason})" if reason else ""
            )
        if await self.accounts.take_lease(creator_id):
            return None
        raise AccountElsewhere("another worker drives this OnlyFans account")

    # Direct messages --------------------------------------------------------------------------

    async def handle_send_requested(self, session: AsyncSession, event: ReceivedEvent) -> None:
        request = event.parse(crm_events.MessageSendRequested)
        if request.platform != crm_pb2.PLATFORM_ONLYFANS:
            return
        creator_id = _creator(request.creator_id)
        key = request.idempotency_key or request.message_id
        if not key or not request.platform_fan_id:
            raise InvalidEvent("a send needs an idempotency key and the fan's platform id")
        refusal = await self._ready(creator_id)
        begun = await self._begin(
            creator_id, key, message_id=request.message_id, platform_fan_id=request.platform_fan_id
        )
        if begun.previous in {"sent", "failed"}:
            log.info("onlyfans.send_duplicate", creator_id=str(creator_id))
            return
        if refusal is not None:
            await self._failed(session, creator_id, request, key, refusal)
            return
        try:
            sent = await self.accounts.drive(
                creator_id, lambda account: self._deliver(account, creator_id, request, begun)
            )
        except PlatformRefused as refused:
            await self._failed(
                session, creator_id, request, key, f"OnlyFans refused the message: {refused}"
            )
            return
        except AccountPaused as paused:
            await self._failed(session, creator_id, request, key, f"Not sent: {paused}")
            return
        await self._finish(session, key, state="sent", platform_id=sent.platform_message_id)
        now = self.accounts.clock()
        await self.accounts.record(
            session,
            creator_id,
            MESSAGE_SENT,
            events_pb2.MessageSent(
                creator_id=str(creator_id),
                message_id=request.message_id,
                idempotency_key=key,
                platform_message_id=sent.platform_message_id,
                platform_fan_id=request.platform_fan_id,
                sent_at=timestamp(sent.created_at),
                occurred_at=timestamp(now),
            ),
            aggregate_type="message",
            aggregate_id=request.message_id or key,
        )

    async def _deliver(
        self,
        account: str,
        creator_id: uuid.UUID,
        request: crm_events.MessageSendRequested,
        begun: _Begun,
    ) -> PlatformMessage:
        driver = self.accounts.driver
        text = request.text.strip()
        if begun.interrupted_at is not None:
            since = begun.interrupted_at - CLOCK_SKEW
            recent = await driver.recent_messages(
                account, request.platform_fan_id, limit=RECONCILE_LIMIT
            )
            for message in recent:
                if (
                    message.from_creator
                    and message.text == text
                    and message.price_cents == request.price_cents
                    and message.created_at >= since
                ):
                    log.info("onlyfans.send_found_after_interruption", creator_id=str(creator_id))
                    return message
        media = tuple(
            item.platform_media_id for item in request.attachments if item.platform_media_id
        )
        return await self._paced(
            creator_id,
            lambda: driver.send_message(
                account,
                request.platform_fan_id,
                text=text,
                price_cents=request.price_cents,
                media_ids=media,
            ),
        )

    async def _paced(self, creator_id: uuid.UUID, send: Callable[[], Awaitable[T]]) -> T:
        """`send` at the account's pace, again after the platform's throttle when it answers
        "Allow 3 seconds" (called under `Accounts.drive`)."""
        for _ in range(THROTTLE_RETRIES):
            await self.accounts.pace_send(
                creator_id, interval=self.pacing.interval, jitter=self.pacing.jitter
            )
            try:
                return await send()
            except SendThrottled:
                await asyncio.sleep(self.pacing.throttle)
        raise PlatformUnavailable("OnlyFans kept throttling sends")

    async def _failed(
        self,
        session: AsyncSession,
        creator_id: uuid.UUID,
        request: crm_events.MessageSendRequested,
        key: str,
        reason: str,
    ) -> None:
        await self._finish(session, key, state="failed", reason=reason)
        await self.accounts.record(
            session,
            creator_id,
            MESSAGE_FAILED,
            events_pb2.MessageFailed(
                creator_id=str(creator_id),
                message_id=request.message_id,
                idempotency_key=key,
                reason=reason,
                occurred_at=timestamp(self.accounts.clock()),
            ),
            aggregate_type="message",
            aggregate_id=request.message_id or key,
        )

    # Mass messages ----------------------------------------------------------------------------

    async def handle_mass_message(self, session: AsyncSession, event: ReceivedEvent) -> None:
        request = event.parse(campaign_events.MassMessageSendRequested)
        creator_id = _creator(request.creator_id)
        key = f"mass:{request.idempotency_key}"
        if not request.idempotency_key or not request.platform_fan_ids:
            raise InvalidEvent("a mass message needs an idempotency key and recipients")
        refusal = await self._ready(creator_id)
        begun = await self._begin(creator_id, key, message_id="", platform_fan_id="")
        if begun.previous in {"sent", "failed"}:
            return
        if refusal is None:
            try:
                queue_id = await self.accounts.drive(
                    creator_id, lambda account: self._queue(account, creator_id, request, begun)
                )
            except (PlatformRefused, AccountPaused) as error:
                refusal = str(error)
        if refusal is not None:
            await self._finish(session, key, state="failed", reason=refusal)
            log.warning("onlyfans.mass_message_failed", creator_id=str(creator_id))
            await self.accounts.record(
                session,
                creator_id,
                MASS_MESSAGE_FAILED,
                events_pb2.MassMessageFailed(
                    creator_id=str(creator_id),
                    idempotency_key=request.idempotency_key,
                    reason=refusal,
                    occurred_at=timestamp(self.accounts.clock()),
                    message_ids=list(request.crm_message_ids),
                ),
                aggregate_type="mass_message",
                aggregate_id=key,
            )
            return
        await self._finish(session, key, state="sent", platform_id=queue_id)
        await self.accounts.record(
            session,
            creator_id,
            MASS_MESSAGE_QUEUED,
            events_pb2.MassMessageQueued(
                creator_id=str(creator_id),
                idempotency_key=request.idempotency_key,
                platform_queue_id=queue_id,
                recipients=len(request.platform_fan_ids),
                occurred_at=timestamp(self.accounts.clock()),
                message_ids=list(request.crm_message_ids),
            ),
            aggregate_type="mass_message",
            aggregate_id=key,
        )

    async def _queue(
        self,
        account: str,
        creator_id: uuid.UUID,
        request: campaign_events.MassMessageSendRequested,
        begun: _Begun,
    ) -> str:
        if begun.interrupted_at is not None:
            # Stopped mid-send before: a queue with the same text and price, dated after that
            # attempt began, is taken as the one it made (none: the platform never took it).
            since = begun.interrupted_at - CLOCK_SKEW
            for queued in await self.accounts.driver.mass_message_stats(
                account, limit=RECONCILE_QUEUES
            ):
                if (
                    queued.text == request.text.strip()
                    and queued.price_cents == request.price_cents
                    and queued.sent_at is not None
                    and queued.sent_at >= since
                ):
                    log.info("onlyfans.mass_message_found_after_interruption")
                    return queued.platform_queue_id
        return await self._paced(
            creator_id,
            lambda: self.accounts.driver.send_mass_message(
                account,
                text=request.text.strip(),
                platform_fan_ids=tuple(request.platform_fan_ids),
                price_cents=request.price_cents,
                media_ids=tuple(request.platform_media_ids),
            ),
        )

    # Unsend -----------------------------------------------------------------------------------

    async def handle_campaign_command(self, session: AsyncSession, event: ReceivedEvent) -> None:
        """`worker-campaigns`: a mass message to queue, or one to take back."""
        if event.subject == MASS_UNSEND_REQUESTED:
            await self.handle_unsend(session, event)
        elif event.subject == MASS_SEND_REQUESTED:
            await self.handle_mass_message(session, event)
        else:
            raise InvalidEvent(f"unexpected subject {event.subject}")

    async def handle_unsend(self, session: AsyncSession, event: ReceivedEvent) -> None:
        """Deletes a queued mass message from the fans' chats, once per event (the effect
        ledger): a redelivered command never deletes twice, and one interrupted mid-delete asks
        the platform whether the queue is cancelled rather than deleting again."""
        request = event.parse(campaign_events.MassMessageUnsendRequested)
        creator_id = _creator(request.creator_id)
        if not request.idempotency_key or not request.platform_queue_id.isdigit():
            raise InvalidEvent("an unsend needs the mass message's key and its queue id")
        attempt = await session.get(SendAttempt, f"mass:{request.idempotency_key}")
        if (
            attempt is None
            or attempt.creator_id != creator_id
            or attempt.platform_message_id != request.platform_queue_id
        ):
            raise InvalidEvent("no mass message of this creator has that key and queue id")
        queue_id = request.platform_queue_id
        reason = await self._ready(creator_id)
        if reason is None:
            try:
                outcome = await self.ledger.once(
                    event_id=event.event_id,
                    effect=UNSEND_EFFECT,
                    action=lambda: self.accounts.drive(
                        creator_id,
                        lambda account: self.accounts.driver.unsend_mass_message(account, queue_id),
                    ),
                )
                if outcome is not EffectOutcome.PERFORMED:
                    canceled = await self.accounts.drive(
                        creator_id,
                        lambda account: self.accounts.driver.mass_message_canceled(
                            account, queue_id
                        ),
                    )
                    if not canceled:
                        reason = "Interrupted while unsending; check OnlyFans."
            except (PlatformRefused, AccountPaused) as error:
                reason = f"OnlyFans refused to unsend it: {error}"
        await self.accounts.record(
            session,
            creator_id,
            MASS_MESSAGE_UNSENT if reason is None else MASS_MESSAGE_UNSEND_FAILED,
            events_pb2.MassMessageUnsent(
                creator_id=str(creator_id),
                idempotency_key=request.idempotency_key,
                platform_queue_id=queue_id,
                reason=reason or "",
                occurred_at=timestamp(self.accounts.clock()),
                # Unsent, the CRM messages the command named are too.
                message_ids=list(request.crm_message_ids) if reason is None else [],
            ),
            aggregate_type="mass_message",
            aggregate_id=f"mass:{request.idempotency_key}",
        )
