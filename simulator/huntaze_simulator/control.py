"""The control API (`/_control`), for tests and the demo: what fans and the person at the browser
do, what the platform operator changes, and what the creator sent. Unauthenticated: the simulator
listens on loopback and is a test tool."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from huntaze_simulator import errors, views
from huntaze_simulator.guard import PlatformDep
from huntaze_simulator.login import DeskDep, session_cookies
from huntaze_simulator.platform import iso

router = APIRouter(prefix="/_control")


@router.get("/state")
async def state(platform: PlatformDep) -> dict[str, Any]:
    data = platform.data
    return {
        "creator": {
            "id": data.creator.id,
            "username": data.creator.username,
            "email": data.creator.email,
            "password": data.creator.password,
        },
        "fans": len(data.fans),
        "active_fans": sum(1 for fan in data.fans.values() if fan.active),
        "messages": sum(len(chat) for chat in data.messages.values()),
        "transactions": len(data.transactions),
        "live_sessions": sum(1 for s in data.sessions.values() if platform.live_session(s.sess)),
        "rules_revision": data.rules.revision,
    }


@router.patch("/config")
async def update_config(changes: dict[str, Any], platform: PlatformDep) -> dict[str, Any]:
    """Changes any `SimulatorConfig` field at run time (unknown or invalid fields: 400)."""
    try:
        platform.config = platform.config.model_validate(
            {**platform.config.model_dump(), **changes}
        )
    except ValueError as exc:
        raise errors.bad_request(str(exc)) from exc
    return platform.config.model_dump()


class Advance(BaseModel):
    seconds: float = Field(gt=0)


@router.post("/clock/advance")
async def advance_clock(body: Advance, platform: PlatformDep) -> dict[str, float]:
    platform.clock.advance(body.seconds)
    return {"now": platform.clock.now()}


@router.post("/rules/rotate")
async def rotate_rules(platform: PlatformDep) -> dict[str, Any]:
    return platform.rotate_rules().published()


# Login: what the person at the browser does --------------------------------------------------


@router.get("/otp")
async def latest_otp(desk: DeskDep) -> dict[str, str | None]:
    """The last OTP code the platform sent (what the creator reads on their phone)."""
    return {"code": desk.latest_code}


@router.get("/challenges")
async def pending_challenges(desk: DeskDep) -> list[dict[str, Any]]:
    return [
        {"id": attempt.id, "solved": attempt.challenge_solved} for attempt in desk.attempts.values()
    ]


@router.post("/challenges/{attempt_id}/solve")
async def solve_challenge(attempt_id: str, desk: DeskDep) -> dict[str, bool]:
    attempt = desk.attempts.get(attempt_id)
    if attempt is None:
        raise errors.not_found("Challenge not found")
    attempt.challenge_solved = True
    return {"solved": True}


@router.post("/captcha-tokens")
async def solve_captcha(desk: DeskDep) -> dict[str, str]:
    """A token a person's solved challenge yields, good for one `POST /users/login`."""
    token = secrets.token_urlsafe(24)
    desk.captcha_tokens.add(token)
    return {"token": token}


# Sessions ------------------------------------------------------------------------------------


class ImportedBrowser(BaseModel):
    user_agent: str = Field(min_length=1)
    x_bc: str | None = None


@router.post("/sessions")
async def open_session(body: ImportedBrowser, platform: PlatformDep) -> dict[str, Any]:
    """A person signed in with their browser: the values a session import copies from it."""
    session = platform.open_session(user_agent=body.user_agent, x_bc=body.x_bc)
    return {
        "cookies": session_cookies(session),
        "x_bc": session.x_bc,
        "user_agent": session.user_agent,
        "user_id": session.user_id,
        "expires_at": session.expires_at,
    }


@router.delete("/sessions/{sess}")
async def end_session(sess: str, platform: PlatformDep) -> dict[str, bool]:
    """The creator logs out in the browser (or the platform's security checks end the session)."""
    if sess not in platform.data.sessions:
        raise errors.not_found("Session not found")
    platform.end_session(sess)
    return {"ended": True}


@router.delete("/sessions")
async def end_all_sessions(platform: PlatformDep) -> dict[str, int]:
    """A password change: every session ends."""
    return {"ended": platform.end_all_sessions()}


# Fans ----------------------------------------------------------------------------------------


class NewFan(BaseModel):
    id: int | None = None
    name: str | None = None
    username: str | None = None


@router.post("/fans")
async def new_fan(body: NewFan, platform: PlatformDep) -> dict[str, Any]:
    fan = platform.subscribe(fan_id=body.id, name=body.name, username=body.username)
    return views.subscriber(platform, fan)


@router.post("/fans/{fan_id}/subscribe")
async def resubscribe(fan_id: int, platform: PlatformDep) -> dict[str, Any]:
    platform.fan(fan_id)
    return views.subscriber(platform, platform.subscribe(fan_id=fan_id))


@router.post("/fans/{fan_id}/unsubscribe")
async def unsubscribe(fan_id: int, platform: PlatformDep) -> dict[str, Any]:
    return views.subscriber(platform, platform.unsubscribe(fan_id=fan_id))


class FanText(BaseModel):
    text: str = Field(min_length=1)


@router.post("/fans/{fan_id}/messages")
async def fan_writes(fan_id: int, body: FanText, platform: PlatformDep) -> dict[str, Any]:
    return views.message(platform, platform.fan_writes(fan_id=fan_id, text=body.text))


class Purchase(BaseModel):
    message_id: int


@router.post("/fans/{fan_id}/purchases")
async def purchase(fan_id: int, body: Purchase, platform: PlatformDep) -> dict[str, Any]:
    message = platform.purchase(fan_id=fan_id, message_id=body.message_id)
    return views.message(platform, message)


class Tip(BaseModel):
    amount: float
    text: str = ""


@router.post("/fans/{fan_id}/tips")
async def tip(fan_id: int, body: Tip, platform: PlatformDep) -> dict[str, Any]:
    return views.message(platform, platform.tip(fan_id=fan_id, amount=body.amount, text=body.text))


# Deliveries ----------------------------------------------------------------------------------


@router.get("/sent")
async def sent(
    platform: PlatformDep,
    fan_id: int | None = None,
    after_id: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Every message the creator sent (direct or a mass-message copy), oldest first."""
    chats = (
        {fan_id: platform.data.messages.get(fan_id, [])}
        if fan_id is not None
        else platform.data.messages
    )
    sent_messages = sorted(
        (m for chat in chats.values() for m in chat if m.from_creator and m.id > after_id),
        key=lambda m: m.id,
    )
    return [
        {
            "id": m.id,
            "fan_id": m.fan_id,
            "text": m.text,
            "price": m.price,
            "media_files": m.media_ids,
            "queue_id": m.queue_id,
            "purchased": m.purchased,
            "created_at": iso(m.created_at),
        }
        for m in sent_messages
    ]


@router.post("/snapshot")
async def snapshot(platform: PlatformDep) -> dict[str, bool]:
    """Writes the snapshot file now (it is also written on shutdown and every minute)."""
    if platform.snapshot_path is None:
        raise errors.bad_request("No snapshot file configured")
    platform.save()
    return {"saved": True}
