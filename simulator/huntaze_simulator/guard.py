"""What every `/api2/v2` request passes before its handler: the rate limit, the app token, the
signature (under the current dynamic rules) and, for the creator's own calls, the session and its
binding to `auth_id`, `user-id`, `x-bc` and the user-agent."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from huntaze_simulator import errors
from huntaze_simulator.model import Session
from huntaze_simulator.platform import Platform


async def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(platform_of)]


def path_and_query(request: Request) -> str:
    """The request target exactly as sent: what the client signed."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string", b"")
    target = raw_path.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


async def signed(request: Request, platform: PlatformDep) -> Platform:
    """Counts the request, then checks `app-token` and `sign`/`time` (signed for user id `0` when
    the request carries no `user-id`, as pre-login calls do)."""
    client = request.client.host if request.client else "unknown"
    sess = request.cookies.get("sess")
    scope_key = sess if platform.config.rate_limit_scope == "session" and sess else client
    platform.count_request(scope_key)
    token = request.headers.get("app-token")
    if not token:
        raise errors.app_token_required()
    if token != platform.data.rules.app_token:
        raise errors.refresh_the_page()
    platform.verify_signature(
        path_and_query=path_and_query(request),
        user_id=request.headers.get("user-id") or "0",
        sign=request.headers.get("sign"),
        time_header=request.headers.get("time"),
    )
    return platform


SignedPlatform = Annotated[Platform, Depends(signed)]


async def creator_session(request: Request, platform: SignedPlatform) -> Session:
    """The signed-in session this request belongs to, bound to its browser."""
    session = platform.live_session(request.cookies.get("sess"))
    if session is None:
        raise errors.unauthorized()
    if not session.authenticated:
        raise errors.otp_required()
    platform.check_binding(
        session,
        auth_id=request.cookies.get("auth_id"),
        user_id=request.headers.get("user-id"),
        x_bc=request.headers.get("x-bc"),
        user_agent=request.headers.get("user-agent"),
    )
    return session


CreatorSession = Annotated[Session, Depends(creator_session)]
