"""Access tokens verified at the edge, remembered until they expire.

A client sends the same access token with every request for up to 15 minutes. Verifying it
means parsing the JWT and checking an Ed25519 signature; the gateway does that once per token
and then answers from memory, still checking on every request that the token has not expired
and that its session has not been revoked (revocations arrive as events).
"""

from __future__ import annotations

import time

from huntaze_kit.errors import Unauthenticated
from huntaze_kit.identity import Principal, TokenVerifier

DEFAULT_MAX_ENTRIES = 20_000


class VerifiedTokens:
    def __init__(self, verifier: TokenVerifier, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.verifier = verifier
        self._max_entries = max_entries
        # Insertion-ordered: when full, the oldest entries go first.
        self._principals: dict[str, Principal] = {}

    def __len__(self) -> int:
        return len(self._principals)

    async def verify(self, token: str) -> Principal:
        """The token's principal; `Unauthenticated` when it is invalid, expired or revoked."""
        principal = self._principals.get(token)
        if principal is None or principal.expires_at <= time.time():
            if principal is not None:
                del self._principals[token]
            principal = await self.verifier.verify(token)
            self._remember(token, principal)
        elif principal.session_id is not None and self.verifier.revocations.is_revoked(
            principal.session_id
        ):
            raise Unauthenticated(message="Session revoked.", reason="SESSION_REVOKED")
        return principal

    def _remember(self, token: str, principal: Principal) -> None:
        if len(self._principals) >= self._max_entries:
            now = time.time()
            expired = [t for t, p in self._principals.items() if p.expires_at <= now]
            for stale in expired:
                del self._principals[stale]
            if len(self._principals) >= self._max_entries:
                # Still full of live tokens: forget the oldest tenth (they verify again).
                for oldest in list(self._principals)[: max(1, self._max_entries // 10)]:
                    del self._principals[oldest]
        self._principals[token] = principal
