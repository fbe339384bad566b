"""`/api/auth/*` and `/api/onboarding/*`: HTTP/JSON in, the auth service's gRPC API out.

The gateway holds no rules of its own: it checks the shape of the input, verifies the access
token locally (so that a revoked session is refused at the edge at once), forwards the token as
`authorization` metadata, and turns the answer into JSON (errors: see `problems`). Browsers get
the tokens as HttpOnly cookies; API clients read them from the body and send them as Bearer.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import grpc
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.routing import APIRoute
from pydantic import Field

from huntaze.auth.v1 import auth_pb2
from huntaze.common.v1 import common_pb2
from huntaze_gateway.codec import JsonResponse, answer
from huntaze_gateway.config import GatewaySettings
from huntaze_gateway.models import Answer, ApiModel, ProtoBody
from huntaze_gateway.problems import FORBIDDEN, ApiProblem, Problem, error_details_of
from huntaze_gateway.rpc_routes import Edge, Exposed, expose
from huntaze_gateway.state import runtime_of
from huntaze_kit.errors import Unauthenticated
from huntaze_kit.identity import Principal, bearer_token
from huntaze_kit.rich_status import ErrorDetails, from_rpc_error

if TYPE_CHECKING:
    from huntaze.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub

REFRESH_COOKIE_PATH = "/api/auth"
MAX_USER_AGENT = 512
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# The OpenAPI security requirement of every route that needs a signed-in user (the document
# marks the routes that depend on `current_caller`; see `app`).
SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}]


def security_schemes(access_cookie_name: str) -> dict[str, Any]:
    return {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "The access token from login or refresh.",
        },
        "cookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": access_cookie_name,
            "description": "The access-token cookie that login and refresh set (browsers).",
        },
    }


# ---------------------------------------------------------------------------------------------
# Models (see `models`): camelCase on the wire, unknown members refused.


# Bodies: the members, types and limits of the proto requests (`ProtoBody`).


class RegisterBody(ProtoBody, message=auth_pb2.RegisterRequest, required="email password"):
    email: str = Field(examples=["ada@example.com"])


class LoginBody(ProtoBody, message=auth_pb2.LoginRequest, required="email password"):
    email: str = Field(examples=["ada@example.com"])


class TwoFactorLoginBody(
    ProtoBody, message=auth_pb2.CompleteTwoFactorLoginRequest, required="challenge_token code"
):
    challenge_token: str = Field(description="From the login answer's `challenge`.")


class RefreshBody(ProtoBody, message=auth_pb2.RefreshSessionRequest):
    refresh_token: str | None = Field(
        default=None, description="Omit it to use the refresh-token cookie."
    )


class TokenBody(ProtoBody, message=auth_pb2.VerifyEmailRequest, required="token"):
    pass


class EmailBody(ProtoBody, message=auth_pb2.RequestPasswordResetRequest):
    email: str = Field(examples=["ada@example.com"])


class ResendBody(EmailBody, message=auth_pb2.ResendVerificationRequest):
    pass


class ResetPasswordBody(
    ProtoBody, message=auth_pb2.ResetPasswordRequest, required="token new_password"
):
    pass


class ChangePasswordBody(
    ProtoBody, message=auth_pb2.ChangePasswordRequest, required="current_password new_password"
):
    pass


class CodeBody(ProtoBody, message=auth_pb2.ConfirmTotpEnrollmentRequest, required="code"):
    pass


class RecoveryCodesBody(
    ProtoBody, message=auth_pb2.RegenerateRecoveryCodesRequest, required="code"
):
    pass


class DisableTwoFactorBody(
    ProtoBody, message=auth_pb2.DisableTotpRequest, required="password code"
):
    pass


class SaveProfileBody(ProtoBody, message=auth_pb2.SaveProfileRequest):
    """Only the fields sent change; the others keep their value."""

    timezone: str = Field(default="", examples=["Europe/Paris"])


class UserOut(Answer):
    id: str
    email: str
    name: str
    email_verified: bool
    two_factor_enabled: bool
    onboarding_completed: bool
    created_at: datetime | None


class TokensOut(Answer):
    token_type: Literal["Bearer"] = "Bearer"
    access_token: str
    access_token_expires_at: datetime | None
    refresh_token: str
    refresh_token_expires_at: datetime | None
    session_id: str


class ChallengeOut(Answer):
    challenge_token: str = Field(description="Send it with a code to `POST /api/auth/login/2fa`.")
    expires_at: datetime | None


class LoginOut(ApiModel):
    status: Literal["signed_in", "two_factor_required"]
    user: UserOut | None
    tokens: TokensOut | None = Field(description="Set when `status` is `signed_in`.")
    challenge: ChallengeOut | None = Field(
        description="Set when `status` is `two_factor_required`."
    )


class AcceptedOut(ApiModel):
    message: str


# ---------------------------------------------------------------------------------------------
# Cookies, client context and the caller.


def _cookie_lifetime(stamp: datetime | None, fallback: int) -> int:
    if stamp is None:
        return fallback
    return max(0, int(stamp.timestamp() - time.time()))


def set_token_cookies(response: Response, settings: GatewaySettings, tokens: TokensOut) -> None:
    common: dict[str, Any] = {
        "domain": settings.gateway_cookie_domain,
        "secure": settings.gateway_cookie_secure,
        "httponly": True,
        "samesite": settings.gateway_cookie_samesite,
    }
    response.set_cookie(
        settings.gateway_access_cookie_name,
        tokens.access_token,
        max_age=_cookie_lifetime(tokens.access_token_expires_at, 15 * 60),
        path="/",
        **common,
    )
    response.set_cookie(
        settings.gateway_refresh_cookie_name,
        tokens.refresh_token,
        max_age=_cookie_lifetime(tokens.refresh_token_expires_at, 30 * 24 * 3600),
        path=REFRESH_COOKIE_PATH,
        **common,
    )


def clear_token_cookies(response: Response, settings: GatewaySettings) -> None:
    common: dict[str, Any] = {
        "domain": settings.gateway_cookie_domain,
        "secure": settings.gateway_cookie_secure,
        "httponly": True,
        "samesite": settings.gateway_cookie_samesite,
    }
    response.delete_cookie(settings.gateway_access_cookie_name, path="/", **common)
    response.delete_cookie(settings.gateway_refresh_cookie_name, path=REFRESH_COOKIE_PATH, **common)


def client_ip(request: Request, trusted_proxies: int) -> str:
    """The client's address: the TCP peer, or, behind `trusted_proxies` proxies that each
    append to X-Forwarded-For, the address the outermost of them saw."""
    peer = request.client.host if request.client else ""
    if trusted_proxies <= 0:
        return peer
    hops = [
        hop.strip()
        for value in request.headers.getlist("x-forwarded-for")
        for hop in value.split(",")
        if hop.strip()
    ]
    if not hops:
        return peer
    candidate = hops[-trusted_proxies] if len(hops) >= trusted_proxies else hops[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer


def client_context(request: Request) -> common_pb2.ClientContext:
    settings = runtime_of(request).settings
    return common_pb2.ClientContext(
        ip_address=client_ip(request, settings.gateway_trusted_proxies),
        user_agent=request.headers.get("user-agent", "")[:MAX_USER_AGENT],
    )


def check_same_origin(request: Request, settings: GatewaySettings) -> None:
    """A request authenticated by cookie that changes state must come from our own pages or an
    allowed origin: the browser's Origin and Sec-Fetch-Site headers say where it comes from."""
    if request.method in _SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        if origin.rstrip("/") in settings.gateway_cors_origins:
            return
        if urlsplit(origin).netloc == request.headers.get("host"):
            return
    elif request.headers.get("sec-fetch-site") in (None, "same-origin", "same-site", "none"):
        return
    raise ApiProblem(
        FORBIDDEN,
        code="CROSS_SITE_REQUEST",
        detail="This origin may not use the session cookie; send a Bearer token instead.",
    )


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified user, the auth stub, and the options of a call made for them (deadline,
    request id and their token): `await caller.auth.Method(request, **caller.options)`."""

    token: str
    principal: Principal
    from_cookie: bool
    auth: AuthServiceAsyncStub
    options: dict[str, Any]


def _presented_token(request: Request, settings: GatewaySettings) -> tuple[str, bool]:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated(
                message="Send the access token as `Authorization: Bearer <token>`.",
                reason="INVALID_TOKEN",
            )
        return token, False
    cookie = request.cookies.get(settings.gateway_access_cookie_name)
    if not cookie:
        raise Unauthenticated(message="Authentication required.", reason="UNAUTHENTICATED")
    return cookie, True


async def current_caller(request: Request) -> Caller:
    """Verifies the access token locally (signature, claims, revoked sessions)."""
    runtime = runtime_of(request)
    token, from_cookie = _presented_token(request, runtime.settings)
    if from_cookie:
        check_same_origin(request, runtime.settings)
    principal = await runtime.verifier.verify(token)
    if principal.kind != "user":
        raise Unauthenticated(message="Invalid token.", reason="INVALID_TOKEN")
    return Caller(
        token=token,
        principal=principal,
        from_cookie=from_cookie,
        auth=runtime.auth,
        options=runtime.call(token),
    )


CurrentCaller = Annotated[Caller, Depends(current_caller)]


def needs_caller(route: APIRoute) -> bool:
    """Whether the route depends on `current_caller` (directly or through another dependency)."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if dependant.call is current_caller:
            return True
        pending.extend(dependant.dependencies)
    return False


# ---------------------------------------------------------------------------------------------
# OpenAPI: the problem documents each route may answer.

_PROBLEM_DESCRIPTIONS: Mapping[int, str] = {
    400: "Malformed JSON or an invalid request.",
    401: "No valid access token (or wrong credentials). Comes with `WWW-Authenticate`.",
    403: "Not allowed: e.g. a cross-site request with the session cookie, or a change that needs "
    "a verified email address (`email-not-verified`: verify, then refresh the tokens).",
    404: "No such resource.",
    409: "Conflicts with the current state (e.g. the email is taken).",
    413: "The body is larger than the gateway accepts.",
    422: "Some fields are not valid: see `errors`.",
    429: "Too many attempts: wait `Retry-After` seconds.",
    503: "An upstream service is unavailable.",
    504: "An upstream service did not answer in time.",
}
_BODY = (400, 413, 422)
_UPSTREAM = (503, 504)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": Problem, "description": _PROBLEM_DESCRIPTIONS[status]}
        for status in sorted({*statuses, *_UPSTREAM})
    }


auth_router = APIRouter(prefix="/api/auth", tags=["auth"])
onboarding_router = APIRouter(prefix="/api/onboarding", tags=["onboarding"])

ACCEPTED_MESSAGE = "If the address belongs to an account, an email is on its way."


# ---------------------------------------------------------------------------------------------
# Sign-in and sessions: cookies are set and cleared here; the RPCs are declared at the end.


def _signed_in_or_challenged(
    request: Request, reply: auth_pb2.LoginResponse, _: Response
) -> Response:
    user = answer(UserOut, reply.user) if reply.HasField("user") else None
    if reply.WhichOneof("result") == "two_factor_required":
        challenge = answer(ChallengeOut, reply.two_factor_required)
        out = LoginOut(status="two_factor_required", user=user, tokens=None, challenge=challenge)
    else:
        tokens = answer(TokensOut, reply.tokens)
        out = LoginOut(status="signed_in", user=user, tokens=tokens, challenge=None)
    return _with_token_cookies(request, out.tokens, JsonResponse(out.model_dump(mode="json")))


def _new_tokens(request: Request, reply: auth_pb2.ChangePasswordResponse, _: Response) -> Response:
    tokens = answer(TokensOut, reply.tokens)
    return _with_token_cookies(request, tokens, JsonResponse(tokens.model_dump(mode="json")))


def _with_token_cookies(request: Request, tokens: TokensOut | None, out: Response) -> Response:
    if tokens is not None:
        set_token_cookies(out, runtime_of(request).settings, tokens)
    return out


def _signed_out(request: Request, _: Any, response: Response) -> Response:
    clear_token_cookies(response, runtime_of(request).settings)
    return response


def _accepted(*_: Any) -> Response:
    return JsonResponse({"message": ACCEPTED_MESSAGE}, status_code=202)


@auth_router.post(
    "/refresh",
    response_model=TokensOut,
    summary="Exchange the refresh token for new tokens",
    responses=problems(*_BODY, 401, 403),
)
async def refresh(
    request: Request, response: Response, body: RefreshBody | None = None
) -> TokensOut | Response:
    """Takes the refresh token from the body or, for browsers, the cookie. Each refresh token
    works once: presenting a used one again ends the whole session."""
    runtime = runtime_of(request)
    settings = runtime.settings
    token = body.refresh_token if body is not None else None
    if token is None:
        token = request.cookies.get(settings.gateway_refresh_cookie_name)
        if not token:
            raise Unauthenticated(
                message="No refresh token: send `refreshToken` or the cookie.",
                reason="UNAUTHENTICATED",
            )
        check_same_origin(request, settings)
    try:
        reply = await runtime.auth.RefreshSession(
            auth_pb2.RefreshSessionRequest(refresh_token=token, client=client_context(request)),
            **runtime.call(),
        )
    except grpc.aio.AioRpcError as error:
        return _problem_clearing_cookies(request, from_rpc_error(error))
    tokens = answer(TokensOut, reply.tokens)
    set_token_cookies(response, settings, tokens)
    return tokens


def _problem_clearing_cookies(request: Request, error: ErrorDetails) -> Response:
    """The problem for `error`; a 401 also clears the token cookies (they are no good)."""
    runtime = runtime_of(request)
    answer = runtime.problems.from_error_details(error, request.url.path)
    if answer.status_code == 401:
        clear_token_cookies(answer, runtime.settings)
    return answer


@auth_router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    summary="Sign out",
    responses=problems(401, 403),
    # It reads the token itself (to clear the cookies even when the token is no good).
    openapi_extra={"security": SECURED},
)
async def logout(request: Request) -> Response:
    """Revokes the session of the access token: its tokens stop working at once, here and in
    every service. A token that is no longer valid gets a 401 that clears the cookies."""
    runtime = runtime_of(request)
    settings = runtime.settings
    try:
        token, from_cookie = _presented_token(request, settings)
        if from_cookie:
            check_same_origin(request, settings)
        principal = await runtime.verifier.verify(token)
        await runtime.auth.Logout(auth_pb2.LogoutRequest(), **runtime.call(token))
    except Unauthenticated as error:
        return _problem_clearing_cookies(request, error_details_of(error))
    except grpc.aio.AioRpcError as error:
        return _problem_clearing_cookies(request, from_rpc_error(error))
    if principal.session_id is not None:
        runtime.verifier.revocations.revoke(principal.session_id)
    answer = Response(status_code=204)
    clear_token_cookies(answer, settings)
    return answer


# ---------------------------------------------------------------------------------------------
# The RPCs whose route the proto declares (`google.api.http`): served without a handler here.

expose(
    (auth_router, onboarding_router),
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    Edge(
        caller=CurrentCaller,
        stub_of=lambda request: runtime_of(request).auth,
        problems=problems,
        client_of=client_context,
    ),
    (
        Exposed("ResendVerification", then=_accepted, answer=AcceptedOut),
        Exposed("Login", then=_signed_in_or_challenged, answer=LoginOut),
        Exposed("CompleteTwoFactorLogin", then=_signed_in_or_challenged, answer=LoginOut),
        Exposed("RequestPasswordReset", then=_accepted, answer=AcceptedOut),
        Exposed("ResetPassword", then=_signed_out),
        Exposed("ChangePassword", then=_new_tokens, answer=TokensOut),
    ),
)


# After the declared routes: `/sessions/others` must match before `/sessions/{session_id}`.
@auth_router.delete(
    "/sessions/{session_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke one of my sessions",
    responses=problems(401, 403, 404, 422),
)
async def revoke_session(
    caller: CurrentCaller,
    request: Request,
    session_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
) -> Response:
    """Signs that session out; its tokens stop working at once. Revoking the calling session
    also clears the cookies."""
    runtime = runtime_of(request)
    await runtime.auth.RevokeSession(
        auth_pb2.RevokeSessionRequest(session_id=session_id), **caller.options
    )
    runtime.verifier.revocations.revoke(session_id)
    answer = Response(status_code=204)
    if session_id == caller.principal.session_id:
        clear_token_cookies(answer, runtime.settings)
    return answer
