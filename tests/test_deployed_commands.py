"""The manifests' commands work as the cluster runs them: each migration Job, then each
Deployment, with the command and environment its manifest gives (its service's Secret alone),
as an unprivileged user, from a working directory it cannot write, with a home it cannot write.

Only the cluster's addresses change: NATS, the gRPC targets and the listen ports point at this
machine. The database URLs are the services' own roles, as `python -m huntaze_devstack roles`
makes them.
"""

from __future__ import annotations

import asyncio
import base64
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
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from cryptography.fernet import Fernet

from huntaze_devstack.embedded import free_port
from huntaze_devstack.roles import new_passwords, provision_roles, service_roles
from huntaze_kit.migrations import current_revision
from tests.manifests import container, environment, service_of, workloads

pytestmark = pytest.mark.slow

UNPRIVILEGED = 65534  # nobody / nogroup
READY_TIMEOUT = 60.0
AI_SERVICE_SECRET = "ai-secret-of-the-deploy-test"
CAMPAIGNS_SERVICE_SECRET = "campaigns-secret-of-the-deploy-test"
# What the image's Dockerfile sets for every process.
IMAGE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


def _as_unprivileged(command: list[str]) -> list[str]:
    """`command` run as an unprivileged user: when we are root, through `setpriv`."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root for this test"
    return [
        setpriv,
        f"--reuid={UNPRIVILEGED}",
        f"--regid={UNPRIVILEGED}",
        "--clear-groups",
        "--no-new-privs",
        *command,
    ]


@contextlib.contextmanager
def _read_only_directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="huntaze-ro-"))
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


class Cluster:
    """Runs workloads of the manifests as the cluster would, on this machine."""

    def __init__(self, workdir: Path, logs: Path, secrets: dict[str, dict[str, str]]) -> None:
        self.workdir = workdir
        self.logs = logs
        self.secrets = secrets
        self.ports = {
            "auth": free_port(),
            "crm": free_port(),
            "onlyfans": free_port(),
            "ai": free_port(),
            "analytics": free_port(),
            "campaigns": free_port(),
            "gateway": free_port(),
        }
        self.nats_url = ""
        self.running: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def env(self, workload: dict[str, Any]) -> dict[str, str]:
        env = environment(workload, self.secrets)
        addresses = {
            "HUNTAZE_NATS_URL": self.nats_url,
            "HUNTAZE_AUTH_GRPC_TARGET": f"127.0.0.1:{self.ports['auth']}",
            "HUNTAZE_CRM_GRPC_TARGET": f"127.0.0.1:{self.ports['crm']}",
            "HUNTAZE_ONLYFANS_GRPC_TARGET": f"127.0.0.1:{self.ports['onlyfans']}",
            "HUNTAZE_AI_GRPC_TARGET": f"127.0.0.1:{self.ports['ai']}",
            "HUNTAZE_ANALYTICS_GRPC_TARGET": f"127.0.0.1:{self.ports['analytics']}",
            "HUNTAZE_CAMPAIGNS_GRPC_TARGET": f"127.0.0.1:{self.ports['campaigns']}",
        }
        env.update({key: value for key, value in addresses.items() if key in env})
        service = service_of(workload)
        env[service.grpc_port_env or "HUNTAZE_GATEWAY_PORT"] = str(self.ports[service.name])
        # A free port instead of the image's default: this machine may serve that one already.
        env[f"HUNTAZE_{service.name.upper()}_METRICS_PORT"] = str(free_port())
        return {
            **env,
            **IMAGE_ENV,
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.workdir),
        }

    def command(self, workload: dict[str, Any], env: dict[str, str]) -> list[str]:
        """The container's command, its program found on the container's PATH (here, and
        not by `setpriv`, which would fall through to another interpreter on EACCES)."""
        program, *args = container(workload)["command"]
        found = shutil.which(program, path=env["PATH"])
        assert found, f"{program} is not on {env['PATH']}"
        return _as_unprivileged([found, *args])

    def run(self, workload: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
        env = self.env(workload)
        return subprocess.run(
            self.command(workload, env),
            env=env,
            cwd=self.workdir,
            capture_output=True,
            timeout=120,
            check=False,
        )

    def start(self, workload: dict[str, Any]) -> None:
        name = workload["metadata"]["name"]
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed by stop_all)
        env = self.env(workload)
        process = subprocess.Popen(
            self.command(workload, env),
            env=env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append((name, process, log))

    def output(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> dict[str, int]:
        """SIGTERM, as the kubelet sends it; answers each exit code."""
        codes = {}
        for name, process, log in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()
            codes[name] = process.returncode
        self.running.clear()
        return codes

    def everything_logged(self) -> str:
        return "\n".join(
            f"--- {path.stem} ---\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )


def _check_unprivileged_user_can_run_the_workspace() -> None:
    probe = subprocess.run(
        _as_unprivileged([sys.executable, "-c", "import huntaze_auth.server, huntaze_gateway"]),
        capture_output=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert probe.returncode == 0, (
        "an unprivileged user cannot run this workspace's interpreter or read its packages "
        f"(make them world-readable):\n{probe.stderr.decode(errors='replace')}"
    )


async def _wait_ready(cluster: Cluster, within: float = READY_TIMEOUT) -> dict[str, Any]:
    url = f"http://127.0.0.1:{cluster.ports['gateway']}/readyz"
    deadline = time.monotonic() + within
    last: Any = "no answer"
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            for name, process, _ in cluster.running:
                assert process.poll() is None, f"{name} exited:\n{cluster.everything_logged()}"
            with contextlib.suppress(httpx.TransportError):
                answer = await client.get(url)
                last = answer.text
                if answer.status_code == 200 and not answer.json()["unavailable"]:
                    body: dict[str, Any] = answer.json()
                    return body
            await asyncio.sleep(0.3)
    raise AssertionError(f"not ready in {within}s ({last}):\n{cluster.everything_logged()}")


async def test_jobs_and_deployments_run_unprivileged_read_only_with_their_own_settings(
    database_url: str, nats_url: str
) -> None:
    _check_unprivileged_user_can_run_the_workspace()
    roles = service_roles()
    urls = await provision_roles(database_url, roles, passwords=new_passwords(roles))
    secrets = {
        "huntaze-auth": {
            "HUNTAZE_DATABASE_URL": urls["auth"],
            "HUNTAZE_AUTH_SEALING_KEY": Fernet.generate_key().decode(),
            "HUNTAZE_AUTH_SERVICE_ACCOUNTS": json.dumps(
                {"ai": AI_SERVICE_SECRET, "campaigns": CAMPAIGNS_SERVICE_SECRET}
            ),
        },
        "huntaze-crm": {"HUNTAZE_DATABASE_URL": urls["crm"]},
        "huntaze-onlyfans": {
            "HUNTAZE_DATABASE_URL": urls["onlyfans"],
            "HUNTAZE_ONLYFANS_VAULT_MASTER_KEYS": base64.b64encode(os.urandom(32)).decode(),
        },
        "huntaze-ai": {
            "HUNTAZE_DATABASE_URL": urls["ai"],
            "HUNTAZE_AI_SERVICE_SECRET": AI_SERVICE_SECRET,
        },
        "huntaze-analytics": {"HUNTAZE_DATABASE_URL": urls["analytics"]},
        "huntaze-campaigns": {
            "HUNTAZE_DATABASE_URL": urls["campaigns"],
            "HUNTAZE_CAMPAIGNS_SERVICE_SECRET": CAMPAIGNS_SERVICE_SECRET,
        },
    }
    jobs = [doc for doc in workloads() if doc["kind"] == "Job"]
    deployments = [doc for doc in workloads() if doc["kind"] == "Deployment"]
    logs = Path(tempfile.mkdtemp(prefix="huntaze-deploy-logs-"))
    try:
        with _read_only_directory() as workdir:
            cluster = Cluster(workdir, logs, secrets)
            cluster.nats_url = nats_url

            for job in jobs:
                env = cluster.env(job)
                service = service_of(job)
                assert env["HUNTAZE_DATABASE_URL"] == urls[service.name]
                done = cluster.run(job)
                assert done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")
                assert service.schema is not None
                assert current_revision(database_url, schema=service.schema) is not None

            for deployment in deployments:
                cluster.start(deployment)
            try:
                ready = await _wait_ready(cluster)
                assert ready["status"] == "ready"
                gateway = f"http://127.0.0.1:{cluster.ports['gateway']}"
                async with httpx.AsyncClient(base_url=gateway, timeout=20.0) as client:
                    email = f"deploy-{uuid.uuid4().hex[:10]}@example.com"
                    registered = await client.post(
                        "/api/auth/register",
                        json={"email": email, "password": "Violet-Harbour-Deploy-Lantern"},
                    )
                    assert registered.status_code == 201, registered.text
            finally:
                codes = cluster.stop_all()
            # uvicorn re-raises SIGTERM once it has shut down in order.
            clean = {0, -signal.SIGTERM}
            assert set(codes) == {d["metadata"]["name"] for d in deployments}
            assert set(codes.values()) <= clean, f"{codes}\n{cluster.everything_logged()}"
            assert list(workdir.iterdir()) == []
            for deployment in deployments:
                text = cluster.output(deployment["metadata"]["name"])
                assert "Read-only file system" not in text
                assert "Permission denied" not in text
    finally:
        shutil.rmtree(logs, ignore_errors=True)
