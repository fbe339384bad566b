"""`/api/auth/*` and `/api/onboarding/*`: HTTP/JSON in, the auth service's gRPC API out.

The gateway holds no rules of its own: it checks the shape of the input, verifies the access
token locally (so that a revoked session is refused at the edge at once), forwards the token as
`authorization` metadata, and turns the answer into JSON (errors: see `problems`). Browsers get
the tokens as HttpOnly cookies; API clients read them from the body and send them as Bearer.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from pydantic import Field

from huntaze.auth.v1 import auth_pb2
from huntaze.common.v1 import common_pb2
from huntaze_gateway.codec import JsonResponse, answer
from huntaze_gateway.config import GatewaySettings
from huntaze_gateway.models import Answer, ApiModel, ProtoBody
from huntaze_gateway.problems import FORBIDDEN, ApiProblem, openapi_problems
from huntaze_gateway.rpc_routes import Edge, Exposed, expose
from huntaze_gateway.state import runtime_of
from huntaze_kit.errors import Unauthenticated
from huntaze_kit.identity import Principal, bearer_token

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
# Models (see `models`): the bodies are made from the proto requests; these say what only HTTP
# says (the refresh token may come from the cookie) or shape an answer the edge writes.


class RefreshBody(ProtoBody, message=auth_pb2.RefreshSessionRequest):
    optional_body: ClassVar[bool] = True
    refresh_token: str | None = Field(
        default=None, description="Omit it to use the refresh-token cookie."
    )


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


def _cookie_options(settings: GatewaySettings) -> dict[str, Any]:
    return {
        "domain": settings.gateway_cookie_domain,
        "secure": settings.gateway_cookie_secure,
        "httponly": True,
        "samesite": settings.gateway_cookie_samesite,
    }


def set_token_cookies(response: Response, settings: GatewaySettings, tokens: TokensOut) -> None:
    common = _cookie_options(settings)
    access_lifetime = _cookie_lifetime(tokens.access_token_expires_at, 15 * 60)
    refresh_lifetime = _cookie_lifetime(tokens.refresh_token_expires_at, 30 * 24 * 3600)
    access, refresh = settings.gateway_access_cookie_name, settings.gateway_refresh_cookie_name
    response.set_cookie(access, tokens.access_token, max_age=access_lifetime, path="/", **common)
    response.set_cookie(
        refresh, tokens.refresh_token, max_age=refresh_lifetime, path=REFRESH_COOKIE_PATH, **common
    )


def clear_token_cookies(response: Response, settings: GatewaySettings) -> None:
    common = _cookie_options(settings)
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
    """A verified user, and the options of a call made for them (their token; the channels add
    the deadline and request id): `await stub.Method(request, **caller.options)`."""

    principal: Principal
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
    request.state.principal = principal  # for the hooks after the call
    return Caller(principal=principal, options=runtime.call(token))


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


# The problem documents a route may answer (every route module documents them so).
problems = openapi_problems
auth_router = APIRouter(prefix="/api/auth", tags=["auth"])
onboarding_router = APIRouter(prefix="/api/onboarding", tags=["onboarding"])

ACCEPTED_MESSAGE = "If the address belongs to an account, an email is on its way."


# ---------------------------------------------------------------------------------------------
# Sign-in and sessions: the edge's hooks around the declared RPCs set and clear the cookies.


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


def _new_tokens(request: Request, reply: Any, _: Response) -> Response:
    tokens = answer(TokensOut, reply.tokens)
    return _with_token_cookies(request, tokens, JsonResponse(tokens.model_dump(mode="json")))


def _with_token_cookies(request: Request, tokens: TokensOut | None, out: Response) -> Response:
    if tokens is not None:
        set_token_cookies(out, runtime_of(request).settings, tokens)
    return out


def _signed_out(request: Request, _: Any, response: Response) -> Response:
    clear_token_cookies(response, runtime_of(request).settings)
    return response


def _session_revoked(request: Request, _: Any, response: Response) -> Response:
    """The revoked session (the path's, or the caller's own) is refused here at once; revoking
    the calling session also clears the cookies."""
    own = request.state.principal.session_id
    revoked = request.path_params.get("session_id", own)
    if revoked is not None:
        runtime_of(request).verifier.revocations.revoke(revoked)
    return _signed_out(request, None, response) if revoked == own else response


def _clearing_cookies(request: Request, problem: Response) -> Response:
    """A 401 also clears the token cookies (they are no good)."""
    return _signed_out(request, None, problem) if problem.status_code == 401 else problem


async def _refresh_token_cookie(request: Request, message: Any) -> None:
    """Browsers send the refresh token as a cookie (then only from our own pages)."""
    settings = runtime_of(request).settings
    if not message.refresh_token:
        message.refresh_token = request.cookies.get(settings.gateway_refresh_cookie_name, "")
        if not message.refresh_token:
            raise Unauthenticated(
                message="No refresh token: send `refreshToken` or the cookie.",
                reason="UNAUTHENTICATED",
            )
        check_same_origin(request, settings)


async def _token_of_logout(request: Request, _: Any) -> dict[str, Any]:
    """Logout verifies the caller itself: a token no longer valid gets a 401 that clears the
    cookies."""
    caller = await current_caller(request)
    return caller.options


def _accepted(*_: Any) -> Response:
    return JsonResponse({"message": ACCEPTED_MESSAGE}, status_code=202)


expose(
    (auth_router, onboarding_router),
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    Edge(
        caller=CurrentCaller,
        stub_of=lambda request: runtime_of(request).auth,
        problems=problems,
        client_of=client_context,
        security=SECURED,
    ),
    (
        Exposed("ResendVerification", then=_accepted, answer=AcceptedOut),
        Exposed("Login", then=_signed_in_or_challenged, answer=LoginOut),
        Exposed("CompleteTwoFactorLogin", then=_signed_in_or_challenged, answer=LoginOut),
        Exposed(
            "RefreshSession",
            before=_refresh_token_cookie,
            then=_new_tokens,
            failed=_clearing_cookies,
            answer=TokensOut,
        ),
        Exposed("Logout", before=_token_of_logout, then=_session_revoked, failed=_clearing_cookies),
        Exposed("RevokeSession", then=_session_revoked),
        Exposed("RequestPasswordReset", then=_accepted, answer=AcceptedOut),
        Exposed("ResetPassword", then=_signed_out),
        Exposed("ChangePassword", then=_new_tokens, answer=TokensOut),
    ),
)
