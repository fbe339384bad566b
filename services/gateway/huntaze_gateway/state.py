"""What the routes share at run time, opened by the app's lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import grpc
from fastapi import Request
from nats.aio.client import Client as NatsClient

from huntaze_gateway.config import GatewaySettings
from huntaze_gateway.problems import Problems
from huntaze_gateway.upstream import CallOptions
from huntaze_kit.identity import TokenVerifier
from huntaze_kit.revocations import RevocationFollower

if TYPE_CHECKING:
    from huntaze.ai.v1.ai_pb2_grpc import AiServiceAsyncStub
    from huntaze.analytics.v1.analytics_pb2_grpc import AnalyticsServiceAsyncStub
    from huntaze.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from huntaze.campaigns.v1.campaigns_pb2_grpc import CampaignServiceAsyncStub
    from huntaze.crm.v1.crm_pb2_grpc import CrmServiceAsyncStub
    from huntaze.onlyfans.v1.onlyfans_pb2_grpc import OnlyFansServiceAsyncStub


@dataclass
class Runtime:
    settings: GatewaySettings
    problems: Problems
    # One long-lived channel per upstream service, by name; `/readyz` checks each one.
    channels: dict[str, grpc.aio.Channel]
    auth: AuthServiceAsyncStub
    crm: CrmServiceAsyncStub
    onlyfans: OnlyFansServiceAsyncStub
    ai: AiServiceAsyncStub
    analytics: AnalyticsServiceAsyncStub
    campaigns: CampaignServiceAsyncStub
    # `await runtime.auth.Method(request, **runtime.call(token))`: the caller's token (the
    # channels add the deadline and the request id).
    call: CallOptions
    # Remembers verified tokens until they expire; checks revocations on every call.
    verifier: TokenVerifier
    nats: NatsClient | None = None
    follower: RevocationFollower | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def revocations_status(self) -> str:
        """`STARTING` until revocation events have been replayed once (the last access-token
        lifetime of them), then `FOLLOWING`, or `RECONNECTING` while NATS is away. Only
        `STARTING` keeps the gateway unready: auth checks sessions itself, so a NATS outage
        must not take the API down with it."""
        if self.follower is None or not self.follower.ready.is_set():
            return "STARTING"
        if self.nats is None or not self.nats.is_connected:
            return "RECONNECTING"
        return "FOLLOWING"


def runtime_of(request: Request) -> Runtime:
    return cast(Runtime, request.app.state.runtime)
