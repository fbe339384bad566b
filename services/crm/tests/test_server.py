"""The CRM process on the kit's service host: it starts with nothing else running (the streams
it reads are made when missing), serves its metrics, and stops every part it started."""

from __future__ import annotations

import asyncio

import nats
import pytest

from huntaze_crm.config import CrmSettings
from huntaze_crm.models import SCHEMA
from huntaze_crm.server import MIGRATIONS_PACKAGE, CrmServer
from huntaze_devstack.embedded import free_port
from huntaze_devstack.testing import scrape
from huntaze_kit.identity import StaticKeySource
from huntaze_kit.migrations import upgrade_async

pytestmark = pytest.mark.timeout(120)


async def test_the_crm_starts_before_the_services_whose_streams_it_reads(
    database_url: str, nats_url: str
) -> None:
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    server = CrmServer(
        CrmSettings(
            database_url=database_url,
            nats_url=nats_url,
            # Nobody answers there: tokens are checked with keys given here instead.
            auth_grpc_target=f"127.0.0.1:{free_port()}",
            crm_grpc_host="127.0.0.1",
            crm_grpc_port=0,
            crm_metrics_port=0,
            grace_seconds=1.0,
            db_pool_size=2,
        ),
        key_source=StaticKeySource({"keys": []}),
    )
    await asyncio.wait_for(server.start(), 60)
    try:
        assert server.host.parts[0] == "metrics"
        assert server.host.parts[-1] == "grpc"
        client = await nats.connect(nats_url)
        try:
            js = client.jetstream()
            streams = {info.config.name for info in await js.streams_info()}
        finally:
            await client.close()
        # Its own, the dead letters, and those of the worker and of auth, which never ran.
        assert {"CRM", "DLQ", "ONLYFANS", "AUTH"} <= streams
        metrics = await scrape(f"http://127.0.0.1:{server.metrics_port}/metrics")
        assert metrics.value("process_cpu_seconds_total") > 0
    finally:
        await server.stop()
    assert server.host.parts == []
    left = [task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("crm-")]
    assert left == []
