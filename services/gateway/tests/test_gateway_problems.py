"""The gRPC -> HTTP table and the problem documents, from real rich statuses."""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest

from huntaze_gateway.problems import GRPC_TO_HTTP, Problems, camel_field, retry_after_header
from huntaze_kit import errors
from huntaze_kit.rich_status import from_rpc_error, to_grpc_status

PROBLEMS = Problems("https://problems.test/")


def rpc_error(error: errors.DomainError) -> grpc.aio.AioRpcError:
    """What a client sees when a service raised `error` (the rich status in the trailers)."""
    status = to_grpc_status(error)
    return grpc.aio.AioRpcError(
        code=status.code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )


def plain_rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """A failure with no rich status: from grpc itself, or a crash."""
    return grpc.aio.AioRpcError(
        code=code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(),
        details=details,
    )


def answer(error: grpc.aio.AioRpcError) -> tuple[int, dict[str, str], dict[str, Any]]:
    response = PROBLEMS.from_error_details(from_rpc_error(error), "/api/x")
    assert response.media_type == "application/problem+json"
    return response.status_code, dict(response.headers), orjson.loads(response.body)


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        (errors.InvalidArgument(message="Bad page token.", reason="BAD_PAGE"), 400, "bad-request"),
        (
            errors.InvalidArgument.for_field("password", "Too weak.", reason="WEAK_PASSWORD"),
            422,
            "validation-error",
        ),
        (
            errors.Unauthenticated(message="Wrong email or password.", reason="BAD_LOGIN"),
            401,
            "unauthenticated",
        ),
        (errors.PermissionDenied(message="Not yours.", reason="NOT_OWNER"), 403, "forbidden"),
        (errors.NotFound(message="No such session.", reason="SESSION_NOT_FOUND"), 404, "not-found"),
        (errors.AlreadyExists(message="Email taken.", reason="EMAIL_TAKEN"), 409, "already-exists"),
        (
            errors.FailedPrecondition(message="Verify first.", reason="EMAIL_NOT_VERIFIED"),
            409,
            "failed-precondition",
        ),
        (
            errors.Conflict(message="Changed meanwhile.", reason="CONCURRENT_CHANGE"),
            409,
            "conflict",
        ),
        (
            errors.RateLimited(
                message="Slow down.", reason="LOGIN_THROTTLED", retry_after_seconds=12.2
            ),
            429,
            "too-many-requests",
        ),
        (
            errors.Unavailable(message="Mail relay down.", reason="MAIL_DOWN"),
            503,
            "service-unavailable",
        ),
    ],
)
def test_domain_errors_map_through_the_table(
    error: errors.DomainError, status: int, slug: str
) -> None:
    code, _headers, body = answer(rpc_error(error))
    assert code == status
    assert body["status"] == status
    assert body["type"] == f"https://problems.test/{slug}"
    assert body["code"] == error.reason
    assert body["detail"] == error.message
    assert body["instance"] == "/api/x"
    assert body["title"]
    assert GRPC_TO_HTTP[error.status_code].kind.status in {status, 400}


def test_an_unverified_email_has_a_problem_type_of_its_own() -> None:
    error = errors.PermissionDenied(message="Verify your email first.", reason="EMAIL_NOT_VERIFIED")
    code, _headers, body = answer(rpc_error(error))
    assert code == 403
    assert body["type"] == "https://problems.test/email-not-verified"
    assert body["title"] == "Email not verified"
    assert body["code"] == "EMAIL_NOT_VERIFIED"
    assert body["detail"] == "Verify your email first."


def test_field_violations_become_camel_case_errors() -> None:
    error = errors.InvalidArgument(
        message="Invalid.",
        reason="INVALID_PROFILE",
        violations=[
            errors.FieldViolation("display_name", "Too long."),
            errors.FieldViolation("client.ip_address", "Not an address."),
        ],
    )
    status, _, body = answer(rpc_error(error))
    assert status == 422
    assert body["errors"] == [
        {"field": "displayName", "message": "Too long."},
        {"field": "client.ipAddress", "message": "Not an address."},
    ]
    # The detail names the fields as the API does, too (the service wrote `display_name`).
    assert body["detail"] == "displayName: Too long. (and 1 more)"


def test_every_input_violation_answers_one_code() -> None:
    from_rules = errors.InvalidArgument.for_violations(
        [errors.FieldViolation("price_cents", "must be at most 100000000")]
    )
    _, _, body = answer(rpc_error(from_rules))
    assert (body["code"], body["detail"]) == (
        "VALIDATION_FAILED",
        "priceCents: must be at most 100000000",
    )


def test_unauthenticated_carries_a_bearer_challenge() -> None:
    _, headers, _ = answer(rpc_error(errors.Unauthenticated(message="No.", reason="BAD_LOGIN")))
    assert headers["www-authenticate"] == 'Bearer realm="huntaze"'
    _, headers, body = answer(
        rpc_error(errors.Unauthenticated(message="Token expired.", reason="TOKEN_EXPIRED"))
    )
    assert headers["www-authenticate"] == 'Bearer realm="huntaze", error="invalid_token"'
    assert body["code"] == "TOKEN_EXPIRED"


def test_throttling_carries_retry_after_in_whole_seconds() -> None:
    _, headers, _ = answer(
        rpc_error(errors.RateLimited(message="Wait.", reason="X", retry_after_seconds=12.2))
    )
    assert headers["retry-after"] == "13"
    _, headers, _ = answer(rpc_error(errors.RateLimited(message="Wait.", reason="X")))
    assert headers["retry-after"] == "1"
    assert retry_after_header(0.001) == "1"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.DATA_LOSS, 500),
        (grpc.StatusCode.UNIMPLEMENTED, 500),
        (grpc.StatusCode.CANCELLED, 500),
    ],
)
def test_failures_without_rich_status_leak_nothing(code: grpc.StatusCode, status: int) -> None:
    secret = "failed to connect to all addresses; ipv4:10.1.2.3:50051: Connection refused"
    got, _, body = answer(plain_rpc_error(code, secret))
    assert got == status
    assert "10.1.2.3" not in orjson.dumps(body).decode()
    assert body["detail"]
    assert "Connection refused" not in body["detail"]


def test_internal_errors_hide_even_a_domain_message() -> None:
    error = errors.DomainError(message="SELECT * FROM auth.users failed", reason="BOOM")
    status, _, body = answer(rpc_error(error))
    assert status == 500
    assert "SELECT" not in body["detail"]
    assert body["code"] == "INTERNAL"


def test_camel_field() -> None:
    assert camel_field("email") == "email"
    assert camel_field("new_password") == "newPassword"
    assert camel_field("goals.2") == "goals.2"
