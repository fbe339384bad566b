# ruff: noqa: N802  (method names are the proto's)
"""The AiService gRPC servicer: thin, it maps messages to use cases and back. Every method acts
for the creator of the caller's access token; accepting a suggestion forwards that token to the
CRM, so the reply is sent as the creator's own."""

from __future__ import annotations

import uuid

from pydantic import ValidationError

from huntaze.ai.v1 import ai_pb2, ai_pb2_grpc
from huntaze_ai_agent import convert
from huntaze_ai_agent.service import AiAgentService
from huntaze_kit.errors import FieldViolation, InvalidArgument, Unauthenticated
from huntaze_kit.grpc_server import AccessPolicy, Context
from huntaze_kit.identity import current_principal

SERVICE_NAME: str = ai_pb2.DESCRIPTOR.services_by_name["AiService"].full_name
DEFAULT_LIMIT = 50


def _methods(*names: str) -> frozenset[str]:
    return frozenset(f"/{SERVICE_NAME}/{name}" for name in names)


def access_policy() -> AccessPolicy:
    """No public method; sending a reply needs a verified email address, as in the CRM."""
    return AccessPolicy(
        public_methods=frozenset(),
        service_methods={},
        verified_email_methods=_methods("AcceptSuggestion", "UpdateConfig"),
    )


def _creator() -> uuid.UUID:
    try:
        return uuid.UUID(current_principal().creator_id)
    except ValueError as exc:
        raise Unauthenticated(message="Invalid token.", reason="INVALID_TOKEN") from exc


def _limit(value: int) -> int:
    """The page size asked for (the proto's rule bounds it), or the default."""
    return value or DEFAULT_LIMIT


def _authorization(context: Context) -> tuple[tuple[str, str], ...]:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return (("authorization", value),)
    raise Unauthenticated(message="Missing token.", reason="MISSING_TOKEN")


class AiServicer(ai_pb2_grpc.AiServiceServicer):
    def __init__(self, service: AiAgentService) -> None:
        self._service = service

    async def GetConfig(
        self, request: ai_pb2.GetConfigRequest, context: Context
    ) -> ai_pb2.AiConfig:
        configuration = await self._service.get_configuration(creator_id=_creator())
        return convert.config_message(configuration)

    async def UpdateConfig(
        self, request: ai_pb2.UpdateConfigRequest, context: Context
    ) -> ai_pb2.AiConfig:
        try:
            configuration = convert.configuration(request.config)
        except ValidationError as error:
            violations = [
                FieldViolation(
                    "config." + ".".join(str(part) for part in issue["loc"]), issue["msg"]
                )
                for issue in error.errors()
            ]
            raise InvalidArgument(
                message="The configuration is not valid.", violations=violations
            ) from error
        saved = await self._service.update_configuration(
            creator_id=_creator(), configuration=configuration
        )
        return convert.config_message(saved)

    async def ListSuggestions(
        self, request: ai_pb2.ListSuggestionsRequest, context: Context
    ) -> ai_pb2.ListSuggestionsResponse:
        statuses = [convert.STATUS_NAMES[s] for s in request.statuses if s in convert.STATUS_NAMES]
        rows = await self._service.list_suggestions(
            creator_id=_creator(),
            metadata=_authorization(context),
            conversation_id=request.conversation_id,
            statuses=statuses,
            limit=_limit(request.limit),
        )
        return ai_pb2.ListSuggestionsResponse(suggestions=[convert.suggestion(r) for r in rows])

    async def GetSuggestion(
        self, request: ai_pb2.GetSuggestionRequest, context: Context
    ) -> ai_pb2.Suggestion:
        row = await self._service.get_suggestion(
            creator_id=_creator(), suggestion_id=request.suggestion_id
        )
        return convert.suggestion(row)

    async def AcceptSuggestion(
        self, request: ai_pb2.AcceptSuggestionRequest, context: Context
    ) -> ai_pb2.Suggestion:
        row = await self._service.accept(
            creator_id=_creator(),
            user_id=current_principal().user_id,
            metadata=_authorization(context),
            suggestion_id=request.suggestion_id,
            text=request.text,
        )
        return convert.suggestion(row)

    async def RejectSuggestion(
        self, request: ai_pb2.RejectSuggestionRequest, context: Context
    ) -> ai_pb2.Suggestion:
        row = await self._service.reject(creator_id=_creator(), suggestion_id=request.suggestion_id)
        return convert.suggestion(row)

    async def ListAuditEntries(
        self, request: ai_pb2.ListAuditEntriesRequest, context: Context
    ) -> ai_pb2.ListAuditEntriesResponse:
        rows = await self._service.list_audit(
            creator_id=_creator(),
            metadata=_authorization(context),
            conversation_id=request.conversation_id,
            limit=_limit(request.limit),
        )
        return ai_pb2.ListAuditEntriesResponse(entries=[convert.audit_entry(r) for r in rows])
