"""What the agent asks of the CRM over gRPC: the fans of a batch of drafts (one call per
creator), the recent conversations for a batch of an LLM's drafts (one call per creator), that
a conversation is the caller's, and sending a reply. Calls made for an event carry a service
token for the event's creator; calls made for the creator carry their own access token, and the
CRM's refusals reach them as the agent's own (same status, reason and details)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import grpc

from huntaze.common.v1 import common_pb2
from huntaze.crm.v1 import crm_pb2, crm_pb2_grpc
from huntaze_ai_agent.prompts import FanProfile, Turn
from huntaze_kit.errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from huntaze_kit.grpc_client import ServiceTokenProvider
from huntaze_kit.rich_status import from_rpc_error

HISTORY_MESSAGES = 10
# The CRM answers at most this many fans per BatchGetFans, conversations per
# BatchListRecentMessages.
FANS_PER_CALL = 200
CONVERSATIONS_PER_CALL = 200

_SUBSCRIPTIONS = {
    crm_pb2.SUBSCRIPTION_STATE_NONE: "none",
    crm_pb2.SUBSCRIPTION_STATE_ACTIVE: "active",
    crm_pb2.SUBSCRIPTION_STATE_CANCELLED: "cancelled",
    crm_pb2.SUBSCRIPTION_STATE_EXPIRED: "expired",
}

Metadata = tuple[tuple[str, str], ...]


_ERRORS: dict[grpc.StatusCode, type[DomainError]] = {
    kind.status_code: kind
    for kind in (
        AlreadyExists,
        Conflict,
        FailedPrecondition,
        InvalidArgument,
        NotFound,
        PermissionDenied,
        RateLimited,
        Unauthenticated,
    )
}


def relayed(error: grpc.aio.AioRpcError) -> DomainError:
    """The CRM's error as the agent's: an outage or a failure of the CRM is UNAVAILABLE."""
    details = from_rpc_error(error)
    kind = _ERRORS.get(details.code, Unavailable)
    return kind(
        message=details.message if kind is not Unavailable else "The CRM is not available.",
        reason=details.reason or ("CRM_UNAVAILABLE" if kind is Unavailable else "ERROR"),
        violations=details.violations,
        retry_after_seconds=details.retry_after_seconds,
        metadata=details.metadata,
    )


def fan_profile(fan: crm_pb2.Fan) -> FanProfile:
    """What drafting uses of a CRM fan."""
    return FanProfile(
        fan_id=fan.id,
        display_name=fan.display_name,
        spend_cents=fan.value_cents,
        tags=tuple(fan.tags),
        notes=fan.notes,
        subscription_state=_SUBSCRIPTIONS.get(fan.subscription_state, "none"),
    )


def _history(newest_first: Sequence[crm_pb2.Message], message_id: uuid.UUID) -> tuple[Turn, ...]:
    """The conversation before `message_id`, oldest first, from its last messages."""
    earlier = [m for m in newest_first if m.id != str(message_id) and m.text]
    return tuple(_turn(m) for m in reversed(earlier[:HISTORY_MESSAGES]))


def _turn(message: crm_pb2.Message) -> Turn:
    inbound = message.direction == crm_pb2.MESSAGE_DIRECTION_IN
    return Turn("fan" if inbound else "creator", message.text)


class CrmClient:
    def __init__(self, channel: grpc.aio.Channel, *, tokens: ServiceTokenProvider) -> None:
        self._stub = crm_pb2_grpc.CrmServiceStub(channel)
        self._tokens = tokens

    async def service_metadata(self, creator_id: uuid.UUID) -> Metadata:
        return await self._tokens.metadata_for(str(creator_id))

    async def fans(
        self, *, creator_id: uuid.UUID, fan_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, FanProfile]:
        """The creator's fans among `fan_ids`, in as few calls as the CRM allows (a fan that
        is gone is left out)."""
        metadata = await self.service_metadata(creator_id)
        wanted = sorted({str(fan_id) for fan_id in fan_ids})
        found: list[crm_pb2.Fan] = []
        for start in range(0, len(wanted), FANS_PER_CALL):
            chunk = wanted[start : start + FANS_PER_CALL]
            try:
                answer = await self._stub.BatchGetFans(
                    crm_pb2.BatchGetFansRequest(fan_ids=chunk), metadata=metadata
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                # A fan of the chunk is gone (all or nothing): the others one by one.
                found += await self._each_fan(chunk, metadata)
                continue
            found += answer.fans
        return {uuid.UUID(fan.id): fan_profile(fan) for fan in found}

    async def _each_fan(self, fan_ids: Sequence[str], metadata: Metadata) -> list[crm_pb2.Fan]:
        found = []
        for fan_id in fan_ids:
            try:
                found.append(
                    await self._stub.GetFan(crm_pb2.GetFanRequest(fan_id=fan_id), metadata=metadata)
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        return found

    async def histories(
        self, *, creator_id: uuid.UUID, messages: Sequence[tuple[uuid.UUID, uuid.UUID]]
    ) -> dict[uuid.UUID, tuple[Turn, ...]]:
        """For each (conversation, message) of the creator, the messages before it, oldest
        first, by message id: in as few calls as the CRM allows. A conversation gone meanwhile
        makes the CRM refuse the lot: the others are then read one by one (a gone one has no
        history)."""
        metadata = await self.service_metadata(creator_id)
        conversations = sorted({str(conversation_id) for conversation_id, _ in messages})
        recent: dict[str, Sequence[crm_pb2.Message]] = {}
        for start in range(0, len(conversations), CONVERSATIONS_PER_CALL):
            chunk = conversations[start : start + CONVERSATIONS_PER_CALL]
            try:
                answer = await self._stub.BatchListRecentMessages(
                    crm_pb2.BatchListRecentMessagesRequest(
                        conversation_ids=chunk, limit=HISTORY_MESSAGES + 1
                    ),
                    metadata=metadata,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                recent |= await self._each_conversation(chunk, metadata)
                continue
            recent |= {found.conversation_id: found.messages for found in answer.conversations}
        return {
            message_id: _history(recent.get(str(conversation_id), ()), message_id)
            for conversation_id, message_id in messages
        }

    async def _each_conversation(
        self, conversation_ids: Sequence[str], metadata: Metadata
    ) -> dict[str, Sequence[crm_pb2.Message]]:
        found: dict[str, Sequence[crm_pb2.Message]] = {}
        for conversation_id in conversation_ids:
            try:
                page = await self._stub.ListMessages(
                    crm_pb2.ListMessagesRequest(
                        conversation_id=conversation_id,
                        page=common_pb2.PageRequest(page_size=HISTORY_MESSAGES + 1),
                    ),
                    metadata=metadata,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            found[conversation_id] = page.messages
        return found

    async def send(
        self,
        *,
        metadata: Metadata,
        conversation_id: uuid.UUID,
        text: str,
        idempotency_key: str,
        automated: bool,
    ) -> crm_pb2.Message:
        """Queues the reply; the same key always answers the same message."""
        try:
            response = await self._stub.SendMessage(
                crm_pb2.SendMessageRequest(
                    conversation_id=str(conversation_id),
                    text=text,
                    idempotency_key=idempotency_key,
                    sender_kind=(
                        crm_pb2.SENDER_KIND_AI if automated else crm_pb2.SENDER_KIND_UNSPECIFIED
                    ),
                ),
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as error:
            raise relayed(error) from error
        return response.message

    async def check_conversation(self, *, metadata: Metadata, conversation_id: str) -> None:
        """NOT_FOUND (as the CRM says it) unless the conversation is the caller's."""
        try:
            await self._stub.GetConversation(
                crm_pb2.GetConversationRequest(conversation_id=conversation_id), metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            raise relayed(error) from error
