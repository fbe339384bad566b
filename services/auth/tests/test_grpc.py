"""The auth process end to end over gRPC on loopback, with real PostgreSQL, NATS (outbox relay
and email consumer running) and an SMTP mail catcher."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote

import grpc
import nats
import pyotp
import pytest
from google.protobuf import field_mask_pb2

from huntaze.auth.v1 import auth_pb2, events_pb2
from huntaze.common.v1 import common_pb2
from huntaze_auth.server import AuthServer
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_kit.grpc_client import GrpcKeySource, create_channel
from huntaze_kit.identity import TokenVerifier
from huntaze_kit.rich_status import from_rpc_error

PASSWORD = "violet-harbor-quantum-77"
LAPTOP = common_pb2.ClientContext(ip_address="198.51.100.7", user_agent="Firefox/130")
PHONE = common_pb2.ClientContext(ip_address="203.0.113.9", user_agent="Safari/17 iPhone")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def link_token(message: EmailMessage) -> str:
    found = re.search(r"\?token=([^\s&]+)", text_body(message))
    assert found is not None
    return unquote(found.group(1))


def mail_to(address: str, subject_part: str) -> Any:
    def predicate(message: EmailMessage) -> bool:
        return address in str(message["To"]) and subject_part in str(message["Subject"])

    return predicate


async def register_and_verify(stub: Any, catcher: MailCatcher, email: str) -> auth_pb2.User:
    await stub.Register(
        auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="Ada", client=LAPTOP)
    )
    mail = await catcher.wait_for_async(mail_to(email, "Confirm your email"), timeout=15)
    verified = await stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=link_token(mail)))
    return verified.user


async def login(stub: Any, email: str, *, client: Any = LAPTOP) -> auth_pb2.LoginResponse:
    return await stub.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD, client=client))


async def test_happy_path_over_grpc(
    stub: Any, mail_catcher: MailCatcher, auth_server: AuthServer
) -> None:
    await stub.Register(
        auth_pb2.RegisterRequest(
            email="ada@example.com", password=PASSWORD, name="Ada <b>", client=LAPTOP
        )
    )
    mail = await mail_catcher.wait_for_async(mail_to("ada@example.com", "Confirm"), timeout=15)
    assert "https://app.example.com/verify-email?token=" in text_body(mail)
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    assert "Ada &lt;b&gt;" in html.get_content()  # type: ignore[attr-defined]

    verified = await stub.VerifyEmail(auth_pb2.VerifyEmailRequest(token=link_token(mail)))
    assert verified.user.email_verified
    await mail_catcher.wait_for_async(mail_to("ada@example.com", "Welcome"), timeout=15)

    logged_in = await login(stub, "ada@example.com")
    assert logged_in.WhichOneof("result") == "tokens"
    tokens = logged_in.tokens
    me = await stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens.access_token))
    assert me.user.email == "ada@example.com"
    assert me.profile.display_name == "Ada <b>"

    refreshed = await stub.RefreshSession(
        auth_pb2.RefreshSessionRequest(refresh_token=tokens.refresh_token, client=LAPTOP)
    )
    access = refreshed.tokens.access_token
    await stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(access))

    # A second device signs in: the owner gets an alert.
    phone = await login(stub, "ada@example.com", client=PHONE)
    alert = await mail_catcher.wait_for_async(mail_to("ada@example.com", "New sign-in"), 15)
    assert "203.0.113.9" in text_body(alert)
    sessions = await stub.ListSessions(auth_pb2.ListSessionsRequest(), metadata=bearer(access))
    assert sorted(s.current for s in sessions.sessions) == [False, True]

    await stub.Logout(auth_pb2.LogoutRequest(), metadata=bearer(access))
    refused = await rpc_error(stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(access)))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert from_rpc_error(refused).reason == "SESSION_REVOKED"
    await stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(phone.tokens.access_token))

    # The revocation reached the AUTH stream for every other verifier.
    client = await nats.connect(auth_server.settings.nats_url)
    try:
        js = client.jetstream()
        deadline = time.monotonic() + 10
        while True:
            try:
                last = await js.get_last_msg("AUTH", "auth.session.revoked")
                break
            except nats.js.errors.NotFoundError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        revoked = events_pb2.SessionRevoked.FromString(last.data)
        assert (revoked.session_id, revoked.reason) == (tokens.session_id, "logout")
    finally:
        await client.close()


async def test_errors_over_grpc(stub: Any, mail_catcher: MailCatcher) -> None:
    await register_and_verify(stub, mail_catcher, "ada@example.com")

    # Same status and message for an unknown address and a wrong password.
    unknown = await rpc_error(
        stub.Login(auth_pb2.LoginRequest(email="nobody@example.com", password=PASSWORD))
    )
    wrong = await rpc_error(
        stub.Login(auth_pb2.LoginRequest(email="ada@example.com", password="Wrong-pass-123"))
    )
    assert unknown.code() == wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert unknown.details() == wrong.details()
    assert from_rpc_error(unknown).reason == from_rpc_error(wrong).reason

    attacker = common_pb2.ClientContext(ip_address="192.0.2.66", user_agent="curl")
    for _ in range(5):
        await rpc_error(
            stub.Login(
                auth_pb2.LoginRequest(
                    email="ada@example.com", password="Wrong-pass-123", client=attacker
                )
            )
        )
    throttled = await rpc_error(
        stub.Login(
            auth_pb2.LoginRequest(email="ada@example.com", password=PASSWORD, client=attacker)
        )
    )
    assert throttled.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = from_rpc_error(throttled)
    assert details.reason == "TOO_MANY_ATTEMPTS"
    assert details.retry_after_seconds is not None
    assert details.retry_after_seconds > 0
    # The real user, elsewhere, is not locked out.
    assert (await login(stub, "ada@example.com")).WhichOneof("result") == "tokens"

    invalid = await rpc_error(
        stub.Register(auth_pb2.RegisterRequest(email="not-an-email", password="short"))
    )
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(invalid).violations] == ["email"]
    taken = await rpc_error(
        stub.Register(auth_pb2.RegisterRequest(email="ada@example.com", password=PASSWORD))
    )
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS

    for metadata in [(), bearer("garbage"), (("authorization", "Basic abc"),)]:
        denied = await rpc_error(stub.GetMe(auth_pb2.GetMeRequest(), metadata=metadata))
        assert denied.code() == grpc.StatusCode.UNAUTHENTICATED

    # Enumeration-safe requests answer the same for unknown addresses.
    await stub.RequestPasswordReset(auth_pb2.RequestPasswordResetRequest(email="x@example.com"))
    await stub.ResendVerification(auth_pb2.ResendVerificationRequest(email="x@example.com"))


async def test_service_tokens_over_grpc(
    stub: Any, mail_catcher: MailCatcher, auth_server: AuthServer
) -> None:
    user = await register_and_verify(stub, mail_catcher, "ada@example.com")
    refused = await rpc_error(
        stub.IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest(
                service_name="crm", service_secret="guess", creator_id=user.id
            )
        )
    )
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    issued = await stub.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(
            service_name="crm", service_secret="crm-service-secret", creator_id=user.id
        )
    )
    profile = await stub.GetProfile(
        auth_pb2.GetProfileRequest(), metadata=bearer(issued.access_token)
    )
    assert profile.display_name == "Ada"
    denied = await rpc_error(
        stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(issued.access_token))
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

    # Another service verifies tokens with the keys auth publishes over gRPC.
    jwks = json.loads((await stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest())).jwks_json)
    assert [k["kty"] for k in jwks["keys"]] == ["OKP"]
    assert all("d" not in k for k in jwks["keys"])
    channel = create_channel(f"127.0.0.1:{auth_server.port}")
    try:
        remote = TokenVerifier(
            key_source=GrpcKeySource(channel), audience="huntaze", issuer="huntaze-auth"
        )
        tokens = (await login(stub, "ada@example.com")).tokens
        assert (await remote.verify(tokens.access_token)).user_id == user.id
        assert (await remote.verify(issued.access_token)).creator_id == user.id
    finally:
        await channel.close()


async def test_two_factor_and_profile_over_grpc(stub: Any, mail_catcher: MailCatcher) -> None:
    await register_and_verify(stub, mail_catcher, "ada@example.com")
    access = (await login(stub, "ada@example.com")).tokens.access_token
    auth = bearer(access)

    enrollment = await stub.BeginTotpEnrollment(
        auth_pb2.BeginTotpEnrollmentRequest(), metadata=auth
    )
    totp = pyotp.TOTP(enrollment.secret)
    confirmed = await stub.ConfirmTotpEnrollment(
        auth_pb2.ConfirmTotpEnrollmentRequest(code=totp.now()), metadata=auth
    )
    assert len(confirmed.recovery_codes) == 10

    challenged = await login(stub, "ada@example.com")
    assert challenged.WhichOneof("result") == "two_factor_required"
    done = await stub.CompleteTwoFactorLogin(
        auth_pb2.CompleteTwoFactorLoginRequest(
            challenge_token=challenged.two_factor_required.challenge_token,
            code=confirmed.recovery_codes[3],
            client=LAPTOP,
        )
    )
    assert done.WhichOneof("result") == "tokens"
    assert done.user.two_factor_enabled

    everything = field_mask_pb2.FieldMask(
        paths=["display_name", "bio", "timezone", "niche", "goals"]
    )
    bad = await rpc_error(
        stub.SaveProfile(
            auth_pb2.SaveProfileRequest(
                display_name="Ada", timezone="Nowhere/Town", update_mask=everything
            ),
            metadata=auth,
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in from_rpc_error(bad).violations] == ["timezone"]
    # The proto's field rules, checked before the method runs: every broken one is listed.
    too_long = from_rpc_error(
        await rpc_error(
            stub.SaveProfile(
                auth_pb2.SaveProfileRequest(
                    display_name="a" * 81,
                    bio="b" * 1001,
                    niche="n" * 81,
                    goals=["g" * 121, *(f"goal {n}" for n in range(10))],
                    update_mask=field_mask_pb2.FieldMask(paths=["nickname"]),
                ),
                metadata=auth,
            )
        )
    )
    assert too_long.code == grpc.StatusCode.INVALID_ARGUMENT
    assert too_long.reason == "VALIDATION_FAILED"
    assert [v.field for v in too_long.violations] == [
        "display_name",
        "bio",
        "niche",
        "goals",
        "goals[0]",
        "update_mask",
    ]
    assert too_long.violations[0].description == "must be at most 80 characters"
    saved = await stub.SaveProfile(
        auth_pb2.SaveProfileRequest(
            display_name="a" * 80,
            bio="Yoga",
            timezone="America/New_York",
            niche="fitness",
            goals=["grow"],
            update_mask=everything,
        ),
        metadata=auth,
    )
    assert saved.timezone == "America/New_York"
    completed = await stub.CompleteOnboarding(auth_pb2.CompleteOnboardingRequest(), metadata=auth)
    assert completed.onboarding_completed
    me = await stub.GetMe(auth_pb2.GetMeRequest(), metadata=auth)
    assert me.user.onboarding_completed
    assert list(me.profile.goals) == ["grow"]
