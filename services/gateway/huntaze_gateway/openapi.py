"""The answers' schemas in the OpenAPI document come from the protos.

`make proto` writes the JSON Schema of every message (`models.SCHEMAS`): the JSON the codec
writes for it, member for member. A route names the message it answers with
(`response_model=proto_schema("huntaze.crm.v1.Fan")`, or `page_schema` for a page of them), and
`add_proto_schemas` puts those schemas, and the ones they refer to, in the document's components.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import WithJsonSchema

from huntaze_gateway.models import SCHEMAS

COMPONENTS = "#/components/schemas/"


def schema_ref(message: str) -> dict[str, str]:
    return {"$ref": COMPONENTS + message}


def proto_schema(message: str) -> Any:
    """A response model documented as the JSON of the proto message `message` (full name)."""
    return Annotated[dict[str, Any], WithJsonSchema(schema_ref(message))]


def page_schema(key: str, message: str) -> Any:
    """A response model documented as one page of a list: `key` holds the messages."""
    return Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "type": "object",
                "properties": {
                    key: {"type": "array", "items": schema_ref(message)},
                    "nextCursor": {
                        "anyOf": [{"type": "string"}, {"type": "null"}],
                        "description": "Pass as `cursor` for the next page.",
                    },
                },
                "required": [key, "nextCursor"],
            }
        ),
    ]


def add_proto_schemas(document: dict[str, Any]) -> None:
    """Adds to `document` the schema of every proto message it refers to, and of theirs."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    pending = _refs(document)
    while pending:
        message = pending.pop()
        if message in components or message not in SCHEMAS:
            continue
        schema = _linked(SCHEMAS[message])
        components[message] = schema
        pending |= _refs(schema)


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(COMPONENTS):
            found.add(ref.removeprefix(COMPONENTS))
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


def _linked(node: Any) -> Any:
    """A copy of a generated schema whose `$ref`s (bare message names) point at components."""
    if isinstance(node, dict):
        return {
            key: COMPONENTS + value if key == "$ref" else _linked(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_linked(item) for item in node]
    return node
