"""Sealing: symmetric encryption of secrets that leave the service (tokens in events) or rest in
its tables (TOTP secrets), with Fernet keys only the auth service holds."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class UnsealError(Exception):
    """The sealed value was not made with any of our keys, or was altered."""


class Sealer:
    """Seals with the first key; opens with any, so keys can be rotated (newest first)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one sealing key is needed")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()

    def seal(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def unseal(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken as exc:
            raise UnsealError("cannot open the sealed value") from exc
