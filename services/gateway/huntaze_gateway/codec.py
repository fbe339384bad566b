"""One codec between protobuf messages and the public JSON, driven by the message descriptors.

`to_message` fills a request from checked input (snake_case names, enum names, nested objects);
`to_json` writes the public JSON of a message:

- members are the fields' JSON names (`displayName`);
- enum values are lower-case names without the enum's prefix (`PLATFORM_ONLYFANS` ->
  `onlyfans`; the zero value -> `unspecified`);
- 64-bit integers are numbers, not strings;
- a `Timestamp` is an aware datetime (the response renders it as RFC 3339, `Z`);
- a `Struct` is an object (empty when unset);
- a map is an object;
- a field with presence (`optional`, or a message) that is unset is `null`; of a oneof only the
  member that is set appears.

On input, a message that only wraps a list (`TagSet`, to tell "none" from "unchanged") is the
list itself.

Each message type's plan (which converter for which field) is made once and kept: pages of
hundreds of messages go through here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import orjson
from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema
from starlette.responses import Response

Converter = Callable[[Any], Any]
# (JSON name, field name, converter, null when unset, only when set (a oneof member)).
Plan = tuple[tuple[str, str, Converter, bool, bool], ...]

ModelT = TypeVar("ModelT", bound=BaseModel)

UNSPECIFIED = "unspecified"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_plans: dict[str, Plan] = {}


class JsonResponse(Response):
    """JSON written with orjson, datetimes in RFC 3339 with `Z` (no second validation pass)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


def to_json(message: Message) -> dict[str, Any]:
    """The public JSON object of `message`."""
    body: dict[str, Any] = {}
    for json_name, name, convert, nullable, only_when_set in _plan(message.DESCRIPTOR):
        if (nullable or only_when_set) and not message.HasField(name):
            if nullable:
                body[json_name] = None
            continue
        body[json_name] = convert(getattr(message, name))
    return body


MessageT = TypeVar("MessageT", bound=Message)


def to_message(values: Mapping[str, Any], message: MessageT) -> MessageT:
    """`message` with the fields named in `values` (proto names) set: enum values by their
    public names, messages from objects, a `Struct` from any object. `None` leaves a field
    unset, so a partial update sets exactly the members that were sent."""
    fields = cast("Mapping[str, FieldDescriptor]", message.DESCRIPTOR.fields_by_name)
    for name, value in values.items():
        if value is None:
            continue
        field = fields[name]
        if map_entry(field) is not None or _is_struct(field):  # maps of scalars, any object
            getattr(message, name).update(value)
        elif field.is_repeated:
            container = getattr(message, name)
            if field.message_type is not None:
                for item in value:
                    to_message(item, container.add())
            else:
                container.extend(_scalar(field, item) for item in value)
        elif field.message_type is None:
            setattr(message, name, _scalar(field, value))
        else:
            nested = getattr(message, name)
            nested.SetInParent()
            wrapped = isinstance(value, list)  # a message that only wraps a list
            to_message({field.message_type.fields[0].name: value} if wrapped else value, nested)
    return message


def map_entry(field: FieldDescriptor) -> Descriptor | None:
    """The entry message of a map field (its `key` and `value` fields), or None."""
    entry = field.message_type
    return entry if entry is not None and entry.GetOptions().map_entry else None


def is_wrapper(message: Descriptor) -> bool:
    """Whether `message` only wraps a list (one repeated field)."""
    fields = message.fields
    return len(fields) == 1 and fields[0].is_repeated and map_entry(fields[0]) is None


def _scalar(field: Any, value: Any) -> Any:
    if field.enum_type is not None and isinstance(value, str):
        return _enum_values(field.enum_type)[value]
    return value


def answer(model: type[ModelT], message: Message) -> ModelT:
    """`model` (an answer's documented shape) filled from the public JSON of `message`."""
    return model.model_validate(to_json(message))


def enum_prefix(enum: EnumDescriptor) -> str:
    """`MessageDirection` -> `MESSAGE_DIRECTION_`: the prefix every value name starts with."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def enum_names(enum: EnumDescriptor) -> dict[int, str]:
    """Each value of `enum` -> its public name (`PLATFORM_ONLYFANS` -> `onlyfans`)."""
    prefix = enum_prefix(enum)
    return {
        value.number: UNSPECIFIED if value.number == 0 else value.name.removeprefix(prefix).lower()
        for value in enum.values
    }


def enum_values(enum: EnumDescriptor) -> dict[str, Any]:
    """Public name -> value of every value of `enum` but the zero one (never valid input).
    The values are typed by the caller, as the generated enum's `ValueType`."""
    return dict(_enum_values(enum))


@functools.cache
def _enum_values(enum: EnumDescriptor) -> dict[str, int]:
    return {name: number for number, name in enum_names(enum).items() if number != 0}


@dataclass(frozen=True)
class ProtoEnum:
    """`Annotated[str, ProtoEnum(crm_pb2.Platform.DESCRIPTOR)]`: input that must be one of the
    enum's public names, documented as a JSON Schema `enum` (no copy of the names to keep in
    step with the proto)."""

    enum: EnumDescriptor

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.literal_schema(list(enum_values(self.enum)))


def timestamp_json(stamp: timestamp_pb2.Timestamp) -> datetime:
    # Cheaper than `ToDatetime`, which counts when a page holds hundreds of them.
    return _EPOCH + timedelta(0, stamp.seconds, stamp.nanos // 1000)


def struct_json(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _value_json(item) for key, item in struct.fields.items()}


def _value_json(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        # JSON has one number type: whole numbers come back as integers where exact.
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_json(value.struct_value)
    if kind == "list_value":
        return [_value_json(item) for item in value.list_value.values]
    return None


def _plan(descriptor: Any) -> Plan:
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        plan = tuple(_field_plan(field) for field in descriptor.fields)
        _plans[descriptor.full_name] = plan
    return plan


def _field_plan(field: FieldDescriptor) -> tuple[str, str, Converter, bool, bool]:
    entry = map_entry(field)
    single = _converter(field if entry is None else entry.fields_by_name["value"])
    is_repeated = field.is_repeated
    convert: Converter = single
    if entry is not None:
        convert = lambda pairs: {key: single(value) for key, value in pairs.items()}  # noqa: E731
    elif is_repeated:
        convert = lambda items: [single(item) for item in items]  # noqa: E731
    oneof = field.containing_oneof
    in_real_oneof = oneof is not None and not _is_synthetic(field)
    nullable = field.has_presence and not (in_real_oneof or _is_struct(field) or is_repeated)
    return field.json_name, field.name, convert, nullable, in_real_oneof


def _is_struct(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and message.full_name == struct_pb2.Struct.DESCRIPTOR.full_name


def _is_synthetic(field: FieldDescriptor) -> bool:
    """Whether the field's oneof is the one protoc makes for a proto3 `optional` field."""
    oneof = field.containing_oneof
    return oneof is not None and len(oneof.fields) == 1 and oneof.name == f"_{field.name}"


def _converter(field: FieldDescriptor) -> Converter:
    if field.enum_type is not None:
        names = enum_names(field.enum_type)
        return lambda value: names.get(value, UNSPECIFIED)
    message_type = field.message_type
    if message_type is None:
        return _same
    if message_type.full_name == timestamp_pb2.Timestamp.DESCRIPTOR.full_name:
        return timestamp_json
    if message_type.full_name == struct_pb2.Struct.DESCRIPTOR.full_name:
        return struct_json
    return to_json


def _same(value: Any) -> Any:
    return value
