"""What the agent asks of the CRM over gRPC: the fan and the recent conversation for a draft,
and sending a reply. Calls made for an event carry a service token for the event's creator;
a reply the creator approved carries the creator's own access token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc

from huntaze.common.v1 import common_pb2
from huntaze.crm.v1 import crm_pb2, crm_pb2_grpc
from huntaze_ai_agent.prompts import FanProfile, Turn
from huntaze_kit.grpc_client import ServiceTokenProvider

HISTORY_MESSAGES = 10

_SUBSCRIPTIONS = {
    crm_pb2.SUBSCRIPTION_STATE_NONE: "none",
    crm_pb2.SUBSCRIPTION_STATE_ACTIVE: "active",
    crm_pb2.SUBSCRIPTION_STATE_CANCELLED: "cancelled",
    crm_pb2.SUBSCRIPTION_STATE_EXPIRED: "expired",
}

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ConversationContext:
    fan: FanProfile
    history: tuple[Turn, ...]


def _turn(message: crm_pb2.Message) -> Turn:
    inbound = message.direction == crm_pb2.MESSAGE_DIRECTION_IN
    return Turn("fan" if inbound else "creator", message.text)


class CrmClient:
    def __init__(self, channel: grpc.aio.Channel, *, tokens: ServiceTokenProvider) -> None:
        self._stub = crm_pb2_grpc.CrmServiceStub(channel)
        self._tokens = tokens

    async def service_metadata(self, creator_id: uuid.UUID) -> Metadata:
        return await self._tokens.metadata_for(str(creator_id))

    async def context(
        self,
        *,
        creator_id: uuid.UUID,
        fan_id: uuid.UUID,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
    ) -> ConversationContext:
        """The fan and the messages before `message_id`, oldest first."""
        metadata = await self.service_metadata(creator_id)
        fan = await self._stub.GetFan(crm_pb2.GetFanRequest(fan_id=str(fan_id)), metadata=metadata)
        page = await self._stub.ListMessages(
            crm_pb2.ListMessagesRequest(
                conversation_id=str(conversation_id),
                page=common_pb2.PageRequest(page_size=HISTORY_MESSAGES + 1),
            ),
            metadata=metadata,
        )
        earlier = [m for m in page.messages if m.id != str(message_id) and m.text]
        return ConversationContext(
            fan=FanProfile(
                fan_id=fan.id,
                display_name=fan.display_name,
                spend_cents=fan.value_cents,
                tags=tuple(fan.tags),
                notes=fan.notes,
                subscription_state=_SUBSCRIPTIONS.get(fan.subscription_state, "none"),
            ),
            history=tuple(_turn(m) for m in reversed(earlier[:HISTORY_MESSAGES])),
        )

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
        response = await self._stub.SendMessage(
            crm_pb2.SendMessageRequest(
                conversation_id=str(conversation_id),
                text=text,
                idempotency_key=idempotency_key,
                sender_kind=crm_pb2.SENDER_KIND_AI
                if automated
                else crm_pb2.SENDER_KIND_UNSPECIFIED,
            ),
            metadata=metadata,
        )
        return response.message
