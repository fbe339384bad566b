"""The OpenAPI document states the limits the services enforce: for every member of every
request body made from a proto message, its limits are exactly the proto field's protovalidate
rules (read here from the descriptors, not from the generated schemas), and it is required
exactly when a rule refuses the empty value."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from huntaze.onlyfans.v1 import onlyfans_pb2
from huntaze_devstack.protogen import field_rules, rule_keywords
from huntaze_gateway.app import create_app
from huntaze_gateway.config import GatewaySettings
from huntaze_gateway.models import CONSTRAINTS, ProtoBody, value_schema
from huntaze_kit.errors import InvalidArgument
from huntaze_kit.validation import check_request

DOCUMENT: dict[str, Any] = create_app(GatewaySettings()).openapi()
# The JSON Schema keywords of a limit, and where a list's items and a map's keys and values
# state theirs.
LIMIT_KEYWORDS = frozenset(CONSTRAINTS)
NESTED_KEYWORDS = frozenset({"items", "propertyNames", "additionalProperties"})
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]


def _bodies(base: type[ProtoBody] = ProtoBody) -> list[type[ProtoBody]]:
    found = []
    for model in base.__subclasses__():
        if "proto_message" in vars(model):
            found.append(model)
        found.extend(_bodies(model))
    return found


def _limits(schema: dict[str, Any]) -> dict[str, Any]:
    value = value_schema(schema)
    limits = {keyword: value[keyword] for keyword in LIMIT_KEYWORDS & value.keys()}
    for part in NESTED_KEYWORDS & value.keys():
        inner = value[part] if isinstance(value[part], dict) else {}
        nested = {keyword: inner[keyword] for keyword in LIMIT_KEYWORDS & inner.keys()}
        if nested:
            limits[part] = nested
    return limits


def _rules(field: FieldDescriptor) -> dict[str, Any]:
    rules = field_rules(field.GetOptions())  # type: ignore[arg-type]
    return rule_keywords(rules) if rules is not None else {}


def test_every_body_member_states_exactly_its_proto_rules() -> None:
    bodies = _bodies()
    assert len(bodies) >= 20, [body.__name__ for body in bodies]
    checked = 0
    for body in bodies:
        message = descriptor_pool.Default().FindMessageTypeByName(body.proto_message)
        component = SCHEMAS.get(body.__name__) or SCHEMAS[f"{body.__name__}-Input"]
        for name, field in body.model_fields.items():
            member = component["properties"][field.alias or name]
            proto_field = message.fields_by_name.get(name)
            expected = _rules(proto_field) if proto_field is not None else {}
            # A member the proto does not rule may state no limit of its own either.
            assert _limits(member) == expected, (body.__name__, name, member, expected)
            checked += bool(expected)
            required = (field.alias or name) in component.get("required", ())
            refused = {"minLength", "minItems", "minProperties"} & expected.keys()
            if proto_field is not None and name not in ("refresh_token",):
                rules = field_rules(proto_field.GetOptions())  # type: ignore[arg-type]
                demanded = bool(rules and rules.required)
                # An `optional` member's rules apply only when it is sent.
                demanded |= not proto_field.has_presence and any(expected[k] > 0 for k in refused)
                assert required == demanded, (body.__name__, name)
    assert checked >= 30


def test_the_onlyfans_bodies_state_the_worker_rules() -> None:
    session = SCHEMAS["ImportedSessionBody"]
    assert session["required"] == ["cookies", "xBc", "userAgent"]
    cookies = session["properties"]["cookies"]
    assert (cookies["minProperties"], cookies["maxProperties"]) == (1, 100)
    assert cookies["propertyNames"] == {"minLength": 1, "maxLength": 256}
    assert cookies["additionalProperties"]["maxLength"] == 4096
    assert SCHEMAS["CredentialsBody"]["required"] == ["email", "password"]
    assert SCHEMAS["SubmitOtpBody"]["properties"]["code"]["maxLength"] == 32


def test_the_drifted_limits_are_the_services_now() -> None:
    profile = SCHEMAS["SaveProfileBody"]["properties"]
    assert value_schema(profile["displayName"])["maxLength"] == 80
    assert value_schema(profile["bio"])["maxLength"] == 1000
    assert value_schema(profile["niche"])["maxLength"] == 80
    assert profile["goals"]["maxItems"] == 10
    assert profile["goals"]["items"]["maxLength"] == 120
    assert SCHEMAS["RegisterBody"]["properties"]["name"]["maxLength"] == 100
    # Proto comments are the descriptions.
    assert profile["timezone"]["description"] == "IANA name, e.g. Europe/Paris."


def test_the_services_enforce_the_onlyfans_rules() -> None:
    """What the worker's interceptor runs on every request (`huntaze_kit.validation`)."""
    with pytest.raises(InvalidArgument) as no_method:
        check_request(onlyfans_pb2.ConnectRequest())
    assert [v.field for v in no_method.value.violations] == ["method"]
    session = onlyfans_pb2.ImportedSession(cookies={"sess": "x" * 4097}, x_bc="", user_agent="ua")
    with pytest.raises(InvalidArgument) as bad_session:
        check_request(onlyfans_pb2.ConnectRequest(session=session))
    fields = {v.field.split("[")[0] for v in bad_session.value.violations}
    assert fields == {"session.cookies", "session.x_bc"}
    with pytest.raises(InvalidArgument):
        check_request(onlyfans_pb2.SubmitOtpRequest(code="1" * 33))
    check_request(onlyfans_pb2.SubmitOtpRequest(code="123456"))
