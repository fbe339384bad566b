"""Tenant isolation, as a matrix generated from the service descriptor.

For every CrmService method whose request names an object by id (a string field `*_id` or a
repeated `*_ids`, at any depth), a second creator calls it with the first creator's object in that
field (and their own objects in the other id fields): the answer must be NOT_FOUND, and no row of
the `crm` schema may change. A new method with an id field is in the matrix automatically; the test
fails until it is isolated (or, when it needs more than ids to reach the lookup, until it gets a
sample below).
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from huntaze.crm.v1 import crm_pb2
from huntaze_kit.db import async_url
from huntaze_kit.rich_status import from_rpc_error

SERVICE = crm_pb2.DESCRIPTOR.services_by_name["CrmService"]

# Which object each id field names.
OBJECT_OF_FIELD = {
    "fan_id": "fan",
    "fan_ids": "fan",
    "conversation_id": "conversation",
    "conversation_ids": "conversation",
    "message_id": "message",
    "quick_reply_id": "quick_reply",
    "list_id": "list",
}
# Id fields that name no CRM object: a team member lives in another service, and
# `platform_*` ids are the platform's own.
NOT_CRM_OBJECTS = {"assigned_member_id"}
PLATFORM_PREFIX = "platform_"
# Methods only a service token may call (a user is refused whatever the ids); a service token
# names its creator, and another creator's fan is answered as an unknown one (campaigns tests).
SERVICES_ONLY = {"RecordMassMessage"}
# Fields of which a request sets at most one (the others stay empty in its cases).
ALTERNATIVES = {"SendMessage": {"conversation_id", "fan_id"}}
# What a request needs besides ids to reach the look-up of its objects.
SAMPLES: dict[str, dict[str, Any]] = {
    "SendMessage": {"text": "hello", "idempotency_key": "isolation-key"},
    "SearchMessages": {"query": "hello"},
    "BatchListRecentMessages": {"limit": 5},
    "UpdateFanTags": {"add_tags": ["stolen"]},
    "UpdateFan": {"display_name": "renamed"},
    "UpdateQuickReply": {"text": "changed"},
    "UpdateFanList": {"name": "changed"},
    "UpdateConversation": {"pinned": True},
}


def id_fields(
    descriptor: Any, prefix: str = "", depth: int = 0
) -> list[tuple[str, FieldDescriptor]]:
    """(dotted path, field) of every object id field in a request type, nested ones included."""
    found: list[tuple[str, FieldDescriptor]] = []
    for field in descriptor.fields:
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
            if not field.message_type.full_name.startswith("google.protobuf."):
                found += id_fields(field.message_type, f"{path}.", depth + 1)
        elif (
            field.type == FieldDescriptor.TYPE_STRING
            and field.name.endswith(("_id", "_ids"))
            and not field.name.startswith(PLATFORM_PREFIX)
        ):
            found.append((path, field))
    return found


def set_field(request: Any, path: str, value: str) -> None:
    *parents, name = path.split(".")
    target = request
    for parent in parents:
        target = getattr(target, parent)
    field = target.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        getattr(target, name).append(value)
    else:
        setattr(target, name, value)


def build_cases(
    owner: dict[str, str], intruder: dict[str, str]
) -> list[tuple[MethodDescriptor, str, Any]]:
    """(method, id field, request) for every id field of every method."""
    cases = []
    for method in SERVICE.methods:
        if method.name in SERVICES_ONLY:
            continue
        fields = [(p, f) for p, f in id_fields(method.input_type) if f.name not in NOT_CRM_OBJECTS]
        for path, field in fields:
            request_cls = getattr(crm_pb2, method.input_type.name)
            request = request_cls(**SAMPLES.get(method.name, {}))
            alternatives = ALTERNATIVES.get(method.name, set())
            for other_path, other in fields:
                if other_path == path or other.name in alternatives:
                    continue
                set_field(request, other_path, intruder[OBJECT_OF_FIELD[other.name]])
            assert field.name in OBJECT_OF_FIELD, (
                f"{method.name}.{path}: add it to OBJECT_OF_FIELD (or NOT_CRM_OBJECTS)"
            )
            set_field(request, path, owner[OBJECT_OF_FIELD[field.name]])
            cases.append((method, path, request))
    return cases


async def objects_of(stack: Any, creator: Any, tag: str) -> dict[str, str]:
    """One object of every kind, owned by `creator`."""
    stub, auth = stack.stub, creator.auth
    fan = await stub.CreateFan(
        crm_pb2.CreateFanRequest(
            platform=crm_pb2.PLATFORM_ONLYFANS, platform_fan_id=f"of-{tag}", display_name=tag
        ),
        metadata=auth,
    )
    sent = await stub.SendMessage(
        crm_pb2.SendMessageRequest(fan_id=fan.id, text=f"hello {tag}", idempotency_key=tag),
        metadata=auth,
    )
    reply = await stub.CreateQuickReply(
        crm_pb2.CreateQuickReplyRequest(shortcut=f"/{tag}", text="hi"), metadata=auth
    )
    fan_list = await stub.CreateFanList(
        crm_pb2.CreateFanListRequest(name=tag, kind=crm_pb2.FAN_LIST_KIND_STATIC), metadata=auth
    )
    await stub.AddFanListMembers(
        crm_pb2.AddFanListMembersRequest(list_id=fan_list.id, fan_ids=[fan.id]), metadata=auth
    )
    return {
        "fan": fan.id,
        "conversation": sent.message.conversation_id,
        "message": sent.message.id,
        "quick_reply": reply.id,
        "list": fan_list.id,
    }


async def snapshot(database_url: str) -> dict[str, list[Any]]:
    """Every row of every table of the crm schema."""
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as conn:
            tables = (
                await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'crm' ORDER BY 1")
                )
            ).scalars()
            return {
                table: sorted(
                    (tuple(row) for row in await conn.execute(text(f"SELECT * FROM crm.{table}"))),
                    key=repr,
                )
                for table in list(tables)
            }
    finally:
        await engine.dispose()


async def test_a_creator_never_reaches_another_creators_objects(
    stack: Any, creators: Any, helpers: Any
) -> None:
    owner, intruder = creators
    owned = await objects_of(stack, owner, "owner")
    own = await objects_of(stack, intruder, "intruder")
    cases = build_cases(owned, own)
    covered = {method.name for method, _, _ in cases}
    assert {"GetFan", "SendMessage", "MarkMessageRead", "AddFanListMembers"} <= covered

    # Let the outbox relay settle so the snapshot compares only what the calls could change.
    await helpers.eventually(
        lambda: snapshot(stack.database_url),
        lambda rows: all(row[10] is not None for row in rows["outbox"]),  # published_at
    )
    before = await snapshot(stack.database_url)
    failures = []
    for method, path, request in cases:
        call = getattr(stack.stub, method.name)(request, metadata=intruder.auth)
        try:
            if method.server_streaming:
                await call.read()
            else:
                await call
            failures.append(f"{method.name}({path}): succeeded")
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                failures.append(f"{method.name}({path}): {from_rpc_error(error)}")
    assert not failures, "\n".join(failures)
    after = await snapshot(stack.database_url)
    for table in before:
        assert after[table] == before[table], f"crm.{table} changed"

    # The owner still sees everything, untouched; a random id is NOT_FOUND for everybody.
    fan = await stack.stub.GetFan(crm_pb2.GetFanRequest(fan_id=owned["fan"]), metadata=owner.auth)
    assert fan.display_name == "owner"
    assert list(fan.tags) == []
    error = await helpers.rpc_error(
        stack.stub.GetFan(crm_pb2.GetFanRequest(fan_id=str(uuid.uuid4())), metadata=owner.auth)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
