"""Fixtures of the OnlyFans worker tests: its schema on a fresh database, and a moto server (the
local AWS emulator, in server mode on a loopback port) for the KMS and Secrets Manager paths."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import nats
import pytest
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.auth.v1 import auth_pb2, auth_pb2_grpc
from huntaze.onlyfans.v1 import onlyfans_pb2, onlyfans_pb2_grpc
from huntaze_auth.config import AuthSettings
from huntaze_auth.models import SCHEMA as AUTH_SCHEMA
from huntaze_auth.server import MIGRATIONS_PACKAGE as AUTH_MIGRATIONS
from huntaze_auth.server import AuthServer
from huntaze_devstack.embedded import free_port, port_accepts
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_devstack.testing import token_from_email
from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.grpc_client import create_channel
from huntaze_kit.migrations import upgrade_async
from huntaze_onlyfans_worker.config import OnlyfansSettings
from huntaze_onlyfans_worker.models import SCHEMA
from huntaze_onlyfans_worker.server import WorkerServer
from huntaze_simulator.demo import DemoShape
from huntaze_simulator.testing import Simulator, serve

M = TypeVar("M", bound=Message)

MIGRATIONS_PACKAGE = "huntaze_onlyfans_worker.migrations"


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh database holding the `onlyfans` schema."""
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    engine = create_engine(database_url, application_name="onlyfans-worker-tests")
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def _moto_server() -> str:
    found = shutil.which("moto_server")
    if found:
        return found
    return str(Path(sys.executable).parent / "moto_server")


@pytest.fixture
def moto_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server on a free loopback port, with the fake credentials boto3 needs."""
    port = free_port()
    process = subprocess.Popen(
        [_moto_server(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_accepts("127.0.0.1", port):
            assert process.poll() is None, "moto_server exited"
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.05)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


# The worker with real auth, NATS, PostgreSQL, Chromium and the platform simulator ------------

PASSWORD = "violet-harbor-quantum-77"
PLATFORM_EMAIL = "creator@example.com"
PLATFORM_PASSWORD = "creator-password"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def worker_settings(
    database_url: str, nats_url: str, auth_port: int, simulator: Simulator, **overrides: Any
) -> OnlyfansSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "nats_url": nats_url,
        "auth_grpc_target": f"127.0.0.1:{auth_port}",
        "onlyfans_grpc_host": "127.0.0.1",
        "onlyfans_grpc_port": 0,
        "grace_seconds": 0.5,
        "onlyfans_metrics_port": 0,
        "onlyfans_base_url": simulator.base_url,
        "onlyfans_rules_url": f"{simulator.base_url}/rules.json",
        "onlyfans_browser_path": chromium(),
        "onlyfans_vault_master_keys": VAULT_KEY,
        "onlyfans_sync_interval_seconds": 3600.0,
        "onlyfans_send_interval_seconds": 0.0,
        "onlyfans_send_jitter_seconds": 0.0,
        "onlyfans_throttle_seconds": 0.2,
        "onlyfans_lease_seconds": 3.0,
        "onlyfans_rate_limit_pause_seconds": 1.0,
        "db_pool_size": 5,
        "db_max_overflow": 10,
        **overrides,
    }
    return OnlyfansSettings(**values)


VAULT_KEY = base64.b64encode(b"k" * 32).decode()


@dataclass
class Creator:
    id: str
    token: str

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


class Events:
    """Every `onlyfans.*` event the worker publishes, as NATS delivers it."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self.seen: list[tuple[str, bytes]] = []

    async def start(self) -> None:
        async def keep(message: Msg) -> None:
            self.seen.append((message.subject, message.data))

        await self._nc.subscribe("onlyfans.>", cb=keep)

    async def of(self, subject: str, message_type: type[M]) -> list[M]:
        found = []
        for seen_subject, data in self.seen:
            if seen_subject == subject:
                parsed = message_type()
                parsed.ParseFromString(data)
                found.append(parsed)
        return found

    async def wait_for(
        self,
        subject: str,
        message_type: type[M],
        predicate: Callable[[M], bool] = lambda _: True,
        *,
        count: int = 1,
        timeout: float = 60.0,
    ) -> list[M]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            matching = [m for m in await self.of(subject, message_type) if predicate(m)]
            if len(matching) >= count:
                return matching
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(matching)} of {count} {subject} events")
            await asyncio.sleep(0.1)


@dataclass
class WorkerStack:
    database_url: str
    nats_url: str
    simulator: Simulator
    auth: AuthServer
    worker: WorkerServer
    nc: NatsClient
    events: Events
    auth_stub: auth_pb2_grpc.AuthServiceAsyncStub
    stub: onlyfans_pb2_grpc.OnlyFansServiceAsyncStub
    mail: MailCatcher
    overrides: dict[str, Any] = field(default_factory=dict)
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    def settings(self, **overrides: Any) -> OnlyfansSettings:
        return worker_settings(
            self.database_url,
            self.nats_url,
            self.auth.port,
            self.simulator,
            **{**self.overrides, **overrides},
        )

    async def sign_up(self) -> Creator:
        email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
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

    async def connect(self, creator: Creator) -> onlyfans_pb2.AccountStatus:
        answer = await self.stub.Connect(
            onlyfans_pb2.ConnectRequest(
                credentials=onlyfans_pb2.Credentials(
                    email=PLATFORM_EMAIL, password=PLATFORM_PASSWORD
                )
            ),
            metadata=creator.auth,
        )
        return answer.status

    async def restart_worker(self, **overrides: Any) -> None:
        await self.worker.stop()
        self.worker = WorkerServer(self.settings(**overrides))
        await self.worker.start()
        self.stub = self._connect(self.worker.port)

    def _connect(self, port: int) -> onlyfans_pb2_grpc.OnlyFansServiceAsyncStub:
        # A sign-in drives a browser: as long as the gateway gives Connect (its route's deadline).
        channel = create_channel(f"127.0.0.1:{port}", deadline=60.0)
        self._channels.append(channel)
        return onlyfans_pb2_grpc.OnlyFansServiceStub(channel)  # type: ignore[return-value]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


@pytest.fixture
def simulator_shape() -> DemoShape:
    return DemoShape(fans=30)


@pytest.fixture
async def worker_stack(
    database_url: str, nats_url: str, mail_catcher: MailCatcher, simulator_shape: DemoShape
) -> AsyncIterator[WorkerStack]:
    await upgrade_async(database_url, package=AUTH_MIGRATIONS, schema=AUTH_SCHEMA)
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    async with serve(demo=simulator_shape) as simulator:
        await simulator.control.patch(
            "/_control/config", json={"demo_activity_seconds": 0, "send_interval_seconds": 0.2}
        )
        auth = AuthServer(
            AuthSettings(
                database_url=database_url,
                nats_url=nats_url,
                smtp_url=mail_catcher.smtp_url,
                auth_grpc_host="127.0.0.1",
                auth_grpc_port=0,
                auth_argon2_time_cost=1,
                auth_argon2_memory_kib=1024,
                auth_metrics_port=0,
                db_pool_size=2,
                db_max_overflow=5,
            )
        )
        await auth.start()
        worker = WorkerServer(worker_settings(database_url, nats_url, auth.port, simulator))
        await worker.start()
        nc = await nats.connect(nats_url)
        events = Events(nc)
        await events.start()
        auth_channel = create_channel(f"127.0.0.1:{auth.port}")
        stack = WorkerStack(
            database_url=database_url,
            nats_url=nats_url,
            simulator=simulator,
            auth=auth,
            worker=worker,
            nc=nc,
            events=events,
            auth_stub=auth_pb2_grpc.AuthServiceStub(auth_channel),  # type: ignore[arg-type]
            stub=None,  # type: ignore[arg-type]
            mail=mail_catcher,
            _channels=[auth_channel],
        )
        stack.stub = stack._connect(worker.port)
        try:
            yield stack
        finally:
            await stack.close()
            await stack.worker.stop()
            await auth.stop()
            await nc.close()
