"""What campaigns ask of the CRM over gRPC, always with a service token for the campaign's
creator: whether a list is the creator's, the audience of a list or default segment (a page at a
time), one automated send, and the record of a mass message against each fan's budget.
A refusal of the CRM comes back as the `DomainError` of its status, with its reason."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc

from huntaze.crm.v1 import crm_pb2, crm_pb2_grpc
from huntaze_kit.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from huntaze_kit.grpc_client import ServiceTokenProvider
from huntaze_kit.rich_status import from_rpc_error

AUDIENCE_PAGE = 5000
# The CRM records a mass message fan by fan (up to 1,000): more than the default deadline.
MASS_RECORD_SECONDS = 60.0

_ERRORS: dict[grpc.StatusCode, type[DomainError]] = {
    kind.status_code: kind
    for kind in (FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, RateLimited)
}


def relayed(error: grpc.aio.AioRpcError) -> DomainError:
    """The CRM's refusal as ours; anything else (an outage, a failure) is UNAVAILABLE."""
    details = from_rpc_error(error)
    kind = _ERRORS.get(details.code, Unavailable)
    return kind(
        message=details.message if kind is not Unavailable else "The CRM is not available.",
        reason=details.reason or ("CRM_UNAVAILABLE" if kind is Unavailable else "ERROR"),
        violations=details.violations,
        retry_after_seconds=details.retry_after_seconds,
        metadata=details.metadata,
    )


@dataclass(frozen=True)
class AudienceSource:
    list_id: uuid.UUID | None
    subscription_states: tuple[int, ...] = ()
    silent_for_days: int = 0
    # How far back the fans' last automated and human messages matter (the exclusions').
    recent_sends_within_hours: int = 0


class CrmClient:
    def __init__(self, channel: grpc.aio.Channel, *, tokens: ServiceTokenProvider) -> None:
        self._stub = crm_pb2_grpc.CrmServiceStub(channel)
        self._tokens = tokens

    async def fan_list(self, *, creator_id: uuid.UUID, list_id: uuid.UUID) -> crm_pb2.FanList:
        """The creator's list; NOT_FOUND (the CRM's) for another creator's or an unknown one."""
        metadata = await self._tokens.metadata_for(str(creator_id))
        try:
            return await self._stub.GetFanList(
                crm_pb2.GetFanListRequest(list_id=str(list_id)), metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            raise relayed(error) from error

    async def audience(
        self, *, creator_id: uuid.UUID, source: AudienceSource
    ) -> AsyncIterator[list[crm_pb2.AudienceFan]]:
        """The audience, page after page, by fan id."""
        after = ""
        while True:
            metadata = await self._tokens.metadata_for(str(creator_id))
            try:
                page = await self._stub.ResolveAudience(
                    crm_pb2.ResolveAudienceRequest(
                        list_id=str(source.list_id) if source.list_id else "",
                        subscription_states=list(source.subscription_states),  # type: ignore[arg-type]
                        silent_for_days=source.silent_for_days,
                        start_after=after,
                        limit=AUDIENCE_PAGE,
                        recent_sends_within_hours=source.recent_sends_within_hours,
                    ),
                    metadata=metadata,
                )
            except grpc.aio.AioRpcError as error:
                raise relayed(error) from error
            if page.fans:
                yield list(page.fans)
            if not page.next_start_after:
                return
            after = page.next_start_after

    async def record_mass_message(
        self,
        *,
        creator_id: uuid.UUID,
        fan_ids: Sequence[uuid.UUID],
        text: str,
        price_cents: int,
        platform_media_ids: Sequence[str],
        idempotency_key: str,
    ) -> list[crm_pb2.MassMessageRecipient]:
        """The CRM's record of a mass message to these fans, each counted against their
        automation budget (in the order asked); the same key answers the same messages."""
        metadata = await self._tokens.metadata_for(str(creator_id))
        try:
            response = await self._stub.RecordMassMessage(
                crm_pb2.RecordMassMessageRequest(
                    fan_ids=[str(fan_id) for fan_id in fan_ids],
                    text=text,
                    price_cents=price_cents,
                    attachments=[
                        crm_pb2.Attachment(
                            kind=crm_pb2.ATTACHMENT_KIND_FILE, platform_media_id=media_id
                        )
                        for media_id in platform_media_ids
                    ],
                    idempotency_key=idempotency_key,
                ),
                metadata=metadata,
                timeout=MASS_RECORD_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            raise relayed(error) from error
        return list(response.recipients)

    async def send(
        self,
        *,
        creator_id: uuid.UUID,
        fan_id: uuid.UUID,
        text: str,
        price_cents: int,
        platform_media_ids: Sequence[str],
        idempotency_key: str,
    ) -> crm_pb2.Message:
        """Queues an automated message to the fan; the same key always answers the same one."""
        metadata = await self._tokens.metadata_for(str(creator_id))
        try:
            response = await self._stub.SendMessage(
                crm_pb2.SendMessageRequest(
                    fan_id=str(fan_id),
                    text=text,
                    price_cents=price_cents,
                    # Vault media: its kind is the platform's to know.
                    attachments=[
                        crm_pb2.Attachment(
                            kind=crm_pb2.ATTACHMENT_KIND_FILE, platform_media_id=media_id
                        )
                        for media_id in platform_media_ids
                    ],
                    idempotency_key=idempotency_key,
                    sender_kind=crm_pb2.SENDER_KIND_AUTOMATION,
                ),
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as error:
            raise relayed(error) from error
        return response.message
