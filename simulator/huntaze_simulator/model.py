"""The platform's state: one creator account, its fans, chats, earnings, lists, mass messages and
sessions. Plain pydantic models, so the whole state is one JSON snapshot (`PlatformData`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from huntaze_simulator.signing import DynamicRules

TransactionType = Literal["subscribes", "tips", "chat_messages"]


class Creator(BaseModel):
    id: int
    username: str
    name: str
    email: str
    password: str
    about: str
    subscribe_price: float
    joined_at: float


class SubscriptionPeriod(BaseModel):
    id: int
    action: Literal["subscribe", "resubscribe", "unsubscribe"]
    date: float
    price: float


class Fan(BaseModel):
    id: int
    username: str
    name: str
    joined_at: float
    active: bool
    subscribed_at: float
    expires_at: float
    subscribe_price: float
    last_activity: float
    history: list[SubscriptionPeriod] = Field(default_factory=list)
    notice: str = ""
    display_name: str = ""


class Media(BaseModel):
    id: int
    type: Literal["photo", "video"]
    created_at: float
    duration: int = 0


class Message(BaseModel):
    id: int
    fan_id: int
    from_creator: bool
    text: str
    created_at: float
    price: float = 0.0
    media_ids: list[int] = Field(default_factory=list)
    previews: list[int] = Field(default_factory=list)
    locked_text: bool = False
    purchased: bool = False
    tip_amount: float = 0.0
    queue_id: int | None = None


class Transaction(BaseModel):
    id: int
    type: TransactionType
    amount: float
    fan_id: int
    created_at: float
    message_id: int | None = None


class FanList(BaseModel):
    id: str
    type: str
    name: str
    user_ids: list[int] = Field(default_factory=list)
    custom: bool = False


class MassMessage(BaseModel):
    id: int
    created_at: float
    send_at: float
    text: str
    price: float
    media_ids: list[int]
    previews: list[int]
    locked_text: bool
    recipients: list[int]
    delivered: int = 0
    canceled: bool = False


class Session(BaseModel):
    sess: str
    user_id: int
    x_bc: str
    user_agent: str
    csrf: str
    st: str
    ws_token: str
    created_at: float
    expires_at: float
    # False between a password accepted and its OTP code (the cookie exists, the account is locked).
    authenticated: bool = True
    ended: bool = False
    last_send_at: float | None = None


class PlatformData(BaseModel):
    """Everything a restart must keep (the demo's snapshot file is this, as JSON)."""

    creator: Creator
    fans: dict[int, Fan] = Field(default_factory=dict)
    messages: dict[int, list[Message]] = Field(default_factory=dict)
    last_read_message_id: dict[int, int] = Field(default_factory=dict)
    transactions: list[Transaction] = Field(default_factory=list)
    lists: dict[str, FanList] = Field(default_factory=dict)
    mass_messages: dict[int, MassMessage] = Field(default_factory=dict)
    vault: list[Media] = Field(default_factory=list)
    sessions: dict[str, Session] = Field(default_factory=dict)
    rules: DynamicRules
    previous_rules: DynamicRules | None = None
    rules_rotated_at: float = 0.0
    next_id: int = 1
