"""The platform's request signature and its "dynamic rules", exactly as public clients compute them.

    msg  = static_param + "\\n" + time + "\\n" + path_and_query + "\\n" + user_id
    sha  = hex(SHA1(msg))
    cs   = abs(sum(ord(sha[i]) for i in checksum_indexes) + checksum_constant)
    sign = f"{prefix}:{sha}:{cs:x}:{suffix}"

The simulator publishes its current rules (in the three shapes clients parse) and rotates them on
command; `sign_request` is the reference client-side signer the tests (and a worker's tests) use.
"""

from __future__ import annotations

import hashlib
import random
import string
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

# Every rule set seen in the wild, 2021 to 2026, carries this same token.
APP_TOKEN = "33d57ade8c02dbc5a333db99ff9ae26a"
CHECKSUM_INDEX_COUNT = 32
SHA1_HEX_LENGTH = 40
RulesFormat = Literal["format", "prefix", "ofauth"]


class DynamicRules(BaseModel):
    """One rule set: what a web build signs with."""

    static_param: str
    prefix: str
    suffix: str
    checksum_indexes: list[int]
    checksum_constant: int
    app_token: str = APP_TOKEN
    revision: str

    def published(self, shape: RulesFormat = "ofauth") -> dict[str, Any]:
        """The rules as a publisher serves them: shape A ("format"), B ("prefix") or C (both)."""
        template = f"{self.prefix}:{{}}:{{:x}}:{self.suffix}"
        if shape == "format":
            return {
                "static_param": self.static_param,
                "format": template,
                "checksum_indexes": self.checksum_indexes,
                "checksum_constant": self.checksum_constant,
                "app_token": self.app_token,
                "remove_headers": [],
            }
        if shape == "prefix":
            return {
                "app-token": self.app_token,
                "static_param": self.static_param,
                "prefix": self.prefix,
                "suffix": self.suffix,
                "checksum_constant": self.checksum_constant,
                "checksum_indexes": self.checksum_indexes,
            }
        return {
            "end": self.suffix,
            "start": self.prefix,
            "format": template,
            "prefix": self.prefix,
            "suffix": self.suffix,
            "revision": self.revision,
            "app_token": self.app_token,
            "static_param": self.static_param,
            "checksum_indexes": self.checksum_indexes,
            "checksum_constant": self.checksum_constant,
        }

    @classmethod
    def from_published(cls, body: dict[str, Any]) -> DynamicRules:
        """Parses any of the three published shapes (what a client does with the rules URL)."""
        prefix = body.get("prefix") or body.get("start")
        suffix = body.get("suffix") or body.get("end")
        if (prefix is None or suffix is None) and "format" in body:
            fields = str(body["format"]).split(":")
            prefix, suffix = fields[0], fields[-1]
        return cls(
            static_param=body["static_param"],
            prefix=str(prefix),
            suffix=str(suffix),
            checksum_indexes=list(body["checksum_indexes"]),
            checksum_constant=int(body["checksum_constant"]),
            app_token=body.get("app_token") or body.get("app-token") or APP_TOKEN,
            revision=body.get("revision", ""),
        )


def compute_sign(rules: DynamicRules, *, path_and_query: str, user_id: str, time: str) -> str:
    """The `sign` header for one request (the HTTP method and body are not covered)."""
    message = "\n".join([rules.static_param, time, path_and_query, user_id])
    sha = hashlib.sha1(message.encode("utf-8")).hexdigest()  # noqa: S324 (the platform's choice)
    digits = sha.encode("ascii")
    checksum = abs(sum(digits[i] for i in rules.checksum_indexes) + rules.checksum_constant)
    return f"{rules.prefix}:{sha}:{checksum:x}:{rules.suffix}"


def sign_request(
    rules: DynamicRules, *, path_and_query: str, user_id: str | int, time_ms: int
) -> dict[str, str]:
    """The signed headers a client adds: `sign`, `time`, `app-token` (`user-id` is the caller's)."""
    time = str(time_ms)
    return {
        "sign": compute_sign(rules, path_and_query=path_and_query, user_id=str(user_id), time=time),
        "time": time,
        "app-token": rules.app_token,
    }


def generate_rules(
    rng: random.Random, *, now: datetime, previous: DynamicRules | None = None
) -> DynamicRules:
    """A rule set for a web build made at `now`: a larger prefix, suffix = build time in hex."""
    alphabet = string.ascii_letters + string.digits
    prefix = (
        int(previous.prefix) + rng.randint(100, 1500) if previous else rng.randint(40000, 60000)
    )
    build_hex = "".join(rng.choice("0123456789abcdef") for _ in range(10))
    return DynamicRules(
        static_param="".join(rng.choice(alphabet) for _ in range(32)),
        prefix=str(prefix),
        suffix=f"{int(now.timestamp()):x}",
        checksum_indexes=sorted(
            rng.randrange(SHA1_HEX_LENGTH) for _ in range(CHECKSUM_INDEX_COUNT)
        ),
        checksum_constant=rng.randint(-500, 500),
        revision=f"{now.astimezone(UTC):%Y%m%d%H%M}-{build_hex}",
    )
