"""`/api/crm/*` and `/api/messages/*`: HTTP/JSON in, the CRM service's gRPC API out.

Thin like the auth routes: the gateway checks the shape of the input, verifies the access token
locally, forwards it as `authorization` metadata, and turns the answer into camelCase JSON. Every
rule (what a valid fan is, who may see what) is the CRM's; its errors become problem documents
through the one mapping in `problems`. Field violations of list filters are renamed to the query
parameters they came from (`page.page_token` -> `cursor`).

Most routes are declared in the proto (`rpc_routes`); what stays here is the edge's own: the
query names of the sorts, the reply's `Idempotency-Key` header, and `GET /api/crm/stream`, which
relays the CRM's `WatchInbox` as Server-Sent Events. Enum values are lower-case names
(`onlyfans`, `ppv_unlock`); sort names are the field sorted by (`lastMessageAt`), ascending, or
descending after a `-` (`-lastMessageAt`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import grpc
import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import Field

from huntaze.crm.v1 import crm_pb2
from huntaze_gateway.auth_routes import CurrentCaller, problems
from huntaze_gateway.codec import JsonResponse, to_json, to_message
from huntaze_gateway.models import Int32, Int64, ProtoBody
from huntaze_gateway.openapi import proto_schema, schema_ref
from huntaze_gateway.problems import PROBLEM_MEDIA_TYPE, VALIDATION, ApiProblem
from huntaze_gateway.rpc_routes import Edge, Exposed, expose
from huntaze_gateway.sse import EventStreamResponse, Stream, frame, relay
from huntaze_gateway.state import runtime_of
from huntaze_kit.errors import VALIDATION_FAILED, FieldViolation
from huntaze_kit.rich_status import from_rpc_error

if TYPE_CHECKING:
    from huntaze.crm.v1.crm_pb2_grpc import CrmServiceAsyncStub

crm_router = APIRouter(prefix="/api/crm", tags=["crm"])
messages_router = APIRouter(prefix="/api/messages", tags=["messages"])

_BODY = (400, 413, 422)
SEND_MESSAGE_RESPONSE = "huntaze.crm.v1.SendMessageResponse"
INT64_MAX = 2**63 - 1
SSE_RETRY_MILLISECONDS = 3000


# ---------------------------------------------------------------------------------------------
# The query names of the sorts and the archive filter (other enums: lower-case names, `codec`).

FAN_SORTS: dict[str, crm_pb2.FanSort.ValueType] = {
    "-createdAt": crm_pb2.FAN_SORT_CREATED_AT_DESC,
    "createdAt": crm_pb2.FAN_SORT_CREATED_AT_ASC,
    "-lastMessageAt": crm_pb2.FAN_SORT_LAST_MESSAGE_AT_DESC,
    "lastMessageAt": crm_pb2.FAN_SORT_LAST_MESSAGE_AT_ASC,
    "-valueCents": crm_pb2.FAN_SORT_VALUE_CENTS_DESC,
    "valueCents": crm_pb2.FAN_SORT_VALUE_CENTS_ASC,
    "displayName": crm_pb2.FAN_SORT_DISPLAY_NAME_ASC,
    "-displayName": crm_pb2.FAN_SORT_DISPLAY_NAME_DESC,
    "-lastSeenAt": crm_pb2.FAN_SORT_LAST_SEEN_AT_DESC,
    "lastSeenAt": crm_pb2.FAN_SORT_LAST_SEEN_AT_ASC,
}
CONVERSATION_SORTS: dict[str, crm_pb2.ConversationSort.ValueType] = {
    "-lastMessageAt": crm_pb2.CONVERSATION_SORT_LAST_MESSAGE_AT_DESC,
    "lastMessageAt": crm_pb2.CONVERSATION_SORT_LAST_MESSAGE_AT_ASC,
    "pinnedFirst": crm_pb2.CONVERSATION_SORT_PINNED_FIRST,
    "-unreadCount": crm_pb2.CONVERSATION_SORT_UNREAD_COUNT_DESC,
    "unreadCount": crm_pb2.CONVERSATION_SORT_UNREAD_COUNT_ASC,
}
ARCHIVE_FILTERS: dict[str, crm_pb2.ArchiveFilter.ValueType] = {
    "false": crm_pb2.ARCHIVE_FILTER_EXCLUDE_ARCHIVED,
    "true": crm_pb2.ARCHIVE_FILTER_ONLY_ARCHIVED,
    "all": crm_pb2.ARCHIVE_FILTER_ALL,
}


# ---------------------------------------------------------------------------------------------
# Input.


class AttachmentIn(ProtoBody, message=crm_pb2.Attachment, required="kind"):
    url: str = Field(default="", description="An http(s) URL; or give `platformMediaId`.")


class SegmentIn(ProtoBody, message=crm_pb2.SegmentFilter):
    """Fans matching every condition that is set."""

    min_value_cents: Int64 | None = Field(default=None, description="Lifetime spend, at least.")
    max_value_cents: Int64 | None = Field(default=None, description="Lifetime spend, at most.")
    last_active_within_days: Int32 | None = None


class CreateFanBody(ProtoBody, message=crm_pb2.CreateFanRequest, required="platform"):
    platform_fan_id: str = Field(default="", description="The fan's account id on the platform.")


class UpdateFanBody(ProtoBody, message=crm_pb2.UpdateFanRequest, omit="fan_id", partial=True):
    """Members that are present replace the fan's; absent ones stay as they are."""

    tags: list[str] | None = Field(default=None, description="Replaces every tag.")

    def proto_fields(self, *, sent_only: bool = False) -> dict[str, Any]:
        values = super().proto_fields(sent_only=sent_only)
        if values.get("tags") is not None:  # the proto wraps them, to tell "none" from "unchanged"
            values["tags"] = {"tags": values["tags"]}
        return values


class FanTagsBody(ProtoBody, message=crm_pb2.UpdateFanTagsRequest):
    fan_ids: list[str] = Field(description="At most 1,000 fans; all or nothing.")


class UpdateConversationBody(
    ProtoBody, message=crm_pb2.UpdateConversationRequest, omit="conversation_id", partial=True
):
    """Members that are present change; `assignedMemberId: null` unassigns."""

    assigned_member_id: str | None = Field(default=None, description="A team member's user id.")

    def proto_fields(self, *, sent_only: bool = False) -> dict[str, Any]:
        values = super().proto_fields(sent_only=sent_only)
        if "assigned_member_id" in values:  # null unassigns, as "" does
            values["assigned_member_id"] = values["assigned_member_id"] or ""
        return values


class ReplyBody(ProtoBody, message=crm_pb2.SendMessageRequest, omit="sender_kind"):
    conversation_id: str | None = Field(default=None, description="Or give `fanId`.")
    fan_id: str | None = Field(
        default=None, description="Writes to the fan's conversation, opened when it has none."
    )
    attachments: list[AttachmentIn] = Field(default_factory=list)
    idempotency_key: str | None = Field(
        default=None,
        description=(
            "The same key always answers the same message (or send the `Idempotency-Key` "
            "header). Required in one of the two places."
        ),
    )


class CreateQuickReplyBody(
    ProtoBody, message=crm_pb2.CreateQuickReplyRequest, required="shortcut text"
):
    shortcut: str = Field(description="One word, e.g. `/thanks`; unique.")


class UpdateQuickReplyBody(
    ProtoBody, message=crm_pb2.UpdateQuickReplyRequest, omit="quick_reply_id", partial=True
):
    pass


class CreateListBody(ProtoBody, message=crm_pb2.CreateFanListRequest, required="name kind"):
    segment: SegmentIn | None = Field(
        default=None, description="Required for a dynamic list; not allowed for a static one."
    )


class UpdateListBody(ProtoBody, message=crm_pb2.UpdateFanListRequest, omit="list_id", partial=True):
    segment: SegmentIn | None = Field(default=None, description="Dynamic lists only.")


class ListMembersBody(ProtoBody, message=crm_pb2.AddFanListMembersRequest, omit="list_id"):
    fan_ids: list[str] = Field(description="At most 1,000 fans; all or nothing.")


class RemoveMembersBody(
    ListMembersBody, message=crm_pb2.RemoveFanListMembersRequest, omit="list_id"
):
    pass


class PreviewBody(ProtoBody, message=crm_pb2.PreviewSegmentRequest):
    segment: SegmentIn


class AutomationBudgetIn(
    ProtoBody, message=crm_pb2.AutomationBudget, required="messages_per_fan_per_day"
):
    pass


class UpdateAutomationBudgetBody(ProtoBody, message=crm_pb2.UpdateAutomationBudgetRequest):
    budget: AutomationBudgetIn


def _crm(request: Request) -> CrmServiceAsyncStub:
    return runtime_of(request).crm


# ---------------------------------------------------------------------------------------------
# Messages.

# What a send answers: 201 with the new message, 200 with the earlier one for a key used before.
SEND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/json": {"schema": schema_ref(SEND_MESSAGE_RESPONSE)}},
        "description": "The key was used before: the earlier message.",
    },
    **problems(*_BODY, 401, 403, 404, 409),
}


@messages_router.post(
    "/reply",
    status_code=201,
    response_model=proto_schema(SEND_MESSAGE_RESPONSE),
    summary="Reply in a conversation",
    responses=SEND_RESPONSES,
)
async def reply(
    body: ReplyBody,
    caller: CurrentCaller,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(alias="idempotency-key", description="Or `idempotencyKey` in the body."),
    ] = None,
) -> Response:
    """Stores the message as queued and asks the platform worker to deliver it; its
    `deliveryStatus` then moves to `sending`, `sent` or `failed` (see the event stream). A retry
    with the same idempotency key answers the same message with 200 and sends nothing again."""
    key = body.idempotency_key
    if idempotency_key is not None:
        if key is not None and key != idempotency_key:
            raise ApiProblem(
                VALIDATION,
                code=VALIDATION_FAILED,
                detail="The Idempotency-Key header and `idempotencyKey` differ.",
                errors=[
                    FieldViolation("idempotencyKey", "differs from the Idempotency-Key header")
                ],
            )
        key = idempotency_key
    answer = await _crm(request).SendMessage(
        to_message({**body.proto_fields(), "idempotency_key": key}, crm_pb2.SendMessageRequest()),
        **caller.options,
    )
    return JsonResponse(to_json(answer), status_code=201 if answer.created else 200)


# ---------------------------------------------------------------------------------------------
# The real-time inbox.


def _problem_documents(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`problems(...)` for a route whose own answer is not JSON: the error answers are still
    problem documents (and so is the 500 every route may answer)."""
    documented = {**problems(*statuses), 500: {"description": "Unexpected error."}}
    return {
        status: {
            "description": spec["description"],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, spec in documented.items()
    }


def _render_event(event: crm_pb2.InboxEvent) -> bytes:
    return frame(
        orjson.dumps(to_json(event), option=orjson.OPT_UTC_Z),
        event=event.type,
        event_id=event.id,
    )


@crm_router.get(
    "/stream",
    response_class=EventStreamResponse,
    summary="The inbox as Server-Sent Events",
    responses={
        200: {
            "description": (
                "An endless `text/event-stream`: `id:` the event id, `event:` its type, "
                "`data:` an `InboxEvent` as JSON."
            ),
            "content": {"text/event-stream": {"schema": schema_ref("huntaze.crm.v1.InboxEvent")}},
        },
        **_problem_documents(401, 403, 422),
    },
)
async def inbox_stream(
    caller: CurrentCaller,
    request: Request,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="last-event-id",
            ge=0,
            le=INT64_MAX,
            description="The last event seen (browsers send it when they reconnect).",
        ),
    ] = None,
    last_event_id_param: Annotated[
        int | None,
        Query(
            alias="lastEventId",
            ge=0,
            le=INT64_MAX,
            description="The same, for clients that cannot set headers; the header wins.",
        ),
    ] = None,
) -> EventStreamResponse:
    """New messages, delivery status changes, reads, fan and conversation updates as they
    happen. Reconnecting with `Last-Event-ID` first replays what was missed (the last 24 hours,
    at most 1,000 events; beyond that an `inbox.reset` event says to reload). A comment line is
    sent when idle; the stream ends when the access token expires (reconnect with a fresh one).
    A failure upstream ends it with a `stream.error` event holding a problem document."""
    runtime = runtime_of(request)
    after = last_event_id if last_event_id is not None else last_event_id_param or 0
    metadata = caller.options["metadata"]
    call = runtime.crm.WatchInbox(
        crm_pb2.WatchInboxRequest(
            after_event_id=after,
            resume=last_event_id is not None or last_event_id_param is not None,
        ),
        metadata=metadata,
        timeout=None,
    )
    revocations = runtime.verifier.revocations
    session_id = caller.principal.session_id
    path = request.url.path

    def render_error(error: grpc.aio.AioRpcError) -> bytes:
        answer = runtime.problems.from_error_details(from_rpc_error(error), path)
        return bytes(answer.body)

    stream = Stream(
        call=call,
        render=_render_event,
        render_error=render_error,
        heartbeat_seconds=runtime.settings.gateway_sse_heartbeat_seconds,
        retry_milliseconds=SSE_RETRY_MILLISECONDS,
        expires_at=caller.principal.expires_at,
        revoked=lambda: session_id is not None and revocations.is_revoked(session_id),
    )
    return EventStreamResponse(relay(stream))


# ---------------------------------------------------------------------------------------------
# The RPCs whose route the proto declares (`google.api.http`): served without a handler here.

expose(
    (crm_router, messages_router),
    crm_pb2.DESCRIPTOR.services_by_name["CrmService"],
    Edge(caller=CurrentCaller, stub_of=_crm, problems=problems),
    (
        Exposed(
            "ListConversations",
            query={"unread_only": "unread", "query": "search", "archive_filter": "archived"},
            values={"sort": CONVERSATION_SORTS, "archive_filter": ARCHIVE_FILTERS},
        ),
        Exposed("ListFans", query={"query": "search", "filter": ""}, values={"sort": FAN_SORTS}),
        Exposed("SearchMessages", query={"query": "q"}, required="query"),
        Exposed("ListQuickReplies", query={"shortcut_prefix": "prefix"}),
    ),
)
