"""The gateway's metrics: requests and latency by route template and status, never by raw path
(the number of series stays bounded however many fans or unknown paths are asked for)."""

from __future__ import annotations

import uuid

import httpx
from prometheus_client import REGISTRY

FAN_ROUTE = "/api/crm/fans/{fan_id}"


def _count(method: str, route: str, status: int) -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("http_server_requests_total", labels) or 0.0


def _timed(method: str, route: str, status: int) -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("http_server_request_duration_seconds_count", labels) or 0.0


async def test_requests_are_counted_by_route_template_and_status(
    offline_client: httpx.AsyncClient,
) -> None:
    before, timed_before = _count("GET", FAN_ROUTE, 401), _timed("GET", FAN_ROUTE, 401)
    for _ in range(3):
        response = await offline_client.get(f"/api/crm/fans/{uuid.uuid4()}")
        assert response.status_code == 401
    assert _count("GET", FAN_ROUTE, 401) == before + 3
    assert _timed("GET", FAN_ROUTE, 401) == timed_before + 3


async def test_unknown_paths_share_one_series(offline_client: httpx.AsyncClient) -> None:
    before = _count("GET", "unmatched", 404)
    for _ in range(2):
        response = await offline_client.get(f"/nowhere/{uuid.uuid4()}")
        assert response.status_code == 404
    assert _count("GET", "unmatched", 404) == before + 2
    paths = {
        sample.labels["route"]
        for metric in REGISTRY.collect()
        if metric.name == "http_server_requests"
        for sample in metric.samples
    }
    assert not any(path.startswith("/nowhere/") for path in paths)
