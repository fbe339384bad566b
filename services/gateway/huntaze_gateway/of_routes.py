"""`/api/of/*` and `POST /api/onboarding/connect-platform`: the creator's OnlyFans connection
(the OnlyFans worker's gRPC API), and its inbox, threads and sends (the CRM's, for OnlyFans).

Thin like the other routes: the worker decides what a connection attempt becomes (connected,
needs an OTP code, needs a session import, or failed with the reason) and no answer carries a
password, a code or a cookie.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Request, Response
from pydantic import Field, model_validator

from huntaze.crm.v1 import crm_pb2
from huntaze.onlyfans.v1 import onlyfans_pb2
from huntaze_gateway.auth_routes import CurrentCaller, onboarding_router, problems
from huntaze_gateway.crm_routes import SEND_MESSAGE_RESPONSE, SEND_RESPONSES, ReplyBody, reply
from huntaze_gateway.models import ApiModel
from huntaze_gateway.openapi import page_schema, proto_schema
from huntaze_gateway.paging import Cursor, Limit, listing, page_answer, page_request
from huntaze_gateway.state import runtime_of

if TYPE_CHECKING:
    from huntaze.onlyfans.v1.onlyfans_pb2_grpc import OnlyFansServiceAsyncStub

of_router = APIRouter(prefix="/api/of", tags=["onlyfans"])

_BODY = (400, 413, 422)
CONVERSATIONS_PAGE = page_schema("conversations", "huntaze.crm.v1.Conversation")

ConnectionStateName = Literal[
    "disconnected",
    "connected",
    "needs_otp",
    "needs_session_import",
    "failed",
    "needs_attention",
]
STATE_NAMES: dict[int, str] = {
    value: name.removeprefix("CONNECTION_STATE_").lower()
    for name, value in onlyfans_pb2.ConnectionState.items()
    if not name.endswith("_UNSPECIFIED")
}


class CredentialsIn(ApiModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    totp_secret: str = Field(
        default="", max_length=256, description="An authenticator secret answers OTP steps."
    )


class SessionIn(ApiModel):
    cookies: dict[str, str] = Field(description="The platform's cookies (`sess`, `auth_id`, ...).")
    x_bc: str = Field(max_length=256, description="The browser's `x-bc` (`bcTokenSha`).")
    user_agent: str = Field(max_length=1024, description="That browser's user-agent, exactly.")


class ConnectBody(ApiModel):
    credentials: CredentialsIn | None = Field(default=None, description="Or give `session`.")
    session: SessionIn | None = Field(default=None, description="A session from your browser.")

    @model_validator(mode="after")
    def _one_method(self) -> ConnectBody:
        if (self.credentials is None) == (self.session is None):
            raise ValueError("give either `credentials` or `session`")
        return self


class OtpBody(ApiModel):
    code: str = Field(min_length=1, max_length=32)


class StatusOut(ApiModel):
    state: ConnectionStateName
    reason: str = Field(description="Why, when not connected, and what to do.")
    platform_user_id: str
    username: str
    connected_at: str | None
    last_synced_at: str | None


class SyncOut(ApiModel):
    accepted: bool


def _worker(request: Request) -> OnlyFansServiceAsyncStub:
    return runtime_of(request).onlyfans


def _ok(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def status_json(status: onlyfans_pb2.AccountStatus) -> dict[str, Any]:
    def moment(name: str) -> str | None:
        if not status.HasField(name):  # type: ignore[arg-type]
            return None
        return str(getattr(status, name).ToJsonString())

    return {
        "state": STATE_NAMES.get(status.state, "disconnected"),
        "reason": status.reason,
        "platformUserId": status.platform_user_id,
        "username": status.username,
        "connectedAt": moment("connected_at"),
        "lastSyncedAt": moment("last_synced_at"),
    }


def _connect_request(body: ConnectBody) -> onlyfans_pb2.ConnectRequest:
    if body.credentials is not None:
        return onlyfans_pb2.ConnectRequest(
            credentials=onlyfans_pb2.Credentials(
                email=body.credentials.email,
                password=body.credentials.password,
                totp_secret=body.credentials.totp_secret,
            )
        )
    assert body.session is not None
    return onlyfans_pb2.ConnectRequest(
        session=onlyfans_pb2.ImportedSession(
            cookies=body.session.cookies,
            x_bc=body.session.x_bc,
            user_agent=body.session.user_agent,
        )
    )


async def _connect(body: ConnectBody, caller: CurrentCaller, request: Request) -> Response:
    answer = await _worker(request).Connect(_connect_request(body), **caller.options)
    return _ok(status_json(answer.status))


@of_router.post(
    "/connect",
    response_model=StatusOut,
    summary="Connect my OnlyFans account",
    responses=problems(*_BODY, 401, 403, 503),
)
async def connect(body: ConnectBody, caller: CurrentCaller, request: Request) -> Response:
    """With your login (through the platform's own form) or a session copied from your
    browser. Answers `connected`, `needs_otp` (send the code to `/api/of/connect/otp`),
    `needs_session_import` (the platform asks for a check only a person can pass), or `failed`
    with the reason."""
    return await _connect(body, caller, request)


@onboarding_router.post(
    "/connect-platform",
    response_model=StatusOut,
    summary="Connect my OnlyFans account (onboarding)",
    responses=problems(*_BODY, 401, 403, 503),
)
async def connect_platform(body: ConnectBody, caller: CurrentCaller, request: Request) -> Response:
    """The onboarding step of `POST /api/of/connect`: the same body and answers."""
    return await _connect(body, caller, request)


@of_router.post(
    "/connect/otp",
    response_model=StatusOut,
    summary="Enter the code OnlyFans sent me",
    responses=problems(*_BODY, 401, 403, 409),
)
async def submit_otp(body: OtpBody, caller: CurrentCaller, request: Request) -> Response:
    """For a connection in `needs_otp`."""
    answer = await _worker(request).SubmitOtp(
        onlyfans_pb2.SubmitOtpRequest(code=body.code), **caller.options
    )
    return _ok(status_json(answer.status))


@of_router.get(
    "/status", response_model=StatusOut, summary="My OnlyFans connection", responses=problems(401)
)
async def status(caller: CurrentCaller, request: Request) -> Response:
    answer = await _worker(request).GetStatus(onlyfans_pb2.GetStatusRequest(), **caller.options)
    return _ok(status_json(answer))


@of_router.post(
    "/disconnect",
    response_model=StatusOut,
    summary="Disconnect my OnlyFans account",
    responses=problems(401),
)
async def disconnect(caller: CurrentCaller, request: Request) -> Response:
    """Forgets the session and the stored login; your fans and messages stay."""
    answer = await _worker(request).Disconnect(onlyfans_pb2.DisconnectRequest(), **caller.options)
    return _ok(status_json(answer))


@of_router.post(
    "/sync",
    status_code=202,
    response_model=SyncOut,
    summary="Sync my OnlyFans account now",
    responses=problems(401, 409),
)
async def sync(caller: CurrentCaller, request: Request) -> Response:
    """Fans, messages and purchases are brought in shortly (see the event stream)."""
    answer = await _worker(request).RequestSync(onlyfans_pb2.RequestSyncRequest(), **caller.options)
    return _ok({"accepted": answer.accepted}, 202)


async def _conversations(
    caller: CurrentCaller, request: Request, cursor: str, limit: int | None, *, unread: bool
) -> Response:
    """The CRM's conversations on OnlyFans, most recent activity first."""
    message = crm_pb2.ListConversationsRequest(
        page=page_request(cursor, limit),
        unread_only=unread,
        platform=crm_pb2.PLATFORM_ONLYFANS,
        archive_filter=crm_pb2.ARCHIVE_FILTER_EXCLUDE_ARCHIVED,
        sort=crm_pb2.CONVERSATION_SORT_LAST_MESSAGE_AT_DESC,
    )
    answer = await listing(runtime_of(request).crm.ListConversations(message, **caller.options))
    return page_answer("conversations", answer.conversations, answer.page)


@of_router.get(
    "/threads",
    response_model=CONVERSATIONS_PAGE,
    summary="My OnlyFans conversations",
    responses=problems(401, 422),
)
async def threads(
    caller: CurrentCaller, request: Request, cursor: Cursor = "", limit: Limit = None
) -> Response:
    """`GET /api/crm/conversations?platform=onlyfans`: most recent activity first."""
    return await _conversations(caller, request, cursor, limit, unread=False)


@of_router.get(
    "/inbox",
    response_model=CONVERSATIONS_PAGE,
    summary="My unread OnlyFans conversations",
    responses=problems(401, 422),
)
async def inbox(
    caller: CurrentCaller, request: Request, cursor: Cursor = "", limit: Limit = None
) -> Response:
    """The OnlyFans conversations with unread messages, most recent first."""
    return await _conversations(caller, request, cursor, limit, unread=True)


@of_router.post(
    "/send",
    status_code=201,
    response_model=proto_schema(SEND_MESSAGE_RESPONSE),
    summary="Send a message to a fan on OnlyFans",
    responses=SEND_RESPONSES,
)
async def send(
    body: ReplyBody,
    caller: CurrentCaller,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(alias="idempotency-key", description="Or `idempotencyKey` in the body."),
    ] = None,
) -> Response:
    """`POST /api/messages/reply`: queued, then delivered once by the OnlyFans worker."""
    return await reply(body, caller, request, idempotency_key)
