"""Probes: `/healthz` (the process answers) and `/readyz` (it can serve: every upstream's
standard gRPC health check says SERVING, and the revocation events of the last token lifetime
have been replayed)."""

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
    status: Literal["ready"] = "ready"
    checks: dict[str, str] = Field(
        description="Each upstream's health status, and the state of revocation events."
    )


class NotReady(Problem):
    checks: dict[str, str] = Field(description="What each check found.")


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


@health_router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: {"model": NotReady, "description": "Some dependency is not ready."}},
)
async def readyz(request: Request) -> Readiness | Response:
    """200 when every upstream service answers SERVING to its gRPC health check (within a
    short deadline) and recent revocation events have been replayed at start; else 503 with
    what each check found. `revocations` reads FOLLOWING, RECONNECTING (NATS away: the gateway
    stays ready, auth still refuses revoked sessions) or STARTING."""
    runtime = runtime_of(request)
    checks = await readiness_checks(runtime)
    not_ready = [
        name
        for name, status in checks.items()
        if (status == "STARTING" if name == REVOCATIONS_CHECK else status != "SERVING")
    ]
    if not not_ready:
        return Readiness(checks=checks)
    return runtime.problems.response(
        UNAVAILABLE,
        instance=request.url.path,
        code="NOT_READY",
        detail="Not ready: " + ", ".join(not_ready) + ".",
        extensions={"checks": checks},
    )
