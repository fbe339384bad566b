"""The API's JSON models: camelCase on the wire (snake_case accepted on input too), unknown
members refused by name, text that protobuf and PostgreSQL can hold.

A request body is made from its proto message (`body_model`): the members are the message's
fields typed from the descriptor, required where a protovalidate rule refuses the empty value
(`required`, `min_len`, `min_items`, `min_pairs`; a required oneof: exactly one member), with
the limits, enum names and descriptions of the JSON Schemas `make proto` generates
(`huntaze/schemas.json` of the contracts). The rules live once, in the proto: the service
enforces them, the edge refuses what breaks them before the hop, the document states them. A
`ProtoBody` declared by hand replaces the made one where HTTP says more than the proto.
"""

from __future__ import annotations

import functools
import json
import math
import types
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, cast, get_args, get_origin

from buf.validate import validate_pb2
from google.protobuf import field_mask_pb2, message_factory, struct_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)
from pydantic._internal._model_construction import ModelMetaclass
from pydantic.alias_generators import to_camel

from huntaze.common.v1 import common_pb2, route_pb2
from huntaze_gateway.codec import ProtoEnum, enum_names, enum_values, is_wrapper, map_entry

# The generated files sit at the root of the contracts' `huntaze` package.
_GENERATED = Path(common_pb2.__file__).parents[2]
SCHEMAS: Mapping[str, dict[str, Any]] = json.loads((_GENERATED / "schemas.json").read_text())
# Each RPC's comment in the proto, by the method's full name.
METHOD_COMMENTS: Mapping[str, str] = json.loads((_GENERATED / "methods.json").read_text())
# The JSON Schema keywords a protovalidate rule becomes, as pydantic's constraints (`items`,
# `propertyNames` and `additionalProperties` carry those of a list's items and a map's keys and
# values).
CONSTRAINTS = {
    "minLength": "min_length",
    "maxLength": "max_length",
    "pattern": "pattern",
    "minimum": "ge",
    "maximum": "le",
    "exclusiveMinimum": "gt",
    "exclusiveMaximum": "lt",
    "minItems": "min_length",
    "maxItems": "max_length",
    "minProperties": "min_length",
    "maxProperties": "max_length",
}
MAX_JSON_DEPTH = 16


def clean_text(value: str) -> str:
    """Text must be valid UTF-8 without NUL (JSON can carry lone surrogates and \\u0000, which
    protobuf and PostgreSQL cannot)."""
    if "\x00" in value:
        raise ValueError("contains characters that are not allowed (NUL)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("contains characters that are not allowed (surrogates)") from error
    return value


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
        texts = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        for text in texts if isinstance(texts, list) else [texts]:
            if isinstance(text, str):
                clean_text(text)
        return value


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
_SCALARS: Mapping[int, tuple[Any, Any]] = {  # the member type and the proto's zero value
    FieldDescriptor.TYPE_STRING: (str, ""),
    FieldDescriptor.TYPE_BOOL: (bool, False),
    FieldDescriptor.TYPE_INT64: (Int64, 0),
    FieldDescriptor.TYPE_INT32: (Int32, 0),
    FieldDescriptor.TYPE_DOUBLE: (float, 0.0),
}
# Fields a body never carries: the gateway fills the client, a partial update fills the mask.
_EDGE_FILLED = frozenset(
    {common_pb2.ClientContext.DESCRIPTOR.full_name, field_mask_pb2.FieldMask.DESCRIPTOR.full_name}
)
_LEAST = {"string": "min_len", "repeated": "min_items", "map": "min_pairs"}

# The bodies declared by hand, by the full name of their proto message.
BODIES: dict[str, Any] = {}


def refuses_empty(field: FieldDescriptor) -> bool:
    """Whether the field's protovalidate rules refuse its empty value: the body must send it."""
    options = field.GetOptions()
    if not options.HasExtension(validate_pb2.field):
        return False
    rules = options.Extensions[validate_pb2.field]
    kind = rules.WhichOneof("type") or ""
    return rules.required or (kind in _LEAST and getattr(getattr(rules, kind), _LEAST[kind]) > 0)


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
        made: bool = False,
        **kwargs: Any,
    ) -> type:
        if message is not None:
            namespace["proto_message"] = message.DESCRIPTOR.full_name
            declared = namespace.get("__annotations__", {})
            members: dict[str, Any] = {}
            inherited = {name for base in bases for name in getattr(base, "model_fields", {})}
            descriptor = cast("Descriptor", message.DESCRIPTOR)
            options = {f.name: f.GetOptions().Extensions[route_pb2.body] for f in descriptor.fields}
            namespace["null_clears"] = frozenset(n for n, o in options.items() if o.null_clears)
            for field in descriptor.fields:
                schema = proto_member(message.DESCRIPTOR.full_name, field.name) or {}
                described = Field(description=schema.get("description"))
                if field.name in declared:  # with the field's limits, and its comment
                    declared[field.name] = Annotated[
                        _limited(declared[field.name], schema), described
                    ]
                if field.name in declared or field.name in inherited:
                    continue
                left_out = field.name in omit.split() or options[field.name].services_only
                if not left_out and not _edge_filled(field):
                    needed = not partial and (
                        field.name in required.split() or refuses_empty(field)
                    )
                    kind, default = _member(field, needed, partial, schema)
                    members[field.name] = Annotated[kind, described]
                    if default is not ...:
                        namespace[field.name] = default
            namespace["__annotations__"] = {**members, **declared}
            for oneof in descriptor.oneofs:  # a required oneof: exactly one of its members
                if oneof.GetOptions().Extensions[validate_pb2.oneof].required:
                    names = tuple(field.name for field in oneof.fields)
                    namespace[f"_one_of_{oneof.name}"] = model_validator(mode="after")(
                        functools.partial(_exactly_one, names=names)
                    )
        model = super().__new__(mcs, name, bases, namespace, **kwargs)
        if message is not None and not made:
            BODIES[message.DESCRIPTOR.full_name] = model
        return model


def _exactly_one(body: BaseModel, *, names: tuple[str, ...]) -> BaseModel:
    if sum(getattr(body, name) is not None for name in names) != 1:
        raise ValueError(f"give exactly one of {', '.join(map(to_camel, names))}")
    return body


def _edge_filled(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.full_name in _EDGE_FILLED


def _member(
    field: FieldDescriptor, needed: bool, partial: bool, schema: dict[str, Any]
) -> tuple[Any, Any]:
    """A member's type, with the limits of its generated `schema` (refused at the edge, before
    a hop), and its default: none when `needed`; null ("not sent") in a `partial` update and
    where the field has presence; else the proto's zero value."""
    entry = map_entry(field)
    schema = value_schema(schema)
    if entry is not None:
        key = _limited(str, schema.get("propertyNames", {}))
        value = _member_type(entry.fields_by_name["value"])
        kind: Any = dict[key, _limited(value, schema.get("additionalProperties", {}))]  # type: ignore[misc, valid-type]
    elif field.is_repeated:
        kind = list[_limited(_member_type(field), schema.get("items", {}))]  # type: ignore[misc]
    else:
        kind = _member_type(field)
    kind = _limited(kind, schema)
    if needed:
        return kind, ...
    if partial or (not field.is_repeated and (field.has_presence or field.enum_type is not None)):
        return kind | None, None
    if field.is_repeated:
        return kind, Field(default_factory=dict if entry else list)
    return kind, _SCALARS[field.type][1]


def _limited(kind: Any, schema: Mapping[str, Any]) -> Any:
    limits = {
        CONSTRAINTS[keyword]: schema[keyword] for keyword in CONSTRAINTS.keys() & schema.keys()
    }
    if limits and get_origin(kind) is Annotated:  # before its checks: JSON Schema states them
        base, *checks = get_args(kind)
        return Annotated[(base, Field(**limits), *checks)]
    return Annotated[kind, Field(**limits)] if limits else kind


def _member_type(field: FieldDescriptor) -> Any:
    if field.enum_type is not None:
        return Annotated[str, ProtoEnum(field.enum_type)]
    nested = field.message_type
    if nested is None:
        return _SCALARS[field.type][0]
    if nested.full_name == struct_pb2.Struct.DESCRIPTOR.full_name:
        return Annotated[dict[str, Any], AfterValidator(_storable_json)]
    if is_wrapper(nested):  # the list it wraps (`TagSet` -> its tags)
        return list[_member_type(nested.fields[0])]  # type: ignore[misc]
    return body_model(nested)


class ProtoBody(ApiModel, metaclass=_ProtoFields):
    """A request body that mirrors a proto request. Declared by hand only where HTTP says more
    than the proto (`body_model` makes the others):

        class RefreshBody(ProtoBody, message=auth_pb2.RefreshSessionRequest):
            refresh_token: str | None = None  # what only HTTP says

    Its members are the message's fields, in their order, typed from the descriptor (a member
    declared in the class keeps its type and default, with the field's limits and comment; one
    declared in a body it extends keeps its declaration); `omit` leaves
    fields out (ones the path fills), `required` adds to the ones the rules make required,
    `partial` makes every member default to null ("not sent"). Names are space-separated."""

    proto_message: ClassVar[str]
    # Members whose null is sent as the empty value, which clears them (`route.proto`'s `Body`).
    null_clears: ClassVar[frozenset[str]] = frozenset()

    if TYPE_CHECKING:
        # The members come from the descriptor, which the type checker cannot read.
        def __getattr__(self, name: str) -> Any: ...

    def proto_fields(self, *, sent_only: bool = False) -> dict[str, Any]:
        """The members by their proto names (for `codec.to_message`); `sent_only`: only those
        the request sent, for an update that changes exactly them."""
        values = self.model_dump(by_alias=False, exclude_unset=sent_only)
        for name in self.null_clears & values.keys():
            values[name] = "" if values[name] is None else values[name]
        return values


@functools.cache
def body_model(
    message: Descriptor, omit: frozenset[str] = frozenset(), partial: bool = False
) -> type[ProtoBody]:
    """The body of `message`: the one declared by hand, else one made from the descriptor."""
    declared: type[ProtoBody] | None = BODIES.get(message.full_name)
    if declared is not None:
        return declared
    options = {"message": message_factory.GetMessageClass(message), "omit": " ".join(omit)}
    return types.new_class(
        f"{message.name.removesuffix('Request')}Body",
        (ProtoBody,),
        {**options, "partial": partial, "made": True},
    )


class QueryModel(ApiModel):
    """A GET route's query parameters (`query_model`)."""

    # Other parameters are not refused (nor is `unread_only` taken for `unread`); a default
    # is a value as sent (`-createdAt`, to the enum's number).
    model_config = ConfigDict(extra="ignore", validate_by_name=False, validate_default=True)
    # Each member's field, from the request message down (`("filter", "tags_any")`).
    paths: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def renames(cls) -> dict[str, str]:
        """The fields' paths -> the parameters, as violations name them (`query.search`)."""
        return {".".join(p): f"query.{cls.model_fields[n].alias}" for n, p in cls.paths.items()}

    def proto_fields(self) -> dict[str, Any]:
        """The fields the parameters fill, as `codec.to_message` takes them (a message none of
        them fills is left unset)."""
        values: dict[str, Any] = {}
        for name, (*outer, last) in self.paths.items():
            value = getattr(self, name)
            if value is not None and value != []:
                target = values
                for key in outer:
                    target = target.setdefault(key, {})
                target[last] = value
        return values


@functools.cache
def query_model(message: Descriptor, skip: frozenset[str]) -> type[QueryModel] | None:
    """The query parameters of the fields of `message` but `skip` (None if there are none):
    typed and limited as a body's members, named and valued as their proto's
    `huntaze.common.v1.query` option says."""
    members: dict[str, Any] = {}
    paths: dict[str, tuple[str, ...]] = {}
    for outer in (field for field in message.fields if field.name not in skip):
        flat = outer.GetOptions().Extensions[route_pb2.query].flatten
        parent = cast("Descriptor", outer.message_type) if flat else message
        for field in parent.fields if flat else (outer,):
            option = field.GetOptions().Extensions[route_pb2.query]
            schema = proto_member(parent.full_name, field.name) or {}
            limits = {**value_schema(schema), **({"minLength": 1} if option.required else {})}
            nullable = field.is_repeated or field.has_presence
            kind, default = _member(field, option.required, nullable, limits)
            if field.enum_type is not None and not field.is_repeated:
                names = query_values(field.enum_type, sort=option.sort)
                if option.default:  # the default first
                    names = {option.default: names[option.default], **names}
                kind = Annotated[Literal[tuple(names)], AfterValidator(names.__getitem__)]
                kind, default = (kind, option.default) if option.default else (kind | None, None)
            name = "_".join((outer.name, field.name) if flat else (field.name,))
            paths[name] = (outer.name, field.name) if flat else (field.name,)
            alias, described = option.name or field.json_name, schema.get("description")
            members[name] = (kind, Field(default, alias=alias, description=described))
    if not members:
        return None
    model = create_model(f"{message.name}Query", __base__=QueryModel, **members)
    model.paths = paths
    return model


def query_values(enum: EnumDescriptor, *, sort: bool) -> dict[str, int]:
    """An enum's values by their query names: `query_value`, a sort's (`sort_names`), else
    their lower-case names."""
    named = {
        value.GetOptions().Extensions[route_pb2.query_value]: value.number
        for value in enum.values
        if value.GetOptions().HasExtension(route_pb2.query_value)
    }
    return named or (sort_names(enum) if sort else enum_values(enum))


def sort_names(enum: EnumDescriptor) -> dict[str, int]:
    """A sort enum's query values, in order: the JSON name of the field sorted by, descending
    after a `-` (`FAN_SORT_LAST_MESSAGE_AT_DESC` -> `-lastMessageAt`)."""
    names = {}
    for number, name in enum_names(enum).items():
        field, _, order = name.rpartition("_")
        sorted_by = to_camel(field if order in ("asc", "desc") else name)
        if number:
            names[f"-{sorted_by}" if order == "desc" else sorted_by] = number
    return names
