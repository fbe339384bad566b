"""The auth process on the kit's service host: its metrics after calls, a start that fails
half-way, SIGTERM to a real process, and `migrate` in a read-only working directory."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from huntaze.auth.v1 import auth_pb2, auth_pb2_grpc
from huntaze_auth.config import AuthSettings
from huntaze_auth.models import SCHEMA
from huntaze_auth.server import AuthServer
from huntaze_devstack.embedded import free_port
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_devstack.testing import scrape
from huntaze_kit.grpc_client import create_channel
from huntaze_kit.migrations import current_revision

pytestmark = pytest.mark.timeout(120)

GRACE_SECONDS = 3.0


async def test_metrics_count_each_rpc_by_method_and_status(
    auth_server: AuthServer, stub: auth_pb2_grpc.AuthServiceAsyncStub
) -> None:
    url = f"http://127.0.0.1:{auth_server.metrics_port}/metrics"
    ok = {"grpc_method": "/huntaze.auth.v1.AuthService/GetPublicKeys", "grpc_code": "OK"}
    denied = {"grpc_method": "/huntaze.auth.v1.AuthService/GetMe", "grpc_code": "UNAUTHENTICATED"}
    before = await scrape(url)

    await stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetMe(auth_pb2.GetMeRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    after = await scrape(url)
    handled, latency = "grpc_server_handled_total", "grpc_server_handling_seconds_count"
    assert after.value(handled, **ok) == before.value(handled, **ok) + 1
    assert after.value(handled, **denied) == before.value(handled, **denied) + 1
    assert after.value(latency, **ok) == before.value(latency, **ok) + 1


async def test_a_start_that_fails_stops_every_part_that_started(
    migrated_url: str, nats_url: str, mail_catcher: MailCatcher
) -> None:
    settings = _settings(migrated_url, nats_url, mail_catcher)
    # The gRPC server starts last: a port held by another socket makes it fail.
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        server = AuthServer(settings.model_copy(update={"auth_grpc_port": port}))
        try:
            with pytest.raises(RuntimeError, match="cannot bind"):
                await server.start()
        finally:
            await server.stop()  # nothing left to stop when the start cleaned up after itself
    assert server.host.parts == []
    assert server.relay is not None
    assert server.email_consumer is not None
    left = [task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("auth-")]
    assert left == []


async def test_sigterm_stops_the_process_within_its_grace_period(
    migrated_url: str, nats_url: str, mail_catcher: MailCatcher
) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("HUNTAZE_")},
        "HUNTAZE_DATABASE_URL": migrated_url,
        "HUNTAZE_NATS_URL": nats_url,
        "HUNTAZE_SMTP_URL": mail_catcher.smtp_url,
        "HUNTAZE_AUTH_GRPC_PORT": str(grpc_port),
        "HUNTAZE_AUTH_METRICS_PORT": str(metrics_port),
        "HUNTAZE_GRACE_SECONDS": str(GRACE_SECONDS),
        "HUNTAZE_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "huntaze_auth.server"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await _until_serving(f"127.0.0.1:{grpc_port}", process)
        await scrape(f"http://127.0.0.1:{metrics_port}/metrics")  # the process serves it
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(process.wait, GRACE_SECONDS + 5)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0].decode(errors="replace")
    assert code == 0, output
    assert took < GRACE_SECONDS + 2, (took, output)


async def test_migrate_writes_to_the_database_only(database_url: str) -> None:
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("HUNTAZE_")},
        "HUNTAZE_DATABASE_URL": database_url,
        "HUNTAZE_LOG_LEVEL": "WARNING",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with tempfile.TemporaryDirectory(prefix="huntaze-migrate-") as scratch:
        cwd = Path(scratch)
        cwd.chmod(0o555)  # a read-only working directory, as in the container
        try:
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "huntaze_auth.server", "migrate"],
                env=env,
                cwd=cwd,
                capture_output=True,
                timeout=90,
                check=False,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert list(cwd.iterdir()) == []
        finally:
            cwd.chmod(0o755)
    assert await asyncio.to_thread(current_revision, database_url, schema=SCHEMA) is not None


def _settings(database_url: str, nats_url: str, mail: MailCatcher) -> AuthSettings:
    return AuthSettings(
        database_url=database_url,
        nats_url=nats_url,
        smtp_url=mail.smtp_url,
        auth_grpc_host="127.0.0.1",
        auth_grpc_port=0,
        auth_metrics_port=0,
        db_pool_size=2,
    )


async def _until_serving(target: str, process: subprocess.Popen[bytes]) -> None:
    channel = create_channel(target)
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError("the auth process exited at start")
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError("the auth process did not serve within 60 s")
    finally:
        await channel.close()
