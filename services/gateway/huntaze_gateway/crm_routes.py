"""`/api/crm/*` and `/api/messages/*`: HTTP/JSON in, the CRM service's gRPC API out.

Thin like the auth routes: the gateway checks the shape of the input, verifies the access token
locally, forwards it as `authorization` metadata, and turns the answer into camelCase JSON. Every
rule (what a valid fan is, who may see what) is the CRM's; its errors become problem documents
through the one mapping in `problems`. Field violations of list filters are renamed to the query
parameters they came from (`page.page_token` -> `cursor`).

Answers are written straight from the protobuf messages with orjson (no second validation pass);
the pydantic models below describe them in the OpenAPI document, and the tests hold the two
together. Enum values are lower-case names (`onlyfans`, `ppv_unlock`); sort names are the field
sorted by (`lastMessageAt`), ascending, or descending after a `-` (`-lastMessageAt`).
`GET /api/crm/stream` relays the CRM's `WatchInbox` as Server-Sent Events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import grpc
import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import AfterValidator, Field

from huntaze.crm.v1 import crm_pb2
from huntaze_gateway.auth_routes import CurrentCaller, problems
from huntaze_gateway.codec import JsonResponse, ProtoEnum, to_json, to_message
from huntaze_gateway.models import Int32, Int64, ProtoBody, clean_text
from huntaze_gateway.openapi import page_schema, proto_schema, schema_ref
from huntaze_gateway.paging import (
    PAGE_FIELDS,
    Cursor,
    Limit,
    listing,
    page_answer,
    page_request,
)
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
INT32_MAX = 2**31 - 1
MAX_ID = 64
SSE_RETRY_MILLISECONDS = 3000


# ---------------------------------------------------------------------------------------------
# Enums: lower-case names from the proto (`codec`); sorts and the archive filter are named here.

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
PlatformName = Annotated[str, ProtoEnum(crm_pb2.Platform.DESCRIPTOR)]
SubscriptionStateName = Annotated[str, ProtoEnum(crm_pb2.SubscriptionState.DESCRIPTOR)]
FanListKindName = Annotated[str, ProtoEnum(crm_pb2.FanListKind.DESCRIPTOR)]
# The gateway's own names of the sorts (a test checks that they match the proto enums).
FanSortName = Literal[
    "-createdAt",
    "createdAt",
    "-lastMessageAt",
    "lastMessageAt",
    "-valueCents",
    "valueCents",
    "displayName",
    "-displayName",
    "-lastSeenAt",
    "lastSeenAt",
]
ConversationSortName = Literal[
    "-lastMessageAt", "lastMessageAt", "pinnedFirst", "-unreadCount", "unreadCount"
]
ArchivedName = Literal["false", "true", "all"]


# ---------------------------------------------------------------------------------------------
# Input.


QueryText = Annotated[str, AfterValidator(clean_text)]


def _path_id(name: str) -> Any:
    # Checked by the CRM (any other string is a 422 on the id, a UUID of nothing a 404).
    return Path(description=f"The {name}'s id (a UUID).")


FanIdPath = Annotated[str, _path_id("fan")]
ConversationIdPath = Annotated[str, _path_id("conversation")]
MessageIdPath = Annotated[str, _path_id("message")]
QuickReplyIdPath = Annotated[str, _path_id("quick reply")]
ListIdPath = Annotated[str, _path_id("list")]


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


class FanTagsBody(ProtoBody, message=crm_pb2.UpdateFanTagsRequest):
    fan_ids: list[str] = Field(description="At most 1,000 fans; all or nothing.")


class UpdateConversationBody(
    ProtoBody, message=crm_pb2.UpdateConversationRequest, omit="conversation_id", partial=True
):
    """Members that are present change; `assignedMemberId: null` unassigns."""

    assigned_member_id: str | None = Field(default=None, description="A team member's user id.")


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


class PreviewBody(ProtoBody, message=crm_pb2.PreviewSegmentRequest):
    segment: SegmentIn


# ---------------------------------------------------------------------------------------------
# Output: the models document the answers; the functions below write them.


# ---------------------------------------------------------------------------------------------
# Calls.


def _crm(request: Request) -> CrmServiceAsyncStub:
    return runtime_of(request).crm


def _ok(content: Any, status_code: int = 200) -> JsonResponse:
    return JsonResponse(content, status_code=status_code)


_NO_CONTENT = 204


# ---------------------------------------------------------------------------------------------
# Conversations.


@crm_router.get(
    "/conversations",
    response_model=page_schema("conversations", "huntaze.crm.v1.Conversation"),
    summary="List conversations",
    responses=problems(401, 422),
)
async def list_conversations(
    caller: CurrentCaller,
    request: Request,
    *,
    cursor: Cursor = "",
    limit: Limit = None,
    unread: Annotated[bool, Query(description="Only conversations with unread messages.")] = False,
    platform: Annotated[PlatformName | None, Query(description="One platform only.")] = None,
    search: Annotated[
        QueryText, Query(description="Words in the fan's name, handle, tags or the messages.")
    ] = "",
    archived: Annotated[
        ArchivedName, Query(description="`false` (default): hide archived; `true`: only them.")
    ] = "false",
    pinned: Annotated[
        bool | None, Query(description="Only pinned (`true`) or unpinned (`false`) ones.")
    ] = None,
    sort: Annotated[
        ConversationSortName, Query(description="Most recent activity first (default).")
    ] = "-lastMessageAt",
) -> Response:
    """The creator's conversations with their fan, most recent activity first by default."""
    message = to_message(
        {"platform": platform, "pinned": pinned},
        crm_pb2.ListConversationsRequest(
            page=page_request(cursor, limit),
            unread_only=unread,
            query=search,
            archive_filter=ARCHIVE_FILTERS[archived],
            sort=CONVERSATION_SORTS[sort],
        ),
    )
    reply = await listing(
        _crm(request).ListConversations(message, **caller.options),
        {**PAGE_FIELDS, "query": "query.search", "archive_filter": "query.archived"},
    )
    return page_answer("conversations", reply.conversations, reply.page)


@crm_router.patch(
    "/conversations/{conversation_id}",
    response_model=proto_schema("huntaze.crm.v1.Conversation"),
    summary="Pin, archive or assign a conversation",
    responses=problems(*_BODY, 401, 403, 404),
)
async def update_conversation(
    body: UpdateConversationBody,
    caller: CurrentCaller,
    request: Request,
    conversation_id: ConversationIdPath,
) -> Response:
    """Changes the members that are present; `assignedMemberId: null` (or `""`) unassigns."""
    values = body.proto_fields(sent_only=True)
    if "assigned_member_id" in values:  # null unassigns, as "" does
        values["assigned_member_id"] = values["assigned_member_id"] or ""
    message = to_message(values, crm_pb2.UpdateConversationRequest(conversation_id=conversation_id))
    reply = await _crm(request).UpdateConversation(message, **caller.options)
    return _ok(to_json(reply))


# ---------------------------------------------------------------------------------------------
# Fans.


@crm_router.get(
    "/fans",
    response_model=page_schema("fans", "huntaze.crm.v1.Fan"),
    summary="List fans",
    responses=problems(401, 422),
)
async def list_fans(
    caller: CurrentCaller,
    request: Request,
    *,
    cursor: Cursor = "",
    limit: Limit = None,
    search: Annotated[
        QueryText, Query(description="Words in the name, handle, email, notes or tags.")
    ] = "",
    sort: Annotated[FanSortName, Query(description="Newest first (default).")] = "-createdAt",
    platforms: Annotated[list[PlatformName] | None, Query(alias="platforms")] = None,
    subscription_states: Annotated[
        list[SubscriptionStateName] | None, Query(alias="subscriptionStates")
    ] = None,
    tags_any: Annotated[
        list[QueryText] | None, Query(alias="tagsAny", description="At least one of these.")
    ] = None,
    tags_all: Annotated[
        list[QueryText] | None, Query(alias="tagsAll", description="Every one of these.")
    ] = None,
    min_value_cents: Annotated[
        int | None, Query(alias="minValueCents", ge=-INT64_MAX - 1, le=INT64_MAX)
    ] = None,
    max_value_cents: Annotated[
        int | None, Query(alias="maxValueCents", ge=-INT64_MAX - 1, le=INT64_MAX)
    ] = None,
    last_active_within_days: Annotated[
        int | None, Query(alias="lastActiveWithinDays", ge=-INT32_MAX - 1, le=INT32_MAX)
    ] = None,
) -> Response:
    """Filters (repeat a parameter for several values) combine with AND."""
    message = crm_pb2.ListFansRequest(
        page=page_request(cursor, limit), query=search, sort=FAN_SORTS[sort]
    )
    to_message(
        {
            "tags_any": tags_any,
            "tags_all": tags_all,
            "subscription_states": subscription_states,
            "platforms": platforms,
            "min_value_cents": min_value_cents,
            "max_value_cents": max_value_cents,
            "last_active_within_days": last_active_within_days,
        },
        message.filter,
    )
    if message.filter.ByteSize() == 0:
        message.ClearField("filter")
    reply = await listing(
        _crm(request).ListFans(message, **caller.options),
        {**PAGE_FIELDS, "query": "query.search", "filter": "query"},
    )
    return page_answer("fans", reply.fans, reply.page)


@crm_router.patch(
    "/fans/{fan_id}",
    response_model=proto_schema("huntaze.crm.v1.Fan"),
    summary="Update a fan",
    responses=problems(*_BODY, 401, 403, 404),
)
async def update_fan(
    body: UpdateFanBody, caller: CurrentCaller, request: Request, fan_id: FanIdPath
) -> Response:
    """Members that are present replace the fan's (`tags` replaces every tag); spend and
    subscription come from the platform and cannot be set."""
    values = body.proto_fields(sent_only=True)
    if values.get("tags") is not None:  # the proto wraps them, to tell "none" from "unchanged"
        values["tags"] = {"tags": values["tags"]}
    message = to_message(values, crm_pb2.UpdateFanRequest(fan_id=fan_id))
    reply = await _crm(request).UpdateFan(message, **caller.options)
    return _ok(to_json(reply))


# ---------------------------------------------------------------------------------------------
# Messages.


@messages_router.post(
    "/reply",
    status_code=201,
    response_model=proto_schema(SEND_MESSAGE_RESPONSE),
    summary="Reply in a conversation",
    responses={
        200: {
            "content": {"application/json": {"schema": schema_ref(SEND_MESSAGE_RESPONSE)}},
            "description": "The key was used before: the earlier message.",
        },
        **problems(*_BODY, 401, 403, 404, 409),
    },
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
    return _ok(
        to_json(answer),
        201 if answer.created else 200,
    )


@messages_router.get(
    "/search",
    response_model=page_schema("messages", "huntaze.crm.v1.Message"),
    summary="Search messages",
    responses=problems(401, 404, 422),
)
async def search_messages(
    caller: CurrentCaller,
    request: Request,
    *,
    q: Annotated[
        QueryText,
        Query(min_length=1, description='Words, "quoted phrases", OR, -excluded.'),
    ],
    conversation_id: Annotated[
        str, Query(alias="conversationId", max_length=MAX_ID, description="One conversation.")
    ] = "",
    cursor: Cursor = "",
    limit: Limit = None,
) -> Response:
    """Full-text search over message texts, newest first."""
    reply = await listing(
        _crm(request).SearchMessages(
            crm_pb2.SearchMessagesRequest(
                query=q, conversation_id=conversation_id, page=page_request(cursor, limit)
            ),
            **caller.options,
        ),
        {**PAGE_FIELDS, "query": "query.q"},
    )
    return page_answer("messages", reply.messages, reply.page)


# ---------------------------------------------------------------------------------------------
# Quick replies.


@crm_router.get(
    "/quick-replies",
    response_model=page_schema("quickReplies", "huntaze.crm.v1.QuickReply"),
    summary="List quick replies",
    responses=problems(401, 422),
)
async def list_quick_replies(
    caller: CurrentCaller,
    request: Request,
    prefix: Annotated[QueryText, Query(description="Only shortcuts starting with this.")] = "",
    cursor: Cursor = "",
    limit: Limit = None,
) -> Response:
    """By shortcut."""
    reply = await listing(
        _crm(request).ListQuickReplies(
            crm_pb2.ListQuickRepliesRequest(
                page=page_request(cursor, limit), shortcut_prefix=prefix
            ),
            **caller.options,
        ),
        {**PAGE_FIELDS, "shortcut_prefix": "query.prefix"},
    )
    return page_answer("quickReplies", reply.quick_replies, reply.page)


# ---------------------------------------------------------------------------------------------
# Fan lists.


@crm_router.get(
    "/lists",
    response_model=page_schema("lists", "huntaze.crm.v1.FanList"),
    summary="List fan lists",
    responses=problems(401, 422),
)
async def list_fan_lists(
    caller: CurrentCaller,
    request: Request,
    kind: Annotated[FanListKindName | None, Query(description="One kind only.")] = None,
    cursor: Cursor = "",
    limit: Limit = None,
) -> Response:
    """Static lists and saved segments, by name, with their member counts."""
    reply = await listing(
        _crm(request).ListFanLists(
            to_message(
                {"kind": kind}, crm_pb2.ListFanListsRequest(page=page_request(cursor, limit))
            ),
            **caller.options,
        ),
        PAGE_FIELDS,
    )
    return page_answer("lists", reply.lists, reply.page)


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
        Exposed("GetConversation", "Get a conversation", problems=(401, 404, 422)),
        Exposed("ListMessages", "List a conversation's messages", problems=(401, 404, 422)),
        Exposed("ListFanPurchases", "List a fan's purchases", problems=(401, 404, 422)),
        Exposed("ListFanListMembers", "List a list's fans", problems=(401, 404, 422)),
        Exposed(
            "MarkConversationRead", "Mark a whole conversation read", problems=(401, 403, 404, 422)
        ),
        Exposed("GetFan", "Get a fan", problems=(401, 404, 422)),
        Exposed("DeleteFan", "Delete a fan", problems=(401, 403, 404, 422)),
        Exposed("MarkMessageRead", "Mark a message read", problems=(401, 403, 404, 422)),
        Exposed("GetQuickReply", "Get a quick reply", problems=(401, 404, 422)),
        Exposed("DeleteQuickReply", "Delete a quick reply", problems=(401, 403, 404, 422)),
        Exposed("GetFanList", "Get a fan list", problems=(401, 404, 422)),
        Exposed("DeleteFanList", "Delete a fan list", problems=(401, 403, 404, 422)),
        Exposed(
            "CreateFan", "Add a fan", problems=(401, 403, 409), body=CreateFanBody, status_code=201
        ),
        Exposed(
            "UpdateFanTags",
            "Add and remove tags on many fans",
            problems=(401, 403, 404),
            body=FanTagsBody,
        ),
        Exposed(
            "CreateQuickReply",
            "Create a quick reply",
            problems=(401, 403, 409),
            body=CreateQuickReplyBody,
            status_code=201,
        ),
        Exposed(
            "UpdateQuickReply",
            "Update a quick reply",
            problems=(401, 403, 404, 409),
            body=UpdateQuickReplyBody,
            partial=True,
        ),
        Exposed(
            "CreateFanList",
            "Create a fan list",
            problems=(401, 403),
            body=CreateListBody,
            status_code=201,
        ),
        Exposed(
            "PreviewSegment",
            "Count the fans a segment matches",
            problems=(401, 403),
            body=PreviewBody,
        ),
        Exposed(
            "UpdateFanList",
            "Rename a list or change its segment",
            problems=(401, 403, 404),
            body=UpdateListBody,
            partial=True,
        ),
        Exposed(
            "AddFanListMembers",
            "Add fans to a static list",
            problems=(401, 403, 404, 409),
            body=ListMembersBody,
        ),
        Exposed(
            "RemoveFanListMembers",
            "Remove fans from a static list",
            problems=(401, 403, 404, 409),
            body=ListMembersBody,
        ),
    ),
)
