"""The worker as it runs in production, `python -m huntaze_onlyfans_worker.server serve` in a
process of its own, behind the CRM and a gateway serving HTTP on a loopback port; real Chromium,
the platform simulator, auth, NATS and PostgreSQL.

* A fan writes on the platform: the worker's push socket brings the message, the CRM stores it,
  and the creator's Server-Sent Events stream (`GET /api/crm/stream`) shows it, with no sync.
* The worker is killed with SIGKILL right after the platform took a reply, before it could hear
  the answer or record it; a new worker process finishes the command: the fan has exactly one
  copy on the platform and the CRM's message ends `sent`, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import uvicorn
from nats.js.api import ConsumerConfig

from huntaze.onlyfans.v1 import events_pb2
from huntaze_crm.config import CrmSettings
from huntaze_crm.server import MIGRATIONS_PACKAGE as CRM_MIGRATIONS
from huntaze_crm.server import CrmServer
from huntaze_devstack.embedded import free_port, port_accepts
from huntaze_devstack.testing import eventually, inbox_stream
from huntaze_gateway.app import create_app
from huntaze_gateway.config import GatewaySettings
from huntaze_kit.migrations import upgrade_async
from huntaze_simulator.testing import Simulator

from .conftest import PLATFORM_EMAIL, PLATFORM_PASSWORD, Creator, WorkerStack

# The durable consumer of `crm.message.send_requested` the workers share, on the CRM's stream.
SEND_STREAM = "CRM"
SEND_COMMANDS = "worker-sends"


def _environment(settings: dict[str, Any]) -> dict[str, str]:
    """The worker's settings as the `HUNTAZE_*` variables its process reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUNTAZE_")}
    for name, value in settings.items():
        if value is None:
            continue
        plain = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        env[f"HUNTAZE_{name.upper()}"] = (
            json.dumps(plain) if isinstance(plain, (list, dict)) else str(plain)
        )
    return env


@dataclass
class WorkerProcess:
    """`python -m huntaze_onlyfans_worker.server serve`, its output in a log file."""

    env: dict[str, str]
    log_path: Path
    port: int
    popen: subprocess.Popen[bytes] | None = None
    _logs: list[Any] = field(default_factory=list)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self._logs.append(log)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "huntaze_onlyfans_worker.server", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def serving(self, within: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not port_accepts("127.0.0.1", self.port):
            assert self.popen is not None
            assert self.popen.poll() is None, f"the worker exited:\n{self.tail()}"
            assert loop.time() < deadline, f"the worker did not start:\n{self.tail()}"
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed, committed or acknowledged."""
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        for log in self._logs:
            log.close()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class LiveStack:
    stack: WorkerStack
    worker: WorkerProcess
    gateway_url: str
    client: httpx.AsyncClient

    @property
    def simulator(self) -> Simulator:
        return self.stack.simulator


@contextlib.asynccontextmanager
async def _gateway(settings: GatewaySettings) -> AsyncIterator[str]:
    """The gateway app under uvicorn on a loopback port (Server-Sent Events need a real server)."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            access_log=False,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the gateway stopped while starting")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    return tmp_path / "worker.log"


@pytest.fixture
async def live(worker_stack: WorkerStack, worker_log: Path) -> AsyncIterator[LiveStack]:
    """The fixture's in-process worker makes way for a worker process; the CRM and a gateway
    on a loopback port are put in front of it."""
    await worker_stack.worker.stop()
    port = free_port()
    settings = worker_stack.settings(
        onlyfans_grpc_port=port, onlyfans_metrics_port=0, log_level="INFO"
    ).model_dump()
    worker = WorkerProcess(env=_environment(settings), log_path=worker_log, port=port)
    worker.start()
    await upgrade_async(worker_stack.database_url, package=CRM_MIGRATIONS, schema="crm")
    crm = CrmServer(
        CrmSettings(
            database_url=worker_stack.database_url,
            nats_url=worker_stack.nats_url,
            auth_grpc_target=f"127.0.0.1:{worker_stack.auth.port}",
            crm_grpc_host="127.0.0.1",
            crm_grpc_port=0,
            grace_seconds=0.5,
            crm_metrics_port=0,
            db_pool_size=4,
        )
    )
    try:
        await worker.serving()
        await crm.start()
        gateway_settings = GatewaySettings(
            auth_grpc_target=f"127.0.0.1:{worker_stack.auth.port}",
            crm_grpc_target=f"127.0.0.1:{crm.port}",
            onlyfans_grpc_target=f"127.0.0.1:{port}",
            nats_url=worker_stack.nats_url,
            gateway_trusted_proxies=1,
            # A login drives a real browser: on a busy machine it may take more than 5 s.
            gateway_upstream_deadline_seconds=30.0,
        )
        async with (
            _gateway(gateway_settings) as gateway_url,
            httpx.AsyncClient(base_url=gateway_url, timeout=60.0) as client,
        ):
            yield LiveStack(
                stack=worker_stack, worker=worker, gateway_url=gateway_url, client=client
            )
    finally:
        worker.stop()
        await crm.stop()


def bearer(creator: Creator) -> dict[str, str]:
    return {"authorization": f"Bearer {creator.token}"}


async def get_json(live: LiveStack, creator: Creator, path: str, **params: Any) -> Any:
    response = await live.client.get(path, headers=bearer(creator), params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def connected(live: LiveStack) -> Creator:
    creator = await live.stack.sign_up()
    for _ in range(3):
        answer = await live.client.post(
            "/api/of/connect",
            headers=bearer(creator),
            json={"credentials": {"email": PLATFORM_EMAIL, "password": PLATFORM_PASSWORD}},
        )
        # 503 is the API's "try again": a browser on a busy machine may drop a page load.
        if answer.status_code != 503:
            break
        await asyncio.sleep(1.0)
    assert answer.status_code == 200, f"{answer.text}\n{live.worker.tail()}"
    assert answer.json()["state"] == "connected", answer.text
    return creator


async def conversation_of(live: LiveStack, creator: Creator, fan_id: int) -> str:
    threads = await eventually(
        lambda: get_json(live, creator, "/api/of/threads", limit=200),
        lambda page: any(
            c["fan"] and c["fan"]["platformFanId"] == str(fan_id) for c in page["conversations"]
        ),
        within=60.0,
    )
    return str(
        next(
            c["id"]
            for c in threads["conversations"]
            if c["fan"] and c["fan"]["platformFanId"] == str(fan_id)
        )
    )


async def test_a_fans_message_reaches_the_creators_stream_through_the_push_socket(
    live: LiveStack,
) -> None:
    creator = await connected(live)
    fan = await live.simulator.new_fan(name="Mira")
    async with inbox_stream(live.gateway_url, creator.token) as stream:
        # The stream is open before the CRM joins it: the fan writes until a message shows.
        text = ""
        for attempt in range(10):
            text = f"are you online? {attempt} {uuid.uuid4().hex[:6]}"
            await live.simulator.fan_writes(fan["id"], text)
            with contextlib.suppress(TimeoutError):
                while True:
                    # The periodic sync is an hour away: only the push socket brings it.
                    event = await stream.until("message.received", within=10.0)
                    assert event.data is not None
                    if event.data["message"]["text"] == text:
                        break
                break
        else:
            pytest.fail("the fan's message never showed on the stream")
    message = event.data["message"]
    assert message["direction"] == "in"
    assert message["platform"] == "onlyfans"
    assert message["deliveryStatus"] == "received"
    conversation_id = await conversation_of(live, creator, fan["id"])
    assert message["conversationId"] == conversation_id


def _kill_once_taken(simulator: Simulator, kill: Callable[[], None]) -> list[str]:
    """Kills the worker right after the platform stored its next message, before the answer
    leaves: what a crash between the platform's answer and the worker's commit looks like."""
    platform = simulator.platform
    taken: list[str] = []
    original = platform.creator_sends

    def creator_sends(**kwargs: Any) -> Any:
        message = original(**kwargs)
        if not taken:
            taken.append(kwargs.get("text", ""))
            kill()
        return message

    platform.creator_sends = creator_sends  # type: ignore[method-assign]
    return taken


async def _redeliver_soon(nats_url: str) -> None:
    """Brings forward the redelivery of the command the killed worker held (its ack wait is a
    minute): NATS redelivers what stays unacknowledged once the consumer's ack wait is over."""
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        info = await js.consumer_info(SEND_STREAM, SEND_COMMANDS)
        config: ConsumerConfig = info.config
        config.ack_wait = 1.0
        await js.add_consumer(SEND_STREAM, config)
    finally:
        await client.close()


async def test_a_worker_killed_right_after_the_platform_took_a_reply_leaves_one_copy(
    live: LiveStack,
) -> None:
    creator = await connected(live)
    fan = await live.simulator.new_fan(name="Theo")
    await live.simulator.fan_writes(fan["id"], "still up?")
    conversation_id = await conversation_of(live, creator, fan["id"])

    taken = _kill_once_taken(live.simulator, live.worker.kill)
    sent = await live.client.post(
        "/api/of/send",
        headers={**bearer(creator), "idempotency-key": str(uuid.uuid4())},
        json={"conversationId": conversation_id, "text": "Always for you, Theo"},
    )
    assert sent.status_code in (200, 201), sent.text
    message_id = sent.json()["message"]["id"]

    assert live.worker.popen is not None
    returncode = await asyncio.to_thread(live.worker.popen.wait, 60)
    assert returncode == -signal.SIGKILL
    assert taken == ["Always for you, Theo"]
    copies = (
        await live.simulator.control.get("/_control/sent", params={"fan_id": fan["id"]})
    ).json()
    assert [copy["text"] for copy in copies] == ["Always for you, Theo"]

    await _redeliver_soon(live.stack.nats_url)
    live.worker.start()
    await live.worker.serving()
    page = await eventually(
        lambda: get_json(live, creator, f"/api/crm/conversations/{conversation_id}/messages"),
        lambda page: any(
            m["id"] == message_id and m["deliveryStatus"] == "sent" for m in page["messages"]
        ),
        within=90.0,
    )
    [reply] = [m for m in page["messages"] if m["direction"] == "out"]
    assert reply["id"] == message_id
    assert reply["platformMessageId"] == str(copies[0]["id"])
    # Exactly one copy on the platform, and the worker reported the send once.
    copies = (
        await live.simulator.control.get("/_control/sent", params={"fan_id": fan["id"]})
    ).json()
    assert [copy["text"] for copy in copies] == ["Always for you, Theo"]
    reported = await live.stack.events.of("onlyfans.message.sent", events_pb2.MessageSent)
    assert [event.message_id for event in reported] == [message_id]
