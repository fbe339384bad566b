"""The creator's web API under `/api2/v2`: paths, parameters, paging and JSON shapes as public
clients of the platform use them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from huntaze_simulator import errors, views
from huntaze_simulator.guard import CreatorSession, PlatformDep, SignedPlatform, creator_session
from huntaze_simulator.model import Fan
from huntaze_simulator.platform import DAY, Platform

router = APIRouter(prefix="/api2/v2")

Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0)]
# `/subscriptions/subscribers` never pages more than this.
SUBSCRIBERS_PAGE_MAX = 20
TRANSACTIONS_DEFAULT_DAYS = 30


def page(items: list[Any], *, offset: int, limit: int) -> tuple[list[Any], bool]:
    return items[offset : offset + limit], offset + limit < len(items)


def ws_url(request: Request) -> str:
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{request.url.netloc}/ws3/"


@router.get("/users/me")
async def users_me(request: Request, platform: SignedPlatform) -> dict[str, Any]:
    if not request.cookies.get("sess"):
        return views.anonymous()
    session = await creator_session(request, platform)
    return views.me(platform, session, ws_url=ws_url(request))


# Chats ---------------------------------------------------------------------------------------


def _chat_fans(
    platform: Platform, *, order: str, filter_: str | None, query: str | None
) -> list[Fan]:
    chats = [
        platform.data.fans[fan_id]
        for fan_id, messages in platform.data.messages.items()
        if messages
    ]
    chats.sort(key=lambda fan: platform.data.messages[fan.id][-1].id, reverse=order == "recent")
    if filter_ is not None:
        chats = [fan for fan in chats if _chat_matches(platform, fan.id, filter_)]
    if query:
        needle = query.lower()
        chats = [fan for fan in chats if needle in fan.name.lower() or needle in fan.username]
    return chats


def _chat_matches(platform: Platform, fan_id: int, filter_: str) -> bool:
    last_read = platform.data.last_read_message_id.get(fan_id, 0)
    messages = platform.data.messages[fan_id]
    unread = [m for m in messages if not m.from_creator and m.id > last_read]
    if filter_ == "unread":
        return bool(unread)
    if filter_ == "with_tips":
        return any(m.tip_amount > 0 for m in messages)
    if filter_ == "unread_with_tips":
        return any(m.tip_amount > 0 for m in unread)
    if filter_ in ("pinned", "priority"):
        return False
    raise errors.bad_request("Invalid filter")


@router.get("/chats")
async def list_chats(
    *,
    platform: PlatformDep,
    session: CreatorSession,
    limit: Limit = 10,
    offset: Offset = 0,
    order: Literal["recent", "old"] = "recent",
    skip_users: Literal["all", "none"] = "none",
    filter: str | None = None,
    query: str | None = None,
) -> dict[str, Any]:
    fans = _chat_fans(platform, order=order, filter_=filter, query=query)
    items, has_more = page(fans, offset=offset, limit=limit)
    return {
        "list": [views.chat(platform, fan, full_users=skip_users != "all") for fan in items],
        "hasMore": has_more,
        "nextOffset": offset + len(items),
    }


@router.get("/chats/{fan_id}")
async def get_chat(fan_id: int, platform: PlatformDep, session: CreatorSession) -> dict[str, Any]:
    fan = platform.fan(fan_id)
    return views.chat(platform, fan, full_users=True)


@router.get("/chats/{fan_id}/messages")
async def list_messages(
    fan_id: int,
    *,
    platform: PlatformDep,
    session: CreatorSession,
    limit: Limit = 10,
    order: Literal["desc", "asc"] = "desc",
    id: int | None = None,
    firstId: int | None = None,  # noqa: N803
    offset: Offset = 0,
    skip_users: Literal["all", "none"] = "none",
) -> dict[str, Any]:
    """Cursor `id=<oldest id seen>` walks back; `order=asc` with `offset` walks forward. Pages
    come back short while more remain, so clients must follow `hasMore`."""
    platform.fan(fan_id)
    messages = platform.data.messages.get(fan_id, [])
    if firstId is not None:
        messages = [m for m in messages if m.id >= firstId]
    if order == "desc":
        candidates = [m for m in reversed(messages) if id is None or m.id < id]
    else:
        candidates = [m for m in messages if id is None or m.id > id][offset:]
    has_more = len(candidates) > limit
    size = max(1, int(limit * platform.config.message_page_fill)) if has_more else limit
    return {
        "list": [
            views.message(platform, m, full_users=skip_users != "all") for m in candidates[:size]
        ],
        "hasMore": has_more,
    }


class OutgoingMessage(BaseModel):
    """The body the web client sends (the `rf*` and `giphyId` fields are accepted, not used)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    text: str = ""
    locked_text: bool = Field(default=False, alias="lockedText")
    media_files: list[int] = Field(default_factory=list, alias="mediaFiles")
    price: float = 0
    previews: list[int] = Field(default_factory=list)


@router.post("/chats/{fan_id}/messages")
async def send_message(
    fan_id: int, body: OutgoingMessage, platform: PlatformDep, session: CreatorSession
) -> dict[str, Any]:
    platform.check_content(price=body.price, media_ids=body.media_files, previews=body.previews)
    platform.claim_send_slot(session)
    message = platform.creator_sends(
        fan_id=fan_id,
        text=body.text,
        price=body.price,
        media_ids=body.media_files,
        previews=body.previews,
        locked_text=body.locked_text,
    )
    return views.message(platform, message)


@router.post("/chats/{fan_id}/mark-as-read")
async def mark_as_read(
    fan_id: int, platform: PlatformDep, session: CreatorSession
) -> dict[str, Any]:
    platform.mark_read(fan_id)
    return {"success": True}


# Mass messages -------------------------------------------------------------------------------


class QueuedMessage(OutgoingMessage):
    user_lists: list[str | int] = Field(default_factory=list, alias="userLists")
    user_ids: list[int] = Field(default_factory=list, alias="userIds")
    # The platform's wire name; `excludeUserLists`/`excludedUsers` are ignored, as there.
    excluded_lists: list[str | int] = Field(default_factory=list, alias="excludedLists")
    scheduled_date: datetime | None = Field(default=None, alias="scheduledDate")


@router.post("/messages/queue")
async def queue_mass_message(
    body: QueuedMessage, platform: PlatformDep, session: CreatorSession
) -> dict[str, Any]:
    platform.check_content(price=body.price, media_ids=body.media_files, previews=body.previews)
    if not body.user_lists and not body.user_ids:
        raise errors.bad_request("Choose at least one recipient")
    platform.claim_send_slot(session)
    queued = platform.queue_mass_message(
        text=body.text,
        price=body.price,
        media_ids=body.media_files,
        previews=body.previews,
        locked_text=body.locked_text,
        user_lists=body.user_lists,
        user_ids=body.user_ids,
        excluded_lists=body.excluded_lists,
        send_at=body.scheduled_date.timestamp() if body.scheduled_date else None,
    )
    return views.queue_entry(platform, queued)


@router.get("/messages/queue/stats")
async def queue_stats(
    platform: PlatformDep, session: CreatorSession, limit: Limit = 10, offset: Offset = 0
) -> dict[str, Any]:
    queued = sorted(platform.data.mass_messages.values(), key=lambda q: q.id, reverse=True)
    items, has_more = page(queued, offset=offset, limit=limit)
    return {"list": [views.queue_stats(platform, q) for q in items], "hasMore": has_more}


@router.get("/messages/queue/{queue_id}")
async def get_queue(
    queue_id: int, platform: PlatformDep, session: CreatorSession
) -> dict[str, Any]:
    return views.queue_entry(platform, platform.mass_message(queue_id))


@router.delete("/messages/queue/{queue_id}")
async def cancel_queue(
    queue_id: int, platform: PlatformDep, session: CreatorSession
) -> dict[str, Any]:
    return views.queue_entry(platform, platform.cancel_mass_message(queue_id))


# Fans ----------------------------------------------------------------------------------------


@router.get("/subscriptions/subscribers")
async def list_subscribers(
    *,
    platform: PlatformDep,
    session: CreatorSession,
    type: Literal["active", "expired", "all"] = "active",
    limit: Annotated[int, Query(ge=1)] = 10,
    offset: Offset = 0,
    field: Literal["last_activity", "expire_date", "subscribe_date"] = "last_activity",
    sort: str = "desc",
    query: str | None = None,
) -> dict[str, Any]:
    """At most 20 a page, whatever `limit` asks."""
    fans = [
        fan
        for fan in platform.data.fans.values()
        if type == "all" or fan.active == (type == "active")
    ]
    if query:
        needle = query.lower()
        fans = [fan for fan in fans if needle in fan.name.lower() or needle in fan.username]
    keys = {
        "last_activity": lambda fan: fan.last_activity,
        "expire_date": lambda fan: fan.expires_at,
        "subscribe_date": lambda fan: fan.subscribed_at,
    }
    fans.sort(key=keys[field], reverse=sort != "asc")
    items, has_more = page(fans, offset=offset, limit=min(limit, SUBSCRIBERS_PAGE_MAX))
    return {"list": [views.subscriber(platform, fan) for fan in items], "hasMore": has_more}


@router.get("/subscriptions/subscribers/count")
async def count_subscribers(platform: PlatformDep, session: CreatorSession) -> dict[str, Any]:
    return {"count": sum(1 for fan in platform.data.fans.values() if fan.active)}


# Earnings ------------------------------------------------------------------------------------


@router.get("/payouts/transactions")
async def list_transactions(
    *,
    platform: PlatformDep,
    session: CreatorSession,
    limit: Limit = 10,
    marker: int | None = None,
    type: Literal["subscribes", "tips", "chat_messages", "post", "stream"] | None = None,
    startDate: datetime | None = None,  # noqa: N803
) -> dict[str, Any]:
    """Newest first; pass `nextMarker` back as `marker` while `hasMore`."""
    since = (
        startDate.timestamp()
        if startDate
        else platform.clock.now() - TRANSACTIONS_DEFAULT_DAYS * DAY
    )
    indexes = [
        index
        for index in range(len(platform.data.transactions) - 1, -1, -1)
        if (txn := platform.data.transactions[index]).created_at >= since
        and (type is None or txn.type == type)
        and (marker is None or txn.id < marker)
    ]
    chosen = indexes[:limit]
    next_marker = platform.data.transactions[chosen[-1]].id if chosen else None
    return {
        "list": [views.transaction(platform, index) for index in chosen],
        "hasMore": len(indexes) > limit,
        "marker": marker,
        "nextMarker": next_marker,
    }


# Lists ---------------------------------------------------------------------------------------


@router.get("/lists")
async def list_lists(
    platform: PlatformDep,
    session: CreatorSession,
    limit: Limit = 10,
    offset: Offset = 0,
    format: str | None = None,
) -> Any:
    """A bare array, unless `format=infinite` asks for `{list, hasMore}`."""
    items, has_more = page(list(platform.data.lists.values()), offset=offset, limit=limit)
    rendered = [views.fan_list(item) for item in items]
    if format == "infinite":
        return {"list": rendered, "hasMore": has_more}
    return rendered


class NewList(BaseModel):
    name: str


@router.post("/lists")
async def create_list(
    body: NewList, platform: PlatformDep, session: CreatorSession
) -> dict[str, Any]:
    return views.fan_list(platform.create_list(body.name))


@router.get("/lists/{list_id}/users")
async def list_users(
    list_id: str,
    platform: PlatformDep,
    session: CreatorSession,
    limit: Limit = 10,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    items, _ = page(platform.fan_list(list_id).user_ids, offset=offset, limit=limit)
    return [views.fan_user(platform.data.fans[fan_id]) for fan_id in items]


@router.post("/lists/{list_id}/users/{fan_id}")
async def add_to_list(
    list_id: str, fan_id: int, platform: PlatformDep, session: CreatorSession
) -> dict[str, Any]:
    return views.fan_list(platform.set_list_member(list_id=list_id, fan_id=fan_id, member=True))


@router.delete("/lists/{list_id}/users/{fan_id}")
async def remove_from_list(
    list_id: str, fan_id: int, platform: PlatformDep, session: CreatorSession
) -> dict[str, Any]:
    return views.fan_list(platform.set_list_member(list_id=list_id, fan_id=fan_id, member=False))


# Vault ---------------------------------------------------------------------------------------


@router.get("/vault/media")
async def list_vault(
    platform: PlatformDep, session: CreatorSession, limit: Limit = 10, offset: Offset = 0
) -> dict[str, Any]:
    newest_first = list(reversed(platform.data.vault))
    items, has_more = page(newest_first, offset=offset, limit=limit)
    return {"list": [views.media(item) for item in items], "hasMore": has_more}
