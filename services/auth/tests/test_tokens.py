"""Access and service tokens as every service sees them: `huntaze_kit.identity.TokenVerifier`
accepts what auth signs and refuses anything forged, expired, misdirected or revoked."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_auth import repository
from huntaze_auth.service import AuthService, ClientInfo
from huntaze_kit.errors import Unauthenticated
from huntaze_kit.identity import TokenVerifier

PASSWORD = "violet-harbor-quantum-77"
CLIENT = ClientInfo(ip_address="198.51.100.7", user_agent="Firefox")


def verifier(service: AuthService, *, check_sessions: bool = True) -> TokenVerifier:
    return TokenVerifier(
        key_source=service.keyring,
        audience="huntaze",
        issuer="huntaze-auth",
        session_check=service.session_is_active if check_sessions else None,
    )


async def signed_in(service: AuthService) -> tuple[uuid.UUID, Any]:
    user = await service.register(
        email="ada@example.com", password=PASSWORD, name="Ada", client=CLIENT
    )
    result = await service.login(email="ada@example.com", password=PASSWORD, client=CLIENT)
    assert result.tokens is not None
    return user.id, result.tokens


async def signing_key(sessions: async_sessionmaker[AsyncSession]) -> tuple[str, Any]:
    async with sessions() as db:
        key = await repository.newest_active_signing_key(db)
    assert key is not None
    return key.kid, serialization.load_pem_private_key(key.private_key_pem.encode(), None)


async def test_access_token_is_accepted(service: AuthService) -> None:
    user_id, tokens = await signed_in(service)
    principal = await verifier(service).verify(tokens.access_token)
    assert principal.kind == "user"
    assert principal.user_id == str(user_id)
    assert principal.session_id == str(tokens.session_id)
    header = jwt.get_unverified_header(tokens.access_token)
    assert (header["alg"], header["typ"]) == ("EdDSA", "at+jwt")
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert {"iss", "aud", "sub", "sid", "jti", "iat", "nbf", "exp"} <= claims.keys()
    assert claims["email_verified"] is False


async def test_a_refresh_after_verification_carries_the_verified_claim(
    service: AuthService, outbox: Any
) -> None:
    _, tokens = await signed_in(service)
    check = verifier(service)
    assert not (await check.verify(tokens.access_token)).email_verified
    await service.verify_email(token=await outbox.verification_token())
    refreshed = await service.refresh_session(refresh_token=tokens.refresh_token, client=CLIENT)
    assert jwt.decode(refreshed.access_token, options={"verify_signature": False})["email_verified"]
    assert (await check.verify(refreshed.access_token)).email_verified


async def test_service_token_is_accepted(service: AuthService) -> None:
    user_id, _ = await signed_in(service)
    issued = await service.issue_service_token(
        service_name="crm", service_secret="crm-service-secret", creator_id=str(user_id)
    )
    principal = await verifier(service).verify(issued.token)
    assert principal.kind == "service"
    assert principal.service_name == "crm"
    assert principal.creator_id == str(user_id)
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 5 * 60


@pytest.mark.parametrize(
    "forgery",
    [
        "alg_none",
        "wrong_key",
        "wrong_aud",
        "wrong_iss",
        "expired",
        "wrong_typ",
        "unknown_kid",
        "hs256_with_public_key",
        "tampered",
        "not_yet_valid",
    ],
)
async def test_forged_or_misdirected_tokens_are_refused(
    service: AuthService, sessions: async_sessionmaker[AsyncSession], forgery: str
) -> None:
    user_id, tokens = await signed_in(service)
    kid, key = await signing_key(sessions)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "huntaze-auth",
        "aud": "huntaze",
        "sub": str(user_id),
        "sid": str(tokens.session_id),
        "jti": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 900,
    }
    headers: dict[str, Any] = {"kid": kid, "typ": "at+jwt"}
    # Control: these claims, signed with auth's key, pass; only the forgery makes a difference.
    genuine = jwt.encode(claims, key, algorithm="EdDSA", headers=headers)
    await verifier(service).verify(genuine)

    algorithm = "EdDSA"
    if forgery == "alg_none":
        key, algorithm = None, "none"
    elif forgery == "wrong_key":
        key = Ed25519PrivateKey.generate()
    elif forgery == "wrong_aud":
        claims["aud"] = "someone-else"
    elif forgery == "wrong_iss":
        claims["iss"] = "evil"
    elif forgery == "expired":
        claims.update(iat=now - 3600, nbf=now - 3600, exp=now - 60)
    elif forgery == "not_yet_valid":
        claims["nbf"] = now + 600
    elif forgery == "wrong_typ":
        headers["typ"] = "JWT"
    elif forgery == "unknown_kid":
        headers["kid"] = "no-such-key"
    elif forgery == "hs256_with_public_key":
        key = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        algorithm = "HS256"
    elif forgery == "tampered":
        claims["sub"] = str(uuid.uuid4())
    token = jwt.encode(claims, key, algorithm=algorithm, headers=headers)
    if forgery == "tampered":
        head, _, signature = genuine.split(".")
        token = ".".join([head, token.split(".")[1], signature])
    with pytest.raises(Unauthenticated):
        await verifier(service).verify(token)


async def test_revoked_session_is_refused_by_auth_itself(service: AuthService) -> None:
    user_id, tokens = await signed_in(service)
    await verifier(service).verify(tokens.access_token)
    await service.logout(user_id=user_id, session_id=tokens.session_id)
    with pytest.raises(Unauthenticated) as caught:
        await verifier(service).verify(tokens.access_token)
    assert caught.value.reason == "SESSION_REVOKED"


async def test_key_rotation_keeps_old_tokens_valid(service: AuthService, clock: Any) -> None:
    _, before = await signed_in(service)
    old_kid = jwt.get_unverified_header(before.access_token)["kid"]
    new_kid = await service.keyring.rotate()
    assert new_kid != old_kid
    after = await service.refresh_session(refresh_token=before.refresh_token, client=CLIENT)
    assert jwt.get_unverified_header(after.access_token)["kid"] == new_kid
    assert {k["kid"] for k in service.public_keys()["keys"]} == {old_kid, new_kid}

    fresh = verifier(service, check_sessions=False)
    await fresh.verify(before.access_token)
    await fresh.verify(after.access_token)

    # Once every token of the old key has expired, it is no longer published.
    clock.advance(minutes=20)
    await service.keyring.load()
    assert [k["kid"] for k in service.public_keys()["keys"]] == [new_kid]
