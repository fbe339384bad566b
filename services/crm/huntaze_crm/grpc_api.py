# ruff: noqa: N802  (method names are the proto's)
"""The CrmService gRPC servicer: thin, it maps messages to use cases and back.

Every method acts for `current_principal().creator_id`: the creator of the verified access token,
or the creator a service token was issued for. No request field can name another creator.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from huntaze.common.v1 import common_pb2
from huntaze.crm.v1 import crm_pb2, crm_pb2_grpc
from huntaze_crm import convert, models
from huntaze_crm.audiences import DEFAULT_LIMIT as DEFAULT_AUDIENCE_PAGE
from huntaze_crm.inbox import InboxHub, to_batch
from huntaze_crm.pagination import page_request
from huntaze_crm.reads import conversation_messages
from huntaze_crm.repository import ConversationRow
from huntaze_crm.segments import Segment
from huntaze_crm.service import CrmService, FanPatch, Sender
from huntaze_kit.errors import InvalidArgument, PermissionDenied, Unauthenticated
from huntaze_kit.grpc_server import AccessPolicy, Context
from huntaze_kit.identity import current_principal

SERVICE_NAME: str = crm_pb2.DESCRIPTOR.services_by_name["CrmService"].full_name


def _methods(*names: str) -> frozenset[str]:
    return frozenset(f"/{SERVICE_NAME}/{name}" for name in names)


_READ_METHODS = (
    "ListFans",
    "GetFan",
    "BatchGetFans",
    "ListFanPurchases",
    "ListConversations",
    "GetConversation",
    "ListMessages",
    "BatchListRecentMessages",
    "GetMessage",
    "SearchMessages",
    "ListQuickReplies",
    "GetQuickReply",
    "ListFanLists",
    "GetFanList",
    "ListFanListMembers",
    "PreviewSegment",
    "GetAutomationBudget",
    "GetFanAutomationUsage",
)
# What a service acting for a creator (service token) may call.
SERVICE_METHODS: dict[str, frozenset[str]] = {
    "ai": _methods(*_READ_METHODS, "SendMessage"),
    "campaigns": _methods(
        *_READ_METHODS, "SendMessage", "UpdateFanTags", "ResolveAudience", "RecordMassMessage"
    ),
    "analytics": _methods(*_READ_METHODS),
}


# What a user may do only once their email address is verified: whatever messages fans or
# changes fan data, lists included (they are campaign audiences). Reading, marking read,
# pinning or archiving a conversation and writing quick replies stay open to a new creator.
VERIFIED_EMAIL_METHODS = _methods(
    "CreateFan",
    "UpdateFan",
    "DeleteFan",
    "UpdateFanTags",
    "SendMessage",
    "CreateFanList",
    "UpdateFanList",
    "DeleteFanList",
    "AddFanListMembers",
    "RemoveFanListMembers",
)


def access_policy() -> AccessPolicy:
    """No public method: every call needs a user or service token."""
    return AccessPolicy(
        public_methods=frozenset(),
        service_methods=SERVICE_METHODS,
        verified_email_methods=VERIFIED_EMAIL_METHODS,
    )


def _creator() -> uuid.UUID:
    try:
        return uuid.UUID(current_principal().creator_id)
    except ValueError as exc:
        raise Unauthenticated(message="Invalid token.", reason="INVALID_TOKEN") from exc


def _sender(requested: int) -> Sender:
    """A user writes as the creator; a service as AI or automation (its choice)."""
    principal = current_principal()
    if principal.kind == "user":
        if requested not in (crm_pb2.SENDER_KIND_UNSPECIFIED, crm_pb2.SENDER_KIND_CREATOR):
            raise InvalidArgument.for_field("sender_kind", "only services may set it")
        return Sender(kind="creator", id=principal.subject)
    kinds: dict[int, str] = {
        crm_pb2.SENDER_KIND_UNSPECIFIED: "automation",
        crm_pb2.SENDER_KIND_AUTOMATION: "automation",
        crm_pb2.SENDER_KIND_AI: "ai",
    }
    kind = kinds.get(requested)
    if kind is None:
        raise InvalidArgument.for_field("sender_kind", "a service writes as AI or AUTOMATION")
    return Sender(kind=kind, id=principal.service_name or principal.subject)


def _next(token: str) -> common_pb2.PageResponse:
    return common_pb2.PageResponse(next_page_token=token)


def _conversation(row: ConversationRow) -> crm_pb2.Conversation:
    return convert.conversation(*row)


def _fan_list(row: models.FanList, member_count: int) -> crm_pb2.FanList:
    return crm_pb2.FanList(
        id=str(row.id),
        name=row.name,
        kind=convert.FAN_LIST_KIND.proto(row.kind),  # type: ignore[arg-type]
        segment=Segment.from_json(row.segment).to_proto() if row.segment is not None else None,
        member_count=member_count,
        created_at=convert.timestamp(row.created_at),
        updated_at=convert.timestamp(row.updated_at),
    )


class CrmServicer(crm_pb2_grpc.CrmServiceServicer):
    def __init__(self, service: CrmService, inbox: InboxHub) -> None:
        self._service = service
        self._inbox = inbox

    # --- fans ------------------------------------------------------------------------------------

    async def ListFans(
        self, request: crm_pb2.ListFansRequest, context: Context
    ) -> crm_pb2.ListFansResponse:
        rows, token = await self._service.list_fans(
            creator_id=_creator(),
            segment=request.filter if request.HasField("filter") else None,
            query=request.query,
            sort=request.sort,
            page=page_request(request.page),
        )
        return crm_pb2.ListFansResponse(fans=[convert.fan(r) for r in rows], page=_next(token))

    async def GetFan(self, request: crm_pb2.GetFanRequest, context: Context) -> crm_pb2.Fan:
        return convert.fan(
            await self._service.get_fan(creator_id=_creator(), fan_id=request.fan_id)
        )

    async def BatchGetFans(
        self, request: crm_pb2.BatchGetFansRequest, context: Context
    ) -> crm_pb2.BatchGetFansResponse:
        fans = await self._service.get_fans(creator_id=_creator(), fan_ids=request.fan_ids)
        return crm_pb2.BatchGetFansResponse(fans=[convert.fan(fan) for fan in fans])

    async def CreateFan(self, request: crm_pb2.CreateFanRequest, context: Context) -> crm_pb2.Fan:
        fan = await self._service.create_fan(
            creator_id=_creator(),
            platform=request.platform,
            platform_fan_id=request.platform_fan_id,
            display_name=request.display_name,
            handle=request.handle,
            avatar_url=request.avatar_url,
            email=request.email,
            tags=list(request.tags),
            notes=request.notes,
            custom_fields=(
                convert.struct_dict(request.custom_fields)
                if request.HasField("custom_fields")
                else None
            ),
        )
        return convert.fan(fan)

    async def UpdateFan(self, request: crm_pb2.UpdateFanRequest, context: Context) -> crm_pb2.Fan:
        patch = FanPatch(
            display_name=request.display_name if request.HasField("display_name") else None,
            handle=request.handle if request.HasField("handle") else None,
            avatar_url=request.avatar_url if request.HasField("avatar_url") else None,
            email=request.email if request.HasField("email") else None,
            notes=request.notes if request.HasField("notes") else None,
            tags=list(request.tags.tags) if request.HasField("tags") else None,
            custom_fields=(
                convert.struct_dict(request.custom_fields)
                if request.HasField("custom_fields")
                else None
            ),
        )
        fan = await self._service.update_fan(
            creator_id=_creator(), fan_id=request.fan_id, patch=patch
        )
        return convert.fan(fan)

    async def DeleteFan(
        self, request: crm_pb2.DeleteFanRequest, context: Context
    ) -> crm_pb2.DeleteFanResponse:
        await self._service.delete_fan(creator_id=_creator(), fan_id=request.fan_id)
        return crm_pb2.DeleteFanResponse()

    async def ListFanPurchases(
        self, request: crm_pb2.ListFanPurchasesRequest, context: Context
    ) -> crm_pb2.ListFanPurchasesResponse:
        rows, token = await self._service.list_fan_purchases(
            creator_id=_creator(), fan_id=request.fan_id, page=page_request(request.page)
        )
        return crm_pb2.ListFanPurchasesResponse(
            purchases=[convert.purchase(r) for r in rows], page=_next(token)
        )

    async def UpdateFanTags(
        self, request: crm_pb2.UpdateFanTagsRequest, context: Context
    ) -> crm_pb2.UpdateFanTagsResponse:
        count = await self._service.update_fan_tags(
            creator_id=_creator(),
            fan_ids=list(request.fan_ids),
            add_tags=list(request.add_tags),
            remove_tags=list(request.remove_tags),
        )
        return crm_pb2.UpdateFanTagsResponse(updated_count=count)

    # --- conversations ---------------------------------------------------------------------------

    async def ListConversations(
        self, request: crm_pb2.ListConversationsRequest, context: Context
    ) -> crm_pb2.ListConversationsResponse:
        rows, token = await self._service.list_conversations(
            creator_id=_creator(),
            unread_only=request.unread_only,
            pinned=request.pinned if request.HasField("pinned") else None,
            platform=request.platform,
            query=request.query,
            archive_filter=request.archive_filter,
            sort=request.sort,
            page=page_request(request.page),
        )
        return crm_pb2.ListConversationsResponse(
            conversations=conversation_messages(rows), page=_next(token)
        )

    async def GetConversation(
        self, request: crm_pb2.GetConversationRequest, context: Context
    ) -> crm_pb2.Conversation:
        row = await self._service.get_conversation(
            creator_id=_creator(), conversation_id=request.conversation_id
        )
        return _conversation(row)

    async def UpdateConversation(
        self, request: crm_pb2.UpdateConversationRequest, context: Context
    ) -> crm_pb2.Conversation:
        row = await self._service.update_conversation(
            creator_id=_creator(),
            conversation_id=request.conversation_id,
            pinned=request.pinned if request.HasField("pinned") else None,
            archived=request.archived if request.HasField("archived") else None,
            assigned_member_id=(
                request.assigned_member_id if request.HasField("assigned_member_id") else None
            ),
        )
        return _conversation(row)

    async def MarkConversationRead(
        self, request: crm_pb2.MarkConversationReadRequest, context: Context
    ) -> crm_pb2.Conversation:
        row = await self._service.mark_conversation_read(
            creator_id=_creator(), conversation_id=request.conversation_id
        )
        return _conversation(row)

    # --- messages --------------------------------------------------------------------------------

    async def ListMessages(
        self, request: crm_pb2.ListMessagesRequest, context: Context
    ) -> crm_pb2.ListMessagesResponse:
        rows, token = await self._service.list_messages(
            creator_id=_creator(),
            conversation_id=request.conversation_id,
            page=page_request(request.page),
        )
        return crm_pb2.ListMessagesResponse(
            messages=[convert.message(r) for r in rows], page=_next(token)
        )

    async def BatchListRecentMessages(
        self, request: crm_pb2.BatchListRecentMessagesRequest, context: Context
    ) -> crm_pb2.BatchListRecentMessagesResponse:
        recent = await self._service.recent_messages(
            creator_id=_creator(), conversation_ids=request.conversation_ids, limit=request.limit
        )
        return crm_pb2.BatchListRecentMessagesResponse(
            conversations=[
                crm_pb2.RecentMessages(
                    conversation_id=str(conversation_id),
                    messages=[convert.message(row) for row in rows],
                )
                for conversation_id, rows in recent.items()
            ]
        )

    async def GetMessage(
        self, request: crm_pb2.GetMessageRequest, context: Context
    ) -> crm_pb2.Message:
        row = await self._service.get_message(creator_id=_creator(), message_id=request.message_id)
        return convert.message(row)

    async def SearchMessages(
        self, request: crm_pb2.SearchMessagesRequest, context: Context
    ) -> crm_pb2.SearchMessagesResponse:
        rows, token = await self._service.search_messages(
            creator_id=_creator(),
            query=request.query,
            conversation_id=request.conversation_id,
            page=page_request(request.page),
        )
        return crm_pb2.SearchMessagesResponse(
            messages=[convert.message(r) for r in rows], page=_next(token)
        )

    async def MarkMessageRead(
        self, request: crm_pb2.MarkMessageReadRequest, context: Context
    ) -> crm_pb2.Message:
        row = await self._service.mark_message_read(
            creator_id=_creator(), message_id=request.message_id
        )
        return convert.message(row)

    async def SendMessage(
        self, request: crm_pb2.SendMessageRequest, context: Context
    ) -> crm_pb2.SendMessageResponse:
        message, created = await self._service.send_message(
            creator_id=_creator(),
            sender=_sender(request.sender_kind),
            conversation_id=request.conversation_id,
            fan_id=request.fan_id,
            text=request.text,
            price_cents=request.price_cents,
            attachments=list(request.attachments),
            idempotency_key=request.idempotency_key,
        )
        return crm_pb2.SendMessageResponse(message=convert.message(message), created=created)

    async def RecordMassMessage(
        self, request: crm_pb2.RecordMassMessageRequest, context: Context
    ) -> crm_pb2.RecordMassMessageResponse:
        if current_principal().kind != "service":
            raise PermissionDenied(
                message="Only a service records mass messages.", reason="SERVICES_ONLY"
            )
        recipients = await self._service.record_mass_message(
            creator_id=_creator(),
            sender=_sender(crm_pb2.SENDER_KIND_AUTOMATION),
            fan_ids=list(request.fan_ids),
            text=request.text,
            price_cents=request.price_cents,
            attachments=list(request.attachments),
            idempotency_key=request.idempotency_key,
        )
        return crm_pb2.RecordMassMessageResponse(
            recipients=[
                crm_pb2.MassMessageRecipient(
                    fan_id=str(recipient.fan_id),
                    message_id=str(recipient.message.id) if recipient.message else "",
                    refused_reason=recipient.refused_reason,
                    platform_fan_id=recipient.platform_fan_id,
                )
                for recipient in recipients
            ]
        )

    async def GetAutomationBudget(
        self, request: crm_pb2.GetAutomationBudgetRequest, context: Context
    ) -> crm_pb2.AutomationBudget:
        budget = await self._service.automation_budget(creator_id=_creator())
        return crm_pb2.AutomationBudget(messages_per_fan_per_day=budget)

    async def UpdateAutomationBudget(
        self, request: crm_pb2.UpdateAutomationBudgetRequest, context: Context
    ) -> crm_pb2.AutomationBudget:
        budget = await self._service.update_automation_budget(
            creator_id=_creator(),
            messages_per_fan_per_day=request.budget.messages_per_fan_per_day,
        )
        return crm_pb2.AutomationBudget(messages_per_fan_per_day=budget)

    async def GetFanAutomationUsage(
        self, request: crm_pb2.GetFanAutomationUsageRequest, context: Context
    ) -> crm_pb2.FanAutomationUsage:
        usage = await self._service.fan_automation_usage(
            creator_id=_creator(), fan_id=request.fan_id
        )
        return crm_pb2.FanAutomationUsage(
            fan_id=request.fan_id,
            messages_per_fan_per_day=usage.limit,
            sent_last_day=usage.sent,
            remaining=usage.remaining,
            next_available_at=convert.timestamp(usage.next_available_at),
        )

    async def ResolveAudience(
        self, request: crm_pb2.ResolveAudienceRequest, context: Context
    ) -> crm_pb2.ResolveAudienceResponse:
        states = [
            name
            for name in (convert.SUBSCRIPTION_STATE.db(s) for s in request.subscription_states)
            if name is not None
        ]
        fans = await self._service.resolve_audience(
            creator_id=_creator(),
            list_id=request.list_id,
            subscription_states=states,
            silent_for_days=request.silent_for_days,
            start_after=request.start_after,
            limit=request.limit,
            recent_sends_within_hours=request.recent_sends_within_hours,
        )
        limit = request.limit or DEFAULT_AUDIENCE_PAGE
        return crm_pb2.ResolveAudienceResponse(
            fans=[convert.audience_fan(fan) for fan in fans],
            next_start_after=str(fans[-1].fan_id) if len(fans) == limit else "",
        )

    # --- quick replies ---------------------------------------------------------------------------

    async def ListQuickReplies(
        self, request: crm_pb2.ListQuickRepliesRequest, context: Context
    ) -> crm_pb2.ListQuickRepliesResponse:
        rows, token = await self._service.list_quick_replies(
            creator_id=_creator(),
            shortcut_prefix=request.shortcut_prefix,
            page=page_request(request.page),
        )
        return crm_pb2.ListQuickRepliesResponse(
            quick_replies=[convert.quick_reply(r) for r in rows], page=_next(token)
        )

    async def GetQuickReply(
        self, request: crm_pb2.GetQuickReplyRequest, context: Context
    ) -> crm_pb2.QuickReply:
        row = await self._service.get_quick_reply(
            creator_id=_creator(), quick_reply_id=request.quick_reply_id
        )
        return convert.quick_reply(row)

    async def CreateQuickReply(
        self, request: crm_pb2.CreateQuickReplyRequest, context: Context
    ) -> crm_pb2.QuickReply:
        row = await self._service.create_quick_reply(
            creator_id=_creator(), shortcut=request.shortcut, text=request.text
        )
        return convert.quick_reply(row)

    async def UpdateQuickReply(
        self, request: crm_pb2.UpdateQuickReplyRequest, context: Context
    ) -> crm_pb2.QuickReply:
        row = await self._service.update_quick_reply(
            creator_id=_creator(),
            quick_reply_id=request.quick_reply_id,
            shortcut=request.shortcut if request.HasField("shortcut") else None,
            text=request.text if request.HasField("text") else None,
        )
        return convert.quick_reply(row)

    async def DeleteQuickReply(
        self, request: crm_pb2.DeleteQuickReplyRequest, context: Context
    ) -> crm_pb2.DeleteQuickReplyResponse:
        await self._service.delete_quick_reply(
            creator_id=_creator(), quick_reply_id=request.quick_reply_id
        )
        return crm_pb2.DeleteQuickReplyResponse()

    # --- fan lists -------------------------------------------------------------------------------

    async def ListFanLists(
        self, request: crm_pb2.ListFanListsRequest, context: Context
    ) -> crm_pb2.ListFanListsResponse:
        rows, token = await self._service.list_fan_lists(
            creator_id=_creator(), kind=request.kind, page=page_request(request.page)
        )
        return crm_pb2.ListFanListsResponse(
            lists=[_fan_list(row, count) for row, count in rows], page=_next(token)
        )

    async def GetFanList(
        self, request: crm_pb2.GetFanListRequest, context: Context
    ) -> crm_pb2.FanList:
        row, count = await self._service.get_fan_list(
            creator_id=_creator(), list_id=request.list_id
        )
        return _fan_list(row, count)

    async def CreateFanList(
        self, request: crm_pb2.CreateFanListRequest, context: Context
    ) -> crm_pb2.FanList:
        row, count = await self._service.create_fan_list(
            creator_id=_creator(),
            name=request.name,
            kind=request.kind,
            segment=request.segment if request.HasField("segment") else None,
        )
        return _fan_list(row, count)

    async def UpdateFanList(
        self, request: crm_pb2.UpdateFanListRequest, context: Context
    ) -> crm_pb2.FanList:
        row, count = await self._service.update_fan_list(
            creator_id=_creator(),
            list_id=request.list_id,
            name=request.name if request.HasField("name") else None,
            segment=request.segment if request.HasField("segment") else None,
        )
        return _fan_list(row, count)

    async def DeleteFanList(
        self, request: crm_pb2.DeleteFanListRequest, context: Context
    ) -> crm_pb2.DeleteFanListResponse:
        await self._service.delete_fan_list(creator_id=_creator(), list_id=request.list_id)
        return crm_pb2.DeleteFanListResponse()

    async def ListFanListMembers(
        self, request: crm_pb2.ListFanListMembersRequest, context: Context
    ) -> crm_pb2.ListFanListMembersResponse:
        rows, token = await self._service.list_fan_list_members(
            creator_id=_creator(), list_id=request.list_id, page=page_request(request.page)
        )
        return crm_pb2.ListFanListMembersResponse(
            fans=[convert.fan(r) for r in rows], page=_next(token)
        )

    async def AddFanListMembers(
        self, request: crm_pb2.AddFanListMembersRequest, context: Context
    ) -> crm_pb2.AddFanListMembersResponse:
        count = await self._service.change_fan_list_members(
            creator_id=_creator(), list_id=request.list_id, fan_ids=list(request.fan_ids), add=True
        )
        return crm_pb2.AddFanListMembersResponse(added_count=count)

    async def RemoveFanListMembers(
        self, request: crm_pb2.RemoveFanListMembersRequest, context: Context
    ) -> crm_pb2.RemoveFanListMembersResponse:
        count = await self._service.change_fan_list_members(
            creator_id=_creator(),
            list_id=request.list_id,
            fan_ids=list(request.fan_ids),
            add=False,
        )
        return crm_pb2.RemoveFanListMembersResponse(removed_count=count)

    async def PreviewSegment(
        self, request: crm_pb2.PreviewSegmentRequest, context: Context
    ) -> crm_pb2.PreviewSegmentResponse:
        count = await self._service.preview_segment(creator_id=_creator(), segment=request.segment)
        return crm_pb2.PreviewSegmentResponse(fan_count=count)

    # --- real time -------------------------------------------------------------------------------

    async def WatchInbox(
        self, request: crm_pb2.WatchInboxRequest, context: Context
    ) -> AsyncIterator[crm_pb2.InboxEvent]:
        async for event in self._inbox.watch(
            _creator(), request.after_event_id, resume=request.resume
        ):
            yield event

    async def WatchInboxBatches(
        self, request: crm_pb2.WatchInboxRequest, context: Context
    ) -> AsyncIterator[crm_pb2.InboxEventBatch]:
        async for rows in self._inbox.watch_batches(
            _creator(), request.after_event_id, resume=request.resume
        ):
            yield to_batch(rows)
