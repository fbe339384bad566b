"""Routes declared in the protos: every RPC with a `google.api.http` rule (and its
`additional_bindings`) is served at its method and path, with no hand-written handler.

The rule's path parameters (`/api/crm/fans/{fan_id}`) fill the request fields of the same name;
with `body: "*"` the JSON body, checked by the `ProtoBody` declared for the request message,
fills the rest (`codec`), and a PATCH (or a request with an `update_mask`) changes only what was
sent; a GET route's other fields are query parameters (a list RPC's `page` is `cursor` and
`limit`); a `client` field is filled with the caller's address and user agent. The answer is
the reply's public JSON, a page of its items, or 204 when the reply message has no fields.

The RPC's `huntaze.common.v1.route` option gives the summary, the problems it may answer, the
success status and whether it is public (no access token); its comment is the description.
What only the edge knows is named per route (`Exposed`): query names that differ from the JSON
names, and a hook (`then`) that sets or clears cookies or writes another answer.

Exposing a new RPC over HTTP: the two options in the proto, `make proto`, a `ProtoBody` when it
takes a body, and an `expose(...)` call in the service's route module (once per service).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from google.api import annotations_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor

from huntaze.common.v1 import common_pb2, route_pb2
from huntaze_gateway.codec import JsonResponse, ProtoEnum, to_json, to_message
from huntaze_gateway.models import BODIES, METHOD_COMMENTS, ProtoBody, QueryText, proto_member
from huntaze_gateway.openapi import page_schema, proto_schema
from huntaze_gateway.paging import (
    PAGE_FIELDS,
    Cursor,
    Limit,
    listing,
    page_answer,
    page_request,
)
from huntaze_gateway.state import runtime_of

NO_CONTENT = 204
_PATH_PARAMETER = re.compile(r"{(\w+)}")
# The problems every route with a JSON body may answer (malformed, too large, invalid).
BODY_PROBLEMS = (400, 413, 422)


# What the edge does once the call answered: `then(request, reply, answer)` sets or clears
# cookies on the answer, or returns another one.
EdgeHook = Callable[[Request, Any, Response], Response]


@dataclass(frozen=True)
class Exposed:
    """What the edge adds to one declared route, by its RPC's name in the service."""

    rpc: str
    then: EdgeHook | None = None
    # The answer `then` writes instead of the reply's JSON, for the OpenAPI document.
    answer: Any = None
    # A GET route's request fields are query parameters named as in JSON, but: `query` renames
    # them ("" puts a message's own fields in the query), `values` names an enum's values (the
    # first is the default) and `required` lists the ones that must be sent (not empty).
    query: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    required: str = ""


@dataclass(frozen=True)
class _Route:
    """One route as served: the proto's `huntaze.common.v1.route` option, the body model of
    the request, and what the edge adds."""

    summary: str
    problems: tuple[int, ...]
    status_code: int
    public: bool
    body: type[ProtoBody] | None
    # An update: only the members the request sent change (`None` never clears a field).
    partial: bool
    edge: Exposed


@dataclass(frozen=True)
class _QueryParameter:
    parameter: inspect.Parameter
    name: str
    # The field's names from the request message down (`("filter", "tags_any")`).
    path: tuple[str, ...]
    values: Mapping[str, int] | None


def http_rules(method: MethodDescriptor) -> list[tuple[str, str, str]]:
    """The HTTP method, path and body of an RPC's `google.api.http` rule and its other
    bindings."""
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    rules = []
    for binding in (rule, *rule.additional_bindings):
        verb = binding.WhichOneof("pattern")
        if verb is None or verb == "custom":
            raise ValueError(f"{method.full_name} has no google.api.http rule")
        rules.append((verb.upper(), str(getattr(binding, verb)), binding.body))
    return rules


def http_rule(method: MethodDescriptor) -> tuple[str, str]:
    """The HTTP method and path of an RPC's `google.api.http` rule."""
    verb, path, _ = http_rules(method)[0]
    return verb, path


@dataclass(frozen=True)
class Edge:
    """What every exposed route shares: the dependency that verifies the caller (its value has
    the call `options`), the stub of the service, and the problem documents by status."""

    caller: Any
    stub_of: Callable[[Request], Any]
    problems: Callable[..., dict[int | str, dict[str, Any]]]
    # Who the client is (address, user agent), for the requests that have a `client` field.
    client_of: Callable[[Request], common_pb2.ClientContext] | None = None


def expose(
    routers: Sequence[APIRouter],
    service: ServiceDescriptor,
    edge: Edge,
    routes: Sequence[Exposed] = (),
) -> None:
    """Serves every RPC of `service` that has a `google.api.http` rule, on the router whose
    prefix its path starts with; `routes` adds what the edge does for some of them. A rule with
    `body: "*"` takes the `ProtoBody` declared for the request message."""
    extras = {route.rpc: route for route in routes}
    for method in service.methods:
        if not method.GetOptions().HasExtension(annotations_pb2.http):
            continue
        declared = method.GetOptions().Extensions[route_pb2.route]
        if not declared.summary:
            raise ValueError(f"{method.full_name} has no huntaze.common.v1.route summary")
        for binding, (verb, path, body) in enumerate(http_rules(method)):
            router = next(r for r in routers if r.prefix and path.startswith(r.prefix + "/"))
            route = _Route(
                summary=f"{declared.summary} ({verb} form)" if binding else declared.summary,
                problems=tuple(declared.problems),
                status_code=declared.status or 200,
                public=declared.public,
                body=_body_of(method) if body == "*" else None,
                partial=verb == "PATCH" or "update_mask" in method.input_type.fields_by_name,
                edge=extras.get(method.name, Exposed(method.name)),
            )
            _add(
                router,
                verb=verb,
                path=path.removeprefix(router.prefix),
                method=method,
                edge=edge,
                route=route,
            )
        extras.pop(method.name, None)
    if extras:
        raise ValueError(f"{sorted(extras)}: no google.api.http rule in {service.full_name}")


def _body_of(method: MethodDescriptor) -> type[ProtoBody]:
    body: type[ProtoBody] | None = BODIES.get(method.input_type.full_name)
    if body is None:
        raise ValueError(f"{method.full_name}: declare a ProtoBody of {method.input_type.name}")
    return body


def _add(
    router: APIRouter,
    *,
    verb: str,
    path: str,
    method: MethodDescriptor,
    edge: Edge,
    route: _Route,
) -> None:
    request_class: Any = message_factory.GetMessageClass(method.input_type)
    no_content = not method.output_type.fields and route.edge.answer is None
    client = method.input_type.fields_by_name.get("client")
    with_client = client is not None and client.message_type is not None
    path_fields = _PATH_PARAMETER.findall(path)
    # A list RPC (a `PageRequest page`): `cursor` and `limit` in, a page of its items out.
    paged = _is_page_request(method.input_type.fields_by_name.get("page"))
    items = next((f for f in method.output_type.fields if f.is_repeated), None)
    query = (
        _query_parameters(method, route.edge, skip={*path_fields, "page"}) if verb == "GET" else []
    )
    renames = {**PAGE_FIELDS, **{".".join(q.path): f"query.{q.name}" for q in query}}

    async def endpoint(request: Request, caller: Any = None, **arguments: Any) -> Response:
        message = request_class(**{name: arguments[name] for name in path_fields})
        if with_client and edge.client_of is not None:
            message.client.CopyFrom(edge.client_of(request))
        if paged:
            message.page.CopyFrom(page_request(arguments["cursor"], arguments["limit"]))
        if query:
            to_message(_query_values(query, arguments), message)
        body: ProtoBody | None = arguments.get("body")
        if body is not None:
            values = body.proto_fields(sent_only=route.partial)
            to_message(values, message)
            if route.partial and "update_mask" in request_class.DESCRIPTOR.fields_by_name:
                # AIP-134: the mask names the fields to change, so an empty value clears one.
                message.update_mask.paths.extend(sorted(values))
        options = runtime_of(request).call() if caller is None else caller.options
        call = getattr(edge.stub_of(request), method.name)(message, **options)
        reply = await (listing(call, renames) if paged else call)
        answer: Response
        if paged and items is not None:
            answer = page_answer(items.json_name, getattr(reply, items.name), reply.page)
        elif no_content:
            answer = Response(status_code=NO_CONTENT)
        else:
            answer = JsonResponse(to_json(reply), status_code=route.status_code)
        return answer if route.edge.then is None else route.edge.then(request, reply, answer)

    parameters = [
        inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
        *(
            ()
            if route.public
            else [
                inspect.Parameter("caller", inspect.Parameter.KEYWORD_ONLY, annotation=edge.caller)
            ]
        ),
        *(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[str, Path(description=_id_description(name))],
            )
            for name in path_fields
        ),
    ]
    if paged:
        parameters += [
            inspect.Parameter(
                "cursor", inspect.Parameter.KEYWORD_ONLY, annotation=Cursor, default=""
            ),
            inspect.Parameter(
                "limit", inspect.Parameter.KEYWORD_ONLY, annotation=Limit, default=None
            ),
        ]
    parameters += [q.parameter for q in query]
    if route.body is not None:
        parameters.append(
            inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=route.body)
        )
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = _snake(method.name)
    # JSON answers keep the default response class, whose documented schema is the response
    # model's (the endpoint answers with its own `JsonResponse`).
    response_class: type[Response] = Response if no_content else JSONResponse
    router.add_api_route(
        path,
        endpoint,
        methods=[verb],
        status_code=NO_CONTENT if no_content else route.status_code,
        response_class=response_class,
        response_model=route.edge.answer
        or _answer_schema(method, paged=paged, no_content=no_content),
        summary=route.summary,
        description=METHOD_COMMENTS.get(method.full_name, ""),
        responses=edge.problems(*(BODY_PROBLEMS if route.body else ()), *route.problems),
    )


def _query_parameters(
    method: MethodDescriptor, route: Exposed, *, skip: set[str]
) -> list[_QueryParameter]:
    found = []
    for outer in method.input_type.fields:
        if outer.name in skip:
            continue
        nested = outer.message_type
        if route.query.get(outer.name) == "" and nested is not None:
            found += [
                _query_parameter(inner, nested.full_name, (outer.name, inner.name), route)
                for inner in nested.fields
            ]
        else:
            found.append(_query_parameter(outer, method.input_type.full_name, (outer.name,), route))
    return found


def _query_parameter(
    field: FieldDescriptor, message: str, path: tuple[str, ...], route: Exposed
) -> _QueryParameter:
    """The query parameter of a request field: its type, default and description from the
    descriptor; integers bounded to what the field holds."""
    values = route.values.get(field.name)
    name = route.query.get(field.name, field.json_name)
    documented = proto_member(message, field.name) or {}
    rules: dict[str, Any] = {"description": documented.get("description")}
    item: Any = QueryText
    default: Any = None
    if values is not None:
        item, default = Literal[tuple(values)], next(iter(values))
    elif field.enum_type is not None:
        item = Annotated[str, ProtoEnum(field.enum_type)]
    elif field.type == FieldDescriptor.TYPE_BOOL:
        item, default = bool, None if field.has_presence else False
    elif field.type in _INTEGER_BITS:
        limit = 2 ** (_INTEGER_BITS[field.type] - 1)
        item, rules = int, {**rules, "ge": -limit, "le": limit - 1}
    elif field.name in route.required.split():
        default, rules = inspect.Parameter.empty, {**rules, "min_length": 1}
    elif not field.is_repeated:
        default = ""
    kind = list[item] if field.is_repeated else item
    if default is None:
        kind = kind | None
    annotation = Annotated[kind, Query(alias=name, **rules)]  # type: ignore[valid-type]
    parameter = inspect.Parameter(
        f"query_{'_'.join(path)}",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=annotation,
        default=default,
    )
    return _QueryParameter(parameter, name, path, values)


_INTEGER_BITS = {FieldDescriptor.TYPE_INT64: 64, FieldDescriptor.TYPE_INT32: 32}


def _query_values(query: Sequence[_QueryParameter], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the query parameters fill, as `codec.to_message` takes them (an empty
    message is left unset)."""
    values: dict[str, Any] = {}
    for q in query:
        value = arguments[q.parameter.name]
        if value is None:
            continue
        *outer, name = q.path
        target = values
        for key in outer:
            target = target.setdefault(key, {})
        target[name] = value if q.values is None else q.values[value]
    return values


def _is_page_request(field: FieldDescriptor | None) -> bool:
    return (
        field is not None
        and field.message_type is not None
        and field.message_type.full_name == common_pb2.PageRequest.DESCRIPTOR.full_name
    )


def _answer_schema(method: MethodDescriptor, *, paged: bool, no_content: bool) -> Any:
    if no_content:
        return None
    items = next((f for f in method.output_type.fields if f.is_repeated), None)
    if paged and items is not None and items.message_type is not None:
        return page_schema(items.json_name, items.message_type.full_name)
    return proto_schema(method.output_type.full_name)


def _id_description(field: str) -> str:
    """`quick_reply_id` -> "The quick reply's id (a UUID)."; the service checks it (any other
    string is a 422 on the id, a UUID of nothing a 404)."""
    return f"The {field.removesuffix('_id').replace('_', ' ')}'s id (a UUID)."


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
