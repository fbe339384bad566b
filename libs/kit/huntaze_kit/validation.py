"""Requests checked against the field rules written in the protos (protovalidate).

Every rule that needs nothing but the request (lengths, ranges, counts, formats) lives on its
field in the `.proto` file, and the server interceptor checks each request here before the
method runs: a broken rule is INVALID_ARGUMENT with one field violation per rule, the fields
named by their proto paths (`goals[2]`, `attachments[0].url`). Rules that need the database
(uniqueness, existence) stay in the services.
"""

from __future__ import annotations

from google.protobuf.message import Message
from protovalidate import Validator, Violation

from huntaze_kit.errors import FieldViolation, InvalidArgument

# One validator for the process: it compiles each message type's rules once and keeps them.
_validator = Validator()


def check_request(request: Message) -> None:
    """Raises InvalidArgument listing every rule `request` breaks; returns when it breaks none."""
    violations = _validator.collect_violations(request)
    if violations:
        raise InvalidArgument.for_violations([_field_violation(v) for v in violations])


def _field_violation(violation: Violation) -> FieldViolation:
    path = ""
    field_path = violation.proto.field
    for element in field_path.elements if field_path is not None else ():
        path += f".{element.field_name}" if path else element.field_name
        if element.subscript is not None:
            path += f"[{element.subscript.value}]"
    return FieldViolation(path or "request", violation.proto.message)
