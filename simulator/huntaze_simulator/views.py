"""The platform's JSON shapes, built from the state (field names as public clients read them)."""

from __future__ import annotations

from typing import Any

from huntaze_simulator.model import Creator, Fan, FanList, MassMessage, Media, Message, Session
from huntaze_simulator.platform import DAY, Platform, iso

FEE_RATE = 0.2
PAYOUT_PENDING_DAYS = 7
CDN = "https://cdn.simulator.invalid"


def avatar(user_id: int) -> str:
    return f"{CDN}/avatars/{user_id}.jpg"


def user_stub(user_id: int) -> dict[str, Any]:
    """`withUser`/`fromUser` with `skip_users=all`: the id and the view it would need."""
    return {"id": user_id, "_view": "s"}


def fan_user(fan: Fan) -> dict[str, Any]:
    return {
        "id": fan.id,
        "username": fan.username,
        "name": fan.name,
        "avatar": avatar(fan.id),
        "avatarThumbs": {"c50": avatar(fan.id), "c144": avatar(fan.id)},
        "isVerified": False,
        "view": "s",
        "displayName": fan.display_name,
        "notice": fan.notice,
        "lastSeen": iso(fan.last_activity),
        "isRestricted": False,
        "isBlocked": False,
        "canReceiveChatMessage": fan.active,
        "hideChat": False,
    }


def media(item: Media, *, can_view: bool = True) -> dict[str, Any]:
    url = f"{CDN}/files/{item.id}.{'mp4' if item.type == 'video' else 'jpg'}"
    return {
        "id": item.id,
        "type": item.type,
        "canView": can_view,
        "convertedToVideo": False,
        "hasError": False,
        "isReady": True,
        "duration": item.duration,
        "hasCustomPreview": False,
        "createdAt": iso(item.created_at),
        "files": {
            "full": {"url": url, "width": 1080, "height": 1350, "size": 0, "sources": []},
            "thumb": {"url": url, "width": 300, "height": 300, "size": 0},
            "preview": {"url": url, "width": 480, "height": 600, "size": 0},
            "squarePreview": {"url": url, "width": 480, "height": 480, "size": 0},
        },
        "videoSources": {"240": url, "720": url} if item.type == "video" else {},
    }


def purchase_reason(item: Message) -> str:
    if item.price == 0:
        return "free"
    return "purchased_by_fan" if item.purchased else "locked"


def message(platform: Platform, item: Message, *, full_users: bool = False) -> dict[str, Any]:
    """A chat message as the creator's client sees it."""
    creator_id = platform.data.creator.id
    sender_id = creator_id if item.from_creator else item.fan_id
    sender = (
        fan_user(platform.data.fans[sender_id])
        if full_users and not item.from_creator
        else user_stub(sender_id)
    )
    vault = {m.id: m for m in platform.data.vault}
    attached = [media(vault[media_id]) for media_id in item.media_ids if media_id in vault]
    queued = platform.data.mass_messages.get(item.queue_id) if item.queue_id else None
    unsend_seconds = max(0, int(item.created_at + DAY - platform.clock.now()))
    queue_unsend_seconds = platform.unsend_seconds(queued) if queued is not None else 0
    return {
        "id": item.id,
        "responseType": "message",
        "text": item.text,
        "giphyId": None,
        "lockedText": item.locked_text,
        "isFree": item.price == 0,
        "price": item.price,
        "isMediaReady": True,
        "mediaCount": len(attached),
        "media": attached,
        "previews": item.previews,
        "isTip": item.tip_amount > 0,
        "tipAmount": item.tip_amount,
        "isReportedByMe": False,
        "isCouplePeopleMedia": False,
        "queueId": item.queue_id,
        "isFromQueue": item.queue_id is not None,
        "canUnsendQueue": queue_unsend_seconds > 0,
        "unsendSecondsQueue": queue_unsend_seconds,
        "fromUser": sender,
        "isMarkdownDisabled": True,
        "isSentByMe": item.from_creator,
        "isOpened": item.purchased,
        "isNew": False,
        "isLiked": False,
        "isPinned": False,
        "canBePinned": True,
        "canPurchase": False,
        "canPurchaseReason": purchase_reason(item),
        "canReport": not item.from_creator,
        "cancelSeconds": unsend_seconds if item.from_creator else 0,
        "releaseForms": [],
        "createdAt": iso(item.created_at),
        "changedAt": iso(item.created_at),
    }


def chat(platform: Platform, fan: Fan, *, full_users: bool) -> dict[str, Any]:
    messages = platform.data.messages.get(fan.id, [])
    last_read = platform.data.last_read_message_id.get(fan.id, 0)
    unread = [m for m in messages if not m.from_creator and m.id > last_read]
    return {
        "withUser": fan_user(fan) if full_users else user_stub(fan.id),
        "lastMessage": message(platform, messages[-1]) if messages else None,
        "lastReadMessageId": last_read,
        "hasPurchasedFeed": False,
        "countPinnedMessages": 0,
        "canGoToProfile": True,
        "canSendMessage": fan.active,
        "canNotSendReason": False if fan.active else "subscription_expired",
        "unreadMessagesCount": len(unread),
        "hasUnreadTips": any(m.tip_amount > 0 for m in unread),
        "isMutedNotifications": False,
    }


def subscriber(platform: Platform, fan: Fan) -> dict[str, Any]:
    """A fan on `/subscriptions/subscribers`: the user plus `subscribedOnData`."""
    spent: dict[str, float] = {"subscribes": 0.0, "tips": 0.0, "chat_messages": 0.0}
    for txn in platform.data.transactions:
        if txn.fan_id == fan.id:
            spent[txn.type] += txn.amount
    total = round(sum(spent.values()), 2)
    creator_id = platform.data.creator.id
    status = None if fan.active else "expired"
    return {
        **fan_user(fan),
        "subscribedOn": fan.active,
        "subscribedOnDuration": f"{max(1, round((fan.expires_at - fan.subscribed_at) / DAY))} days",
        "subscribedOnExpiredNow": not fan.active,
        "subscribedOnData": {
            "price": fan.subscribe_price,
            "subscribePrice": fan.subscribe_price,
            "regularPrice": platform.data.creator.subscribe_price,
            "newPrice": platform.data.creator.subscribe_price,
            "discountPercent": 0,
            "discountPeriod": 0,
            "discountStartedAt": None,
            "discountFinishedAt": None,
            "status": status,
            "duration": "1 month",
            "expiredAt": iso(fan.expires_at),
            "renewedAt": iso(fan.subscribed_at) if fan.active else None,
            "subscribeAt": iso(fan.subscribed_at),
            "lastActivity": iso(fan.last_activity),
            "unsubscribeReason": None if fan.active else "unsubscribed",
            "isMuted": False,
            "hasActivePaidSubscriptions": fan.active and fan.subscribe_price > 0,
            "totalSumm": total,
            "subscribesSumm": round(spent["subscribes"], 2),
            "tipsSumm": round(spent["tips"], 2),
            "messagesSumm": round(spent["chat_messages"], 2),
            "postsSumm": 0,
            "streamsSumm": 0,
            "recommendations": 0,
            "subscribes": [
                {
                    "id": period.id,
                    "action": period.action,
                    "type": "regular",
                    "date": iso(period.date),
                    "startDate": iso(period.date),
                    "expireDate": iso(period.date + 30 * DAY),
                    "cancelDate": iso(period.date) if period.action == "unsubscribe" else None,
                    "price": period.price,
                    "regularPrice": platform.data.creator.subscribe_price,
                    "discount": 0,
                    "duration": 30,
                    "earningId": None,
                    "isCurrent": fan.active and period is fan.history[-1],
                    "offerStart": None,
                    "offerEnd": None,
                    "subscriberId": fan.id,
                    "userId": creator_id,
                }
                for period in reversed(fan.history)
            ],
        },
        "listsStates": [
            {
                "id": fan_list.id,
                "name": fan_list.name,
                "type": fan_list.type,
                "hasUser": fan.id in fan_list.user_ids,
                "canAddUser": fan_list.custom,
                "cannotAddUserReason": None if fan_list.custom else "system_list",
            }
            for fan_list in platform.data.lists.values()
        ],
        "promoOffers": [],
    }


TRANSACTION_DESCRIPTIONS = {
    "subscribes": 'Subscription from <a href="https://onlyfans.com/{username}">{name}</a>',
    "tips": 'Tip from <a href="https://onlyfans.com/{username}">{name}</a>',
    "chat_messages": 'Payment for message from <a href="https://onlyfans.com/{username}">{name}</a>',
}


def transaction(platform: Platform, txn_index: int) -> dict[str, Any]:
    txn = platform.data.transactions[txn_index]
    fan = platform.data.fans[txn.fan_id]
    fee = round(txn.amount * FEE_RATE, 2)
    age_days = (platform.clock.now() - txn.created_at) / DAY
    pending_days = max(0, PAYOUT_PENDING_DAYS - int(age_days))
    return {
        "id": str(txn.id),
        "type": txn.type,
        "amount": txn.amount,
        "fee": fee,
        "net": round(txn.amount - fee, 2),
        "vatAmount": 0,
        "taxAmount": 0,
        "currency": "USD",
        "description": TRANSACTION_DESCRIPTIONS[txn.type].format(
            username=fan.username, name=fan.name
        ),
        "status": "pending" if pending_days else "done",
        "payoutPendingDays": pending_days,
        "createdAt": iso(txn.created_at),
        "user": {
            "id": fan.id,
            "name": fan.name,
            "username": fan.username,
            "avatar": avatar(fan.id),
            "avatarThumbs": {"c50": avatar(fan.id), "c144": avatar(fan.id)},
            "isVerified": False,
            "view": "s",
        },
    }


def fan_list(item: FanList) -> dict[str, Any]:
    return {
        "id": item.id,
        "type": item.type,
        "name": item.name,
        "usersCount": len(item.user_ids),
        "postsCount": 0,
        "users": [user_stub(user_id) for user_id in item.user_ids[:3]],
        "canUpdate": item.custom,
        "canDelete": item.custom,
        "canAddUsers": item.custom,
        "canManageUsers": item.custom,
        "canPinnedToChat": True,
        "isPinnedToChat": False,
        "canPinnedToFeed": item.custom,
        "isPinnedToFeed": False,
        "sortList": [],
        "order": "name",
        "direction": "asc",
    }


def queue_entry(platform: Platform, item: MassMessage) -> dict[str, Any]:
    """The answer to `POST /messages/queue` (and `GET /messages/queue/{id}`)."""
    pending = 0 if item.canceled else len(item.recipients) - item.delivered
    unsend_seconds = platform.unsend_seconds(item)
    return {
        "id": item.id,
        "date": iso(item.send_at),
        "isReady": True,
        "isDone": pending == 0,
        "total": len(item.recipients),
        "pending": pending,
        "canUnsend": unsend_seconds > 0,
        "unsendSeconds": unsend_seconds,
        "hasError": False,
        "isCanceled": item.canceled,
        "isCouplePeopleMedia": False,
    }


def queue_stats(platform: Platform, item: MassMessage) -> dict[str, Any]:
    copies = [
        m
        for fan_id in item.recipients
        for m in platform.data.messages.get(fan_id, [])
        if m.queue_id == item.id
    ]
    vault = {m.id: m for m in platform.data.vault}
    return {
        "id": item.id,
        "giphyId": None,
        "text": item.text,
        "isFree": item.price == 0,
        "price": item.price,
        "sentCount": len(copies),
        "viewedCount": sum(1 for m in copies if m.purchased),
        "purchasedCount": sum(1 for m in copies if m.purchased),
        "canUnsend": platform.unsend_seconds(item) > 0,
        "unsendSeconds": platform.unsend_seconds(item),
        "isCanceled": item.canceled,
        "mediaTypes": sorted({vault[i].type for i in item.media_ids if i in vault}),
        "releaseForms": [],
        "date": iso(item.send_at),
    }


def me(platform: Platform, session: Session, *, ws_url: str) -> dict[str, Any]:
    creator: Creator = platform.data.creator
    fans = platform.data.fans.values()
    unread_chats = 0
    unread_tips = 0
    for fan_id, messages in platform.data.messages.items():
        last_read = platform.data.last_read_message_id.get(fan_id, 0)
        unread = [m for m in messages if not m.from_creator and m.id > last_read]
        unread_chats += bool(unread)
        unread_tips += sum(1 for m in unread if m.tip_amount > 0)
    photos = sum(1 for m in platform.data.vault if m.type == "photo")
    return {
        "id": creator.id,
        "username": creator.username,
        "name": creator.name,
        "email": creator.email,
        "isAuth": True,
        "isPerformer": True,
        "isRealPerformer": True,
        "canEarn": True,
        "avatar": avatar(creator.id),
        "avatarThumbs": {"c50": avatar(creator.id), "c144": avatar(creator.id)},
        "header": f"{CDN}/headers/{creator.id}.jpg",
        "about": creator.about,
        "subscribePrice": creator.subscribe_price,
        "subscribersCount": sum(1 for fan in fans if fan.active),
        "postsCount": 0,
        "mediasCount": len(platform.data.vault),
        "photosCount": photos,
        "videosCount": len(platform.data.vault) - photos,
        "chatMessagesCount": unread_chats,
        "countPriorityChat": 0,
        "countPinnedChat": 0,
        "notificationsCount": 0,
        "unreadTips": unread_tips,
        "canSendChatToAll": True,
        "canChat": True,
        "messageMinPrice": 3,
        "messageMaxPrice": 200,
        "postMinPrice": 3,
        "postMaxPrice": 200,
        "tipsEnabled": True,
        "tipsMin": 1,
        "tipsMax": 200,
        "creditBalance": 0,
        "isOtpEnabled": platform.config.otp_required,
        "isEmailChecked": True,
        "isVerified": True,
        "ivStatus": "approved",
        "needIVApprove": False,
        "faceIdRegular": False,
        "csrf": session.csrf,
        "ip": "127.0.0.1",
        "lastSeen": iso(platform.clock.now()),
        "joinDate": iso(creator.joined_at),
        "wsUrl": ws_url,
        "wsAuthToken": session.ws_token,
        "replyOnSubscribe": False,
        "watermarkText": creator.username,
    }


def anonymous() -> dict[str, Any]:
    """`/users/me` without a session: a user object that is not signed in."""
    return {"id": 0, "isAuth": False, "name": "", "username": ""}
