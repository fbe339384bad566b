"""Tokens: signed JWTs (access and service tokens), the keys that sign them, and opaque
random tokens (refresh tokens, email links, challenges) stored only as SHA-256 hashes.

Access token: header `alg=EdDSA`, `typ=at+jwt`, `kid`; claims `iss`, `aud`, `sub` (user id),
`sid` (session id), `email_verified` (whether the address was verified when the token was
issued), `jti`, `iat`, `nbf`, `exp` (15 minutes). Service token: `typ=svc+jwt`,
`sub=service:<name>`, `creator_id`, `scope`, 5 minutes. Both verify with
`huntaze_kit.identity.TokenVerifier` against the JWK Set of `GetPublicKeys`.

Signing keys are Ed25519, kept in `auth.signing_keys` and made on first start. The newest
unretired key signs; when it is older than the rotation age a new one takes over and the old
one is retired, yet stays published until every token it signed has expired.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_auth import repository
from huntaze_kit.identity import (
    ACCESS_TOKEN_TYPE,
    EMAIL_VERIFIED_CLAIM,
    LEEWAY_SECONDS,
    SERVICE_SUBJECT_PREFIX,
    SERVICE_TOKEN_TYPE,
    SIGNING_ALGORITHM,
)
from huntaze_kit.logging import get_logger

SERVICE_SCOPE = "creator:act"

log = get_logger(__name__)

Clock = Callable[[], datetime]


def new_opaque_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class _Signer:
    kid: str
    key: Ed25519PrivateKey


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint of an OKP key: its `kid`."""
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def generate_signing_key() -> tuple[str, str, dict[str, Any]]:
    """A new Ed25519 key: (kid, private key PEM, public JWK)."""
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    jwk: dict[str, Any] = dict(OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True))
    kid = _thumbprint(jwk)
    jwk.update({"kid": kid, "use": "sig", "alg": SIGNING_ALGORITHM})
    return kid, pem, jwk


def _load_private_key(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("signing keys must be Ed25519")
    return key


class KeyRing:
    """The signing keys, cached in memory, read from and written to `auth.signing_keys`.

    It is also the `KeySource` of auth's own `TokenVerifier`: `fetch_jwks` reloads from the
    database, so a key another replica made is found on its first use.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        issuer: str,
        audience: str,
        access_ttl: timedelta,
        service_ttl: timedelta,
        rotation_age: timedelta,
        clock: Clock,
    ) -> None:
        self._sessions = session_factory
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.service_ttl = service_ttl
        self._rotation_age = rotation_age
        self._clock = clock
        self._signer: _Signer | None = None
        self._jwks: dict[str, Any] = {"keys": []}

    @property
    def _publish_retired_for(self) -> timedelta:
        return max(self.access_ttl, self.service_ttl) + timedelta(seconds=LEEWAY_SECONDS + 60)

    async def load(self) -> None:
        """Reads the keys; makes the first one, or a new one when the newest is too old."""
        now = self._clock()
        async with self._sessions() as db:
            newest = await repository.newest_active_signing_key(db)
            if newest is None or newest.created_at <= now - self._rotation_age:
                await repository.advisory_lock(db, "signing-keys")
                newest = await repository.newest_active_signing_key(db)
                if newest is None or newest.created_at <= now - self._rotation_age:
                    kid, pem, jwk = generate_signing_key()
                    await repository.insert_signing_key(
                        db, kid=kid, private_key_pem=pem, public_jwk=jwk, now=now
                    )
                    await repository.retire_signing_keys(db, except_kid=kid, now=now)
                    log.info("signing_key_created", kid=kid)
                await db.commit()
            keys = await repository.list_signing_keys(
                db, retired_after=now - self._publish_retired_for
            )
        active = [key for key in keys if key.retired_at is None]
        if not active:
            raise RuntimeError("no active signing key")
        signer = active[0]
        self._signer = _Signer(kid=signer.kid, key=_load_private_key(signer.private_key_pem))
        self._jwks = {"keys": [dict(key.public_jwk) for key in keys]}

    async def rotate(self) -> str:
        """Makes a new signing key now and retires the others; returns its kid."""
        now = self._clock()
        kid, pem, jwk = generate_signing_key()
        async with self._sessions() as db:
            await repository.advisory_lock(db, "signing-keys")
            await repository.insert_signing_key(
                db, kid=kid, private_key_pem=pem, public_jwk=jwk, now=now
            )
            await repository.retire_signing_keys(db, except_kid=kid, now=now)
            await db.commit()
        log.info("signing_key_rotated", kid=kid)
        await self.load()
        return kid

    def jwks(self) -> dict[str, Any]:
        return self._jwks

    async def fetch_jwks(self) -> dict[str, Any]:
        await self.load()
        return self._jwks

    def _sign(self, claims: dict[str, Any], token_type: str) -> str:
        if self._signer is None:
            raise RuntimeError("KeyRing.load() was not called")
        return jwt.encode(
            claims,
            self._signer.key,
            algorithm=SIGNING_ALGORITHM,
            headers={"kid": self._signer.kid, "typ": token_type},
        )

    def issue_access_token(
        self,
        *,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        email_verified: bool,
        not_after: datetime | None = None,
    ) -> IssuedToken:
        """An access token for this session; never valid past `not_after` (the session's end)."""
        now = self._clock()
        expires_at = now + self.access_ttl
        if not_after is not None:
            expires_at = min(expires_at, not_after)
        expires_at = expires_at.replace(microsecond=0)
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "sid": str(session_id),
            EMAIL_VERIFIED_CLAIM: email_verified,
            "jti": uuid.uuid4().hex,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        return IssuedToken(self._sign(claims, ACCESS_TOKEN_TYPE), expires_at)

    def issue_service_token(self, *, service_name: str, creator_id: uuid.UUID) -> IssuedToken:
        now = self._clock()
        expires_at = (now + self.service_ttl).replace(microsecond=0)
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": f"{SERVICE_SUBJECT_PREFIX}{service_name}",
            "creator_id": str(creator_id),
            "scope": SERVICE_SCOPE,
            "jti": uuid.uuid4().hex,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        return IssuedToken(self._sign(claims, SERVICE_TOKEN_TYPE), expires_at)
