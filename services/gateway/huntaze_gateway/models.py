"""The base models of the API's JSON: camelCase on the wire (snake_case accepted on input too),
unknown members refused by name, text that protobuf and PostgreSQL can hold.

A request body that mirrors a proto request (`ProtoBody`) takes its limits, enum names and
descriptions in the OpenAPI document from the JSON Schemas `make proto` generates from the protos
(`huntaze/schemas.json` of the contracts): the document states the rules the service enforces,
which live once, in the proto.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, cast

from google.protobuf import field_mask_pb2, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic._internal._model_construction import ModelMetaclass
from pydantic.alias_generators import to_camel

from huntaze.common.v1 import common_pb2
from huntaze_gateway.codec import ProtoEnum

# The generated files sit at the root of the contracts' `huntaze` package.
_GENERATED = Path(common_pb2.__file__).parents[2]
SCHEMAS: Mapping[str, dict[str, Any]] = json.loads((_GENERATED / "schemas.json").read_text())
# Each RPC's comment in the proto, by the method's full name.
METHOD_COMMENTS: Mapping[str, str] = json.loads((_GENERATED / "methods.json").read_text())
# The JSON Schema keywords a protovalidate rule becomes.
LIMIT_KEYWORDS = frozenset(
    {
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
    }
)


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        # A member the API does not know is refused by name: a typo must not pass unseen.
        extra="forbid",
    )

    @field_validator("*", mode="after")
    @classmethod
    def _encodable_text(cls, value: Any) -> Any:
        """Text must be valid UTF-8 without NUL (JSON can carry lone surrogates and \\u0000,
        which protobuf and PostgreSQL cannot)."""
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            if isinstance(text, str) and not is_clean_text(text):
                raise ValueError("contains characters that are not allowed (NUL or surrogates)")
        return value


def clean_text(value: str) -> str:
    """Query text must be valid UTF-8 without NUL (PostgreSQL and protobuf refuse them)."""
    if "\x00" in value:
        raise ValueError("contains characters that are not allowed (NUL)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("contains characters that are not allowed (surrogates)") from error
    return value


QueryText = Annotated[str, AfterValidator(clean_text)]


def is_clean_text(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Answer(ApiModel):
    """An answer written from a proto message (`codec.answer`): members the proto has and the
    model does not are left out."""

    model_config = ConfigDict(extra="ignore")


def proto_member(message: str, field_name: str) -> dict[str, Any] | None:
    """The generated schema of one field (by its proto name) of a proto message."""
    member: dict[str, Any] | None = SCHEMAS[message]["properties"].get(to_camel(field_name))
    return member


def value_schema(member: dict[str, Any]) -> dict[str, Any]:
    """The schema of the value of a member that may be null (`anyOf [value, null]`)."""
    for option in member.get("anyOf", ()):
        if option.get("type") != "null":
            value: dict[str, Any] = option
            return value
    return member


def _document_rules(schema: dict[str, Any], model: type[BaseModel]) -> None:
    message: str = getattr(model, "proto_message", "")
    properties = schema.get("properties", {})
    for name, field in model.model_fields.items():
        member = properties.get(field.alias or name)
        generated = proto_member(message, name)
        if member is None or generated is None:
            continue
        source, target = value_schema(generated), value_schema(member)
        for keyword in LIMIT_KEYWORDS & source.keys():
            target[keyword] = source[keyword]
        items = source.get("items", {})
        if "items" in target and "$ref" not in target["items"]:
            for keyword in LIMIT_KEYWORDS & items.keys():
                target["items"][keyword] = items[keyword]
        if "description" in generated:
            member.setdefault("description", generated["description"])


MAX_JSON_DEPTH = 16


def _json_problem(value: Any, depth: int) -> str | None:
    """What makes `value` unfit for a JSON column (NUL or surrogates in text, numbers that are
    not finite, nesting deeper than `MAX_JSON_DEPTH`), or None."""
    if depth > MAX_JSON_DEPTH:
        return f"nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        try:
            clean_text(value)
        except ValueError as error:
            return str(error)
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite"
    children: list[Any] = []
    if isinstance(value, dict):
        children = [item for pair in value.items() for item in pair]
    elif isinstance(value, list):
        children = value
    return next(filter(None, (_json_problem(item, depth + 1) for item in children)), None)


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    found = _json_problem(value, 1)
    if found:
        raise ValueError(found)
    return value


def _within(bits: int) -> AfterValidator:
    """A check that an integer fits the proto field (out of range, protobuf could not hold it);
    the field's own limits are the proto's rules."""
    limit = 2 ** (bits - 1)

    def check(value: int) -> int:
        if not -limit <= value < limit:
            raise ValueError(f"must be a {bits}-bit integer")
        return value

    return AfterValidator(check)


Int64 = Annotated[int, _within(64)]
Int32 = Annotated[int, _within(32)]
_SCALARS: Mapping[int, Any] = {
    FieldDescriptor.TYPE_STRING: str,
    FieldDescriptor.TYPE_BOOL: bool,
    FieldDescriptor.TYPE_INT64: Int64,
    FieldDescriptor.TYPE_INT32: Int32,
}
# Fields a body never carries: the gateway fills the client, a partial update fills the mask.
_EDGE_FILLED = frozenset(
    {common_pb2.ClientContext.DESCRIPTOR.full_name, field_mask_pb2.FieldMask.DESCRIPTOR.full_name}
)


# The body model of each proto message that has one, by the message's full name.
BODIES: dict[str, Any] = {}


class _ProtoFields(ModelMetaclass):
    """Gives a `ProtoBody` declared with `message=` the members of that proto message."""

    def __new__(
        mcs,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        *,
        message: type[Message] | None = None,
        required: str = "",
        omit: str = "",
        partial: bool = False,
        **kwargs: Any,
    ) -> type:
        if message is not None:
            namespace["proto_message"] = message.DESCRIPTOR.full_name
            declared = namespace.get("__annotations__", {})
            members: dict[str, Any] = {}
            descriptor = cast("Descriptor", message.DESCRIPTOR)
            inherited = {name for base in bases for name in getattr(base, "model_fields", {})}
            for field in descriptor.fields:
                if field.name in inherited and field.name not in declared:
                    continue
                if field.name in declared:
                    members[field.name] = declared[field.name]
                elif field.name not in omit.split() and not _edge_filled(field):
                    members[field.name], default = _member(field, required, partial)
                    if default is not ...:
                        namespace[field.name] = default
            namespace["__annotations__"] = {**members, **declared}
        model = super().__new__(mcs, name, bases, namespace, **kwargs)
        if message is not None:
            BODIES[message.DESCRIPTOR.full_name] = model
        return model


def _edge_filled(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.full_name in _EDGE_FILLED


def _member(field: FieldDescriptor, required: str, partial: bool) -> tuple[Any, Any]:
    """A member's type and default: none when `required`; null ("not sent") in a `partial`
    update and for a message; else the proto's zero value."""
    kind = _member_type(field)
    if field.is_repeated:
        kind = list[kind]  # type: ignore[valid-type]
    if field.name in required.split():
        return kind, ...
    if partial or _is_singular_message(field):
        return kind | None, None
    if field.is_repeated:
        return kind, Field(default_factory=list)
    return kind, _ZEROS[field.type]


def _is_singular_message(field: FieldDescriptor) -> bool:
    return field.message_type is not None and not field.is_repeated


def _member_type(field: FieldDescriptor) -> Any:
    if field.enum_type is not None:
        return Annotated[str, ProtoEnum(field.enum_type)]
    if field.message_type is None:
        return _SCALARS[field.type]
    if field.message_type.full_name == struct_pb2.Struct.DESCRIPTOR.full_name:
        return Annotated[dict[str, Any], AfterValidator(_storable_json)]
    raise TypeError(f"{field.full_name}: declare its member in the body class")


_ZEROS: Mapping[int, Any] = {
    FieldDescriptor.TYPE_STRING: "",
    FieldDescriptor.TYPE_BOOL: False,
    FieldDescriptor.TYPE_INT64: 0,
    FieldDescriptor.TYPE_INT32: 0,
}


class ProtoBody(ApiModel, metaclass=_ProtoFields):
    """A request body that mirrors a proto request, declared with it:

        class RegisterBody(ProtoBody, message=auth_pb2.RegisterRequest, required="email"):
            name: str = Field(default="", examples=["Ada"])  # what only HTTP says

    Its members are the message's fields, in their order, typed from the descriptor (a member
    declared in the class, or in a body it extends, keeps its declaration); `omit` leaves
    fields out (ones the path fills), `partial` makes every member default to null ("not
    sent"). Names are space-separated. The limits and descriptions in the OpenAPI document are
    the message's. A route whose `google.api.http` rule has `body: "*"` takes the body declared
    for its request message (`BODIES`)."""

    proto_message: ClassVar[str]

    if TYPE_CHECKING:
        # The members come from the descriptor, which the type checker cannot read.
        def __getattr__(self, name: str) -> Any: ...

    model_config = ConfigDict(json_schema_extra=_document_rules)

    def proto_fields(self, *, sent_only: bool = False) -> dict[str, Any]:
        """The members by their proto names (for `codec.to_message`); `sent_only`: only those
        the request sent, for an update that changes exactly them."""
        return self.model_dump(by_alias=False, exclude_unset=sent_only)
