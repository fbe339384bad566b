"""Routes declared in the protos: every RPC with a `google.api.http` rule (and its
`additional_bindings`) is served at its method and path, with no hand-written handler.

The rule's path parameters (`/api/crm/fans/{fan_id}`) fill the request fields of the same name;
its `body` (`*`, or one field) is the JSON body, made from the message (`models.body_model`),
and a PATCH (or a request with an `update_mask`) changes only what was sent; a GET route's
other fields are query parameters (`models.query_model`; a list RPC's `page` is `cursor` and
`limit`); a `client` field is filled with the caller's address and user agent. The answer is
the reply's public JSON (or its `response_body` field's), a page of its items, or 204 when the
reply has no fields; a server stream is Server-Sent Events. The service's field violations are
named as the client sent them (`page.page_token` -> `query.cursor`).

The RPC's `huntaze.common.v1.route` option gives the summary, the problems it may answer, the
success status and whether it is public (no access token); its comment is the description.
Its request fields' `huntaze.common.v1.query` and `body` options name the query parameters,
what a body leaves out and the headers that fill fields. What only the edge does is named per
route (`Exposed`): hooks around the call for cookies and sessions.

Exposing a new RPC over HTTP: the two options in the proto, `make proto`, and an `expose(...)`
call in the service's route module (once per service).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import grpc
import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from google.api import annotations_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from pydantic.alias_generators import to_snake

from huntaze.common.v1 import common_pb2, route_pb2
from huntaze_gateway.codec import JsonResponse, to_json, to_message
from huntaze_gateway.models import METHOD_COMMENTS, ProtoBody, body_model, proto_member, query_model
from huntaze_gateway.openapi import page_schema, proto_schema, schema_ref
from huntaze_gateway.problems import camel_field, error_details_of
from huntaze_gateway.sse import EVENT_STREAM_MEDIA_TYPE, EventStreamResponse, Stream, frame, relay
from huntaze_gateway.state import runtime_of
from huntaze_kit.errors import DomainError, FieldViolation, InvalidArgument
from huntaze_kit.rich_status import from_rpc_error

T = TypeVar("T")
NO_CONTENT = 204
_PATH_PARAMETER = re.compile(r"{(\w+)}")
# The problems every route with a JSON body may answer (malformed, too large, invalid).
BODY_PROBLEMS = (400, 413, 422)
MAX_LIMIT = 200
MAX_CURSOR = 1024
Cursor = Annotated[
    str,
    Query(max_length=MAX_CURSOR, description="`nextCursor` of the previous page (same filters)."),
]
Limit = Annotated[
    int | None, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1 to {MAX_LIMIT}; default 50.")
]
# A list request's page fields, named as this API's query parameters.
PAGE_FIELDS: Mapping[str, str] = {
    "page.page_token": "query.cursor",
    "page.page_size": "query.limit",
}
_PATH_LIMITS = {"minLength": "min_length", "maxLength": "max_length", "pattern": "pattern"}
SSE_RETRY_MILLISECONDS = 3000
_EVENT_ID = {"ge": 0, "le": 2**63 - 1}
LastEventId = Annotated[
    int | None,
    Header(
        alias="last-event-id",
        description="The last event seen (browsers send it when they reconnect).",
        **_EVENT_ID,
    ),
]
LastEventIdQuery = Annotated[
    int | None,
    Query(
        alias="lastEventId",
        description="The same, for clients that cannot set headers; the header wins.",
        **_EVENT_ID,
    ),
]

# What the edge does once the call answered: `then(request, reply, answer)` sets or clears
# cookies on the answer, or returns another one.
EdgeHook = Callable[[Request, Any, Response], Response]
# Before the call, in place of the caller's verification: fills the request from what only the
# edge has (cookies) and may answer the call options (another token).
BeforeHook = Callable[[Request, Any], Awaitable[dict[str, Any] | None]]
# The problem answered when the call (or `before`) fails, as the client gets it.
FailedHook = Callable[[Request, Response], Response]


@dataclass(frozen=True)
class Exposed:
    """What the edge adds to one declared route, by its RPC's name in the service."""

    rpc: str
    then: EdgeHook | None = None
    # The answer `then` writes instead of the reply's JSON, for the OpenAPI document.
    answer: Any = None
    before: BeforeHook | None = None
    failed: FailedHook | None = None


def http_rules(method: MethodDescriptor) -> list[tuple[str, str, str, str]]:
    """The HTTP method, path, body and response body of an RPC's `google.api.http` rule and
    its other bindings."""
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    patterns = [(b.WhichOneof("pattern") or "", b) for b in (rule, *rule.additional_bindings)]
    if any(verb in {"", "custom"} for verb, _ in patterns):
        raise ValueError(f"{method.full_name} has no google.api.http rule")
    return [(verb.upper(), str(getattr(b, verb)), b.body, b.response_body) for verb, b in patterns]


@dataclass(frozen=True)
class Edge:
    """What every exposed route shares: the dependency that verifies the caller (its value has
    the call `options`), the stub of the service, and the problem documents by status."""

    caller: Any
    stub_of: Callable[[Request], Any]
    problems: Callable[..., dict[int | str, dict[str, Any]]]
    # Who the client is (address, user agent), for the requests that have a `client` field.
    client_of: Callable[[Request], common_pb2.ClientContext] | None = None
    # The OpenAPI security of a route whose `before` hook verifies the caller itself.
    security: Sequence[Mapping[str, list[str]]] = ()


def expose(
    routers: Sequence[APIRouter],
    service: ServiceDescriptor,
    edge: Edge,
    routes: Sequence[Exposed] = (),
) -> None:
    """Serves every RPC of `service` that has a `google.api.http` rule, on the router whose
    prefix its path starts with (paths without parameters first, so `/sessions/others` is not
    a `/sessions/{session_id}`); `routes` adds what the edge does for some of them."""
    extras = {route.rpc: route for route in routes}
    declared_routes = [
        m for m in service.methods if m.GetOptions().HasExtension(annotations_pb2.http)
    ]
    unknown = extras.keys() - {method.name for method in declared_routes}
    if unknown:
        raise ValueError(f"{sorted(unknown)}: no google.api.http rule in {service.full_name}")
    bindings = [(method, rule) for method in declared_routes for rule in http_rules(method)]
    for method, rule in sorted(bindings, key=lambda binding: "{" in binding[1][1]):
        router = next(r for r in routers if r.prefix and rule[1].startswith(r.prefix + "/"))
        _add(router, method, rule, edge, extras.get(method.name, Exposed(method.name)))


def _add(
    router: APIRouter,
    method: MethodDescriptor,
    rule: tuple[str, str, str, str],
    edge: Edge,
    exposed: Exposed,
) -> None:
    verb, path, body_field, response_body = rule
    declared = method.GetOptions().Extensions[route_pb2.route]
    if not declared.summary:
        raise ValueError(f"{method.full_name} has no huntaze.common.v1.route summary")
    path = path.removeprefix(router.prefix)
    streamed = method.server_streaming  # Server-Sent Events (`_event_stream`)
    first_verb = http_rules(method)[0][0]
    summary = f"{declared.summary} ({verb} form)" if verb != first_verb else declared.summary
    status_code = declared.status or 200
    path_fields = _PATH_PARAMETER.findall(path)
    # The body: the request (`*`) or one of its fields, made from its message.
    message = method.input_type if body_field == "*" else None
    if body_field not in ("", "*"):
        message = method.input_type.fields_by_name[body_field].message_type
    body_class = (
        None if message is None else body_model(message, frozenset(path_fields), verb == "PATCH")
    )
    # An update: only the members the request sent change (`None` never clears a field).
    sent_only = verb == "PATCH" or "update_mask" in method.input_type.fields_by_name
    request_class: Any = message_factory.GetMessageClass(method.input_type)
    answered: Any = method.output_type
    if response_body:
        answered = answered.fields_by_name[response_body].message_type
    no_content = not answered.fields and exposed.answer is None
    client = method.input_type.fields_by_name.get("client")
    with_client = client is not None and client.message_type is not None
    # A list RPC (a `PageRequest page`): `cursor` and `limit` in, a page of its items out.
    page = method.input_type.fields_by_name.get("page")
    paged = page is not None and page.message_type is common_pb2.PageRequest.DESCRIPTOR
    items = next((f for f in answered.fields if f.is_repeated), None)
    skip = frozenset({*path_fields, "page"})
    query = query_model(method.input_type, skip) if verb == "GET" and not streamed else None
    renames = {
        **(PAGE_FIELDS if paged else {}),
        **(query.renames() if query else {}),
        **({body_field: ""} if body_class and body_field != "*" else {}),
    }
    caller_verified = not declared.public and exposed.before is None
    # Header -> the field it fills (`huntaze.common.v1.body`), and the body's member for it.
    options = {f.name: f.GetOptions().Extensions[route_pb2.body] for f in method.input_type.fields}
    filled = {option.header: name for name, option in options.items() if option.header}
    headers = {header: camel_field(name) for header, name in filled.items()}

    async def endpoint(request: Request, caller: Any = None, **arguments: Any) -> Response:
        message = request_class(**{name: arguments[name] for name in path_fields})
        if with_client and edge.client_of is not None:
            message.client.CopyFrom(edge.client_of(request))
        page = {"page_size": arguments.get("limit"), "page_token": arguments.get("cursor")}
        values = arguments["query"].proto_fields() if query else {}
        to_message({**values, "page": page if paged else None}, message)
        body: ProtoBody | None = arguments.get("body")
        if body is not None:
            values = body.proto_fields(sent_only=sent_only)
            to_message(values, message if body_field == "*" else getattr(message, body_field))
            if sent_only and "update_mask" in request_class.DESCRIPTOR.fields_by_name:
                # AIP-134: the mask names the fields to change, so an empty value clears one.
                message.update_mask.paths.extend(sorted(values))
        for header, name in filled.items():
            _from_header(message, name, arguments[f"header_{name}"], header, headers[header])
        try:
            options = runtime_of(request).call() if caller is None else caller.options
            if exposed.before is not None:
                options = await exposed.before(request, message) or options
            if declared.deadline_seconds:
                options = {**options, "timeout": declared.deadline_seconds}
            rpc = getattr(edge.stub_of(request), method.name)
            if streamed:
                return _event_stream(request, caller, rpc, message, arguments)
            call = rpc(message, **options)
            reply = await (renamed(call, renames) if renames else call)
        except (DomainError, grpc.aio.AioRpcError) as error:
            if exposed.failed is None:
                raise
            details = (
                from_rpc_error(error)
                if isinstance(error, grpc.aio.AioRpcError)
                else error_details_of(error)
            )
            problems = runtime_of(request).problems
            return exposed.failed(request, problems.from_error_details(details, request.url.path))
        shown = getattr(reply, response_body) if response_body else reply
        answer: Response
        if paged and items is not None:
            answer = page_answer(items.json_name, getattr(shown, items.name), shown.page)
        elif no_content:
            answer = Response(status_code=NO_CONTENT)
        else:
            earlier = declared.created and not getattr(reply, declared.created)
            answer = JsonResponse(to_json(shown), status_code=200 if earlier else status_code)
        return answer if exposed.then is None else exposed.then(request, reply, answer)

    parameters = [
        _keyword("request", Request),
        *([_keyword("caller", edge.caller)] if caller_verified else ()),
        *(_path_parameter(method, name) for name in path_fields),
        *(
            _keyword(f"header_{name}", _header(header, headers[header]), None)
            for header, name in filled.items()
        ),
        *([_keyword("cursor", Cursor, ""), _keyword("limit", Limit, None)] if paged else ()),
        *([_keyword("query", Annotated[query, Query()])] if query else ()),
        *(
            [
                _keyword("last_event_id", LastEventId, None),
                _keyword("last_event_id_query", LastEventIdQuery, None),
            ]
            if streamed
            else ()
        ),
    ]
    if body_class is not None:  # a body that may be left out says so (`optional_body`)
        optional = getattr(body_class, "optional_body", False)
        annotation = body_class | None if optional else body_class
        parameters.append(
            _keyword("body", annotation, None if optional else inspect.Parameter.empty)
        )
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = to_snake(method.name)
    # JSON answers keep the default response class, whose documented schema is the response
    # model's (the endpoint answers with its own `JsonResponse`).
    response_class: type[Response] = Response if no_content else JSONResponse
    response_class = EventStreamResponse if streamed else response_class
    answer_schema = None if no_content or streamed else proto_schema(answered.full_name)
    if paged and items is not None and items.message_type is not None:
        answer_schema = page_schema(items.json_name, items.message_type.full_name)
    # The answer to a request made before (`created`) is the same JSON.
    content = {"application/json": {"schema": schema_ref(answered.full_name)}}
    others: dict[int | str, dict[str, Any]] = (
        {200: {"description": declared.earlier, "content": content}} if declared.created else {}
    )
    if streamed:  # its messages, as events (`_event_stream`)
        described = "An endless `text/event-stream`: `id:` the event id, `event:` its type, "
        described += f"`data:` an `{answered.name}` as JSON."
        events = {EVENT_STREAM_MEDIA_TYPE: {"schema": schema_ref(answered.full_name)}}
        others = {200: {"description": described, "content": events}}
    router.add_api_route(
        path,
        endpoint,
        methods=[verb],
        status_code=NO_CONTENT if no_content else status_code,
        response_class=response_class,
        response_model=exposed.answer or answer_schema,
        summary=summary,
        description=METHOD_COMMENTS.get(method.full_name, ""),
        responses={
            **others,
            **edge.problems(*(BODY_PROBLEMS if body_class else ()), *declared.problems),
        },
        openapi_extra=None
        if caller_verified or declared.public
        else {"security": list(edge.security)},
    )


def _render_event(message: Any) -> bytes:
    """`id:` its `id`, `event:` its `type`, `data:` its JSON; a batch (one list field) each's."""
    if len(fields := message.DESCRIPTOR.fields) == 1 and fields[0].is_repeated:
        return b"".join([_render_event(event) for event in getattr(message, fields[0].name)])
    data = orjson.dumps(to_json(message), option=orjson.OPT_UTC_Z)
    return frame(data, event=message.type, event_id=message.id)


def _event_stream(
    request: Request, caller: Any, rpc: Any, message: Any, arguments: Mapping[str, Any]
) -> EventStreamResponse:
    """A server stream as Server-Sent Events (`sse.relay`, `_render_event`) until the caller's
    token expires or its session is revoked. SSE's resume (`Last-Event-ID`, or the same in the
    query; the header wins) fills the request's `after_event_id` and sets its `resume`."""
    header, query = arguments["last_event_id"], arguments["last_event_id_query"]
    after = header if header is not None else query
    message.after_event_id, message.resume = after or 0, after is not None
    runtime = runtime_of(request)
    session_id, revocations = caller.principal.session_id, runtime.verifier.revocations
    stream = Stream(
        call=rpc(message, **{**caller.options, "timeout": None}),
        render=_render_event,
        render_error=lambda error: bytes(
            runtime.problems.from_error_details(from_rpc_error(error), request.url.path).body
        ),
        heartbeat_seconds=runtime.settings.gateway_sse_heartbeat_seconds,
        retry_milliseconds=SSE_RETRY_MILLISECONDS,
        expires_at=caller.principal.expires_at,
        revoked=lambda: session_id is not None and revocations.is_revoked(session_id),
    )
    return EventStreamResponse(relay(stream))


def _keyword(
    name: str, annotation: Any, default: Any = inspect.Parameter.empty
) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


def _header(header: str, member: str) -> Any:
    return Annotated[
        str | None, Header(alias=header.lower(), description=f"Or `{member}` in the body.")
    ]


def _from_header(message: Message, name: str, sent: str | None, header: str, member: str) -> None:
    """Fills the field `name` from its header, unless the body gave another value."""
    if sent is None:
        return
    if getattr(message, name) not in ("", sent):
        raise InvalidArgument.for_violations(
            [FieldViolation(member, f"differs from the {header} header")]
        )
    setattr(message, name, sent)


def _path_parameter(method: MethodDescriptor, name: str) -> inspect.Parameter:
    """A path parameter, with its field's rules; an id without rules is checked by the service
    (any other string is a 422 on the id, a UUID of nothing a 404)."""
    rules = proto_member(method.input_type.full_name, name) or {}
    limits = {_PATH_LIMITS[key]: value for key, value in rules.items() if key in _PATH_LIMITS}
    described = (
        rules.get("description")
        or f"The {name.removesuffix('_id').replace('_', ' ')}'s id (a UUID)."
    )
    annotation = Annotated[str, Path(description=described, **limits)]
    return _keyword(name, annotation)


def page_answer(key: str, items: Iterable[Message], page: common_pb2.PageResponse) -> JsonResponse:
    """One page of a list answer: the items under `key`, and the cursor of the next page."""
    return JsonResponse(
        {key: [to_json(item) for item in items], "nextCursor": page.next_page_token or None}
    )


def _rename(field: str, renames: Mapping[str, str]) -> str:
    for old, new in renames.items():
        if field == old:
            return new
        for separator in (".", "["):
            if field.startswith(old + separator):
                return (new + field[len(old) :]).removeprefix(".")
    return field


async def renamed(call: Awaitable[T], renames: Mapping[str, str]) -> T:
    """Awaits a call; its field violations are named as the client sent them."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        details = from_rpc_error(error)
        if (
            details.code != grpc.StatusCode.INVALID_ARGUMENT
            or details.reason is None
            or not details.violations
        ):
            raise
        violations = [
            FieldViolation(camel_field(_rename(v.field, renames)), v.description)
            for v in details.violations
        ]
        raise InvalidArgument.for_violations(violations, reason=details.reason) from None
