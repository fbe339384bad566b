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

from huntaze.crm.v1 import crm_pb2
from huntaze_gateway.auth_routes import CurrentCaller, problems
from huntaze_gateway.codec import to_json
from huntaze_gateway.models import ProtoBody
from huntaze_gateway.of_routes import of_router
from huntaze_gateway.openapi import schema_ref
from huntaze_gateway.problems import PROBLEM_MEDIA_TYPE
from huntaze_gateway.rpc_routes import Edge, Exposed, expose, sort_names
from huntaze_gateway.sse import EventStreamResponse, Stream, frame, relay
from huntaze_gateway.state import runtime_of
from huntaze_kit.rich_status import from_rpc_error

if TYPE_CHECKING:
    pass

crm_router = APIRouter(prefix="/api/crm", tags=["crm"])
messages_router = APIRouter(prefix="/api/messages", tags=["messages"])

INT64_MAX = 2**63 - 1
SSE_RETRY_MILLISECONDS = 3000


# The query values of the archive filter (sorts: `sort_names`; other enums: lower-case names).
ARCHIVE_FILTERS: dict[str, crm_pb2.ArchiveFilter.ValueType] = {
    "false": crm_pb2.ARCHIVE_FILTER_EXCLUDE_ARCHIVED,
    "true": crm_pb2.ARCHIVE_FILTER_ONLY_ARCHIVED,
    "all": crm_pb2.ARCHIVE_FILTER_ALL,
}


# ---------------------------------------------------------------------------------------------
# Bodies that say more than the proto (the others are made from it, `models.body_model`).


class UpdateConversationBody(
    ProtoBody, message=crm_pb2.UpdateConversationRequest, omit="conversation_id", partial=True
):
    def proto_fields(self, *, sent_only: bool = False) -> dict[str, Any]:
        values = super().proto_fields(sent_only=sent_only)
        if "assigned_member_id" in values:  # null unassigns, as "" does
            values["assigned_member_id"] = values["assigned_member_id"] or ""
        return values


class ReplyBody(ProtoBody, message=crm_pb2.SendMessageRequest, omit="sender_kind"):
    """A person's message (`sender_kind` is for services)."""


class AutomationBudgetIn(
    ProtoBody, message=crm_pb2.AutomationBudget, required="messages_per_fan_per_day"
):
    pass


class UpdateAutomationBudgetBody(ProtoBody, message=crm_pb2.UpdateAutomationBudgetRequest):
    budget: AutomationBudgetIn


def _created_or_earlier(
    _: Request, reply: crm_pb2.SendMessageResponse, answer: Response
) -> Response:
    answer.status_code = 201 if reply.created else 200
    return answer


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
    (crm_router, messages_router, of_router),
    crm_pb2.DESCRIPTOR.services_by_name["CrmService"],
    Edge(caller=CurrentCaller, stub_of=lambda request: runtime_of(request).crm, problems=problems),
    (
        Exposed(
            "ListConversations",
            query={"unread_only": "unread", "query": "search", "archive_filter": "archived"},
            values={
                "sort": sort_names(crm_pb2.ConversationSort.DESCRIPTOR),
                "archive_filter": ARCHIVE_FILTERS,
            },
        ),
        Exposed(
            "ListFans",
            query={"query": "search", "filter": ""},
            values={"sort": sort_names(crm_pb2.FanSort.DESCRIPTOR)},
        ),
        Exposed("SearchMessages", query={"query": "q"}, required="query"),
        Exposed("ListQuickReplies", query={"shortcut_prefix": "prefix"}),
        Exposed(
            "SendMessage",
            headers={"Idempotency-Key": "idempotency_key"},
            then=_created_or_earlier,
            statuses={200: "The key was used before: the earlier message."},
        ),
    ),
)
