"""RFC 9457 problem documents: every error the gateway answers is `application/problem+json`.

gRPC statuses become HTTP statuses in one table, `GRPC_TO_HTTP`. A problem carries `type`,
`title`, `status`, `detail` and `instance`, plus two extensions: `code`, the machine-readable
reason (the upstream's `ErrorInfo.reason`, or the gateway's own), and `errors`, the field
violations as `{field, message}` with camelCase field names, as in the API.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import grpc
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from huntaze_kit.errors import (
    VALIDATION_FAILED,
    DomainError,
    FieldViolation,
    describe_violations,
)
from huntaze_kit.logging import get_logger
from huntaze_kit.rich_status import ErrorDetails, from_rpc_error

PROBLEM_MEDIA_TYPE = "application/problem+json"
AUTH_REALM = "huntaze"
# Reasons meaning "a token was presented and it is no good" (RFC 6750 `invalid_token`).
TOKEN_REASONS = frozenset({"INVALID_TOKEN", "TOKEN_EXPIRED", "SESSION_REVOKED"})

log = get_logger(__name__)


class FieldError(BaseModel):
    field: str = Field(description="The offending field, camelCase, dotted for nested ones.")
    message: str = Field(description="What is wrong with it.")


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(description="URI naming the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong this time, for a person.")
    instance: str = Field(description="The path of the request that failed.")
    code: str = Field(description="Stable machine-readable reason, e.g. `EMAIL_TAKEN`.")
    errors: list[FieldError] | None = Field(
        default=None, description="Field violations, when the input was at fault."
    )


class ProblemResponse(Response):
    media_type = PROBLEM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of problem: its HTTP status, `type` slug, `title` and default `detail`."""

    status: int
    slug: str
    title: str
    detail: str


@dataclass(frozen=True, slots=True)
class GrpcRow:
    kind: Kind
    # Used instead of `kind` when the status carries field violations.
    with_violations: Kind | None = None
    # Whether the upstream's message may be shown (only ever when it comes with an ErrorInfo,
    # i.e. from a domain error, whose messages are written for the caller).
    expose_message: bool = True


BAD_REQUEST = Kind(400, "bad-request", "Bad request", "The request is not valid.")
MALFORMED_JSON = Kind(400, "malformed-json", "Malformed JSON", "The body is not valid JSON.")
VALIDATION = Kind(422, "validation-error", "Validation failed", "Some fields are not valid.")
UNAUTHENTICATED = Kind(401, "unauthenticated", "Unauthenticated", "Authentication is required.")
FORBIDDEN = Kind(403, "forbidden", "Forbidden", "You may not do this.")
NOT_FOUND = Kind(404, "not-found", "Not found", "Nothing was found here.")
METHOD_NOT_ALLOWED = Kind(
    405, "method-not-allowed", "Method not allowed", "This method is not allowed here."
)
CONFLICT = Kind(409, "conflict", "Conflict", "The request conflicts with the current state.")
ALREADY_EXISTS = Kind(409, "already-exists", "Already exists", "This already exists.")
FAILED_PRECONDITION = Kind(
    409, "failed-precondition", "Failed precondition", "This cannot be done in the current state."
)
BODY_TOO_LARGE = Kind(413, "body-too-large", "Content too large", "The request body is too large.")
UNSUPPORTED_MEDIA_TYPE = Kind(
    415, "unsupported-media-type", "Unsupported media type", "Send the body as application/json."
)
TOO_MANY_REQUESTS = Kind(
    429, "too-many-requests", "Too many requests", "Too many attempts; try again later."
)
INTERNAL = Kind(500, "internal-error", "Internal error", "An unexpected error occurred.")
UNAVAILABLE = Kind(
    503, "service-unavailable", "Service unavailable", "The service is unavailable; try again."
)
UPSTREAM_TIMEOUT = Kind(
    504, "upstream-timeout", "Upstream timeout", "The service took too long to answer."
)
EMAIL_NOT_VERIFIED = Kind(
    403,
    "email-not-verified",
    "Email not verified",
    "Verify your email address first: open the link in the email we sent you.",
)
# Upstream (status, reason) pairs with a kind (and so a `type`) of their own, for clients to
# act on.
REASON_KINDS: Mapping[tuple[grpc.StatusCode, str], Kind] = {
    (grpc.StatusCode.PERMISSION_DENIED, "EMAIL_NOT_VERIFIED"): EMAIL_NOT_VERIFIED,
}

# The one place where gRPC statuses become HTTP statuses. Anything not listed is a 500.
GRPC_TO_HTTP: Mapping[grpc.StatusCode, GrpcRow] = {
    grpc.StatusCode.INVALID_ARGUMENT: GrpcRow(BAD_REQUEST, with_violations=VALIDATION),
    grpc.StatusCode.OUT_OF_RANGE: GrpcRow(BAD_REQUEST, with_violations=VALIDATION),
    grpc.StatusCode.UNAUTHENTICATED: GrpcRow(UNAUTHENTICATED),
    grpc.StatusCode.PERMISSION_DENIED: GrpcRow(FORBIDDEN),
    grpc.StatusCode.NOT_FOUND: GrpcRow(NOT_FOUND),
    grpc.StatusCode.ALREADY_EXISTS: GrpcRow(ALREADY_EXISTS),
    grpc.StatusCode.FAILED_PRECONDITION: GrpcRow(FAILED_PRECONDITION),
    grpc.StatusCode.ABORTED: GrpcRow(CONFLICT),
    grpc.StatusCode.RESOURCE_EXHAUSTED: GrpcRow(TOO_MANY_REQUESTS),
    grpc.StatusCode.UNAVAILABLE: GrpcRow(UNAVAILABLE),
    grpc.StatusCode.DEADLINE_EXCEEDED: GrpcRow(UPSTREAM_TIMEOUT),
}
_INTERNAL_ROW = GrpcRow(INTERNAL, expose_message=False)

# Kinds by HTTP status, for the gateway's own HTTP errors (routing, body limits).
_KINDS_BY_STATUS = {
    kind.status: kind
    for kind in (
        BAD_REQUEST,
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        CONFLICT,
        BODY_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        TOO_MANY_REQUESTS,
        INTERNAL,
        UNAVAILABLE,
        UPSTREAM_TIMEOUT,
    )
}


def camel_field(name: str) -> str:
    """`client.ip_address` -> `client.ipAddress`: proto field paths in the API's spelling."""
    return ".".join(to_camel(part) if "_" in part else part for part in name.split("."))


def retry_after_header(seconds: float | None) -> str:
    """A Retry-After value in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds or 1)))


class ApiProblem(Exception):
    """Raised by gateway code to answer with a problem document."""

    def __init__(
        self,
        kind: Kind,
        *,
        code: str,
        detail: str | None = None,
        errors: Iterable[FieldViolation] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or kind.detail)
        self.kind = kind
        self.code = code
        self.detail = detail or kind.detail
        self.errors = list(errors)
        self.headers = dict(headers or {})


class Problems:
    """Renders problem documents; `type` URIs start with `type_base`."""

    def __init__(self, type_base: str) -> None:
        self._type_base = type_base if type_base.endswith("/") else type_base + "/"

    def document(
        self,
        kind: Kind,
        *,
        instance: str,
        code: str,
        detail: str | None = None,
        errors: Iterable[FieldViolation] = (),
        extensions: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self._type_base + kind.slug,
            "title": kind.title,
            "status": kind.status,
            "detail": detail or kind.detail,
            "instance": instance,
            "code": code,
        }
        field_errors = [{"field": v.field, "message": v.description} for v in errors]
        if field_errors:
            body["errors"] = field_errors
        if extensions:
            body.update(extensions)
        return body

    def response(
        self,
        kind: Kind,
        *,
        instance: str,
        code: str,
        detail: str | None = None,
        errors: Iterable[FieldViolation] = (),
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> ProblemResponse:
        return ProblemResponse(
            self.document(
                kind,
                instance=instance,
                code=code,
                detail=detail,
                errors=errors,
                extensions=extensions,
            ),
            status_code=kind.status,
            headers=headers,
        )

    def from_api_problem(self, problem: ApiProblem, instance: str) -> ProblemResponse:
        return self.response(
            problem.kind,
            instance=instance,
            code=problem.code,
            detail=problem.detail,
            errors=problem.errors,
            headers=problem.headers,
        )

    def from_error_details(self, error: ErrorDetails, instance: str) -> ProblemResponse:
        """The problem for a failed upstream call (or a domain error raised at the edge)."""
        kind, code, detail, violations = describe(error)
        headers: dict[str, str] = {}
        if kind.status == 401:
            challenge = f'Bearer realm="{AUTH_REALM}"'
            if error.reason in TOKEN_REASONS:
                challenge += ', error="invalid_token"'
            headers["WWW-Authenticate"] = challenge
        elif kind.status in {429, 503}:
            # An unavailable upstream is a passing state (a restart, a rollout): say when to retry.
            headers["Retry-After"] = retry_after_header(error.retry_after_seconds)
        if kind.status >= 500:
            log.warning(
                "upstream_failed", grpc_code=error.code.name, reason=error.reason, path=instance
            )
        return self.response(
            kind, instance=instance, code=code, detail=detail, errors=violations, headers=headers
        )

    def from_http_status(
        self, status: int, instance: str, headers: Mapping[str, str] | None = None
    ) -> ProblemResponse:
        kind = _KINDS_BY_STATUS.get(status)
        if kind is None:
            phrase = _phrase(status)
            kind = Kind(status, phrase.lower().replace(" ", "-"), phrase, phrase + ".")
        return self.response(kind, instance=instance, code=_code_for(kind), headers=headers)

    def from_validation_error(
        self, error: RequestValidationError, instance: str, content_type: str | None = None
    ) -> ProblemResponse:
        issues = list(error.errors())
        # A body FastAPI did not parse as JSON (no or another media type) fails as a whole.
        unparsed_body = any(
            tuple(i.get("loc", ())) == ("body",) and i.get("type") != "missing" for i in issues
        )
        if unparsed_body and (content_type is None or not _is_json(content_type)):
            return self.response(
                UNSUPPORTED_MEDIA_TYPE, instance=instance, code="UNSUPPORTED_MEDIA_TYPE"
            )
        if any(issue.get("type") == "json_invalid" for issue in issues):
            position = next(
                (issue["loc"][-1] for issue in issues if issue.get("type") == "json_invalid"), None
            )
            detail = "The body is not valid JSON"
            detail += f" (error at character {position})." if isinstance(position, int) else "."
            return self.response(
                MALFORMED_JSON, instance=instance, code="MALFORMED_JSON", detail=detail
            )
        violations = [
            FieldViolation(_location(issue.get("loc", ())), str(issue.get("msg", "Invalid value.")))
            for issue in issues
        ]
        return self.response(
            VALIDATION,
            instance=instance,
            code=VALIDATION_FAILED,
            detail=describe_violations(violations) if violations else VALIDATION.detail,
            errors=violations,
        )


def describe(error: ErrorDetails) -> tuple[Kind, str, str, list[FieldViolation]]:
    """What a failed call shows the client: its kind, code, detail and field violations (with
    the API's field names). The upstream's own words only when they come from a domain error."""
    row = GRPC_TO_HTTP.get(error.code, _INTERNAL_ROW)
    trusted = error.reason is not None and row.expose_message
    kind = REASON_KINDS.get((error.code, error.reason or "")) if trusted else None
    if kind is None:
        kind = row.with_violations if error.violations and row.with_violations else row.kind
    detail = error.message if trusted and error.message else kind.detail
    code = error.reason if trusted and error.reason else _default_code(error.code, row)
    violations = (
        [FieldViolation(camel_field(v.field), v.description) for v in error.violations]
        if trusted
        else []
    )
    if violations:
        # Named as in the API, like `errors` (the upstream names fields as in the proto).
        detail = describe_violations(violations)
    return kind, code, detail, violations


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _location(loc: Iterable[Any]) -> str:
    """`("body", "attachments", 0, "kind")` -> `attachments[0].kind`, as the services name it."""
    parts = list(loc)
    if parts[:1] == ["body"]:
        parts = parts[1:]
        if not parts:
            return "body"
    if not parts:
        return "body"
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return camel_field(path)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _code_for(kind: Kind) -> str:
    return kind.slug.upper().replace("-", "_")


def _default_code(code: grpc.StatusCode, row: GrpcRow) -> str:
    if row is _INTERNAL_ROW:
        return "INTERNAL"
    return str(code.name)


def error_details_of(error: DomainError) -> ErrorDetails:
    """A domain error raised in the gateway itself (token verification) as call details."""
    return ErrorDetails(
        code=error.status_code,
        message=error.message,
        reason=error.reason,
        violations=list(error.violations),
        retry_after_seconds=error.retry_after_seconds,
        metadata=dict(error.metadata),
    )


# The problem documents each route may answer, in the OpenAPI document.
_PROBLEM_DESCRIPTIONS: Mapping[int, str] = {
    400: "Malformed JSON or an invalid request.",
    401: "No valid access token (or wrong credentials). Comes with `WWW-Authenticate`.",
    403: "Not allowed: e.g. a cross-site request with the session cookie, or a change that needs "
    "a verified email address (`email-not-verified`: verify, then refresh the tokens).",
    404: "No such resource.",
    409: "Conflicts with the current state (e.g. the email is taken).",
    413: "The body is larger than the gateway accepts.",
    422: "Some fields are not valid: see `errors`.",
    429: "Too many attempts: wait `Retry-After` seconds.",
    503: "An upstream service is unavailable.",
    504: "An upstream service did not answer in time.",
}
_UPSTREAM = (503, 504)


def openapi_problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of a route that may answer these problems (and 503, 504)."""
    return {
        status: {"model": Problem, "description": _PROBLEM_DESCRIPTIONS[status]}
        for status in sorted({*statuses, *_UPSTREAM})
    }


def install_problem_handlers(app: FastAPI, problems: Problems) -> None:
    """Every error raised while handling a request becomes a problem document."""

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problems.from_validation_error(
            exc, request.url.path, request.headers.get("content-type")
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # The framework's only 400: a body that is not even text JSON can hold.
            return problems.response(
                MALFORMED_JSON,
                instance=request.url.path,
                code="MALFORMED_JSON",
                detail="The body could not be read as JSON (UTF-8, reasonably nested).",
            )
        return problems.from_http_status(exc.status_code, request.url.path, exc.headers)

    async def on_rpc_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, grpc.aio.AioRpcError)
        return problems.from_error_details(from_rpc_error(exc), request.url.path)

    async def on_domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        return problems.from_error_details(error_details_of(exc), request.url.path)

    async def on_api_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiProblem)
        return problems.from_api_problem(exc, request.url.path)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(grpc.aio.AioRpcError, on_rpc_error)
    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(ApiProblem, on_api_problem)
