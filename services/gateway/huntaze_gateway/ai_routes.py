"""`/api/ai/*` (and the seed's `POST /api/onboarding/save-ai-config`): HTTP/JSON in, the AI
agent's gRPC API out.

Thin like the other routes: the gateway checks the shape of the input and forwards the caller's
token; every rule (a valid configuration, who may accept what) is the agent's, and its errors
become problem documents through the one mapping in `problems`. The configuration's JSON is the
`AiConfig` message's (camelCase; snake_case accepted), converted by protobuf's own JSON mapping.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from pydantic import Field

from huntaze.ai.v1 import ai_pb2
from huntaze_gateway.auth_routes import ApiModel, CurrentCaller, problems
from huntaze_gateway.crm_routes import ConversationIdPath, JsonResponse
from huntaze_gateway.state import runtime_of

if TYPE_CHECKING:
    from huntaze.ai.v1.ai_pb2_grpc import AiServiceAsyncStub

ai_router = APIRouter(prefix="/api/ai", tags=["ai"])
ai_onboarding_router = APIRouter(prefix="/api/onboarding", tags=["onboarding"])

_BODY = (400, 413, 422)
MAX_LIMIT = 200

Mode = Literal["off", "suggest", "autopilot"]
SuggestionStatus = Literal[
    "pending",
    "suggested",
    "scheduled",
    "sent",
    "accepted",
    "edited",
    "rejected",
    "cancelled",
    "handed_off",
    "ignored",
]
_STATUS_VALUES = {
    name: ai_pb2.SuggestionStatus.Value(f"SUGGESTION_STATUS_{name.upper()}")
    for name in SuggestionStatus.__args__  # type: ignore[attr-defined]
}
_STATUS_NAMES = {value: name for name, value in _STATUS_VALUES.items()}


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


class AcceptBody(ApiModel):
    text: str = Field(default="", description="The edited reply; empty: send as drafted.")


class SuggestionOut(ApiModel):
    id: str
    conversation_id: str
    fan_id: str
    message_id: str
    incoming_text: str
    text: str
    status: SuggestionStatus
    mode: str
    handoff_reason: str | None
    provider: str
    model: str
    sent_message_id: str | None
    send_after: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


class SuggestionsOut(ApiModel):
    suggestions: list[SuggestionOut]


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


def _time(message: Any, name: str) -> str | None:
    return getattr(message, name).ToJsonString() if message.HasField(name) else None


def suggestion_json(suggestion: ai_pb2.Suggestion) -> dict[str, Any]:
    return {
        "id": suggestion.id,
        "conversationId": suggestion.conversation_id,
        "fanId": suggestion.fan_id,
        "messageId": suggestion.message_id,
        "incomingText": suggestion.incoming_text,
        "text": suggestion.text,
        "status": _STATUS_NAMES.get(suggestion.status, "pending"),
        "mode": suggestion.mode,
        "handoffReason": suggestion.handoff_reason or None,
        "provider": suggestion.provider,
        "model": suggestion.model,
        "sentMessageId": suggestion.sent_message_id or None,
        "sendAfter": _time(suggestion, "send_after"),
        "createdAt": _time(suggestion, "created_at"),
        "updatedAt": _time(suggestion, "updated_at"),
    }


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


SuggestionIdPath = Annotated[str, Path(description="The suggestion's id (a UUID).")]


@ai_router.get(
    "/suggestions",
    response_model=SuggestionsOut,
    summary="List suggestions",
    responses=problems(401, 422),
)
async def list_suggestions(
    caller: CurrentCaller,
    request: Request,
    conversation_id: Annotated[str, Query(alias="conversationId", max_length=64)] = "",
    status: Annotated[list[SuggestionStatus] | None, Query()] = None,
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
    return JsonResponse({"suggestions": [suggestion_json(s) for s in reply.suggestions]})


@ai_router.get(
    "/suggestions/{suggestion_id}",
    response_model=SuggestionOut,
    summary="Get a suggestion",
    responses=problems(401, 404, 422),
)
async def get_suggestion(
    caller: CurrentCaller, request: Request, suggestion_id: SuggestionIdPath
) -> Response:
    reply = await _ai(request).GetSuggestion(
        ai_pb2.GetSuggestionRequest(id=suggestion_id), **caller.options
    )
    return JsonResponse(suggestion_json(reply))


@ai_router.post(
    "/suggestions/{suggestion_id}/accept",
    response_model=SuggestionOut,
    summary="Send a suggestion, as drafted or edited",
    responses=problems(*_BODY, 401, 403, 404, 429),
)
async def accept_suggestion(
    body: AcceptBody, caller: CurrentCaller, request: Request, suggestion_id: SuggestionIdPath
) -> Response:
    """Sent as the creator's own message; a 409 problem (`SUGGESTION_NOT_OPEN`) once answered."""
    reply = await _ai(request).AcceptSuggestion(
        ai_pb2.AcceptSuggestionRequest(id=suggestion_id, text=body.text), **caller.options
    )
    return JsonResponse(suggestion_json(reply))


@ai_router.post(
    "/suggestions/{suggestion_id}/reject",
    response_model=SuggestionOut,
    summary="Reject a suggestion",
    responses=problems(401, 404, 422),
)
async def reject_suggestion(
    caller: CurrentCaller, request: Request, suggestion_id: SuggestionIdPath
) -> Response:
    reply = await _ai(request).RejectSuggestion(
        ai_pb2.RejectSuggestionRequest(id=suggestion_id), **caller.options
    )
    return JsonResponse(suggestion_json(reply))


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
