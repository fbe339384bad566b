"""Who is calling: access tokens for users, service tokens for services acting for a creator.

Tokens are JWTs signed by the auth service with Ed25519 (EdDSA). Every service verifies them
locally with auth's public keys, fetched once, cached, and fetched again when a token names an
unknown `kid`. Revoked sessions reach every verifier as `auth.session.revoked` events, so a
logged-out access token stops working at once instead of at its expiry.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol

import jwt
from jwt.algorithms import OKPAlgorithm

from huntaze_kit.errors import PermissionDenied, Unauthenticated
from huntaze_kit.logging import get_logger

ACCESS_TOKEN_TYPE = "at+jwt"
SERVICE_TOKEN_TYPE = "svc+jwt"
SIGNING_ALGORITHM = "EdDSA"
SERVICE_SUBJECT_PREFIX = "service:"
# Access-token claim: whether the user had verified their email address when it was issued
# (the OpenID Connect name). A refresh after verification carries the new value.
EMAIL_VERIFIED_CLAIM = "email_verified"
# A token is never accepted this long after its expiry (clock skew between machines).
LEEWAY_SECONDS = 5

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller. For a user, `creator_id` is the user; for a service, the creator
    it acts for. `email_verified` is the user's access-token claim (False for services, which
    are never held to it)."""

    kind: Literal["user", "service"]
    subject: str
    creator_id: str
    token_id: str
    expires_at: float
    session_id: str | None = None
    service_name: str | None = None
    scopes: frozenset[str] = frozenset()
    email_verified: bool = False

    @property
    def user_id(self) -> str:
        if self.kind != "user":
            raise PermissionDenied(message="This method is for users only.", reason="USER_ONLY")
        return self.subject


_principal: ContextVar[Principal | None] = ContextVar("huntaze_principal", default=None)


def current_principal() -> Principal:
    """The caller of the current gRPC method; raises when the method was called anonymously."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated(message="Authentication required.", reason="UNAUTHENTICATED")
    return principal


def optional_principal() -> Principal | None:
    return _principal.get()


class _ActingAs(AbstractContextManager[None]):
    # A class, not a generator-based context manager: it runs around every call.
    __slots__ = ("_principal", "_token")
    _token: Token[Principal | None]

    def __init__(self, principal: Principal | None) -> None:
        self._principal = principal

    def __enter__(self) -> None:
        self._token = _principal.set(self._principal)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _principal.reset(self._token)


def acting_as(principal: Principal | None) -> AbstractContextManager[None]:
    """Makes `principal` the caller for the code inside the `with` block."""
    return _ActingAs(principal)


class KeySource(Protocol):
    async def fetch_jwks(self) -> dict[str, Any]: ...


class RevocationList:
    """Sessions revoked before their tokens expire. Entries drop out once no token of theirs
    can still be valid."""

    def __init__(self, *, retention_seconds: float = 16 * 60) -> None:
        self._revoked: dict[str, float] = {}
        self._retention = retention_seconds

    def revoke(self, session_id: str, *, at: float | None = None) -> None:
        self._revoked[session_id] = (at or time.time()) + self._retention
        self._prune()

    def is_revoked(self, session_id: str) -> bool:
        until = self._revoked.get(session_id)
        return until is not None and until > time.time()

    def __len__(self) -> int:
        return len(self._revoked)

    def _prune(self) -> None:
        if len(self._revoked) < 1024:
            return
        now = time.time()
        for session_id in [sid for sid, until in self._revoked.items() if until <= now]:
            del self._revoked[session_id]


@dataclass
class _KeyCache:
    keys: dict[str, Any] = field(default_factory=dict)
    fetched_at: float = 0.0


class VerifiedTokens:
    """Tokens whose signature and claims were verified, with their principal, until they
    expire: a client sends the same access token with every request for up to 15 minutes,
    and parsing it and checking its Ed25519 signature costs far more than a look-up.

    Bounded: when full, expired entries go first, then the oldest tenth (they verify again).
    Keyed by the whole token, so only the very string that was verified is ever found. A token
    stays remembered if its signing key is withdrawn meanwhile: auth withdraws a key only once
    every token it signed has expired.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        # Insertion-ordered: the oldest entries come first.
        self._principals: dict[str, Principal] = {}

    def __len__(self) -> int:
        return len(self._principals)

    def get(self, token: str, *, now: float) -> Principal | None:
        principal = self._principals.get(token)
        if principal is not None and principal.expires_at <= now:
            del self._principals[token]
            return None
        return principal

    def remember(self, token: str, principal: Principal, *, now: float) -> None:
        if principal.expires_at <= now:
            return
        if len(self._principals) >= self._max_entries:
            for stale in [t for t, p in self._principals.items() if p.expires_at <= now]:
                del self._principals[stale]
            if len(self._principals) >= self._max_entries:
                for oldest in list(self._principals)[: max(1, self._max_entries // 10)]:
                    del self._principals[oldest]
        self._principals[token] = principal


DEFAULT_VERIFIED_TOKENS = 20_000


class TokenVerifier:
    """Verifies access and service tokens against the auth service's published keys.

    A token's signature and claims are checked once; later calls with the same token answer
    from `verified` until it expires. Revocations (and `session_check`, where given) are
    checked on every call.
    """

    def __init__(
        self,
        *,
        key_source: KeySource,
        audience: str,
        issuer: str,
        revocations: RevocationList | None = None,
        min_refresh_interval: float = 10.0,
        session_check: Callable[[str], Awaitable[bool]] | None = None,
        max_verified_tokens: int = DEFAULT_VERIFIED_TOKENS,
    ) -> None:
        self._key_source = key_source
        self._audience = audience
        self._issuer = issuer
        self.revocations = revocations or RevocationList()
        self.verified = VerifiedTokens(max_verified_tokens)
        self._cache = _KeyCache()
        self._lock = asyncio.Lock()
        self._min_refresh_interval = min_refresh_interval
        self._session_check = session_check

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            fresh_enough = time.monotonic() - self._cache.fetched_at < self._min_refresh_interval
            if self._cache.keys and (not force or fresh_enough):
                return
            jwks = await self._key_source.fetch_jwks()
            keys: dict[str, Any] = {}
            for jwk in jwks.get("keys", []):
                if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and "kid" in jwk:
                    keys[jwk["kid"]] = OKPAlgorithm.from_jwk(json.dumps(jwk))
            self._cache = _KeyCache(keys=keys, fetched_at=time.monotonic())

    async def _key_for(self, kid: str) -> Any:
        key = self._cache.keys.get(kid)
        if key is None:
            await self._refresh(force=True)
            key = self._cache.keys.get(kid)
        if key is None:
            raise _invalid("unknown signing key")
        return key

    async def verify(self, token: str, *, check_session: bool = True) -> Principal:
        """A `Principal` for a valid token; `Unauthenticated` for anything else.

        `check_session=False` skips `session_check` (never the revocation list): for a caller
        that checks the session itself, in the same database round trip as its own read.
        """
        now = time.time()
        principal = self.verified.get(token, now=now)
        if principal is None:
            principal = await self._verify_signed(token)
            self.verified.remember(token, principal, now=now)
        session_id = principal.session_id
        if session_id is not None:
            if self.revocations.is_revoked(session_id):
                raise Unauthenticated(message="Session revoked.", reason="SESSION_REVOKED")
            if (
                check_session
                and self._session_check is not None
                and not await self._session_check(session_id)
            ):
                raise Unauthenticated(message="Session revoked.", reason="SESSION_REVOKED")
        return principal

    async def _verify_signed(self, token: str) -> Principal:
        """Signature, header and claims: the principal the token names."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid("malformed token") from exc
        if header.get("alg") != SIGNING_ALGORITHM:
            raise _invalid("unexpected algorithm")
        token_type = header.get("typ")
        if token_type not in (ACCESS_TOKEN_TYPE, SERVICE_TOKEN_TYPE):
            raise _invalid("unexpected token type")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise _invalid("missing key id")
        key = await self._key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[SIGNING_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "jti", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated(message="Token expired.", reason="TOKEN_EXPIRED") from exc
        except jwt.PyJWTError as exc:
            raise _invalid(str(exc)) from exc
        return _principal_from_claims(token_type, claims)


def _principal_from_claims(token_type: str, claims: dict[str, Any]) -> Principal:
    subject = str(claims["sub"])
    token_id = str(claims["jti"])
    expires_at = float(claims["exp"])
    if token_type == ACCESS_TOKEN_TYPE:
        session_id = claims.get("sid")
        if not isinstance(session_id, str) or subject.startswith(SERVICE_SUBJECT_PREFIX):
            raise _invalid("malformed access token")
        return Principal(
            kind="user",
            subject=subject,
            creator_id=subject,
            session_id=session_id,
            token_id=token_id,
            expires_at=expires_at,
            email_verified=claims.get(EMAIL_VERIFIED_CLAIM) is True,
        )
    creator_id = claims.get("creator_id")
    scope = claims.get("scope", "")
    if not subject.startswith(SERVICE_SUBJECT_PREFIX) or not isinstance(creator_id, str):
        raise _invalid("malformed service token")
    return Principal(
        kind="service",
        subject=subject,
        creator_id=creator_id,
        service_name=subject.removeprefix(SERVICE_SUBJECT_PREFIX),
        scopes=frozenset(str(scope).split()),
        token_id=token_id,
        expires_at=expires_at,
    )


def _invalid(detail: str) -> Unauthenticated:
    log.info("token_rejected", detail=detail)
    return Unauthenticated(message="Invalid token.", reason="INVALID_TOKEN")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `authorization: Bearer <token>` value, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class StaticKeySource:
    """A fixed JWK Set: for the service that holds the keys itself, and for tools."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._jwks = jwks

    async def fetch_jwks(self) -> dict[str, Any]:
        return self._jwks
