"""Fixtures of the CRM tests: a fresh database with the auth and crm schemas, a real auth service
(tokens come from registering and signing in), the CRM process on a free loopback port, and
helpers to publish platform events to NATS the way the OnlyFans worker does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import nats
import pytest
from nats.aio.client import Client as NatsClient

from huntaze.auth.v1 import auth_pb2, auth_pb2_grpc
from huntaze.crm.v1 import crm_pb2_grpc
from huntaze_auth.config import AuthSettings
from huntaze_auth.models import SCHEMA as AUTH_SCHEMA
from huntaze_auth.server import MIGRATIONS_PACKAGE as AUTH_MIGRATIONS
from huntaze_auth.server import AuthServer
from huntaze_crm.config import CrmSettings
from huntaze_crm.models import SCHEMA
from huntaze_crm.server import MIGRATIONS_PACKAGE, CrmServer
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_devstack.testing import PlatformEvents, eventually, token_from_email
from huntaze_kit.grpc_client import create_channel
from huntaze_kit.migrations import upgrade_async

T = TypeVar("T")

PASSWORD = "violet-harbor-quantum-77"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Creator:
    """A signed-in creator: their user id and the metadata that authenticates their calls."""

    id: str
    token: str

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)


@dataclass
class Stack:
    """Auth and CRM processes (in this event loop) on one database and one NATS."""

    database_url: str
    nats_url: str
    auth: AuthServer
    crm: CrmServer
    nc: NatsClient
    stub: crm_pb2_grpc.CrmServiceAsyncStub
    auth_stub: auth_pb2_grpc.AuthServiceAsyncStub
    platform: PlatformEvents
    mail: MailCatcher
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def sign_up(self, email: str) -> Creator:
        """Registers, verifies the address by its email's link (CRM writes need a verified
        address) and signs in."""
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

    async def restart_crm(self) -> None:
        await self.crm.stop()
        self.crm = CrmServer(crm_settings(self.database_url, self.nats_url, self.auth.port))
        await self.crm.start()
        self.stub = self._connect(self.crm.port)

    def _connect(self, port: int) -> crm_pb2_grpc.CrmServiceAsyncStub:
        channel = create_channel(f"127.0.0.1:{port}")
        self._channels.append(channel)
        return crm_pb2_grpc.CrmServiceStub(channel)  # type: ignore[return-value]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


def auth_settings(database_url: str, nats_url: str, smtp_url: str) -> AuthSettings:
    return AuthSettings(
        database_url=database_url,
        nats_url=nats_url,
        smtp_url=smtp_url,
        auth_grpc_host="127.0.0.1",
        auth_grpc_port=0,
        auth_metrics_port=0,
        auth_argon2_time_cost=1,
        auth_argon2_memory_kib=1024,
        db_pool_size=2,
        db_max_overflow=5,
    )


def crm_settings(database_url: str, nats_url: str, auth_port: int) -> CrmSettings:
    return CrmSettings(
        database_url=database_url,
        nats_url=nats_url,
        auth_grpc_target=f"127.0.0.1:{auth_port}",
        crm_grpc_host="127.0.0.1",
        crm_grpc_port=0,
        crm_metrics_port=0,
        grace_seconds=0.5,
        crm_consumer_concurrency=2,
        db_pool_size=5,
        db_max_overflow=10,
    )


@pytest.fixture
async def stack(
    database_url: str, nats_url: str, mail_catcher: MailCatcher
) -> AsyncIterator[Stack]:
    await upgrade_async(database_url, package=AUTH_MIGRATIONS, schema=AUTH_SCHEMA)
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    auth = AuthServer(auth_settings(database_url, nats_url, mail_catcher.smtp_url))
    await auth.start()
    crm = CrmServer(crm_settings(database_url, nats_url, auth.port))
    await crm.start()
    nc = await nats.connect(nats_url)
    auth_channel = create_channel(f"127.0.0.1:{auth.port}")
    built = Stack(
        database_url=database_url,
        nats_url=nats_url,
        auth=auth,
        crm=crm,
        nc=nc,
        stub=None,  # type: ignore[arg-type]
        auth_stub=auth_pb2_grpc.AuthServiceStub(auth_channel),  # type: ignore[arg-type]
        platform=PlatformEvents(nc.jetstream()),
        mail=mail_catcher,
        _channels=[auth_channel],
    )
    built.stub = built._connect(crm.port)
    try:
        yield built
    finally:
        try:
            await built.close()
            await built.crm.stop()
            await auth.stop()
        finally:
            # Before the NATS server stops (the `nats_url` fixture's teardown comes after this
            # one): a client left open would retry the stopped server until the loop closes.
            await nc.close()


@pytest.fixture
async def creators(stack: Stack) -> tuple[Creator, Creator]:
    first, second = await asyncio.gather(
        stack.sign_up(f"ada-{uuid.uuid4().hex[:8]}@example.com"),
        stack.sign_up(f"bea-{uuid.uuid4().hex[:8]}@example.com"),
    )
    return first, second


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


class Helpers:
    """The helpers above, for test modules (which cannot import this conftest)."""

    eventually = staticmethod(eventually)
    rpc_error = staticmethod(rpc_error)
    bearer = staticmethod(bearer)


@pytest.fixture
def helpers() -> type[Helpers]:
    return Helpers
