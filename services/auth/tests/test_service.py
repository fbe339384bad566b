"""The auth use cases against a real PostgreSQL: registration, verification, sign-in, refresh,
sessions, passwords, two-factor, profiles, throttling and service tokens."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import pyotp
import pytest
from sqlalchemy import text

from huntaze.auth.v1 import events_pb2
from huntaze_auth import repository
from huntaze_auth.service import AuthService, ClientInfo, LoginResult, TokenPairView, UserView
from huntaze_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RateLimited,
    Unauthenticated,
)

PASSWORD = "violet-harbor-quantum-77"
NEW_PASSWORD = "granite-lantern-orbit-93"
BROWSER = ClientInfo(ip_address="198.51.100.7", user_agent="Mozilla/5.0 (X11; Linux) Firefox/130")
PHONE = ClientInfo(ip_address="203.0.113.9", user_agent="Mozilla/5.0 (iPhone) Safari/17")


async def register(service: AuthService, email: str = "ada@example.com", **kw: Any) -> UserView:
    return await service.register(
        email=email,
        password=kw.get("password", PASSWORD),
        name=kw.get("name", "Ada Lovelace"),
        client=BROWSER,
    )


async def login(
    service: AuthService,
    email: str = "ada@example.com",
    password: str = PASSWORD,
    client: ClientInfo = BROWSER,
) -> LoginResult:
    return await service.login(email=email, password=password, client=client)


async def tokens_of(service: AuthService, **kw: Any) -> TokenPairView:
    result = await login(service, **kw)
    assert result.tokens is not None
    return result.tokens


async def test_register_verify_login_refresh_logout(service: AuthService, outbox: Any) -> None:
    user = await register(service, email="  Ada@Example.COM ")
    assert user.email == "ada@example.com"
    assert not user.email_verified
    assert await outbox.subjects() == [
        "auth.user.registered",
        "auth.email_verification.requested",
    ]

    verified = await service.verify_email(token=await outbox.verification_token())
    assert verified.email_verified
    assert "auth.user.email_verified" in await outbox.subjects()

    first = await tokens_of(service)
    assert await service.session_is_active(str(first.session_id))
    second = await service.refresh_session(refresh_token=first.refresh_token, client=BROWSER)
    assert second.session_id == first.session_id
    assert second.refresh_token != first.refresh_token
    assert second.refresh_token_expires_at == first.refresh_token_expires_at  # absolute

    await service.logout(user_id=user.id, session_id=second.session_id)
    assert not await service.session_is_active(str(second.session_id))
    with pytest.raises(Unauthenticated):
        await service.refresh_session(refresh_token=second.refresh_token, client=BROWSER)
    revoked = await outbox.events("auth.session.revoked", events_pb2.SessionRevoked)
    assert [(e.session_id, e.reason) for e in revoked] == [(str(first.session_id), "logout")]


@pytest.mark.parametrize(
    ("email", "password", "reason"),
    [
        ("not-an-email", PASSWORD, "INVALID_EMAIL"),
        ("ada@", PASSWORD, "INVALID_EMAIL"),
        ("ada@example.com", "short1!", "WEAK_PASSWORD"),
        ("ada@example.com", "password123", "WEAK_PASSWORD"),
        ("ada@example.com", "ada@example.com", "WEAK_PASSWORD"),
        ("ada@example.com", "x" * 129, "WEAK_PASSWORD"),
    ],
)
async def test_register_refuses_bad_input(
    service: AuthService, email: str, password: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await register(service, email=email, password=password)
    assert caught.value.reason == reason
    assert caught.value.violations


async def test_register_twice_is_already_exists(service: AuthService) -> None:
    await register(service)
    with pytest.raises(AlreadyExists):
        await register(service, email="ADA@example.com")


async def test_verification_token_redeemed_once_under_concurrency(
    service: AuthService, outbox: Any
) -> None:
    await register(service)
    token = await outbox.verification_token()

    async def redeem() -> bool:
        try:
            await service.verify_email(token=token)
        except InvalidArgument:
            return False
        return True

    outcomes = await asyncio.gather(*(redeem() for _ in range(50)))
    assert outcomes.count(True) == 1
    assert len(await outbox.events("auth.user.email_verified", events_pb2.UserEmailVerified)) == 1


async def test_resend_kills_the_previous_link(service: AuthService, outbox: Any) -> None:
    await register(service)
    first = await outbox.verification_token()
    await service.resend_verification(email="ada@example.com", client=BROWSER)
    second = await outbox.verification_token()
    assert first != second
    with pytest.raises(InvalidArgument):
        await service.verify_email(token=first)
    assert (await service.verify_email(token=second)).email_verified
    # Unknown and already verified addresses: the same silent answer, no email.
    await service.resend_verification(email="nobody@example.com", client=BROWSER)
    await service.resend_verification(email="ada@example.com", client=BROWSER)
    assert (
        len(
            await outbox.events(
                "auth.email_verification.requested", events_pb2.EmailVerificationRequested
            )
        )
        == 2
    )


async def test_expired_tokens_are_refused(service: AuthService, outbox: Any, clock: Any) -> None:
    user = await register(service)
    verification = await outbox.verification_token()
    await service.request_password_reset(email="ada@example.com", client=BROWSER)
    reset = await outbox.reset_token()
    pair = await tokens_of(service)

    clock.advance(minutes=61)
    with pytest.raises(InvalidArgument):
        await service.verify_email(token=verification)
    with pytest.raises(InvalidArgument):
        await service.reset_password(token=reset, new_password=NEW_PASSWORD)

    # The session outlives its access token but not its absolute 30 days.
    pair = await service.refresh_session(refresh_token=pair.refresh_token, client=BROWSER)
    clock.advance(days=30)
    with pytest.raises(Unauthenticated):
        await service.refresh_session(refresh_token=pair.refresh_token, client=BROWSER)
    assert not await service.session_is_active(str(pair.session_id))
    assert await service.list_sessions(user_id=user.id, current_session_id=None) == []


async def test_refresh_token_reuse_revokes_the_family(service: AuthService, outbox: Any) -> None:
    await register(service)
    first = await tokens_of(service)
    second = await service.refresh_session(refresh_token=first.refresh_token, client=BROWSER)
    # The spent token comes back (stolen copy): the whole session is revoked.
    with pytest.raises(Unauthenticated):
        await service.refresh_session(refresh_token=first.refresh_token, client=PHONE)
    with pytest.raises(Unauthenticated):
        await service.refresh_session(refresh_token=second.refresh_token, client=BROWSER)
    assert not await service.session_is_active(str(first.session_id))
    revoked = await outbox.events("auth.session.revoked", events_pb2.SessionRevoked)
    assert [e.reason for e in revoked] == ["refresh_reuse"]
    with pytest.raises(Unauthenticated):
        await service.refresh_session(refresh_token="never-issued", client=BROWSER)


async def test_login_is_enumeration_safe(make_service: Any) -> None:
    # Default (OWASP) argon2 cost, so that timing differences would show.
    service = await make_service(auth_argon2_time_cost=2, auth_argon2_memory_kib=19_456)
    await register(service)

    async def failure(email: str, n: int) -> tuple[Unauthenticated, float]:
        client = ClientInfo(ip_address=f"192.0.2.{n}", user_agent="probe")
        # CPU time of the process (argon2 runs in a worker thread): what the two paths cost,
        # unlike wall time, does not move with whatever else the machine is running.
        started = time.process_time()
        with pytest.raises(Unauthenticated) as caught:
            await service.login(email=email, password="Wrong-password-123", client=client)
        return caught.value, time.process_time() - started

    unknown = [await failure("nobody@example.com", n) for n in range(5)]
    wrong = [await failure("ada@example.com", n + 10) for n in range(5)]
    assert {(e.message, e.reason) for e, _ in unknown + wrong} == {
        ("Incorrect email or password.", "INVALID_CREDENTIALS")
    }
    unknown_time = statistics.median(t for _, t in unknown)
    wrong_time = statistics.median(t for _, t in wrong)
    assert 0.5 < unknown_time / wrong_time < 2.0, (unknown_time, wrong_time)


async def test_login_throttling(make_service: Any, clock: Any) -> None:
    service = await make_service(
        auth_login_max_failures_per_account_ip=3,
        auth_login_max_failures_per_account=6,
        auth_login_max_failures_per_ip=10,
    )
    await register(service)
    await tokens_of(service, client=BROWSER)  # the user's own device, now known
    attacker = ClientInfo(ip_address="192.0.2.66", user_agent="curl/8")

    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await login(service, password="Wrong-password-123", client=attacker)
    with pytest.raises(RateLimited) as caught:
        await login(service, client=attacker)  # even the right password, from that IP
    assert 0 < caught.value.retry_after_seconds <= 15 * 60
    # Unknown accounts are throttled the same way.
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await login(service, email="nobody@example.com", client=attacker)
    with pytest.raises(RateLimited):
        await login(service, email="nobody@example.com", client=attacker)

    # Failures from many IPs trip the account ceiling for unknown devices only.
    for n in range(3):
        with pytest.raises(Unauthenticated):
            await login(
                service,
                password="Wrong-password-123",
                client=ClientInfo(ip_address=f"192.0.2.{100 + n}", user_agent="bot"),
            )
    with pytest.raises(RateLimited):
        await login(service, client=PHONE)
    assert (await login(service, client=BROWSER)).tokens is not None

    # The ceiling's window is short; the attacker's own (account, IP) block lasts longer.
    clock.advance(minutes=5, seconds=1)
    assert (await login(service, client=PHONE)).tokens is not None
    with pytest.raises(RateLimited):
        await login(service, client=attacker)
    clock.advance(minutes=10)
    assert (await login(service, client=attacker)).tokens is not None


async def test_ip_limit_spans_accounts(make_service: Any) -> None:
    service = await make_service(auth_login_max_failures_per_ip=4)
    sprayer = ClientInfo(ip_address="192.0.2.200", user_agent="spray")
    for n in range(4):
        with pytest.raises(Unauthenticated):
            await login(service, email=f"user{n}@example.com", client=sprayer)
    with pytest.raises(RateLimited):
        await login(service, email="someone-else@example.com", client=sprayer)


async def test_sessions_list_revoke_and_sign_out_others(service: AuthService, outbox: Any) -> None:
    user = await register(service)
    laptop = await tokens_of(service, client=BROWSER)
    phone = await tokens_of(service, client=PHONE)
    tablet = await tokens_of(service, client=ClientInfo("192.0.2.1", "Tablet"))

    listed = await service.list_sessions(user_id=user.id, current_session_id=laptop.session_id)
    assert {s.id for s in listed} == {laptop.session_id, phone.session_id, tablet.session_id}
    assert [s.current for s in listed if s.id == laptop.session_id] == [True]

    await service.revoke_session(user_id=user.id, session_id=str(tablet.session_id))
    with pytest.raises(NotFound):
        await service.revoke_session(user_id=uuid.uuid4(), session_id=str(phone.session_id))
    with pytest.raises(InvalidArgument):
        await service.revoke_session(user_id=user.id, session_id="not-a-uuid")

    assert (
        await service.revoke_other_sessions(user_id=user.id, current_session_id=laptop.session_id)
        == 1
    )
    remaining = await service.list_sessions(user_id=user.id, current_session_id=None)
    assert [s.id for s in remaining] == [laptop.session_id]
    reasons = [
        e.reason for e in await outbox.events("auth.session.revoked", events_pb2.SessionRevoked)
    ]
    assert reasons == ["revoked_by_user", "sign_out_others"]


async def test_new_device_is_flagged_after_the_first_sign_in(
    service: AuthService, outbox: Any
) -> None:
    await register(service)
    await tokens_of(service, client=BROWSER)
    await tokens_of(service, client=BROWSER)
    await tokens_of(service, client=PHONE)
    sign_ins = await outbox.events("auth.sign_in.recorded", events_pb2.SignInRecorded)
    assert [e.new_device for e in sign_ins] == [False, False, True]


async def test_password_reset_revokes_every_session(service: AuthService, outbox: Any) -> None:
    user = await register(service)
    sessions = [await tokens_of(service, client=c) for c in (BROWSER, PHONE)]

    await service.request_password_reset(email="nobody@example.com", client=BROWSER)
    assert (
        await outbox.events("auth.password_reset.requested", events_pb2.PasswordResetRequested)
        == []
    )
    await service.request_password_reset(email="ada@example.com", client=BROWSER)
    token = await outbox.reset_token()

    with pytest.raises(InvalidArgument) as weak:
        await service.reset_password(token=token, new_password="password1")
    assert weak.value.reason == "WEAK_PASSWORD"  # and the link still works:
    await service.reset_password(token=token, new_password=NEW_PASSWORD)
    with pytest.raises(InvalidArgument):
        await service.reset_password(token=token, new_password=NEW_PASSWORD + "x")

    for pair in sessions:
        assert not await service.session_is_active(str(pair.session_id))
    assert await service.list_sessions(user_id=user.id, current_session_id=None) == []
    with pytest.raises(Unauthenticated):
        await login(service)
    assert (await login(service, password=NEW_PASSWORD)).tokens is not None
    changed = await outbox.events("auth.password.changed", events_pb2.PasswordChanged)
    assert [e.by_reset for e in changed] == [True]


async def test_change_password(service: AuthService) -> None:
    user = await register(service)
    current = await tokens_of(service, client=BROWSER)
    other = await tokens_of(service, client=PHONE)

    with pytest.raises(InvalidArgument) as wrong:
        await service.change_password(
            user_id=user.id,
            session_id=current.session_id,
            current_password="Nope-nope-123",
            new_password=NEW_PASSWORD,
        )
    assert wrong.value.reason == "INVALID_PASSWORD"
    fresh = await service.change_password(
        user_id=user.id,
        session_id=current.session_id,
        current_password=PASSWORD,
        new_password=NEW_PASSWORD,
    )
    assert fresh.session_id == current.session_id
    assert await service.session_is_active(str(current.session_id))
    assert not await service.session_is_active(str(other.session_id))
    refreshed = await service.refresh_session(refresh_token=fresh.refresh_token, client=BROWSER)
    assert refreshed.session_id == current.session_id
    assert (await login(service, password=NEW_PASSWORD)).tokens is not None


async def test_a_session_cannot_guess_the_password(service: AuthService) -> None:
    user = await register(service)
    stolen = await tokens_of(service, client=PHONE)
    for _ in range(5):
        with pytest.raises(InvalidArgument):
            await service.change_password(
                user_id=user.id,
                session_id=stolen.session_id,
                current_password="Guess-123-abc",
                new_password=NEW_PASSWORD,
            )
    with pytest.raises(RateLimited):
        await service.change_password(
            user_id=user.id,
            session_id=stolen.session_id,
            current_password=PASSWORD,
            new_password=NEW_PASSWORD,
        )
    # The owner's own session and sign-in are unaffected.
    mine = await tokens_of(service, client=BROWSER)
    await service.change_password(
        user_id=user.id,
        session_id=mine.session_id,
        current_password=PASSWORD,
        new_password=NEW_PASSWORD,
    )


async def test_password_is_rehashed_when_parameters_change(
    make_service: Any, sessions: Any
) -> None:
    weak = await make_service()
    user = await register(weak)
    stronger = await make_service(auth_argon2_time_cost=2)
    async with sessions() as db:
        before = (await repository.get_user(db, user.id)).password_hash
    assert (await login(stronger)).tokens is not None
    async with sessions() as db:
        after = (await repository.get_user(db, user.id)).password_hash
    assert "t=1" in before
    assert "t=2" in after


async def test_two_factor_enroll_login_and_recovery_codes(service: AuthService, clock: Any) -> None:
    user = await register(service)
    enrollment = await service.begin_totp_enrollment(user_id=user.id)
    assert enrollment.otpauth_uri.startswith("otpauth://totp/")
    assert enrollment.qr_svg.startswith("<svg")
    totp = pyotp.TOTP(enrollment.secret)

    with pytest.raises(InvalidArgument):
        await service.confirm_totp_enrollment(user_id=user.id, code="000000")
    codes = await service.confirm_totp_enrollment(user_id=user.id, code=totp.at(clock()))
    assert len(codes) == 10
    assert len(set(codes)) == 10
    with pytest.raises(FailedPrecondition):
        await service.begin_totp_enrollment(user_id=user.id)

    # Password alone is not enough: a challenge comes back.
    first = await login(service)
    assert first.tokens is None
    assert first.challenge is not None
    assert first.user.two_factor_enabled
    # The code used to confirm cannot be replayed, and the answer says why.
    with pytest.raises(Unauthenticated) as replayed:
        await service.complete_two_factor_login(
            challenge_token=first.challenge.challenge_token,
            code=totp.at(clock()),
            client=BROWSER,
        )
    assert replayed.value.reason == "CODE_ALREADY_USED"
    assert replayed.value.message == "This code was already used; wait for the next one."
    clock.advance(seconds=30)
    done = await service.complete_two_factor_login(
        challenge_token=first.challenge.challenge_token, code=totp.at(clock()), client=BROWSER
    )
    assert done.tokens is not None
    # A code spent on sign-in cannot confirm a change either.
    with pytest.raises(InvalidArgument) as spent:
        await service.regenerate_recovery_codes(user_id=user.id, code=totp.at(clock()))
    assert spent.value.reason == "CODE_ALREADY_USED"

    # A challenge is single use.
    with pytest.raises(Unauthenticated):
        await service.complete_two_factor_login(
            challenge_token=first.challenge.challenge_token, code=codes[0], client=BROWSER
        )

    # A recovery code works once, in any case and with or without dashes.
    second = await login(service)
    assert second.challenge is not None
    recovered = await service.complete_two_factor_login(
        challenge_token=second.challenge.challenge_token,
        code=codes[0].upper().replace("-", ""),
        client=BROWSER,
    )
    assert recovered.tokens is not None
    third = await login(service)
    assert third.challenge is not None
    with pytest.raises(Unauthenticated):
        await service.complete_two_factor_login(
            challenge_token=third.challenge.challenge_token, code=codes[0], client=BROWSER
        )

    # An expired challenge is refused.
    clock.advance(minutes=6)
    with pytest.raises(Unauthenticated) as expired:
        await service.complete_two_factor_login(
            challenge_token=third.challenge.challenge_token, code=codes[1], client=BROWSER
        )
    assert expired.value.reason == "INVALID_CHALLENGE"

    # Turning it off needs the password and a code.
    with pytest.raises(InvalidArgument):
        await service.disable_totp(
            user_id=user.id,
            session_id=done.tokens.session_id,
            password="Wrong-pass-123",
            code=codes[1],
        )
    await service.disable_totp(
        user_id=user.id, session_id=done.tokens.session_id, password=PASSWORD, code=codes[1]
    )
    assert (await login(service)).tokens is not None


async def test_two_factor_challenge_dies_after_five_wrong_codes(
    service: AuthService, clock: Any
) -> None:
    user = await register(service)
    secret = (await service.begin_totp_enrollment(user_id=user.id)).secret
    await service.confirm_totp_enrollment(user_id=user.id, code=pyotp.TOTP(secret).at(clock()))
    challenge = (await login(service)).challenge
    assert challenge is not None
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await service.complete_two_factor_login(
                challenge_token=challenge.challenge_token, code="abcd-efgh", client=PHONE
            )
    clock.advance(seconds=30)
    with pytest.raises(Unauthenticated) as caught:
        await service.complete_two_factor_login(
            challenge_token=challenge.challenge_token,
            code=pyotp.TOTP(secret).at(clock()),
            client=BROWSER,
        )
    assert caught.value.reason == "INVALID_CHALLENGE"


async def test_profile_and_onboarding(service: AuthService, outbox: Any) -> None:
    user = await register(service, name="")
    profile = await service.get_profile(user_id=user.id)
    assert profile.timezone == "UTC"
    with pytest.raises(FailedPrecondition):
        await service.complete_onboarding(user_id=user.id)

    everything = {"display_name", "bio", "timezone", "niche", "goals"}
    with pytest.raises(InvalidArgument) as caught:
        await service.save_profile(
            user_id=user.id, changed=everything, display_name=" ", timezone="Mars/Olympus"
        )
    assert {v.field for v in caught.value.violations} == {"display_name", "timezone"}
    with pytest.raises(InvalidArgument):
        await service.save_profile(
            user_id=user.id, changed={"timezone"}, timezone="../../etc/passwd"
        )

    saved = await service.save_profile(
        user_id=user.id,
        changed=everything,
        display_name=" Ada ",
        bio="Fitness creator",
        timezone="Europe/Paris",
        niche="fitness",
        goals=["grow", " grow ", "", "retain fans"],
    )
    assert (saved.display_name, saved.timezone, saved.goals) == (
        "Ada",
        "Europe/Paris",
        ["grow", "retain fans"],
    )
    # Only the fields named change; a blank display name is fine when it is not one of them.
    patched = await service.save_profile(user_id=user.id, changed={"bio"}, bio="Yoga")
    assert (patched.display_name, patched.bio, patched.niche, patched.goals) == (
        "Ada",
        "Yoga",
        "fitness",
        ["grow", "retain fans"],
    )
    done = await service.complete_onboarding(user_id=user.id)
    assert done.onboarding_completed_at is not None
    again = await service.complete_onboarding(user_id=user.id)
    assert again.onboarding_completed_at == done.onboarding_completed_at
    me, profile = await service.get_me(user_id=user.id)
    assert me.onboarding_completed
    assert profile.niche == "fitness"
    assert (
        len(await outbox.events("auth.onboarding.completed", events_pb2.OnboardingCompleted)) == 1
    )
    assert len(await outbox.events("auth.profile.updated", events_pb2.ProfileUpdated)) == 2


async def test_service_tokens(service: AuthService) -> None:
    user = await register(service)
    issued = await service.issue_service_token(
        service_name="crm", service_secret="crm-service-secret", creator_id=str(user.id)
    )
    assert issued.token.count(".") == 2
    for name, secret in [("crm", "wrong"), ("unknown", "crm-service-secret"), ("crm", "")]:
        with pytest.raises(Unauthenticated):
            await service.issue_service_token(
                service_name=name, service_secret=secret, creator_id=str(user.id)
            )
    with pytest.raises(NotFound):
        await service.issue_service_token(
            service_name="crm", service_secret="crm-service-secret", creator_id=str(uuid.uuid4())
        )


async def test_purge_drops_only_stale_rows(service: AuthService, sessions: Any, clock: Any) -> None:
    user = await register(service)
    ended = await tokens_of(service)
    await service.logout(user_id=user.id, session_id=ended.session_id)
    clock.advance(days=8)
    live = await tokens_of(service)
    await service.purge_stale()
    async with sessions() as db:
        counts = {
            table: (await db.execute(text(f"SELECT count(*) FROM auth.{table}"))).scalar_one()
            for table in (
                "users",
                "sessions",
                "refresh_tokens",
                "login_attempts",
                "one_time_tokens",
            )
        }
    assert counts == {
        "users": 1,
        "sessions": 1,
        "refresh_tokens": 1,
        "login_attempts": 1,
        "one_time_tokens": 0,
    }
    assert await service.session_is_active(str(live.session_id))
