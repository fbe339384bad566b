"""The worker's consumers (replicas share each durable consumer): `worker-sends` delivers
`crm.message.send_requested`; `worker-commands` runs the sync command; `worker-campaigns` the
campaigns' mass-message commands (send and unsend)."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.onlyfans.v1 import events_pb2
from huntaze_kit.consumers import EventConsumer, InvalidEvent, ReceivedEvent
from huntaze_onlyfans_worker.accounts import AccountElsewhere, Accounts
from huntaze_onlyfans_worker.models import SCHEMA
from huntaze_onlyfans_worker.runner import Runner
from huntaze_onlyfans_worker.sending import Sender
from huntaze_onlyfans_worker.service import SYNC_REQUESTED
from huntaze_onlyfans_worker.streams import CAMPAIGNS

SEND_REQUESTED = "crm.message.send_requested"
MASS_MESSAGE_REQUESTED = "campaigns.mass_message.send_requested"
MASS_UNSEND_REQUESTED = "campaigns.mass_message.unsend_requested"
# Retries of a command whose account another replica drives, or whose platform is down.
SEND_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Commands:
    def __init__(self, accounts: Accounts, runner: Runner, sender: Sender) -> None:
        self.accounts = accounts
        self.runner = runner
        self.sender = sender

    async def handle(self, session: AsyncSession, event: ReceivedEvent) -> None:
        if event.subject != SYNC_REQUESTED:
            raise InvalidEvent(f"unexpected subject {event.subject}")
        request = event.parse(events_pb2.SyncRequested)
        try:
            creator_id = uuid.UUID(request.creator_id)
        except ValueError:
            raise InvalidEvent("creator_id is not a UUID") from None
        if self.runner.request_sync(creator_id):
            return
        connection = await self.accounts.connection(creator_id)
        if connection is None or connection.state != "connected":
            return  # nothing to sync any more
        raise AccountElsewhere("another worker drives this account")


def worker_consumers(
    *,
    nats: NatsClient,
    session_factory: async_sessionmaker[AsyncSession],
    commands: Commands,
    ack_wait: float = 60.0,
) -> list[EventConsumer]:
    return [
        EventConsumer(
            nats=nats,
            session_factory=session_factory,
            schema=SCHEMA,
            durable="worker-sends",
            stream="CRM",
            filter_subjects=[SEND_REQUESTED],
            handler=commands.sender.handle_send_requested,
            backoff=SEND_BACKOFF,
            max_deliver=len(SEND_BACKOFF) + 1,
            batch=8,
            ack_wait=ack_wait,
        ),
        EventConsumer(
            nats=nats,
            session_factory=session_factory,
            schema=SCHEMA,
            durable="worker-commands",
            stream="ONLYFANS",
            filter_subjects=[SYNC_REQUESTED],
            handler=commands.handle,
            backoff=SEND_BACKOFF,
            max_deliver=len(SEND_BACKOFF) + 1,
            batch=8,
            ack_wait=ack_wait,
        ),
        EventConsumer(
            nats=nats,
            session_factory=session_factory,
            schema=SCHEMA,
            durable="worker-campaigns",
            stream=CAMPAIGNS.name,
            filter_subjects=[MASS_MESSAGE_REQUESTED, MASS_UNSEND_REQUESTED],
            handler=commands.sender.handle_campaign_command,
            backoff=SEND_BACKOFF,
            max_deliver=len(SEND_BACKOFF) + 1,
            batch=8,
            ack_wait=ack_wait,
        ),
    ]
