"""For tests that drive the simulator: `serve()` runs it in-process on a free loopback port, and
`PlatformClient` behaves like a signed-in browser (it signs every request under the published
rules with the reference signer and sends the session's cookies, `x-bc`, `user-id` and
user-agent). A worker's tests can use both as the reference for what the platform accepts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn

from huntaze_simulator.app import create_app
from huntaze_simulator.config import SimulatorConfig
from huntaze_simulator.demo import DemoShape, populate
from huntaze_simulator.platform import Clock, Platform
from huntaze_simulator.signing import DynamicRules, sign_request

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


@dataclass
class Simulator:
    platform: Platform
    base_url: str
    control: httpx.AsyncClient

    async def rules(self) -> DynamicRules:
        response = await self.control.get("/rules.json")
        return DynamicRules.from_published(response.json())

    async def import_session(self, user_agent: str = USER_AGENT) -> PlatformClient:
        """A session as a person's browser holds it, copied the way most tools connect."""
        response = await self.control.post("/_control/sessions", json={"user_agent": user_agent})
        response.raise_for_status()
        imported = response.json()
        return PlatformClient(
            base_url=self.base_url,
            rules=await self.rules(),
            cookies=imported["cookies"],
            x_bc=imported["x_bc"],
            user_agent=imported["user_agent"],
        )

    async def new_fan(self, **fields: Any) -> dict[str, Any]:
        response = await self.control.post("/_control/fans", json=fields)
        response.raise_for_status()
        fan: dict[str, Any] = response.json()
        return fan

    async def fan_writes(self, fan_id: int, text: str) -> dict[str, Any]:
        response = await self.control.post(f"/_control/fans/{fan_id}/messages", json={"text": text})
        response.raise_for_status()
        message: dict[str, Any] = response.json()
        return message

    async def advance(self, seconds: float) -> None:
        response = await self.control.post("/_control/clock/advance", json={"seconds": seconds})
        response.raise_for_status()


@dataclass
class PlatformClient:
    """A browser-equivalent caller of `/api2/v2` (signing with the reference signer)."""

    base_url: str
    rules: DynamicRules
    cookies: dict[str, str]
    x_bc: str
    user_agent: str
    user_id: str | None = None
    time_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))

    def __post_init__(self) -> None:
        if self.user_id is None:
            self.user_id = self.cookies.get("auth_id")

    def headers(self, path_and_query: str) -> dict[str, str]:
        signed_for = self.user_id or "0"
        headers = {
            "accept": "application/json, text/plain, */*",
            "user-agent": self.user_agent,
            "x-bc": self.x_bc,
            **sign_request(
                self.rules,
                path_and_query=path_and_query,
                user_id=signed_for,
                time_ms=self.time_ms(),
            ),
        }
        if self.user_id:
            headers["user-id"] = self.user_id
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        target = f"/api2/v2{path}" + (f"?{urlencode(params)}" if params else "")
        # A fresh client per call keeps no cookie jar between calls; plain HTTP on loopback
        # needs no certificate store (loading one costs tens of milliseconds).
        async with httpx.AsyncClient(base_url=self.base_url, verify=False) as client:  # noqa: S501
            return await client.request(
                method, target, json=json, headers={**self.headers(target), **(headers or {})}
            )

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.call("GET", path, params=params or None)

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.call(method, path, **kwargs)
        response.raise_for_status()
        return response.json()


def is_platform_error(response: httpx.Response, *, status: int, code: int, message: str) -> bool:
    """True when `response` is the platform's error body with this status, code and message."""
    return response.status_code == status and response.json() == {
        "error": {"code": code, "message": message}
    }


@contextlib.asynccontextmanager
async def serve(
    config: SimulatorConfig | None = None, *, demo: DemoShape | None = None
) -> AsyncIterator[Simulator]:
    """The simulator on a free port until the block ends."""
    platform = Platform.fresh(config=config or SimulatorConfig(), clock=Clock())
    if demo is not None:
        populate(platform, demo)
    # Port 0: the OS picks a free port when uvicorn binds.
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(platform), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the simulator stopped while starting")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url) as control:
            yield Simulator(platform=platform, base_url=base_url, control=control)
    finally:
        server.should_exit = True
        await task
