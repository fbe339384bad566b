"""The OnlyFans part of `make run`: the platform simulator in demo mode, and a demo creator
connected to it, so a new user sees a live inbox at once.

`python -m huntaze_devstack.onlyfans_demo connect` waits for the gateway, signs up the demo
creator (verifying the address from the caught email) or signs them in, connects their OnlyFans
account to the simulator's demo creator through `POST /api/of/connect`, prints the login, and
then waits until the suite stops (honcho stops everything when one process exits).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import httpx

from huntaze_devstack.testing import token_from_email

SIMULATOR_PORT = 8765
DEMO_EMAIL = "demo.creator@example.com"
DEMO_PASSWORD = "demo-creator-Harbor-42"
PLATFORM_EMAIL = "creator@example.com"
PLATFORM_PASSWORD = "creator-password"
READY_TIMEOUT = 120.0
# The services come up in any order: the first calls may find one still starting.
CONNECT_ATTEMPTS = 10


def simulator_url(port: int = SIMULATOR_PORT) -> str:
    return f"http://127.0.0.1:{port}"


def simulator_command(home: Path, port: int = SIMULATOR_PORT) -> str:
    """The simulator in demo mode, its state kept in `home/simulator.json` across restarts."""
    return shlex.join(
        [
            "exec",
            sys.executable,
            "-m",
            "huntaze_simulator",
            "serve",
            "--port",
            str(port),
            "--demo",
            "--snapshot",
            str(home / "simulator.json"),
        ]
    )


def connect_command(gateway_url: str, maildir: Path | None) -> str:
    args = [sys.executable, "-m", "huntaze_devstack.onlyfans_demo", "connect", gateway_url]
    if maildir is not None:
        args += ["--maildir", str(maildir)]
    return shlex.join(["exec", *args])


def _verification_mail(maildir: Path) -> EmailMessage | None:
    parser = BytesParser(policy=policy.default)
    for folder in ("new", "cur"):
        for path in sorted((maildir / folder).glob("*"), reverse=True):
            message = parser.parsebytes(path.read_bytes())
            if isinstance(message, EmailMessage) and DEMO_EMAIL in str(message.get("To", "")):
                return message
    return None


async def _wait_ready(client: httpx.AsyncClient) -> None:
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    while asyncio.get_running_loop().time() < deadline:
        try:
            ready = await client.get("/readyz")
            if ready.status_code == 200 and not ready.json().get("unavailable"):
                return
        except (httpx.TransportError, ValueError):
            pass
        await asyncio.sleep(1.0)
    raise SystemExit("the gateway did not become ready")


async def _sign_in(client: httpx.AsyncClient, maildir: Path | None) -> str:
    registered = await client.post(
        "/api/auth/register",
        json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD, "name": "Demo Creator"},
    )
    if registered.status_code == 201 and maildir is not None:
        for _ in range(60):
            mail = _verification_mail(maildir)
            if mail is not None:
                token = token_from_email(mail, "verify-email")
                await client.post("/api/auth/verify-email", json={"token": token})
                break
            await asyncio.sleep(0.5)
    login = await client.post(
        "/api/auth/login", json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD}
    )
    login.raise_for_status()
    return str(login.json()["tokens"]["accessToken"])


async def connect(gateway_url: str, maildir: Path | None) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=120.0) as client:
        await _wait_ready(client)
        token = await _sign_in(client, maildir)
        auth = {"authorization": f"Bearer {token}"}
        status = (await client.get("/api/of/status", headers=auth)).json()
        if status.get("state") != "connected":
            answer = await client.post(
                "/api/of/connect",
                headers=auth,
                json={"credentials": {"email": PLATFORM_EMAIL, "password": PLATFORM_PASSWORD}},
            )
            status = answer.json()
    state = status.get("state", status.get("code", "failed"))
    print(
        f"demo creator: {DEMO_EMAIL} / {DEMO_PASSWORD} (OnlyFans on the simulator: {state})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m huntaze_devstack.onlyfans_demo")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("connect", help="sign up the demo creator and connect OnlyFans")
    run.add_argument("gateway_url")
    run.add_argument("--maildir", type=Path, default=None)
    args = parser.parse_args(argv)
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            asyncio.run(connect(args.gateway_url, args.maildir))
            break
        except (httpx.HTTPError, KeyError, ValueError) as error:
            if attempt == CONNECT_ATTEMPTS:
                print(f"the demo creator could not be connected: {error}", flush=True)
            else:
                time.sleep(3.0)
    # Stay up with the suite: honcho stops every process when one exits.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
