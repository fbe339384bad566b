"""Fixtures of the AI agent's tests: an HTTP server speaking the OpenAI chat completions API
(OpenAI and Azure paths) and its embeddings API (deterministic vectors), scripted to fail, stall
or rate-limit, which records what it was sent;
a fresh database with the `ai` schema; and the whole loop (auth, CRM and the agent, real
processes in this event loop on one database and one NATS)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import nats
import pytest
from nats.aio.client import Client as NatsClient
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.ai.v1 import ai_pb2, ai_pb2_grpc
from huntaze.auth.v1 import auth_pb2, auth_pb2_grpc
from huntaze.crm.v1 import crm_pb2, crm_pb2_grpc
from huntaze_ai_agent import convert
from huntaze_ai_agent.config import AiAgentSettings
from huntaze_ai_agent.configuration import AiConfiguration
from huntaze_ai_agent.models import SCHEMA
from huntaze_ai_agent.server import MIGRATIONS_PACKAGE, AiAgentServer
from huntaze_auth.config import AuthSettings
from huntaze_auth.models import SCHEMA as AUTH_SCHEMA
from huntaze_auth.server import MIGRATIONS_PACKAGE as AUTH_MIGRATIONS
from huntaze_auth.server import AuthServer
from huntaze_crm.config import CrmSettings
from huntaze_crm.models import SCHEMA as CRM_SCHEMA
from huntaze_crm.server import MIGRATIONS_PACKAGE as CRM_MIGRATIONS
from huntaze_crm.server import CrmServer
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_devstack.testing import PlatformEvents, eventually, token_from_email
from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.grpc_client import create_channel
from huntaze_kit.migrations import upgrade_async


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, str]]:
        return list(self.body["messages"])

    @property
    def fan_data(self) -> dict[str, Any]:
        """The JSON document of the last (user) message."""
        content = self.messages[-1]["content"]
        return dict(json.loads(content[content.index("{") :]))


@dataclass
class Failure:
    """A scripted answer instead of a completion: a status, or a stall of `delay` seconds."""

    status: int = 500
    delay: float = 0.0
    retry_after_ms: int | None = 10


@dataclass
class FakeOpenAI:
    """What the server answers: scripted failures first, then `answer(request body)`."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    answer: Callable[[dict[str, Any]], str] = lambda body: "Hey you! 😘 missed you"
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_failure(self) -> Failure | None:
        with self.lock:
            return self.failures.pop(0) if self.failures else None


# Words that mean the same to the test embedding model (and to no text search).
SYNONYMS = {
    "hello": "hi",
    "hey": "hi",
    "gorgeous": "beautiful",
    "pretty": "beautiful",
    "cute": "beautiful",
    "weekend": "saturday",
    "sunday": "saturday",
}
EMBEDDING_DIMENSIONS = 256


def fake_embedding(text: str) -> list[float]:
    """A deterministic bag of meanings: each word (through `SYNONYMS`) adds to one dimension
    (by its hash); the first dimension keeps a vector from being zero."""
    vector = [0.0] * EMBEDDING_DIMENSIONS
    vector[0] = 0.01
    for word in re.findall(r"\w+", text.lower()):
        meaning = SYNONYMS.get(word, word)
        digest = hashlib.sha256(meaning.encode()).digest()
        vector[1 + digest[0] % (EMBEDDING_DIMENSIONS - 1)] += 1.0
    return vector


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            url = urlsplit(self.path)
            with fake.lock:
                fake.requests.append(
                    Recorded(
                        url.path,
                        parse_qs(url.query),
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
            failure = fake.next_failure()
            if failure is not None:
                if failure.delay:
                    time.sleep(failure.delay)
                headers = {}
                if failure.retry_after_ms is not None:
                    headers["retry-after-ms"] = str(failure.retry_after_ms)
                error = {"error": {"message": "scripted failure", "type": "server_error"}}
                # After a stall the client may have timed out and hung up already.
                with contextlib.suppress(OSError):
                    self._reply(failure.status, error, headers)
                return
            if url.path.endswith("/embeddings"):
                inputs = body["input"]
                data = [
                    {"object": "embedding", "index": i, "embedding": fake_embedding(text)}
                    for i, text in enumerate(inputs if isinstance(inputs, list) else [inputs])
                ]
                usage = {"prompt_tokens": 8 * len(data), "total_tokens": 8 * len(data)}
                self._reply(
                    200,
                    {"object": "list", "data": data, "model": body["model"], "usage": usage},
                    {},
                )
                return
            if fake.delay:
                time.sleep(fake.delay)
            text = fake.answer(body)
            completion = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or "azure-deployment",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
            }
            self._reply(200, completion, {})

    return Handler


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh database migrated to the `ai` schema's head."""
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    engine = create_engine(database_url, application_name="ai-agent-tests", pool_size=2)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


# --- the whole loop: auth, CRM and the agent, in this event loop, on one database and NATS ---

PASSWORD = "violet-harbor-quantum-77"
SERVICE_SECRET = "ai-service-secret-for-tests"


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
class Stack:
    database_url: str
    nats_url: str
    auth: AuthServer
    crm: CrmServer
    agent: AiAgentServer
    nc: NatsClient
    crm_stub: Any
    ai_stub: Any
    auth_stub: Any
    platform: PlatformEvents
    mail: MailCatcher
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def sign_up(self, email: str | None = None) -> Creator:
        """Registers, verifies the address by its email's link and signs in."""
        email = email or f"creator-{uuid.uuid4().hex[:10]}@example.com"
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

    async def service_auth(self, creator: Creator, service: str = "ai") -> Any:
        issued = await self.auth_stub.IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest(
                service_name=service, service_secret=SERVICE_SECRET, creator_id=creator.id
            )
        )
        return bearer(issued.access_token)

    async def configure(self, creator: Creator, **fields: Any) -> None:
        config = convert.config_message(AiConfiguration.model_validate(fields))
        await self.ai_stub.UpdateConfig(
            ai_pb2.UpdateConfigRequest(config=config), metadata=creator.auth
        )

    async def suggestions(self, creator: Creator) -> list[Any]:
        response = await self.ai_stub.ListSuggestions(
            ai_pb2.ListSuggestionsRequest(), metadata=creator.auth
        )
        return list(response.suggestions)

    async def settled(self, creator: Creator, count: int = 1) -> list[Any]:
        """The creator's suggestions once `count` of them left `pending`."""
        return await eventually(
            lambda: self.suggestions(creator),
            lambda found: (
                len(found) >= count
                and all(s.status != ai_pb2.SUGGESTION_STATUS_PENDING for s in found)
            ),
        )

    async def messages(self, creator: Creator, conversation_id: str) -> list[Any]:
        response = await self.crm_stub.ListMessages(
            crm_pb2.ListMessagesRequest(conversation_id=conversation_id), metadata=creator.auth
        )
        return list(response.messages)

    async def watch(self, creator: Creator) -> Any:
        """The creator's inbox stream (WatchInbox), once the CRM has joined it."""
        call = self.crm_stub.WatchInbox(crm_pb2.WatchInboxRequest(), metadata=creator.auth)
        await eventually(
            lambda: asyncio.sleep(0, self.crm.inbox.watcher_count if self.crm.inbox else 0),
            lambda n: n >= 1,
        )
        return call

    async def outgoing(self, creator: Creator, conversation_id: str) -> list[Any]:
        """The replies of a conversation."""
        return [
            m
            for m in await self.messages(creator, conversation_id)
            if m.direction == crm_pb2.MESSAGE_DIRECTION_OUT
        ]

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def next_of(call: Any, kind: str, within: float = 15.0) -> crm_pb2.InboxEvent:
    """The next inbox event of type `kind` (others skipped)."""
    while True:
        event: crm_pb2.InboxEvent = await asyncio.wait_for(call.read(), within)
        if event.type == kind:
            return event


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


def agent_settings(
    database_url: str, nats_url: str, auth_port: int, crm_port: int, **overrides: Any
) -> AiAgentSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "nats_url": nats_url,
        "auth_grpc_target": f"127.0.0.1:{auth_port}",
        "crm_grpc_target": f"127.0.0.1:{crm_port}",
        "ai_grpc_host": "127.0.0.1",
        "ai_grpc_port": 0,
        "ai_service_secret": SecretStr(SERVICE_SECRET),
        "ai_autopilot_min_delay_seconds": 0.2,
        "ai_autopilot_max_delay_seconds": 0.4,
        "ai_poll_seconds": 0.1,
        "grace_seconds": 0.5,
        "ai_metrics_port": 0,
        "db_pool_size": 5,
        "db_max_overflow": 10,
    }
    values.update(overrides)
    return AiAgentSettings.model_validate(values)


@pytest.fixture
def agent_overrides() -> dict[str, Any]:
    """Settings of the agent a test module may override (by redefining this fixture)."""
    return {}


@pytest.fixture
async def stack(
    database_url: str,
    nats_url: str,
    mail_catcher: MailCatcher,
    agent_overrides: dict[str, Any],
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
            auth_service_accounts={"ai": SecretStr(SERVICE_SECRET)},
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
    agent = AiAgentServer(
        agent_settings(database_url, nats_url, auth.port, crm.port, **agent_overrides)
    )
    await agent.start()
    nc = await nats.connect(nats_url)
    channels = [create_channel(f"127.0.0.1:{port}") for port in (auth.port, crm.port, agent.port)]
    built = Stack(
        database_url=database_url,
        nats_url=nats_url,
        auth=auth,
        crm=crm,
        agent=agent,
        nc=nc,
        auth_stub=auth_pb2_grpc.AuthServiceStub(channels[0]),
        crm_stub=crm_pb2_grpc.CrmServiceStub(channels[1]),
        ai_stub=ai_pb2_grpc.AiServiceStub(channels[2]),
        platform=PlatformEvents(nc.jetstream()),
        mail=mail_catcher,
        channels=channels,
    )
    try:
        yield built
    finally:
        await built.close()
        await agent.stop()
        await crm.stop()
        await auth.stop()
        await nc.close()
