# ruff: noqa: N802  (method names are the proto's)
"""The OnlyFansService gRPC servicer: thin, it maps messages to use cases and back.

Every method acts for `current_principal().creator_id`; no request field can name another
creator, and no answer carries a secret.
"""

from __future__ import annotations

import uuid

from huntaze.common.v1 import common_pb2
from huntaze.onlyfans.v1 import events_pb2, onlyfans_pb2, onlyfans_pb2_grpc
from huntaze_kit.errors import InvalidArgument, Unauthenticated
from huntaze_kit.grpc_server import AccessPolicy, Context
from huntaze_kit.identity import current_principal
from huntaze_onlyfans_worker.accounts import timestamp
from huntaze_onlyfans_worker.driver import ImportedSession, PlatformVaultMedia
from huntaze_onlyfans_worker.service import OnlyfansService, Status

SERVICE_NAME: str = onlyfans_pb2.DESCRIPTOR.services_by_name["OnlyFansService"].full_name


def _methods(*names: str) -> frozenset[str]:
    return frozenset(f"/{SERVICE_NAME}/{name}" for name in names)


STATES = {
    "disconnected": onlyfans_pb2.CONNECTION_STATE_DISCONNECTED,
    "connected": onlyfans_pb2.CONNECTION_STATE_CONNECTED,
    "needs_otp": onlyfans_pb2.CONNECTION_STATE_NEEDS_OTP,
    "needs_session_import": onlyfans_pb2.CONNECTION_STATE_NEEDS_SESSION_IMPORT,
    "failed": onlyfans_pb2.CONNECTION_STATE_FAILED,
    "needs_attention": onlyfans_pb2.CONNECTION_STATE_NEEDS_ATTENTION,
}

# The platform's names of vault files.
MEDIA_KINDS = {
    "photo": events_pb2.MEDIA_KIND_IMAGE,
    "gif": events_pb2.MEDIA_KIND_IMAGE,
    "video": events_pb2.MEDIA_KIND_VIDEO,
    "audio": events_pb2.MEDIA_KIND_AUDIO,
}


def access_policy() -> AccessPolicy:
    """Every call needs a token; connecting an account needs a verified email address."""
    return AccessPolicy(
        public_methods=frozenset(),
        service_methods={
            "campaigns": _methods("GetStatus"),
            "analytics": _methods("GetStatus"),
        },
        verified_email_methods=_methods("Connect", "SubmitOtp"),
    )


def _creator() -> uuid.UUID:
    try:
        return uuid.UUID(current_principal().creator_id)
    except ValueError as exc:
        raise Unauthenticated(message="Invalid token.", reason="INVALID_TOKEN") from exc


def status_message(status: Status) -> onlyfans_pb2.AccountStatus:
    message = onlyfans_pb2.AccountStatus(
        state=STATES[status.state],
        reason=status.reason,
        platform_user_id=status.platform_user_id,
        username=status.username,
    )
    if status.connected_at is not None:
        message.connected_at.CopyFrom(timestamp(status.connected_at))
    if status.last_synced_at is not None:
        message.last_synced_at.CopyFrom(timestamp(status.last_synced_at))
    return message


def vault_media_message(media: PlatformVaultMedia) -> onlyfans_pb2.VaultMedia:
    message = onlyfans_pb2.VaultMedia(
        platform_media_id=media.platform_media_id,
        kind=MEDIA_KINDS.get(media.kind, events_pb2.MEDIA_KIND_FILE),
        duration_seconds=media.duration_seconds,
        thumbnail_url=media.thumbnail_url,
    )
    if media.created_at is not None:
        message.created_at.CopyFrom(timestamp(media.created_at))
    return message


class OnlyFansServicer(onlyfans_pb2_grpc.OnlyFansServiceServicer):
    def __init__(self, service: OnlyfansService) -> None:
        self.service = service

    async def Connect(
        self, request: onlyfans_pb2.ConnectRequest, context: Context
    ) -> onlyfans_pb2.ConnectResponse:
        creator_id = _creator()
        method = request.WhichOneof("method")
        if method == "credentials":
            status = await self.service.connect_with_login(
                creator_id=creator_id,
                email=request.credentials.email,
                password=request.credentials.password,
                totp_secret=request.credentials.totp_secret,
            )
        elif method == "session":
            status = await self.service.connect_with_session(
                creator_id=creator_id,
                imported=ImportedSession(
                    cookies=dict(request.session.cookies),
                    x_bc=request.session.x_bc,
                    user_agent=request.session.user_agent,
                ),
            )
        else:
            raise InvalidArgument.for_field("method", "give credentials or a session")
        return onlyfans_pb2.ConnectResponse(status=status_message(status))

    async def SubmitOtp(
        self, request: onlyfans_pb2.SubmitOtpRequest, context: Context
    ) -> onlyfans_pb2.ConnectResponse:
        status = await self.service.submit_otp(creator_id=_creator(), code=request.code)
        return onlyfans_pb2.ConnectResponse(status=status_message(status))

    async def GetStatus(
        self, request: onlyfans_pb2.GetStatusRequest, context: Context
    ) -> onlyfans_pb2.AccountStatus:
        return status_message(await self.service.status(creator_id=_creator()))

    async def Disconnect(
        self, request: onlyfans_pb2.DisconnectRequest, context: Context
    ) -> onlyfans_pb2.AccountStatus:
        return status_message(await self.service.disconnect(creator_id=_creator()))

    async def RequestSync(
        self, request: onlyfans_pb2.RequestSyncRequest, context: Context
    ) -> onlyfans_pb2.RequestSyncResponse:
        accepted = await self.service.request_sync(creator_id=_creator())
        return onlyfans_pb2.RequestSyncResponse(accepted=accepted)

    async def ListVaultMedia(
        self, request: onlyfans_pb2.ListVaultMediaRequest, context: Context
    ) -> onlyfans_pb2.ListVaultMediaResponse:
        page = await self.service.vault_media(
            creator_id=_creator(),
            page_size=request.page.page_size,
            page_token=request.page.page_token,
        )
        return onlyfans_pb2.ListVaultMediaResponse(
            media=[vault_media_message(media) for media in page.items],
            page=common_pb2.PageResponse(next_page_token=page.next_cursor or ""),
        )
