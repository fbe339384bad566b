"""Cross-service fixtures: the real processes (`python -m huntaze_auth.server`,
`python -m huntaze_crm.server`, `python -m huntaze_ai_agent.server`,
`python -m huntaze_analytics.server`, `python -m huntaze_campaigns.server`,
`python -m huntaze_gateway`)
against real PostgreSQL, NATS and an SMTP mail catcher.

`suite` starts everything once per test module (processes cost seconds on these machines) on a
fresh database, each service as its own database role after applying its migrations as that
role, and waits until the gateway's `/readyz` reports every upstream serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from huntaze_devstack.embedded import EmbeddedNats, drop_database, ensure_database, free_port
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_devstack.roles import new_passwords, provision_roles, service_roles
from huntaze_devstack.testing import email_links, token_from_email
from huntaze_kit.migrations import upgrade_async

READY_TIMEOUT = 60.0
# The AI agent's secret among auth's service accounts (it acts for creators with it).
AI_SERVICE_SECRET = "ai-secret-of-the-suite"
CAMPAIGNS_SERVICE_SECRET = "campaigns-secret-of-the-suite"


@dataclass
class Process:
    """A child process whose output goes to a file (read back when something fails)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    module: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        self.log_file.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log_file.close()


def start_process(name: str, module: str, env: dict[str, str], log_dir: Path) -> Process:
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 (closed by Process.stop)
    popen = subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Process(
        name=name, popen=popen, log_path=log_path, log_file=log_file, module=module, env=env
    )


@dataclass
class Suite:
    """The running suite and helpers to drive it over HTTP, as a client would."""

    gateway_url: str
    auth_target: str
    crm_target: str
    database_url: str
    nats_url: str
    mail: MailCatcher
    # Where each process serves `/metrics`, by process name.
    metrics_urls: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)

    def client(self, *, ip: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client; `ip` poses as that client address (the gateway trusts one proxy)."""
        headers = dict(kwargs.pop("headers", {}) or {})
        headers["x-forwarded-for"] = ip or fresh_ip()
        return httpx.AsyncClient(base_url=self.gateway_url, headers=headers, timeout=20.0, **kwargs)

    async def email_to(self, address: str, *, link: str | None = None) -> EmailMessage:
        """The newest email to `address` (holding a `/<link>?token=` link, when given)."""

        def matches(message: EmailMessage) -> bool:
            if address.lower() not in str(message.get("To", "")).lower():
                return False
            return link is None or any(kind == link for kind, _ in email_links(message))

        return await self.mail.wait_for_async(matches, timeout=20.0)

    @staticmethod
    def link_token(message: EmailMessage, kind: str = "verify-email") -> str:
        return token_from_email(message, kind)

    async def register(
        self, client: httpx.AsyncClient, *, password: str = "", verify: bool = True
    ) -> tuple[str, str]:
        """Registers a new account (and verifies it by its email); answers (email, password)."""
        email = f"user-{uuid.uuid4().hex[:12]}@example.com"
        password = password or f"Violet-Harbour-{uuid.uuid4().hex[:6]}-Lantern"
        response = await client.post(
            "/api/auth/register", json={"email": email, "password": password, "name": "Ada"}
        )
        assert response.status_code == 201, response.text
        if verify:
            token = token_from_email(await self.email_to(email, link="verify-email"))
            verified = await client.post("/api/auth/verify-email", json={"token": token})
            assert verified.status_code == 200, verified.text
        return email, password

    async def login(self, client: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
        response = await client.post("/api/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    @contextlib.asynccontextmanager
    async def signed_in(self) -> AsyncIterator[tuple[str, str, httpx.AsyncClient]]:
        """A new account, its email address verified (CRM writes need it), signed in: its user
        id, its access token and a client that sends it."""
        async with self.client() as client:
            email, password = await self.register(client)
            login = await self.login(client, email, password)
            token = login["tokens"]["accessToken"]
            client.headers["authorization"] = f"Bearer {token}"
            yield login["user"]["id"], token, client

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    @contextlib.asynccontextmanager
    async def stopped(self, name: str) -> AsyncIterator[None]:
        """Stops a process (SIGTERM, as an orchestrator would), and on leaving starts it again
        with the same settings and waits until the gateway is ready."""
        old = self.process(name)
        old.stop()
        try:
            yield
        finally:
            new = start_process(name, old.module, old.env, old.log_path.parent)
            self.processes[self.processes.index(old)] = new
            await _wait_ready(self)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.processes)


_ip_counter = 0


def fresh_ip() -> str:
    """A client address no other test uses (so per-IP throttles do not cross tests)."""
    global _ip_counter  # noqa: PLW0603
    _ip_counter += 1
    return f"198.51.{(_ip_counter // 250) % 250}.{_ip_counter % 250 + 1}"


@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _clean_nats(url: str) -> None:
    import nats  # noqa: PLC0415

    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        jetstream = client.jetstream()
        for info in await jetstream.streams_info():
            await jetstream.delete_stream(info.config.name)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def _nats(scratch: Path) -> AsyncIterator[str]:
    configured = os.environ.get("HUNTAZE_TEST_NATS_URL")
    if configured:
        await _clean_nats(configured)
        yield configured
        return
    with EmbeddedNats(scratch / "nats", free_port()) as server:
        yield server.url


async def _wait_ready(suite: Suite) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    async with httpx.AsyncClient(base_url=suite.gateway_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            for process in suite.processes:
                if not process.alive():
                    raise RuntimeError(f"{process.name} exited early:\n{suite.logs()}")
            try:
                response = await client.get("/readyz")
                # Ready is the gateway's own state; the tests also want every upstream up.
                if response.status_code == 200 and not response.json()["unavailable"]:
                    return
                last = response.text
            except httpx.TransportError as error:
                last = repr(error)
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the gateway was not ready in {READY_TIMEOUT}s ({last}):\n{suite.logs()}")


@pytest.fixture(scope="module")
def suite_extra_env() -> dict[str, str]:
    """Settings a test module adds to every process of its suite (a module overrides this)."""
    return {}


@pytest.fixture(scope="module")
async def suite(pg_server_url: str, suite_extra_env: dict[str, str]) -> AsyncIterator[Suite]:
    """auth, the CRM, the AI agent, analytics and the gateway as real processes, on a fresh
    database, NATS and mail catcher."""
    name = f"xsvc_{uuid.uuid4().hex[:12]}"
    database_url = await ensure_database(pg_server_url, name)
    with _scratch("huntaze-suite-") as scratch, MailCatcher(scratch / "mail") as mail:
        async with _nats(scratch) as nats_url:
            # Each service runs as its own database role, as in production.
            roles = service_roles()
            own_urls = await provision_roles(database_url, roles, passwords=new_passwords(roles))
            await upgrade_async(own_urls["auth"], package="huntaze_auth.migrations", schema="auth")
            await upgrade_async(own_urls["crm"], package="huntaze_crm.migrations", schema="crm")
            await upgrade_async(own_urls["ai"], package="huntaze_ai_agent.migrations", schema="ai")
            await upgrade_async(
                own_urls["analytics"], package="huntaze_analytics.migrations", schema="analytics"
            )
            await upgrade_async(
                own_urls["campaigns"], package="huntaze_campaigns.migrations", schema="campaigns"
            )
            auth_port, crm_port, ai_port, analytics_port, campaigns_port, gateway_port = (
                free_port() for _ in range(6)
            )
            metrics_ports = {
                name: free_port()
                for name in ("auth", "crm", "ai", "analytics", "campaigns", "gateway")
            }
            gateway_url = f"http://127.0.0.1:{gateway_port}"
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("HUNTAZE_")},
                "HUNTAZE_NATS_URL": nats_url,
                "HUNTAZE_LOG_LEVEL": "WARNING",
                "HUNTAZE_AUTH_GRPC_HOST": "127.0.0.1",
                "HUNTAZE_AUTH_GRPC_PORT": str(auth_port),
                "HUNTAZE_AUTH_GRPC_TARGET": f"127.0.0.1:{auth_port}",
                "HUNTAZE_CRM_GRPC_HOST": "127.0.0.1",
                "HUNTAZE_CRM_GRPC_PORT": str(crm_port),
                "HUNTAZE_CRM_GRPC_TARGET": f"127.0.0.1:{crm_port}",
                "HUNTAZE_AI_GRPC_HOST": "127.0.0.1",
                "HUNTAZE_AI_GRPC_PORT": str(ai_port),
                "HUNTAZE_AI_GRPC_TARGET": f"127.0.0.1:{ai_port}",
                "HUNTAZE_AI_POLL_SECONDS": "0.1",
                "HUNTAZE_ANALYTICS_GRPC_HOST": "127.0.0.1",
                "HUNTAZE_ANALYTICS_GRPC_PORT": str(analytics_port),
                "HUNTAZE_ANALYTICS_GRPC_TARGET": f"127.0.0.1:{analytics_port}",
                "HUNTAZE_CAMPAIGNS_GRPC_HOST": "127.0.0.1",
                "HUNTAZE_CAMPAIGNS_GRPC_PORT": str(campaigns_port),
                "HUNTAZE_CAMPAIGNS_GRPC_TARGET": f"127.0.0.1:{campaigns_port}",
                "HUNTAZE_CAMPAIGNS_POLL_SECONDS": "0.1",
                "HUNTAZE_AUTH_SERVICE_ACCOUNTS": json.dumps(
                    {"ai": AI_SERVICE_SECRET, "campaigns": CAMPAIGNS_SERVICE_SECRET}
                ),
                "HUNTAZE_GRACE_SECONDS": "1",
                **{
                    f"HUNTAZE_{name.upper()}_METRICS_PORT": str(port)
                    for name, port in metrics_ports.items()
                },
                "HUNTAZE_SMTP_URL": mail.smtp_url,
                "HUNTAZE_PUBLIC_URL": gateway_url,
                "HUNTAZE_GATEWAY_HOST": "127.0.0.1",
                "HUNTAZE_GATEWAY_PORT": str(gateway_port),
                # Tests speak plain HTTP; each poses as its own client behind one proxy.
                "HUNTAZE_GATEWAY_COOKIE_SECURE": "false",
                "HUNTAZE_GATEWAY_TRUSTED_PROXIES": "1",
                "HUNTAZE_GATEWAY_MAX_BODY_BYTES": "16384",
                **suite_extra_env,
            }
            running = Suite(
                gateway_url=gateway_url,
                auth_target=f"127.0.0.1:{auth_port}",
                crm_target=f"127.0.0.1:{crm_port}",
                database_url=database_url,
                nats_url=nats_url,
                mail=mail,
                metrics_urls={
                    name: f"http://127.0.0.1:{port}/metrics" for name, port in metrics_ports.items()
                },
            )
            try:
                # auth logs failed calls at INFO, with the request id the gateway forwarded.
                auth_env = {
                    **env,
                    "HUNTAZE_LOG_LEVEL": "INFO",
                    "HUNTAZE_DATABASE_URL": own_urls["auth"],
                }
                crm_env = {**env, "HUNTAZE_DATABASE_URL": own_urls["crm"]}
                ai_env = {**env, "HUNTAZE_DATABASE_URL": own_urls["ai"]}
                analytics_env = {**env, "HUNTAZE_DATABASE_URL": own_urls["analytics"]}
                campaigns_env = {**env, "HUNTAZE_DATABASE_URL": own_urls["campaigns"]}
                running.processes.append(
                    start_process("auth", "huntaze_auth.server", auth_env, scratch)
                )
                running.processes.append(
                    start_process("crm", "huntaze_crm.server", crm_env, scratch)
                )
                running.processes.append(
                    start_process("ai", "huntaze_ai_agent.server", ai_env, scratch)
                )
                running.processes.append(
                    start_process("analytics", "huntaze_analytics.server", analytics_env, scratch)
                )
                running.processes.append(
                    start_process("campaigns", "huntaze_campaigns.server", campaigns_env, scratch)
                )
                running.processes.append(start_process("gateway", "huntaze_gateway", env, scratch))
                await _wait_ready(running)
                yield running
            finally:
                for process in reversed(running.processes):
                    process.stop()
    await drop_database(pg_server_url, name)


@pytest.fixture(scope="module")
async def worker(suite: Suite) -> AsyncIterator[Any]:
    """Publishes to the suite's NATS what the OnlyFans worker publishes (`PlatformEvents`)."""
    import nats  # noqa: PLC0415

    from huntaze_devstack.testing import PlatformEvents  # noqa: PLC0415

    client = await nats.connect(suite.nats_url)
    try:
        yield PlatformEvents(client.jetstream())
    finally:
        await client.close()
