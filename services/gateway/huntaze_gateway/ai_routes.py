"""`/api/ai/*` (and the seed's `POST /api/onboarding/save-ai-config`): HTTP/JSON in, the AI
agent's gRPC API out.

Thin like the other routes: the gateway checks the shape of the input and forwards the caller's
token; every rule (a valid configuration, who may accept what) is the agent's, and its errors
become problem documents through the one mapping in `problems`. A suggestion's own routes (get,
accept, reject) are declared in the proto and served by `rpc_routes`; the ones written here take
query filters or the configuration, whose JSON is the `AiConfig` message's (camelCase; snake_case
accepted), converted by protobuf's own JSON mapping.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from pydantic import Field

from huntaze.ai.v1 import ai_pb2
from huntaze_gateway.auth_routes import CurrentCaller, problems
from huntaze_gateway.codec import JsonResponse, ProtoEnum, enum_values, to_json
from huntaze_gateway.models import ApiModel, ProtoBody
from huntaze_gateway.openapi import proto_schema
from huntaze_gateway.rpc_routes import Edge, expose
from huntaze_gateway.state import runtime_of

if TYPE_CHECKING:
    from huntaze.ai.v1.ai_pb2_grpc import AiServiceAsyncStub

ai_router = APIRouter(prefix="/api/ai", tags=["ai"])
ai_onboarding_router = APIRouter(prefix="/api/onboarding", tags=["onboarding"])

_BODY = (400, 413, 422)
MAX_LIMIT = 200

Mode = Literal["off", "suggest", "autopilot"]
SuggestionStatusName = Annotated[str, ProtoEnum(ai_pb2.SuggestionStatus.DESCRIPTOR)]
_STATUS_VALUES = enum_values(ai_pb2.SuggestionStatus.DESCRIPTOR)


class ResponseStyleIn(ApiModel):
    tone: str | None = None
    use_emoji: bool | None = None
    max_length: int | None = Field(default=None, description="Characters per reply, 20 to 2,000.")
    language: str | None = None


class CustomResponseIn(ApiModel):
    trigger: str
    reply: str = Field(description="`{name}` becomes the fan's first name.")


class QuietHoursIn(ApiModel):
    start: str = Field(description="HH:MM in `timezone`.")
    end: str = Field(description="HH:MM; may be before `start` (the span crosses midnight).")
    timezone: str = Field(default="UTC", description="An IANA name, e.g. `Europe/Paris`.")


class GuardrailsIn(ApiModel):
    handoff_spend_cents: int | None = Field(
        default=None, description="Hand fans whose lifetime spend passes this to a person."
    )
    handoff_custom_requests: bool | None = None
    banned_topics: list[str] = Field(default_factory=list)
    banned_words: list[str] = Field(
        default_factory=list, description="Empty: the default list of account-risk words."
    )
    quiet_hours: QuietHoursIn | None = None
    ppv_min_cents: int | None = None
    ppv_max_cents: int | None = None


class BudgetIn(ApiModel):
    monthly_tokens: int | None = None
    monthly_cost_micros: int | None = Field(default=None, description="Millionths of a dollar.")


class AiConfigBody(ApiModel):
    """The whole configuration: members left out take their defaults."""

    personality: str | None = None
    response_style: ResponseStyleIn | None = None
    platforms: list[str] = Field(default_factory=list)
    custom_responses: list[CustomResponseIn] = Field(default_factory=list)
    dos: list[str] = Field(default_factory=list)
    donts: list[str] = Field(default_factory=list)
    mode: Mode | None = None
    fan_modes: dict[str, Mode] = Field(default_factory=dict, description="By fan id.")
    guardrails: GuardrailsIn | None = None
    budget: BudgetIn | None = None


# Checked by the agent (any other string is a 422 on the id, a UUID of nothing a 404).
ConversationIdPath = Annotated[str, Path(description="The conversation's id (a UUID).")]


class AcceptBody(ProtoBody, message=ai_pb2.AcceptSuggestionRequest, omit="suggestion_id"):
    text: str = Field(default="", description="The edited reply; empty: send as drafted.")


class AuditEntryOut(ApiModel):
    id: str
    suggestion_id: str
    conversation_id: str
    fan_id: str
    sent_message_id: str
    text: str
    prompt_fingerprint: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_micros: int
    latency_ms: int
    approved_by: str = Field(description="The approving user's id, or `autopilot`.")
    edited: bool
    created_at: datetime | None


class AuditEntriesOut(ApiModel):
    entries: list[AuditEntryOut]


def _ai(request: Request) -> AiServiceAsyncStub:
    return runtime_of(request).ai


_INT64_TYPES = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64}


def _numbers(message: Any, document: dict[str, Any]) -> dict[str, Any]:
    """Protobuf's JSON writes 64-bit integers as strings; this API writes numbers."""
    for field in message.DESCRIPTOR.fields:
        key = field.json_name
        if key not in document:
            continue
        if field.is_repeated:
            continue  # no list or map of this API holds 64-bit integers or messages with them
        if field.type in _INT64_TYPES:
            document[key] = int(document[key])
        elif field.message_type is not None:
            _numbers(getattr(message, field.name), document[key])
    return document


def _json(message: Any) -> dict[str, Any]:
    document = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _numbers(message, document)


def _config_json(config: ai_pb2.AiConfig) -> dict[str, Any]:
    return _json(config)


async def _save_config(body: AiConfigBody, caller: Any, request: Request) -> Response:
    config = json_format.ParseDict(body.model_dump(exclude_none=True), ai_pb2.AiConfig())
    saved = await _ai(request).UpdateConfig(
        ai_pb2.UpdateConfigRequest(config=config), **caller.options
    )
    return JsonResponse(_config_json(saved))


@ai_router.get("/config", summary="My AI configuration", responses=problems(401))
async def get_ai_config(caller: CurrentCaller, request: Request) -> Response:
    """Every member, defaults included."""
    config = await _ai(request).GetConfig(ai_pb2.GetConfigRequest(), **caller.options)
    return JsonResponse(_config_json(config))


@ai_router.put(
    "/config", summary="Replace my AI configuration", responses=problems(*_BODY, 401, 403)
)
async def put_ai_config(body: AiConfigBody, caller: CurrentCaller, request: Request) -> Response:
    """The whole configuration; members left out take their defaults."""
    return await _save_config(body, caller, request)


@ai_router.post("/config", summary="Save my AI configuration", responses=problems(*_BODY, 401, 403))
async def post_ai_config(body: AiConfigBody, caller: CurrentCaller, request: Request) -> Response:
    """The same as `PUT`."""
    return await _save_config(body, caller, request)


@ai_onboarding_router.post(
    "/save-ai-config",
    summary="Save the AI configuration during onboarding",
    responses=problems(*_BODY, 401, 403),
)
async def save_ai_config(body: AiConfigBody, caller: CurrentCaller, request: Request) -> Response:
    """The same as `PUT /api/ai/config`."""
    return await _save_config(body, caller, request)


@ai_router.get(
    "/suggestions",
    response_model=proto_schema("huntaze.ai.v1.ListSuggestionsResponse"),
    summary="List suggestions",
    responses=problems(401, 422),
)
async def list_suggestions(
    caller: CurrentCaller,
    request: Request,
    conversation_id: Annotated[str, Query(alias="conversationId", max_length=64)] = "",
    status: Annotated[list[SuggestionStatusName] | None, Query()] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT)] = None,
) -> Response:
    """Newest first; `status` may repeat."""
    reply = await _ai(request).ListSuggestions(
        ai_pb2.ListSuggestionsRequest(
            conversation_id=conversation_id,
            statuses=[_STATUS_VALUES[s] for s in status or ()],
            limit=limit or 0,
        ),
        **caller.options,
    )
    return JsonResponse({"suggestions": [to_json(s) for s in reply.suggestions]})


@ai_router.get(
    "/conversations/{conversation_id}/audit",
    response_model=AuditEntriesOut,
    summary="The AI-written messages of a conversation",
    responses=problems(401, 422),
)
async def list_audit(
    caller: CurrentCaller,
    request: Request,
    conversation_id: ConversationIdPath,
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT)] = None,
) -> Response:
    """Newest first: what wrote each (provider, model, prompt fingerprint), what it cost and
    who approved it."""
    reply = await _ai(request).ListAuditEntries(
        ai_pb2.ListAuditEntriesRequest(conversation_id=conversation_id, limit=limit or 0),
        **caller.options,
    )
    return JsonResponse({"entries": [_json(entry) for entry in reply.entries]})


# ---------------------------------------------------------------------------------------------
# The RPCs whose route the proto declares (`google.api.http`): served without a handler here.

expose(
    (ai_router,),
    ai_pb2.DESCRIPTOR.services_by_name["AiService"],
    Edge(caller=CurrentCaller, stub_of=_ai, problems=problems),
)
