"""TOTP (RFC 6238) secrets, codes and QR codes, and recovery codes."""

from __future__ import annotations

import hashlib
import io
import secrets
from datetime import datetime

import pyotp
import segno

ISSUER = "Huntaze"
RECOVERY_CODE_COUNT = 10
# Codes one step either side of now are accepted (clock drift between phone and server).
VALID_WINDOW = 1
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 16  # 16 symbols of 31: about 79 bits


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, *, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", scale=4, xmldecl=False)
    return buffer.getvalue().decode()


def is_totp_code(code: str) -> bool:
    return len(code) == 6 and code.isascii() and code.isdigit()


def matching_step(secret: str, code: str, *, now: datetime, after_step: int | None) -> int | None:
    """The time step `code` belongs to, when it is valid now and newer than `after_step`
    (so that a code, once used, never works again); else None."""
    if not is_totp_code(code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for offset in range(-VALID_WINDOW, VALID_WINDOW + 1):
        step = current + offset
        if after_step is not None and step <= after_step:
            continue
        if secrets.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def was_used(secret: str, code: str, *, now: datetime, last_step: int | None) -> bool:
    """Whether `code` is valid now but belongs to a step at or before `last_step`, the last
    one accepted: a replay, which is refused, yet deserves a better answer than "invalid"."""
    if last_step is None or not is_totp_code(code):
        return False
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    return any(
        secrets.compare_digest(totp.generate_otp(step), code)
        for step in range(current - VALID_WINDOW, min(current + VALID_WINDOW, last_step) + 1)
    )


def new_recovery_codes() -> list[str]:
    """Ten codes shaped `xxxx-xxxx-xxxx-xxxx`, shown to the user once."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append("-".join(raw[i : i + 4] for i in range(0, _RECOVERY_LENGTH, 4)))
    return codes


def recovery_code_hash(code: str) -> bytes:
    """Hashes a recovery code as typed: case, spaces and dashes do not matter."""
    normalised = "".join(code.lower().split()).replace("-", "")
    return hashlib.sha256(normalised.encode()).digest()
