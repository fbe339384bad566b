"""`/api/ai/*` (and the seed's `POST /api/onboarding/save-ai-config`): the AI agent's gRPC API,
every route declared in its proto. The configuration's JSON is the `AiConfig` message's; every
rule (a valid configuration, who may accept what) is the agent's."""

from __future__ import annotations

from fastapi import APIRouter

from huntaze.ai.v1 import ai_pb2
from huntaze_gateway.auth_routes import CurrentCaller, problems
from huntaze_gateway.rpc_routes import Edge, expose
from huntaze_gateway.state import runtime_of

ai_router = APIRouter(prefix="/api/ai", tags=["ai"])
ai_onboarding_router = APIRouter(prefix="/api/onboarding", tags=["onboarding"])

expose(
    (ai_router, ai_onboarding_router),
    ai_pb2.DESCRIPTOR.services_by_name["AiService"],
    Edge(caller=CurrentCaller, stub_of=lambda request: runtime_of(request).ai, problems=problems),
)
