"""The gRPC server bootstrap and token verification, over a real loopback server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jwt.algorithms import OKPAlgorithm

from huntaze_kit.errors import InvalidArgument, RateLimited, Unauthenticated
from huntaze_kit.grpc_client import bearer_metadata, create_channel
from huntaze_kit.grpc_server import AccessPolicy, GrpcServer
from huntaze_kit.identity import (
    ACCESS_TOKEN_TYPE,
    SERVICE_TOKEN_TYPE,
    Principal,
    StaticKeySource,
    TokenVerifier,
    VerifiedTokens,
    current_principal,
)
from huntaze_kit.logging import current_request_id, request_context
from huntaze_kit.rich_status import from_rpc_error, to_grpc_status

AUDIENCE = "huntaze"
ISSUER = "huntaze-auth"
SERVICE = "huntaze.test.v1.Probe"
PUBLIC = f"/{SERVICE}/Public"
WHOAMI = f"/{SERVICE}/WhoAmI"
FAIL = f"/{SERVICE}/Fail"
CRASH = f"/{SERVICE}/Crash"
REQUEST_ID = f"/{SERVICE}/RequestId"
SLOW = f"/{SERVICE}/Slow"


class Keys:
    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.kid = uuid.uuid4().hex
        jwk = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        self.jwk = {**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    def sign(
        self, claims: dict[str, Any], *, typ: str = ACCESS_TOKEN_TYPE, kid: str | None = None
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 900,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(
            payload, self.private, algorithm="EdDSA", headers={"typ": typ, "kid": kid or self.kid}
        )


class CountingKeySource(StaticKeySource):
    def __init__(self, jwks: dict[str, Any]) -> None:
        super().__init__(jwks)
        self.fetches = 0

    async def fetch_jwks(self) -> dict[str, Any]:
        self.fetches += 1
        return await super().fetch_jwks()


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def verifier(keys: Keys) -> TokenVerifier:
    return TokenVerifier(
        key_source=CountingKeySource({"keys": [keys.jwk]}),
        audience=AUDIENCE,
        issuer=ISSUER,
        min_refresh_interval=0.0,
    )


def user_claims(user_id: str = "u-1", session_id: str = "s-1") -> dict[str, Any]:
    return {"sub": user_id, "sid": session_id}


async def test_valid_access_token_gives_user_principal(keys: Keys, verifier: TokenVerifier) -> None:
    principal = await verifier.verify(keys.sign(user_claims()))
    assert principal.kind == "user"
    assert principal.user_id == "u-1"
    assert principal.creator_id == "u-1"
    assert principal.session_id == "s-1"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(
            lambda k: jwt.encode(
                {"sub": "u-1", "sid": "s"},
                key=None,
                algorithm="none",
                headers={"typ": ACCESS_TOKEN_TYPE, "kid": k.kid},
            ),
            id="alg-none",
        ),
        pytest.param(lambda k: Keys().sign(user_claims(), kid=k.kid), id="wrong-key"),
        pytest.param(lambda k: k.sign({**user_claims(), "aud": "other"}), id="wrong-aud"),
        pytest.param(lambda k: k.sign({**user_claims(), "iss": "other"}), id="wrong-iss"),
        pytest.param(
            lambda k: k.sign({**user_claims(), "exp": int(time.time()) - 60}), id="expired"
        ),
        pytest.param(lambda k: k.sign(user_claims(), typ="JWT"), id="wrong-typ"),
        pytest.param(lambda k: k.sign({"sub": "u-1"}), id="no-session"),
        pytest.param(lambda k: k.sign(user_claims(), kid="unknown"), id="unknown-kid"),
        pytest.param(lambda k: "not.a.jwt", id="garbage"),
        pytest.param(
            lambda k: jwt.encode(
                user_claims(),
                "s" * 32,
                algorithm="HS256",
                headers={"typ": ACCESS_TOKEN_TYPE, "kid": k.kid},
            ),
            id="hmac-confusion",
        ),
    ],
)
async def test_bad_tokens_are_refused(keys: Keys, verifier: TokenVerifier, mutate: Any) -> None:
    with pytest.raises(Unauthenticated):
        await verifier.verify(mutate(keys))


async def test_revoked_session_is_refused(keys: Keys, verifier: TokenVerifier) -> None:
    token = keys.sign(user_claims(session_id="s-9"))
    await verifier.verify(token)
    verifier.revocations.revoke("s-9")
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token)
    assert caught.value.reason == "SESSION_REVOKED"


async def test_a_verified_token_is_answered_from_memory(
    keys: Keys, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = keys.sign(user_claims(session_id="s-5"))
    first = await verifier.verify(token)
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        decoded.append(args[0])
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    assert await verifier.verify(token) is first
    assert decoded == []
    other = keys.sign(user_claims(session_id="s-6"))
    assert (await verifier.verify(other)).session_id == "s-6"
    assert decoded == [other]


async def test_the_session_check_runs_on_every_call_unless_the_caller_does_it(keys: Keys) -> None:
    active = {"s-1": True}
    checked: list[str] = []

    async def session_check(session_id: str) -> bool:
        checked.append(session_id)
        return active.get(session_id, False)

    verifier = TokenVerifier(
        key_source=StaticKeySource({"keys": [keys.jwk]}),
        audience=AUDIENCE,
        issuer=ISSUER,
        session_check=session_check,
    )
    token = keys.sign(user_claims(session_id="s-1"))
    await verifier.verify(token)
    await verifier.verify(token)
    assert checked == ["s-1", "s-1"]
    active["s-1"] = False
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token)
    assert caught.value.reason == "SESSION_REVOKED"
    # A caller that checks the session itself skips the check, never the revocation list.
    await verifier.verify(token, check_session=False)
    assert checked == ["s-1", "s-1", "s-1"]
    verifier.revocations.revoke("s-1")
    with pytest.raises(Unauthenticated):
        await verifier.verify(token, check_session=False)


def test_remembered_tokens_expire_and_stay_bounded() -> None:
    def principal(n: int, expires_at: float) -> Principal:
        return Principal(
            kind="user",
            subject=f"u-{n}",
            creator_id=f"u-{n}",
            token_id=f"t-{n}",
            expires_at=expires_at,
            session_id=f"s-{n}",
        )

    memory = VerifiedTokens(max_entries=10)
    memory.remember("expiring", principal(0, expires_at=100.0), now=50.0)
    assert memory.get("expiring", now=99.0) is not None
    assert memory.get("expiring", now=100.0) is None
    assert len(memory) == 0
    memory.remember("already-expired", principal(1, expires_at=100.0), now=100.0)
    assert len(memory) == 0
    for n in range(25):
        memory.remember(f"token-{n}", principal(n, expires_at=1000.0), now=0.0)
        assert len(memory) <= 10
    assert memory.get("token-24", now=0.0) is not None
    assert memory.get("token-0", now=0.0) is None


async def test_unknown_kid_refetches_keys_once(keys: Keys) -> None:
    rotated = Keys()
    source = CountingKeySource({"keys": [keys.jwk]})
    verifier = TokenVerifier(
        key_source=source, audience=AUDIENCE, issuer=ISSUER, min_refresh_interval=0.0
    )
    await verifier.verify(keys.sign(user_claims()))
    assert source.fetches == 1
    source._jwks = {"keys": [keys.jwk, rotated.jwk]}
    await verifier.verify(rotated.sign(user_claims()))
    assert source.fetches == 2
    await verifier.verify(rotated.sign(user_claims()))
    assert source.fetches == 2


async def test_service_token_principal(keys: Keys, verifier: TokenVerifier) -> None:
    token = keys.sign(
        {"sub": "service:crm", "creator_id": "c-1", "scope": "a b"}, typ=SERVICE_TOKEN_TYPE
    )
    principal = await verifier.verify(token)
    assert principal.kind == "service"
    assert principal.service_name == "crm"
    assert principal.creator_id == "c-1"
    assert principal.scopes == frozenset({"a", "b"})


def _probe_handler() -> grpc.GenericRpcHandler:
    async def public(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    async def whoami(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        principal = current_principal()
        await context.send_initial_metadata((("x-subject", principal.subject),))
        return empty_pb2.Empty()

    async def fail(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        raise RateLimited(message="Slow down.", reason="TOO_MANY", retry_after_seconds=7.5)

    async def crash(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        raise RuntimeError("secret internals")

    async def request_id(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        await context.send_initial_metadata((("x-seen-request-id", current_request_id() or ""),))
        return empty_pb2.Empty()

    async def slow(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        await asyncio.sleep(5)
        return empty_pb2.Empty()

    def unary(fn: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn,
            request_deserializer=empty_pb2.Empty.FromString,
            response_serializer=empty_pb2.Empty.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Public": unary(public),
            "WhoAmI": unary(whoami),
            "Fail": unary(fail),
            "Crash": unary(crash),
            "RequestId": unary(request_id),
            "Slow": unary(slow),
        },
    )


@pytest.fixture
async def probe_server(verifier: TokenVerifier) -> AsyncIterator[GrpcServer]:
    server = GrpcServer(
        host="127.0.0.1",
        port=0,
        verifier=verifier,
        policy=AccessPolicy(
            public_methods=frozenset({PUBLIC, REQUEST_ID, SLOW}),
            service_methods={"crm": frozenset({WHOAMI})},
        ),
        grace_seconds=1.0,
    )
    server.add(lambda s: s.add_generic_rpc_handlers((_probe_handler(),)), SERVICE)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def channel(probe_server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with create_channel(f"127.0.0.1:{probe_server.port}") as ch:
        yield ch


def _call(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(
        method,
        request_serializer=empty_pb2.Empty.SerializeToString,
        response_deserializer=empty_pb2.Empty.FromString,
    )


async def test_public_method_needs_no_token(channel: grpc.aio.Channel) -> None:
    await _call(channel, PUBLIC)(empty_pb2.Empty())


async def test_private_method_refuses_anonymous_and_bad_tokens(channel: grpc.aio.Channel) -> None:
    for metadata in ((), bearer_metadata("nope"), (("authorization", "Basic abc"),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel, WHOAMI)(empty_pb2.Empty(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_private_method_sees_the_verified_user(channel: grpc.aio.Channel, keys: Keys) -> None:
    call = _call(channel, WHOAMI)(
        empty_pb2.Empty(), metadata=bearer_metadata(keys.sign(user_claims("u-7")))
    )
    await call
    assert dict(await call.initial_metadata())["x-subject"] == "u-7"


async def test_service_token_limited_to_its_methods(channel: grpc.aio.Channel, keys: Keys) -> None:
    crm = keys.sign({"sub": "service:crm", "creator_id": "c"}, typ=SERVICE_TOKEN_TYPE)
    other = keys.sign({"sub": "service:ai", "creator_id": "c"}, typ=SERVICE_TOKEN_TYPE)
    await _call(channel, WHOAMI)(empty_pb2.Empty(), metadata=bearer_metadata(crm))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, WHOAMI)(empty_pb2.Empty(), metadata=bearer_metadata(other))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_domain_error_maps_to_status_with_rich_details(
    channel: grpc.aio.Channel, keys: Keys
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, FAIL)(
            empty_pb2.Empty(), metadata=bearer_metadata(keys.sign(user_claims()))
        )
    details = from_rpc_error(caught.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "TOO_MANY"
    assert details.message == "Slow down."
    assert details.retry_after_seconds == 7.5


async def test_invalid_argument_carries_field_violations() -> None:
    status = to_grpc_status(InvalidArgument.for_field("email", "not an email"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_unexpected_exception_is_internal_without_internals(
    channel: grpc.aio.Channel, keys: Keys
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, CRASH)(
            empty_pb2.Empty(), metadata=bearer_metadata(keys.sign(user_claims()))
        )
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or "")


async def test_request_id_travels_in_metadata(channel: grpc.aio.Channel) -> None:
    with request_context("rid-123"):
        call = _call(channel, REQUEST_ID)(empty_pb2.Empty())
        await call
    assert dict(await call.initial_metadata())["x-seen-request-id"] == "rid-123"


async def test_unary_calls_get_the_channels_deadline(probe_server: GrpcServer) -> None:
    async with create_channel(f"127.0.0.1:{probe_server.port}", deadline=0.2) as short:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(short, SLOW)(empty_pb2.Empty())
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2
        # A deadline the caller gives wins.
        await _call(short, PUBLIC)(empty_pb2.Empty(), timeout=3.0)


async def test_health_serving_then_not_serving_on_stop(verifier: TokenVerifier) -> None:
    server = GrpcServer(
        host="127.0.0.1", port=0, verifier=verifier, policy=AccessPolicy(), grace_seconds=0.5
    )
    server.add(lambda s: s.add_generic_rpc_handlers((_probe_handler(),)), SERVICE)
    port = await server.start()
    async with create_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        await server.health.enter_graceful_shutdown()
        response = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await server.stop()


@pytest.mark.parametrize(
    ("claim", "verified"),
    [(True, True), (False, False), ("true", False), (None, False)],
)
async def test_email_verified_comes_from_a_boolean_claim(
    keys: Keys, verifier: TokenVerifier, claim: object, verified: bool
) -> None:
    claims = user_claims() if claim is None else {**user_claims(), "email_verified": claim}
    assert (await verifier.verify(keys.sign(claims))).email_verified is verified


async def test_verified_email_methods_refuse_unverified_users_only(
    verifier: TokenVerifier, keys: Keys
) -> None:
    server = GrpcServer(
        host="127.0.0.1",
        port=0,
        verifier=verifier,
        policy=AccessPolicy(
            service_methods={"crm": frozenset({WHOAMI})},
            verified_email_methods=frozenset({WHOAMI}),
        ),
        grace_seconds=0.5,
    )
    server.add(lambda s: s.add_generic_rpc_handlers((_probe_handler(),)), SERVICE)
    port = await server.start()
    try:
        async with create_channel(f"127.0.0.1:{port}") as ch:
            whoami = _call(ch, WHOAMI)
            unverified = keys.sign(user_claims("u-1"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await whoami(empty_pb2.Empty(), metadata=bearer_metadata(unverified))
            details = from_rpc_error(caught.value)
            assert details.code == grpc.StatusCode.PERMISSION_DENIED
            assert details.reason == "EMAIL_NOT_VERIFIED"
            assert "Verify your email" in details.message

            verified = keys.sign({**user_claims("u-2"), "email_verified": True})
            await whoami(empty_pb2.Empty(), metadata=bearer_metadata(verified))
            service = keys.sign({"sub": "service:crm", "creator_id": "c"}, typ=SERVICE_TOKEN_TYPE)
            await whoami(empty_pb2.Empty(), metadata=bearer_metadata(service))
    finally:
        await server.stop()
