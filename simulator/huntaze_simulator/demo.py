"""Demo mode: a believable creator (hundreds of fans, months of chats, purchases, tips and
renewals), generated from a seed, and then steady fan activity while the simulator runs."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from huntaze_simulator import errors
from huntaze_simulator.platform import DAY, SUBSCRIPTION_DAYS, Platform

FIRST_NAMES = (
    "Alex",
    "Sam",
    "Jordan",
    "Chris",
    "Taylor",
    "Mike",
    "Dan",
    "Ryan",
    "Kevin",
    "Jake",
    "Tom",
    "Luis",
    "Marco",
    "Ben",
    "Nick",
    "Paul",
    "Omar",
    "Leo",
    "Max",
    "Ethan",
    "Noah",
    "Liam",
)
LAST_INITIALS = "ABCDEFGHJKLMNPRSTVW"
FAN_LINES = (
    "hey gorgeous, how was your day?",
    "just subscribed, love your content!",
    "that last set was amazing 😍",
    "do you do custom videos?",
    "good morning beautiful",
    "what are you up to this weekend?",
    "can't stop thinking about your last post",
    "any new content coming soon?",
    "you made my day",
    "how much for something special?",
    "miss talking to you",
    "where was that photo taken?",
)
CREATOR_LINES = (
    "Hey babe, thanks for subscribing 💕",
    "Aww you're sweet, my day was great!",
    "I have something special just for you...",
    "Yes I do customs, tell me what you'd like 😘",
    "Good morning! Hope you slept well",
    "Working on a new set right now, stay tuned",
    "Glad you liked it 🥰",
    "Check this out, I think you'll love it",
)
PPV_LINES = (
    "Something I only share with my favourites 🔥",
    "Full video unlocked just for you",
    "Exclusive set, not on my feed",
)
CUSTOM_LISTS = ("VIP", "Big spenders", "Custom requests")


@dataclass(frozen=True)
class DemoShape:
    fans: int = 400
    days: int = 180
    chat_share: float = 0.7
    churn_share: float = 0.3


def fan_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_INITIALS)}."


Action = Callable[[], object]


@dataclass
class PaidMessage:
    """A paid message planned in the history; its id is known once it is sent."""

    platform: Platform
    fan_id: int
    price: float
    text: str
    media_ids: list[int]
    message_id: int = 0

    def send(self, when: float) -> None:
        self.message_id = self.platform.creator_sends(
            fan_id=self.fan_id,
            text=f"<p>{self.text}</p>",
            price=self.price,
            media_ids=self.media_ids,
            previews=[],
            locked_text=False,
            at=when,
        ).id

    def buy(self, when: float) -> None:
        self.platform.purchase(fan_id=self.fan_id, message_id=self.message_id, at=when)


def populate(platform: Platform, shape: DemoShape = DemoShape()) -> None:
    """Generates the history, oldest event first (ids, cursors and markers follow time)."""
    rng = random.Random(platform.config.seed)  # noqa: S311 (seeded for repeatable runs)
    now = platform.clock.now()
    start = now - shape.days * DAY
    events: list[tuple[float, int, Action]] = []

    def at(when: float, action: Action) -> None:
        events.append((when, len(events), action))

    for index in range(shape.fans):
        fan_id = 10_000_000 + rng.randrange(400_000_000) // 1000 * 1000 + index
        joined = start + rng.random() ** 0.7 * (now - start - DAY)
        left = joined + rng.uniform(20, 150) * DAY if rng.random() < shape.churn_share else None
        until = min(left, now) if left is not None else now
        name = fan_name(rng)
        username = name.lower().replace(" ", "").replace(".", "") + str(fan_id % 1000)
        at(
            joined,
            partial(platform.subscribe, fan_id=fan_id, name=name, username=username, at=joined),
        )
        renewal = joined + SUBSCRIPTION_DAYS * DAY
        while renewal < until:
            at(renewal, partial(platform.renew, fan_id=fan_id, at=renewal))
            renewal += SUBSCRIPTION_DAYS * DAY
        if rng.random() < shape.chat_share:
            _plan_chat(platform, rng, at, fan_id=fan_id, since=joined, until=until)
        if left is not None and left < now:
            at(left, partial(platform.unsubscribe, fan_id=fan_id, at=left))
    for _, _, action in sorted(events, key=lambda event: (event[0], event[1])):
        action()
    _finish(platform, rng)


def _plan_chat(
    platform: Platform,
    rng: random.Random,
    at: Callable[[float, Action], None],
    *,
    fan_id: int,
    since: float,
    until: float,
) -> None:
    """A conversation: fan lines, the creator's answers, some paid messages bought, some tips."""
    when = since + rng.uniform(0.01, 2) * DAY
    for _ in range(rng.randint(2, 24)):
        if when >= until:
            return
        if rng.random() < 0.55:
            line = rng.choice(FAN_LINES)
            if rng.random() < 0.08:
                amount = float(rng.choice((5, 10, 15, 20, 25, 50, 100)))
                at(when, partial(platform.tip, fan_id=fan_id, amount=amount, text=line, at=when))
            else:
                at(when, partial(platform.fan_writes, fan_id=fan_id, text=line, at=when))
        elif rng.random() < 0.2:
            paid = PaidMessage(
                platform=platform,
                fan_id=fan_id,
                price=float(rng.choice((5, 9.99, 14.99, 19.99, 29.99, 49.99))),
                text=rng.choice(PPV_LINES),
                media_ids=[m.id for m in rng.sample(platform.data.vault, k=rng.randint(1, 3))],
            )
            at(when, partial(paid.send, when))
            bought_at = when + rng.uniform(0.01, 1) * DAY
            if rng.random() < 0.4 and bought_at < until:
                at(bought_at, partial(paid.buy, bought_at))
        else:
            text = f"<p>{rng.choice(CREATOR_LINES)}</p>"
            at(
                when,
                partial(
                    platform.creator_sends,
                    fan_id=fan_id,
                    text=text,
                    price=0,
                    media_ids=[],
                    previews=[],
                    locked_text=False,
                    at=when,
                ),
            )
        when += rng.uniform(0.02, 6) * DAY


def _finish(platform: Platform, rng: random.Random) -> None:
    """Custom lists, and most chats read (the newest few left unread)."""
    spent: dict[int, float] = {}
    for txn in platform.data.transactions:
        spent[txn.fan_id] = spent.get(txn.fan_id, 0.0) + txn.amount
    top = sorted(spent, key=lambda fan_id: spent[fan_id], reverse=True)
    lists = [platform.create_list(name) for name in CUSTOM_LISTS]
    for fan_id in top[: max(1, len(top) // 10)]:
        lists[0].user_ids.append(fan_id)
    for fan_id in top[: max(1, len(top) // 20)]:
        lists[1].user_ids.append(fan_id)
    chats = sorted(platform.data.messages, key=lambda fan_id: platform.data.messages[fan_id][-1].id)
    unread = max(1, len(chats) // 12)
    for fan_id in chats[:-unread]:
        platform.mark_read(fan_id)
    for fan_id in chats[-unread:]:
        if rng.random() < 0.5:
            lists[2].user_ids.append(fan_id)


def activity_step(platform: Platform, rng: random.Random) -> None:
    """One thing a fan does now: writes (mostly), tips, buys, subscribes or leaves."""
    fans = [fan for fan in platform.data.fans.values() if fan.active]
    roll = rng.random()
    if not fans or roll < 0.12:
        platform.subscribe(name=fan_name(rng))
        return
    fan = rng.choice(fans)
    if roll < 0.72:
        platform.fan_writes(fan_id=fan.id, text=rng.choice(FAN_LINES))
    elif roll < 0.82:
        platform.tip(fan_id=fan.id, amount=float(rng.choice((5, 10, 20))), text="for you 💸")
    elif roll < 0.96:
        locked = [
            m
            for m in platform.data.messages.get(fan.id, [])
            if m.from_creator and m.price > 0 and not m.purchased
        ]
        if locked:
            try:
                platform.purchase(fan_id=fan.id, message_id=locked[-1].id)
            except errors.PlatformError:
                return
        else:
            platform.fan_writes(fan_id=fan.id, text=rng.choice(FAN_LINES))
    else:
        platform.unsubscribe(fan_id=fan.id)
