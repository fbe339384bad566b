"""`/api/of/*` and `POST /api/onboarding/connect-platform`: the creator's OnlyFans connection
(the OnlyFans worker's gRPC API, declared in its proto), and the OnlyFans side of the CRM:
`POST /api/of/send` (declared with the CRM's send) and the conversations below.

The worker decides what a connection attempt becomes (connected, needs an OTP code, needs a
session import, or failed with the reason) and no answer carries a password, a code or a cookie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response

from huntaze.common.v1 import common_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze.onlyfans.v1 import onlyfans_pb2
from huntaze_gateway.auth_routes import CurrentCaller, onboarding_router, problems
from huntaze_gateway.openapi import page_schema
from huntaze_gateway.rpc_routes import (
    PAGE_FIELDS,
    Cursor,
    Edge,
    Limit,
    expose,
    page_answer,
    renamed,
)
from huntaze_gateway.state import runtime_of

of_router = APIRouter(prefix="/api/of", tags=["onlyfans"])
CONVERSATIONS_PAGE = page_schema("conversations", "huntaze.crm.v1.Conversation")

expose(
    (of_router, onboarding_router),
    onlyfans_pb2.DESCRIPTOR.services_by_name["OnlyFansService"],
    Edge(
        caller=CurrentCaller,
        stub_of=lambda request: runtime_of(request).onlyfans,
        problems=problems,
    ),
)


def _conversations(*, unread: bool) -> Callable[..., Awaitable[Response]]:
    """The CRM's conversations on OnlyFans, most recent activity first (its defaults)."""

    async def conversations(
        caller: CurrentCaller, request: Request, cursor: Cursor = "", limit: Limit = None
    ) -> Response:
        page = common_pb2.PageRequest(page_size=limit or 0, page_token=cursor)
        message = crm_pb2.ListConversationsRequest(
            page=page, unread_only=unread, platform=crm_pb2.PLATFORM_ONLYFANS
        )
        call = runtime_of(request).crm.ListConversations(message, **caller.options)
        answer = await renamed(call, PAGE_FIELDS)
        return page_answer("conversations", answer.conversations, answer.page)

    return conversations


for path, unread, summary, description in (
    ("/threads", False, "My OnlyFans conversations", "Most recent activity first."),
    ("/inbox", True, "My unread OnlyFans conversations", "Those with unread messages."),
):
    of_router.add_api_route(
        path,
        _conversations(unread=unread),
        methods=["GET"],
        response_model=CONVERSATIONS_PAGE,
        summary=summary,
        description=f"`GET /api/crm/conversations?platform=onlyfans`: {description}",
        responses=problems(401, 422),
    )
