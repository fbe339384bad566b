"""Domain errors <-> the gRPC rich error model (google.rpc.Status with details)."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from huntaze_kit.errors import ERROR_DOMAIN, DomainError, FieldViolation


def to_grpc_status(error: DomainError) -> grpc.Status:
    details: list[any_pb2.Any] = []
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
        )
    )
    details.append(info)
    if error.violations:
        bad_request = any_pb2.Any()
        bad_request.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
        details.append(bad_request)
    if error.retry_after_seconds is not None:
        retry = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_seconds * 1000))
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    status = status_pb2.Status(
        code=error.status_code.value[0], message=error.message, details=details
    )
    return rpc_status.to_status(status)


@dataclass
class ErrorDetails:
    """What a client learns from a failed call, rich details decoded."""

    code: grpc.StatusCode
    message: str
    reason: str | None = None
    violations: list[FieldViolation] = field(default_factory=list)
    retry_after_seconds: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def from_rpc_error(error: grpc.aio.AioRpcError) -> ErrorDetails:
    result = ErrorDetails(code=error.code(), message=error.details() or "")
    status = _status_from_trailers(error)
    if status is None:
        return result
    result.code = _CODES.get(status.code, result.code)
    result.message = status.message or result.message
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result.reason = info.reason
            result.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.violations = [
                FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            result.retry_after_seconds = retry.retry_delay.ToMilliseconds() / 1000
    return result


def _status_from_trailers(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            if status.code != code_pb2.OK:
                return status
    return None
