"""Fixtures of the campaigns tests: auth, the CRM and the campaigns service (real servers in
this event loop, on one fresh database and NATS), the campaigns service on a clock the test
moves, and helpers that stand for the platform worker (its delivery and purchase events)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import nats
import pytest
from nats.aio.client import Client as NatsClient
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.auth.v1 import auth_pb2, auth_pb2_grpc
from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze.campaigns.v1 import campaigns_pb2_grpc
from huntaze.crm.v1 import crm_pb2, crm_pb2_grpc
from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_auth.config import AuthSettings
from huntaze_auth.models import SCHEMA as AUTH_SCHEMA
from huntaze_auth.server import MIGRATIONS_PACKAGE as AUTH_MIGRATIONS
from huntaze_auth.server import AuthServer
from huntaze_campaigns.config import CampaignsSettings
from huntaze_campaigns.models import SCHEMA, Recipient, Send
from huntaze_campaigns.server import MIGRATIONS_PACKAGE, CampaignsServer
from huntaze_campaigns.service import Timing
from huntaze_crm.config import CrmSettings
from huntaze_crm.models import SCHEMA as CRM_SCHEMA
from huntaze_crm.server import MIGRATIONS_PACKAGE as CRM_MIGRATIONS
from huntaze_crm.server import CrmServer
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_devstack.testing import PlatformEvents, eventually, token_from_email
from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.grpc_client import create_channel
from huntaze_kit.migrations import upgrade_async

PASSWORD = "violet-harbor-quantum-77"
SERVICE_SECRET = "campaigns-service-secret-for-tests"
# Short leases: a send claimed by a stopped service is taken up again within the test.
TIMING = Timing(lease=timedelta(seconds=5), retry=timedelta(seconds=1))


class Clock:
    """The campaigns service's clock: the wall clock plus whatever the test moved it by."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Creator:
    id: str
    token: str

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)


@dataclass
class Fan:
    id: str
    platform_fan_id: str
    name: str


@dataclass
class Stack:
    database_url: str
    nats_url: str
    auth: AuthServer
    crm: CrmServer
    campaigns: CampaignsServer
    clock: Clock
    nc: NatsClient
    sessions: async_sessionmaker[AsyncSession]
    auth_stub: Any
    crm_stub: Any
    stub: Any
    platform: PlatformEvents
    mail: MailCatcher
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def sign_up(self) -> Creator:
        email = f"creator-{uuid.uuid4().hex[:10]}@example.com"
        registered = await self.auth_stub.Register(
            auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="Creator")
        )
        mail = await self.mail.wait_for_async(
            lambda message: email in str(message.get("To", "")), timeout=20.0
        )
        await self.auth_stub.VerifyEmail(
            auth_pb2.VerifyEmailRequest(token=token_from_email(mail, "verify-email"))
        )
        login = await self.auth_stub.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
        return Creator(id=registered.user.id, token=login.tokens.access_token)

    async def fans(
        self, creator: Creator, count: int, *, tags: list[str] | None = None
    ) -> list[Fan]:
        made = []
        for index in range(count):
            platform_id = str(10_000 + len(made) + index * 7 + uuid.uuid4().int % 1_000_000)
            name = f"Fan{index} Tester"
            fan = await self.crm_stub.CreateFan(
                crm_pb2.CreateFanRequest(
                    platform=crm_pb2.PLATFORM_ONLYFANS,
                    platform_fan_id=platform_id,
                    display_name=name,
                    tags=tags or [],
                ),
                metadata=creator.auth,
            )
            made.append(Fan(fan.id, platform_id, name))
        return made

    async def static_list(self, creator: Creator, fans: list[Fan]) -> str:
        created = await self.crm_stub.CreateFanList(
            crm_pb2.CreateFanListRequest(
                name=f"list-{uuid.uuid4().hex[:6]}", kind=crm_pb2.FAN_LIST_KIND_STATIC
            ),
            metadata=creator.auth,
        )
        await self.crm_stub.AddFanListMembers(
            crm_pb2.AddFanListMembersRequest(list_id=created.id, fan_ids=[f.id for f in fans]),
            metadata=creator.auth,
        )
        return str(created.id)

    async def create(self, creator: Creator, **fields: Any) -> pb.Campaign:
        fields.setdefault("name", "Campaign")
        fields.setdefault("kind", pb.CAMPAIGN_KIND_ONE_OFF)
        fields.setdefault("variants", [pb.Variant(key="A", text="Hey {name}!")])
        campaign: pb.Campaign = await self.stub.CreateCampaign(
            pb.CreateCampaignRequest(**fields), metadata=creator.auth
        )
        return campaign

    async def schedule(self, creator: Creator, campaign_id: str, send_at: str = "") -> pb.Campaign:
        scheduled: pb.Campaign = await self.stub.ScheduleCampaign(
            pb.ScheduleCampaignRequest(campaign_id=campaign_id, send_at=send_at),
            metadata=creator.auth,
        )
        self.wake()
        return scheduled

    async def restart_campaigns(self) -> None:
        """Starts the campaigns service again (after `campaigns.stop()`), on the same port."""
        self.campaigns = CampaignsServer(
            campaigns_settings(
                self.database_url,
                self.nats_url,
                self.auth.port,
                self.crm.port,
                campaigns_grpc_port=self.campaigns.port,
            ),
            clock=self.clock,
            timing=TIMING,
        )
        await self.campaigns.start()

    def wake(self) -> None:
        assert self.campaigns.scheduler is not None
        self.campaigns.scheduler.wake()

    async def metrics(self, creator: Creator, campaign_id: str) -> pb.CampaignMetrics:
        found: pb.CampaignMetrics = await self.stub.GetCampaignMetrics(
            pb.GetCampaignMetricsRequest(campaign_id=campaign_id), metadata=creator.auth
        )
        return found

    async def outgoing(self, creator: Creator, fan: Fan) -> list[crm_pb2.Message]:
        """The messages the creator's side sent the fan."""
        conversations = await self.crm_stub.ListConversations(
            crm_pb2.ListConversationsRequest(), metadata=creator.auth
        )
        for conversation in conversations.conversations:
            if conversation.fan_id == fan.id:
                page = await self.crm_stub.ListMessages(
                    crm_pb2.ListMessagesRequest(conversation_id=conversation.id),
                    metadata=creator.auth,
                )
                return [m for m in page.messages if m.direction == crm_pb2.MESSAGE_DIRECTION_OUT]
        return []

    async def outgoing_by_platform_id(
        self, creator: Creator, platform_fan_id: str
    ) -> list[crm_pb2.Message]:
        conversations = await self.crm_stub.ListConversations(
            crm_pb2.ListConversationsRequest(), metadata=creator.auth
        )
        for conversation in conversations.conversations:
            if conversation.fan.platform_fan_id == platform_fan_id:
                return await self.outgoing(
                    creator,
                    Fan(conversation.fan_id, platform_fan_id, conversation.fan.display_name),
                )
        return []

    async def sends(self, campaign_id: str) -> list[Send]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Send)
                .where(Send.campaign_id == uuid.UUID(campaign_id))
                .order_by(Send.fan_id, Send.step)
            )
            return list(rows.all())

    async def recipients(self, campaign_id: str) -> list[Recipient]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Recipient).where(Recipient.campaign_id == uuid.UUID(campaign_id))
            )
            return list(rows.all())

    async def settled(
        self, campaign_id: str, *, states: tuple[str, ...] = ("queued",)
    ) -> list[Send]:
        """The campaign's sends once none is in `states` any more."""
        return await eventually(
            lambda: self.sends(campaign_id),
            lambda rows: bool(rows) and all(row.state not in states for row in rows),
        )

    async def delivered(self, creator: Creator, send: Send, platform_message_id: str) -> None:
        """What the worker publishes once the platform accepted one of the campaign's sends."""
        event = of_events.MessageSent(
            creator_id=creator.id,
            message_id=str(send.crm_message_id),
            idempotency_key=f"campaign:{send.campaign_id}:{send.fan_id}:{send.step}",
            platform_message_id=platform_message_id,
        )
        event.sent_at.GetCurrentTime()
        event.occurred_at.GetCurrentTime()
        await self.platform.publish(
            "onlyfans.message.sent",
            event,
            creator_id=creator.id,
            aggregate_id=str(send.crm_message_id),
            aggregate_type="message",
        )

    async def unlocks(
        self, creator: Creator, fan: Fan, *, cents: int, platform_message_id: str = ""
    ) -> None:
        """What the worker publishes when a fan buys a pay-per-view message (or tips)."""
        event = of_events.PurchaseRecorded(
            creator_id=creator.id,
            platform_transaction_id=f"tx-{uuid.uuid4().hex}",
            fan=of_events.FanProfile(platform_fan_id=fan.platform_fan_id),
            kind=(
                of_events.PURCHASE_KIND_PPV_UNLOCK
                if platform_message_id
                else of_events.PURCHASE_KIND_TIP
            ),
            amount_cents=cents,
            currency="USD",
            platform_message_id=platform_message_id,
        )
        event.purchased_at.FromDatetime(self.clock())
        await self.platform.publish(
            "onlyfans.purchase.recorded",
            event,
            creator_id=creator.id,
            aggregate_id=fan.platform_fan_id,
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


def campaigns_settings(
    database_url: str, nats_url: str, auth_port: int, crm_port: int, **overrides: Any
) -> CampaignsSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "nats_url": nats_url,
        "auth_grpc_target": f"127.0.0.1:{auth_port}",
        "crm_grpc_target": f"127.0.0.1:{crm_port}",
        "campaigns_grpc_host": "127.0.0.1",
        "campaigns_grpc_port": 0,
        "campaigns_metrics_port": 0,
        "campaigns_service_secret": SecretStr(SERVICE_SECRET),
        "campaigns_poll_seconds": 0.1,
        "grace_seconds": 0.5,
        "db_pool_size": 5,
        "db_max_overflow": 10,
    }
    values.update(overrides)
    return CampaignsSettings.model_validate(values)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh database migrated to the `campaigns` schema's head."""
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    engine = create_engine(database_url, application_name="campaigns-tests", pool_size=2)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def stack(
    database_url: str, nats_url: str, mail_catcher: MailCatcher
) -> AsyncIterator[Stack]:
    for package, schema in (
        (AUTH_MIGRATIONS, AUTH_SCHEMA),
        (CRM_MIGRATIONS, CRM_SCHEMA),
        (MIGRATIONS_PACKAGE, SCHEMA),
    ):
        await upgrade_async(database_url, package=package, schema=schema)
    auth = AuthServer(
        AuthSettings(
            database_url=database_url,
            nats_url=nats_url,
            smtp_url=mail_catcher.smtp_url,
            auth_grpc_host="127.0.0.1",
            auth_grpc_port=0,
            auth_argon2_time_cost=1,
            auth_argon2_memory_kib=1024,
            auth_service_accounts={"campaigns": SecretStr(SERVICE_SECRET)},
            auth_metrics_port=0,
            db_pool_size=2,
            db_max_overflow=5,
        )
    )
    await auth.start()
    crm = CrmServer(
        CrmSettings(
            database_url=database_url,
            nats_url=nats_url,
            auth_grpc_target=f"127.0.0.1:{auth.port}",
            crm_grpc_host="127.0.0.1",
            crm_grpc_port=0,
            crm_metrics_port=0,
            grace_seconds=0.5,
            db_pool_size=5,
            db_max_overflow=10,
        )
    )
    await crm.start()
    clock = Clock()
    campaigns = CampaignsServer(
        campaigns_settings(database_url, nats_url, auth.port, crm.port),
        clock=clock,
        timing=TIMING,
    )
    await campaigns.start()
    nc = await nats.connect(nats_url)
    engine = create_engine(database_url, application_name="campaigns-tests", pool_size=2)
    channels = [
        create_channel(f"127.0.0.1:{port}") for port in (auth.port, crm.port, campaigns.port)
    ]
    built = Stack(
        database_url=database_url,
        nats_url=nats_url,
        auth=auth,
        crm=crm,
        campaigns=campaigns,
        clock=clock,
        nc=nc,
        sessions=session_factory(engine),
        auth_stub=auth_pb2_grpc.AuthServiceStub(channels[0]),
        crm_stub=crm_pb2_grpc.CrmServiceStub(channels[1]),
        stub=campaigns_pb2_grpc.CampaignServiceStub(channels[2]),
        platform=PlatformEvents(nc.jetstream()),
        mail=mail_catcher,
        channels=channels,
    )
    try:
        yield built
    finally:
        await built.close()
        await built.campaigns.stop()
        await crm.stop()
        await auth.stop()
        await nc.close()
        await engine.dispose()
