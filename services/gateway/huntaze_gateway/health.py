"""Probes: `/healthz` (the process answers) and `/readyz` (the gateway itself can serve: its
settings are loaded and the revocation events of the last token lifetime have been replayed).

Upstream health does not decide readiness: one service's outage must not take the routes of the
others down with it (a CRM outage must not stop logins). `/readyz` reports each upstream's
standard gRPC health check; a route of an unavailable upstream answers 503 problem+json with
Retry-After by itself."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import Response
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel, Field

from huntaze_gateway.problems import UNAVAILABLE, Problem
from huntaze_gateway.state import Runtime, runtime_of

health_router = APIRouter(tags=["health"])

REVOCATIONS_CHECK = "revocations"


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "degraded"] = Field(
        description="`degraded`: the gateway serves, but some upstream is not SERVING."
    )
    checks: dict[str, str] = Field(
        description="Each upstream's health status, and the state of revocation events."
    )
    unavailable: list[str] = Field(
        default_factory=list, description="Upstreams not SERVING: their routes answer 503."
    )


class NotReady(Problem):
    checks: dict[str, str] = Field(description="What each check found.")
    unavailable: list[str] = Field(description="Upstreams not SERVING.")


@health_router.get("/healthz", summary="Liveness")
async def healthz() -> Liveness:
    """200 while the process runs; it checks nothing else."""
    return Liveness()


async def _upstream_status(channel: grpc.aio.Channel, deadline: float) -> str:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=deadline)
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)
    except TimeoutError:
        return "DEADLINE_EXCEEDED"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def readiness_checks(runtime: Runtime) -> dict[str, str]:
    timeout = runtime.settings.gateway_readiness_timeout_seconds
    names = list(runtime.channels)
    statuses = await asyncio.gather(
        *(_upstream_status(runtime.channels[name], timeout) for name in names)
    )
    checks = dict(zip(names, statuses, strict=True))
    checks[REVOCATIONS_CHECK] = runtime.revocations_status
    return checks


def unavailable_upstreams(checks: dict[str, str]) -> list[str]:
    return [
        name for name, status in checks.items() if name != REVOCATIONS_CHECK and status != "SERVING"
    ]


@health_router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: {"model": NotReady, "description": "The gateway itself cannot serve yet."}},
)
async def readyz(request: Request) -> Readiness | Response:
    """200 once recent revocation events have been replayed at start (`revocations` reads
    FOLLOWING, or RECONNECTING while NATS is away: the gateway stays ready, auth still refuses
    revoked sessions); else 503 while it is STARTING. Each upstream's gRPC health check (within a
    short deadline) is reported in `checks`; one that is not SERVING makes the answer `degraded`,
    not unready: only that upstream's routes fail (503 with Retry-After)."""
    runtime = runtime_of(request)
    checks = await readiness_checks(runtime)
    unavailable = unavailable_upstreams(checks)
    if checks[REVOCATIONS_CHECK] != "STARTING":
        return Readiness(
            status="degraded" if unavailable else "ready", checks=checks, unavailable=unavailable
        )
    return runtime.problems.response(
        UNAVAILABLE,
        instance=request.url.path,
        code="NOT_READY",
        detail="Not ready: revocation events are still being replayed.",
        extensions={"checks": checks, "unavailable": unavailable},
    )
