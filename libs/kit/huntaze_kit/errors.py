"""Domain errors. Services raise these; one interceptor turns them into gRPC statuses.

Each error carries a stable machine-readable `reason` (e.g. `EMAIL_TAKEN`) and, where useful,
field violations or a retry delay. They travel as the standard rich error model
(`google.rpc.Status` with `ErrorInfo`, `BadRequest` and `RetryInfo` details), which the gateway
turns into RFC 9457 problem documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

ERROR_DOMAIN = "huntaze.app"
# The one reason of every answer that refuses input field by field.
VALIDATION_FAILED = "VALIDATION_FAILED"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


def describe_violations(violations: Sequence[FieldViolation]) -> str:
    """`name: at most 80 characters (and 2 more)`: the first violation, and how many follow."""
    first = violations[0]
    message = f"{first.field}: {first.description}"
    if len(violations) > 1:
        message += f" (and {len(violations) - 1} more)"
    return message


@dataclass
class DomainError(Exception):
    """Base of every expected failure. `message` is safe to show to the caller."""

    message: str
    reason: str = "ERROR"
    violations: list[FieldViolation] = field(default_factory=list)
    retry_after_seconds: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    status_code = grpc.StatusCode.UNKNOWN

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class InvalidArgument(DomainError):
    status_code = grpc.StatusCode.INVALID_ARGUMENT

    @classmethod
    def for_field(
        cls, field_name: str, description: str, *, reason: str = VALIDATION_FAILED
    ) -> InvalidArgument:
        return cls.for_violations([FieldViolation(field_name, description)], reason=reason)

    @classmethod
    def for_violations(
        cls, violations: Sequence[FieldViolation], *, reason: str = VALIDATION_FAILED
    ) -> InvalidArgument:
        return cls(
            message=describe_violations(violations), reason=reason, violations=list(violations)
        )


class NotFound(DomainError):
    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    status_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    status_code = grpc.StatusCode.FAILED_PRECONDITION


class Conflict(DomainError):
    """A concurrent change won; the caller may retry."""

    status_code = grpc.StatusCode.ABORTED


class Unauthenticated(DomainError):
    status_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    status_code = grpc.StatusCode.PERMISSION_DENIED


class RateLimited(DomainError):
    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DomainError):
    status_code = grpc.StatusCode.UNAVAILABLE
