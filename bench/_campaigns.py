"""What the campaigns benchmarks share: auth, the CRM, the campaigns service and the gateway as
real processes, a verified creator, and a CRM list of many fans written straight into the CRM's
tables (the audience a benchmark plans; writing 50,000 fans through the API is not what is
measured)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
from _support import PASSWORD, RunningSuite, running_suite, sign_up

from huntaze.campaigns.v1 import campaigns_pb2_grpc
from huntaze_devstack.embedded import free_port
from huntaze_kit.db import libpq_url
from huntaze_kit.grpc_client import bearer_metadata, create_channel

SERVICE_SECRET = "bench-campaigns-secret"
PROCESSES = ("auth", "crm", "campaigns", "gateway")


def _settings() -> dict[str, str]:
    return {
        "HUNTAZE_AUTH_SERVICE_ACCOUNTS": json.dumps({"campaigns": SERVICE_SECRET}),
        # Planned campaigns are scheduled for later: nothing is sent while they are measured.
        "HUNTAZE_CAMPAIGNS_POLL_SECONDS": "5",
        # Free ports: another suite on this machine may hold the defaults.
        **{f"HUNTAZE_{name.upper()}_METRICS_PORT": str(free_port()) for name in PROCESSES},
    }


@dataclass
class CampaignsBench:
    suite: RunningSuite
    creator_id: str
    token: str
    stub: campaigns_pb2_grpc.CampaignServiceAsyncStub

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.token)


async def _verified_creator(suite: RunningSuite) -> tuple[str, str]:
    """A creator whose address is verified (set in auth's table, then signed in again, so the
    token says so): campaigns message fans, which needs a verified address."""
    token, user_id = await sign_up(suite.gateway_url)
    connection = await asyncpg.connect(libpq_url(suite.database_url))
    try:
        await connection.execute(
            "UPDATE auth.users SET email_verified_at = now() WHERE id = $1", uuid.UUID(user_id)
        )
        email = await connection.fetchval(
            "SELECT email FROM auth.users WHERE id = $1", uuid.UUID(user_id)
        )
    finally:
        await connection.close()
    async with httpx.AsyncClient(base_url=suite.gateway_url, timeout=20.0) as client:
        login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        token = login.json()["tokens"]["accessToken"]
    return token, user_id


async def fan_list(database_url: str, creator_id: str, fans: int) -> str:
    """A static CRM list of `fans` new OnlyFans fans of the creator (COPY into the CRM's
    tables); its id."""
    creator = uuid.UUID(creator_id)
    list_id = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(fans)]
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "fans",
                schema_name="crm",
                columns=["id", "creator_id", "platform", "platform_fan_id", "display_name"],
                records=[
                    (fan_id, creator, "onlyfans", str(10_000_000 + index), f"Fan{index} Bench")
                    for index, fan_id in enumerate(ids)
                ],
            )
            await connection.execute(
                "INSERT INTO crm.fan_lists (id, creator_id, name, kind) "
                "VALUES ($1, $2, 'Everyone', 'static')",
                list_id,
                creator,
            )
            await connection.copy_records_to_table(
                "fan_list_members",
                schema_name="crm",
                columns=["list_id", "fan_id", "creator_id"],
                records=[(list_id, fan_id, creator) for fan_id in ids],
            )
        await connection.execute("ANALYZE crm.fans; ANALYZE crm.fan_list_members")
    finally:
        await connection.close()
    return str(list_id)


@contextlib.asynccontextmanager
async def campaigns_bench() -> AsyncIterator[CampaignsBench]:
    async with running_suite(list(PROCESSES), settings=_settings()) as suite:
        token, creator_id = await _verified_creator(suite)
        channel = create_channel(suite.env["HUNTAZE_CAMPAIGNS_GRPC_TARGET"], deadline=120.0)
        try:
            yield CampaignsBench(
                suite=suite,
                creator_id=creator_id,
                token=token,
                stub=campaigns_pb2_grpc.CampaignServiceStub(channel),  # type: ignore[arg-type]
            )
        finally:
            await channel.close()
