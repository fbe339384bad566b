"""Password hashing (argon2id) and password rules (length and zxcvbn strength)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

from huntaze_kit.errors import FieldViolation, InvalidArgument

MIN_LENGTH = 8
MAX_LENGTH = 128
# Longer input is never a valid password; refusing it early keeps hashing bounded.
MAX_CHECKED_LENGTH = 1024


@dataclass(frozen=True)
class Argon2Parameters:
    """argon2id cost. The defaults are OWASP's minimum: 19 MiB, 2 passes, 1 lane."""

    time_cost: int = 2
    memory_kib: int = 19_456
    parallelism: int = 1


@dataclass(frozen=True)
class Verification:
    valid: bool
    # A new hash with the current parameters, when the stored one used older ones.
    new_hash: str | None = None


class Passwords:
    """Hashes and verifies passwords off the event loop (argon2 releases the GIL)."""

    def __init__(self, parameters: Argon2Parameters, *, min_score: int = 3) -> None:
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        self._min_score = min_score
        # Verified against when the account does not exist, so that an unknown address costs
        # the same time as a wrong password.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, stored_hash: str | None, password: str) -> Verification:
        if len(password) > MAX_CHECKED_LENGTH:
            return Verification(valid=False)
        try:
            self._hasher.verify(stored_hash or self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verification(valid=False)
        if stored_hash is None:
            return Verification(valid=False)
        if self._hasher.check_needs_rehash(stored_hash):
            return Verification(valid=True, new_hash=self._hasher.hash(password))
        return Verification(valid=True)

    async def verify(self, stored_hash: str | None, password: str) -> Verification:
        """Checks `password`; with `stored_hash=None` spends the same time and fails."""
        return await asyncio.to_thread(self._verify, stored_hash, password)

    def check_rules(
        self, password: str, *, user_inputs: Iterable[str], field: str = "password"
    ) -> None:
        """Raises `InvalidArgument` unless `password` is 8 to 128 characters and strong enough
        (zxcvbn, which also refuses common passwords and ones built from the user's details)."""
        if len(password) < MIN_LENGTH:
            raise InvalidArgument.for_field(
                field, f"must be at least {MIN_LENGTH} characters", reason="WEAK_PASSWORD"
            )
        if len(password) > MAX_LENGTH:
            raise InvalidArgument.for_field(
                field, f"must be at most {MAX_LENGTH} characters", reason="WEAK_PASSWORD"
            )
        inputs = [value for value in user_inputs if value]
        result = zxcvbn(password, user_inputs=inputs, max_length=MAX_LENGTH)
        if int(result["score"]) >= self._min_score:
            return
        feedback = result.get("feedback") or {}
        hints = [str(feedback.get("warning") or ""), *map(str, feedback.get("suggestions") or [])]
        detail = " ".join(hint for hint in hints if hint) or "Use a longer, less common password."
        raise InvalidArgument(
            message=f"password: too easy to guess. {detail}",
            reason="WEAK_PASSWORD",
            violations=[FieldViolation(field, f"too easy to guess. {detail}")],
        )
