# ruff: noqa: N802  (method names are the proto's)
"""The AuthService gRPC servicer: thin, it maps messages to use cases and back.

Identity comes from the call interceptor (`huntaze_kit.grpc_server`): methods outside
`PUBLIC_METHODS` run only with a verified token, read through `current_principal()`.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from huntaze.auth.v1 import auth_pb2, auth_pb2_grpc
from huntaze.common.v1 import common_pb2
from huntaze_auth.service import (
    AuthService,
    ClientInfo,
    LoginResult,
    ProfileView,
    SessionView,
    TokenPairView,
    UserView,
)
from huntaze_kit.errors import Unauthenticated
from huntaze_kit.grpc_server import AccessPolicy, Context
from huntaze_kit.identity import Principal, current_principal

SERVICE_NAME: str = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name

PUBLIC_METHODS = frozenset(
    f"/{SERVICE_NAME}/{name}"
    for name in (
        "Register",
        "VerifyEmail",
        "ResendVerification",
        "Login",
        "CompleteTwoFactorLogin",
        "RefreshSession",
        "RequestPasswordReset",
        "ResetPassword",
        "GetPublicKeys",
        "IssueServiceToken",
    )
)
# What a service acting for a creator (service token) may call.
SERVICE_CALLABLE_METHODS = frozenset({f"/{SERVICE_NAME}/GetProfile"})
# Methods that check the caller's session in the query that reads what they answer, so the
# call needs one database round trip, not two (the token verifier skips its own check).
SESSION_CHECKING_METHODS = frozenset({f"/{SERVICE_NAME}/GetMe"})

MAX_USER_AGENT_LENGTH = 512


def access_policy(service_names: Iterable[str]) -> AccessPolicy:
    return AccessPolicy(
        public_methods=PUBLIC_METHODS,
        service_methods=dict.fromkeys(service_names, SERVICE_CALLABLE_METHODS),
        session_checking_methods=SESSION_CHECKING_METHODS,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(value: datetime | None) -> Timestamp | None:
    """What `Timestamp.FromDatetime` makes (naive means UTC), at a third of its cost: this runs
    for every timestamp of every answer."""
    if value is None:
        return None
    since_epoch = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    return Timestamp(
        seconds=since_epoch.days * 86_400 + since_epoch.seconds,
        nanos=since_epoch.microseconds * 1000,
    )


def _client(context: common_pb2.ClientContext) -> ClientInfo:
    """The caller as the gateway saw it; an unparsable IP is dropped, a long agent cut."""
    ip_address = context.ip_address.strip()
    try:
        ip_address = str(ipaddress.ip_address(ip_address)) if ip_address else ""
    except ValueError:
        ip_address = ""
    return ClientInfo(ip_address=ip_address, user_agent=context.user_agent[:MAX_USER_AGENT_LENGTH])


def _user(view: UserView) -> auth_pb2.User:
    return auth_pb2.User(
        id=str(view.id),
        email=view.email,
        name=view.name,
        email_verified=view.email_verified,
        two_factor_enabled=view.two_factor_enabled,
        onboarding_completed=view.onboarding_completed,
        created_at=_timestamp(view.created_at),
    )


def _tokens(view: TokenPairView) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=view.access_token,
        access_token_expires_at=_timestamp(view.access_token_expires_at),
        refresh_token=view.refresh_token,
        refresh_token_expires_at=_timestamp(view.refresh_token_expires_at),
        session_id=str(view.session_id),
    )


def _profile(view: ProfileView) -> auth_pb2.Profile:
    return auth_pb2.Profile(
        display_name=view.display_name,
        bio=view.bio,
        timezone=view.timezone,
        niche=view.niche,
        goals=view.goals,
        onboarding_completed=view.onboarding_completed_at is not None,
        onboarding_completed_at=_timestamp(view.onboarding_completed_at),
        updated_at=_timestamp(view.updated_at),
    )


def _session(view: SessionView) -> auth_pb2.Session:
    return auth_pb2.Session(
        id=str(view.id),
        ip_address=view.ip_address,
        user_agent=view.user_agent,
        created_at=_timestamp(view.created_at),
        last_used_at=_timestamp(view.last_used_at),
        expires_at=_timestamp(view.expires_at),
        current=view.current,
    )


def _login(result: LoginResult) -> auth_pb2.LoginResponse:
    response = auth_pb2.LoginResponse(user=_user(result.user))
    if result.tokens is not None:
        response.tokens.CopyFrom(_tokens(result.tokens))
    elif result.challenge is not None:
        response.two_factor_required.CopyFrom(
            auth_pb2.TwoFactorChallenge(
                challenge_token=result.challenge.challenge_token,
                expires_at=_timestamp(result.challenge.expires_at),
            )
        )
    return response


def _caller() -> tuple[uuid.UUID, uuid.UUID]:
    """(user id, session id) of the calling user's access token."""
    principal = current_principal()
    if principal.session_id is None:
        raise Unauthenticated(message="A user session is required.", reason="NO_SESSION")
    try:
        return uuid.UUID(principal.user_id), uuid.UUID(principal.session_id)
    except ValueError as exc:
        raise Unauthenticated(message="Invalid token.", reason="INVALID_TOKEN") from exc


def _creator(principal: Principal) -> uuid.UUID:
    try:
        return uuid.UUID(principal.creator_id)
    except ValueError as exc:
        raise Unauthenticated(message="Invalid token.", reason="INVALID_TOKEN") from exc


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, service: AuthService) -> None:
        self._service = service

    # --- registration ----------------------------------------------------------------------------

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        user = await self._service.register(
            email=request.email,
            password=request.password,
            name=request.name,
            client=_client(request.client),
        )
        return auth_pb2.RegisterResponse(user=_user(user))

    async def VerifyEmail(
        self, request: auth_pb2.VerifyEmailRequest, context: Context
    ) -> auth_pb2.VerifyEmailResponse:
        user = await self._service.verify_email(token=request.token)
        return auth_pb2.VerifyEmailResponse(user=_user(user))

    async def ResendVerification(
        self, request: auth_pb2.ResendVerificationRequest, context: Context
    ) -> auth_pb2.ResendVerificationResponse:
        await self._service.resend_verification(email=request.email, client=_client(request.client))
        return auth_pb2.ResendVerificationResponse()

    # --- sign-in ---------------------------------------------------------------------------------

    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        result = await self._service.login(
            email=request.email, password=request.password, client=_client(request.client)
        )
        return _login(result)

    async def CompleteTwoFactorLogin(
        self, request: auth_pb2.CompleteTwoFactorLoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        result = await self._service.complete_two_factor_login(
            challenge_token=request.challenge_token,
            code=request.code,
            client=_client(request.client),
        )
        return _login(result)

    async def RefreshSession(
        self, request: auth_pb2.RefreshSessionRequest, context: Context
    ) -> auth_pb2.RefreshSessionResponse:
        tokens = await self._service.refresh_session(
            refresh_token=request.refresh_token, client=_client(request.client)
        )
        return auth_pb2.RefreshSessionResponse(tokens=_tokens(tokens))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        user_id, session_id = _caller()
        await self._service.logout(user_id=user_id, session_id=session_id)
        return auth_pb2.LogoutResponse()

    # --- account and sessions --------------------------------------------------------------------

    async def GetMe(
        self, request: auth_pb2.GetMeRequest, context: Context
    ) -> auth_pb2.GetMeResponse:
        user_id, session_id = _caller()
        user, profile = await self._service.get_me(user_id=user_id, session_id=session_id)
        return auth_pb2.GetMeResponse(user=_user(user), profile=_profile(profile))

    async def ListSessions(
        self, request: auth_pb2.ListSessionsRequest, context: Context
    ) -> auth_pb2.ListSessionsResponse:
        user_id, session_id = _caller()
        sessions = await self._service.list_sessions(user_id=user_id, current_session_id=session_id)
        return auth_pb2.ListSessionsResponse(sessions=[_session(s) for s in sessions])

    async def RevokeSession(
        self, request: auth_pb2.RevokeSessionRequest, context: Context
    ) -> auth_pb2.RevokeSessionResponse:
        user_id, _ = _caller()
        await self._service.revoke_session(user_id=user_id, session_id=request.session_id)
        return auth_pb2.RevokeSessionResponse()

    async def RevokeOtherSessions(
        self, request: auth_pb2.RevokeOtherSessionsRequest, context: Context
    ) -> auth_pb2.RevokeOtherSessionsResponse:
        user_id, session_id = _caller()
        count = await self._service.revoke_other_sessions(
            user_id=user_id, current_session_id=session_id
        )
        return auth_pb2.RevokeOtherSessionsResponse(revoked_count=count)

    # --- passwords -------------------------------------------------------------------------------

    async def RequestPasswordReset(
        self, request: auth_pb2.RequestPasswordResetRequest, context: Context
    ) -> auth_pb2.RequestPasswordResetResponse:
        await self._service.request_password_reset(
            email=request.email, client=_client(request.client)
        )
        return auth_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: auth_pb2.ResetPasswordRequest, context: Context
    ) -> auth_pb2.ResetPasswordResponse:
        await self._service.reset_password(token=request.token, new_password=request.new_password)
        return auth_pb2.ResetPasswordResponse()

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: Context
    ) -> auth_pb2.ChangePasswordResponse:
        user_id, session_id = _caller()
        tokens = await self._service.change_password(
            user_id=user_id,
            session_id=session_id,
            current_password=request.current_password,
            new_password=request.new_password,
        )
        return auth_pb2.ChangePasswordResponse(tokens=_tokens(tokens))

    # --- two-factor ------------------------------------------------------------------------------

    async def BeginTotpEnrollment(
        self, request: auth_pb2.BeginTotpEnrollmentRequest, context: Context
    ) -> auth_pb2.BeginTotpEnrollmentResponse:
        user_id, _ = _caller()
        enrollment = await self._service.begin_totp_enrollment(user_id=user_id)
        return auth_pb2.BeginTotpEnrollmentResponse(
            secret=enrollment.secret,
            otpauth_uri=enrollment.otpauth_uri,
            qr_svg=enrollment.qr_svg,
        )

    async def ConfirmTotpEnrollment(
        self, request: auth_pb2.ConfirmTotpEnrollmentRequest, context: Context
    ) -> auth_pb2.ConfirmTotpEnrollmentResponse:
        user_id, _ = _caller()
        codes = await self._service.confirm_totp_enrollment(user_id=user_id, code=request.code)
        return auth_pb2.ConfirmTotpEnrollmentResponse(recovery_codes=codes)

    async def DisableTotp(
        self, request: auth_pb2.DisableTotpRequest, context: Context
    ) -> auth_pb2.DisableTotpResponse:
        user_id, session_id = _caller()
        await self._service.disable_totp(
            user_id=user_id, session_id=session_id, password=request.password, code=request.code
        )
        return auth_pb2.DisableTotpResponse()

    async def RegenerateRecoveryCodes(
        self, request: auth_pb2.RegenerateRecoveryCodesRequest, context: Context
    ) -> auth_pb2.RegenerateRecoveryCodesResponse:
        user_id, _ = _caller()
        codes = await self._service.regenerate_recovery_codes(user_id=user_id, code=request.code)
        return auth_pb2.RegenerateRecoveryCodesResponse(recovery_codes=codes)

    # --- profile ---------------------------------------------------------------------------------

    async def GetProfile(
        self, request: auth_pb2.GetProfileRequest, context: Context
    ) -> auth_pb2.Profile:
        # Users read their own; a service reads the profile of the creator it acts for.
        creator_id = _creator(current_principal())
        return _profile(await self._service.get_profile(user_id=creator_id))

    async def SaveProfile(
        self, request: auth_pb2.SaveProfileRequest, context: Context
    ) -> auth_pb2.Profile:
        user_id, _ = _caller()
        profile = await self._service.save_profile(
            user_id=user_id,
            changed=frozenset(request.update_mask.paths),
            display_name=request.display_name,
            bio=request.bio,
            timezone=request.timezone,
            niche=request.niche,
            goals=list(request.goals),
        )
        return _profile(profile)

    async def CompleteOnboarding(
        self, request: auth_pb2.CompleteOnboardingRequest, context: Context
    ) -> auth_pb2.Profile:
        user_id, _ = _caller()
        return _profile(await self._service.complete_onboarding(user_id=user_id))

    # --- keys and services -----------------------------------------------------------------------

    async def GetPublicKeys(
        self, request: auth_pb2.GetPublicKeysRequest, context: Context
    ) -> auth_pb2.GetPublicKeysResponse:
        return auth_pb2.GetPublicKeysResponse(
            jwks_json=json.dumps(self._service.public_keys(), separators=(",", ":"))
        )

    async def IssueServiceToken(
        self, request: auth_pb2.IssueServiceTokenRequest, context: Context
    ) -> auth_pb2.IssueServiceTokenResponse:
        issued = await self._service.issue_service_token(
            service_name=request.service_name,
            service_secret=request.service_secret,
            creator_id=request.creator_id,
        )
        return auth_pb2.IssueServiceTokenResponse(
            access_token=issued.token, expires_at=_timestamp(issued.expires_at)
        )
