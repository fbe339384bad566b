"""The base models of the API's JSON: camelCase on the wire (snake_case accepted on input too),
unknown members refused by name, text that protobuf and PostgreSQL can hold.

A request body that mirrors a proto request (`ProtoBody`) takes its limits, enum names and
descriptions in the OpenAPI document from the JSON Schemas `make proto` generates from the protos
(`huntaze/schemas.json` of the contracts): the document states the rules the service enforces,
which live once, in the proto.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

from huntaze.common.v1 import common_pb2

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


class ProtoBody(ApiModel):
    """A request body that mirrors the proto message `proto_message` (full name): its members'
    limits and descriptions in the OpenAPI document are the message's."""

    proto_message: ClassVar[str]

    model_config = ConfigDict(json_schema_extra=_document_rules)

    def proto_fields(self, *, sent_only: bool = False) -> dict[str, Any]:
        """The members by their proto names (for `codec.to_message`); `sent_only`: only those
        the request sent, for an update that changes exactly them."""
        return self.model_dump(by_alias=False, exclude_unset=sent_only)
