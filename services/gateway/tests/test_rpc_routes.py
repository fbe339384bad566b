"""Every RPC whose proto declares an HTTP route (`google.api.http`) is served there."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from google.api import annotations_pb2

from huntaze.auth.v1 import auth_pb2
from huntaze.common.v1 import route_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze.onlyfans.v1 import onlyfans_pb2
from huntaze_gateway.app import create_app
from huntaze_gateway.config import GatewaySettings
from huntaze_gateway.rpc_routes import Edge, Exposed, expose, http_rules
from huntaze_gateway.upstream import CallOptions


def test_every_declared_route_is_served_at_its_method_and_path() -> None:
    document = create_app(GatewaySettings()).openapi()
    served = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    services = (
        crm_pb2.DESCRIPTOR.services_by_name["CrmService"],
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    )
    declared = [
        http_rules(method)[0][:2]
        for service in services
        for method in service.methods
        if method.GetOptions().HasExtension(annotations_pb2.http)
    ]
    assert len(declared) >= 27
    assert set(declared) <= served, set(declared) - served


def test_a_reply_without_fields_answers_no_content() -> None:
    document = create_app(GatewaySettings()).openapi()
    deleted = document["paths"]["/api/crm/fans/{fan_id}"]["delete"]["responses"]
    assert "204" in deleted
    fetched = document["paths"]["/api/crm/fans/{fan_id}"]["get"]["responses"]["200"]
    schema = fetched["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/huntaze.crm.v1.Fan"}


def test_a_route_is_described_by_its_rpc_comment() -> None:
    document = create_app(GatewaySettings()).openapi()
    operation = document["paths"]["/api/crm/fans/{fan_id}"]["get"]
    assert operation["description"] == "The fan's profile, tags, notes, spend and subscription."


def test_every_declared_route_has_a_summary_and_a_body_model() -> None:
    document = create_app(GatewaySettings()).openapi()
    crm = crm_pb2.DESCRIPTOR.services_by_name["CrmService"]
    for method in crm.methods:
        if not method.GetOptions().HasExtension(annotations_pb2.http):
            continue
        assert method.GetOptions().Extensions[route_pb2.route].summary, method.name
        verb, path, _, _ = http_rules(method)[0]
        operation = document["paths"][path][verb.lower()]
        # A body made from the request message, unless the proto declares none.
        has_body = bool(method.GetOptions().Extensions[annotations_pb2.http].body)
        assert ("requestBody" in operation) == has_body, method.name
    created = document["paths"]["/api/crm/fans"]["post"]
    assert created["summary"] == "Add a fan"
    assert "201" in created["responses"]
    assert {"400", "401", "403", "409", "413", "422"} <= created["responses"].keys()


def test_an_edge_addition_for_an_rpc_without_a_route_is_refused() -> None:
    service = crm_pb2.DESCRIPTOR.services_by_name["CrmService"]
    edge = Edge(caller=None, stub_of=lambda request: None, problems=lambda *statuses: {})
    with pytest.raises(ValueError, match="ResolveAudience"):
        expose(
            (APIRouter(prefix="/api/crm"), APIRouter(prefix="/api/messages")),
            service,
            edge,
            (Exposed("ResolveAudience"),),
        )


async def test_a_route_with_its_own_deadline_waits_that_long_for_the_answer() -> None:
    """A sign-in drives a browser on the worker: Connect gets the deadline its route declares,
    where every other call gets the channel's usual one (no `timeout` of its own)."""
    calls: dict[str, dict[str, object]] = {}

    class Recording:
        def __getattr__(self, name: str) -> object:
            async def call(message: object, **options: object) -> object:
                calls[name] = options
                return (
                    onlyfans_pb2.ConnectResponse()
                    if name == "Connect"
                    else (onlyfans_pb2.AccountStatus())
                )

            return call

    app = FastAPI()
    routers = (APIRouter(prefix="/api/of"), APIRouter(prefix="/api/onboarding"))

    def caller() -> Any:
        return SimpleNamespace(options=CallOptions()("a-token"))

    edge = Edge(
        caller=Annotated[Any, Depends(caller)],
        stub_of=lambda request: Recording(),
        problems=lambda *s: {},
    )
    expose(routers, onlyfans_pb2.DESCRIPTOR.services_by_name["OnlyFansService"], edge)
    for router in routers:
        app.include_router(router)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
    ) as client:
        connected = await client.post(
            "/api/of/connect",
            json={"credentials": {"email": "creator@example.com", "password": "secret-words"}},
        )
        assert connected.status_code == 200, connected.text
        status = await client.get("/api/of/status")
        assert status.status_code == 200, status.text
    declared = onlyfans_pb2.DESCRIPTOR.services_by_name["OnlyFansService"].methods_by_name[
        "Connect"
    ]
    assert declared.GetOptions().Extensions[route_pb2.route].deadline_seconds == 60
    assert calls["Connect"]["timeout"] == 60
    assert "timeout" not in calls["GetStatus"]
