"""Every process of the suite serves its metrics on a port of its own: a request through the
gateway shows up at the gateway by route template, and at the service it called by RPC."""

from __future__ import annotations

from typing import Any

import pytest

from huntaze_devstack.testing import scrape

pytestmark = pytest.mark.slow


async def test_a_call_through_the_gateway_is_counted_at_every_hop(suite: Any) -> None:
    route = {"method": "POST", "route": "/api/auth/login", "status": "401"}
    rpc = {"grpc_method": "/huntaze.auth.v1.AuthService/Login", "grpc_code": "UNAUTHENTICATED"}
    gateway_before = await scrape(suite.metrics_urls["gateway"])
    auth_before = await scrape(suite.metrics_urls["auth"])

    async with suite.client() as client:
        response = await client.post(
            "/api/auth/login", json={"email": "nobody@example.com", "password": "not-a-password"}
        )
        assert response.status_code == 401, response.text
        # The gateway's metrics are not on its public API.
        assert (await client.get("/metrics")).status_code == 404

    gateway = await scrape(suite.metrics_urls["gateway"])
    auth = await scrape(suite.metrics_urls["auth"])
    requests, handled = "http_server_requests_total", "grpc_server_handled_total"
    assert gateway.value(requests, **route) == gateway_before.value(requests, **route) + 1
    assert auth.value(handled, **rpc) == auth_before.value(handled, **rpc) + 1
    crm = await scrape(suite.metrics_urls["crm"])
    assert crm.value("process_cpu_seconds_total") > 0
