"""Through the gateway: connect with an OTP code, sync, and the fans, conversations and
purchases on the CRM's routes; a reply reaches the platform once. Real Chromium, the platform
simulator, auth, CRM, the worker and the gateway app, on real NATS and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from huntaze_crm.config import CrmSettings
from huntaze_crm.server import MIGRATIONS_PACKAGE as CRM_MIGRATIONS
from huntaze_crm.server import CrmServer
from huntaze_devstack.testing import eventually
from huntaze_gateway.app import create_app
from huntaze_gateway.config import GatewaySettings
from huntaze_kit.migrations import upgrade_async

from .conftest import PLATFORM_EMAIL, PLATFORM_PASSWORD, VAULT_KEY, Creator, WorkerStack


@pytest.fixture
async def gateway(worker_stack: WorkerStack) -> AsyncIterator[httpx.AsyncClient]:
    """The CRM and the gateway app in front of auth, the CRM and the worker."""
    await upgrade_async(worker_stack.database_url, package=CRM_MIGRATIONS, schema="crm")
    crm = CrmServer(
        CrmSettings(
            database_url=worker_stack.database_url,
            nats_url=worker_stack.nats_url,
            auth_grpc_target=f"127.0.0.1:{worker_stack.auth.port}",
            crm_grpc_host="127.0.0.1",
            crm_grpc_port=0,
            grace_seconds=0.5,
            crm_metrics_port=0,
            db_pool_size=4,
        )
    )
    await crm.start()
    try:
        app = create_app(
            GatewaySettings(
                auth_grpc_target=f"127.0.0.1:{worker_stack.auth.port}",
                crm_grpc_target=f"127.0.0.1:{crm.port}",
                onlyfans_grpc_target=f"127.0.0.1:{worker_stack.worker.port}",
                nats_url=worker_stack.nats_url,
                gateway_trusted_proxies=1,
            )
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gateway.test", timeout=60.0
            ) as client:
                yield client
    finally:
        await crm.stop()


def bearer(creator: Creator) -> dict[str, str]:
    return {"authorization": f"Bearer {creator.token}"}


async def get_json(client: httpx.AsyncClient, creator: Creator, path: str, **params: Any) -> Any:
    response = await client.get(path, headers=bearer(creator), params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_connect_with_otp_sync_then_crm_routes_and_a_reply_sent_once(
    worker_stack: WorkerStack, gateway: httpx.AsyncClient, capfd: pytest.CaptureFixture[str]
) -> None:
    simulator = worker_stack.simulator
    await simulator.control.patch("/_control/config", json={"otp_required": True})
    creator = await worker_stack.sign_up()
    auth = bearer(creator)

    refused = await gateway.post("/api/of/connect", headers=auth, json={})
    assert refused.status_code == 422

    first = await gateway.post(
        "/api/onboarding/connect-platform",
        headers=auth,
        json={"credentials": {"email": PLATFORM_EMAIL, "password": PLATFORM_PASSWORD}},
    )
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "needs_otp"
    assert PLATFORM_PASSWORD not in first.text
    code = (await simulator.control.get("/_control/otp")).json()["code"]
    connected = await gateway.post("/api/of/connect/otp", headers=auth, json={"code": code})
    assert connected.json()["state"] == "connected", connected.text

    fans_on_platform = (await simulator.control.get("/_control/state")).json()["fans"]
    fans = await eventually(
        lambda: get_json(gateway, creator, "/api/crm/fans", limit=200),
        lambda page: len(page["fans"]) == fans_on_platform,
        within=60.0,
    )
    assert {fan["platform"] for fan in fans["fans"]} == {"onlyfans"}
    threads = await eventually(
        lambda: get_json(gateway, creator, "/api/of/threads", limit=200),
        lambda page: len(page["conversations"]) > 0,
    )
    assert {c["platform"] for c in threads["conversations"]} == {"onlyfans"}
    inbox = await get_json(gateway, creator, "/api/of/inbox")
    assert all(c["unreadCount"] > 0 for c in inbox["conversations"])
    fans = await eventually(
        lambda: get_json(gateway, creator, "/api/crm/fans", limit=200),
        lambda page: any(fan["valueCents"] > 0 for fan in page["fans"]),
    )
    spender = max(fans["fans"], key=lambda fan: fan["valueCents"])
    purchases = await get_json(gateway, creator, f"/api/crm/fans/{spender['id']}/purchases")
    assert purchases["purchases"]

    status = await get_json(gateway, creator, "/api/of/status")
    assert status["state"] == "connected"
    assert status["lastSyncedAt"]
    synced = await gateway.post("/api/of/sync", headers=auth)
    assert synced.status_code == 202

    # The vault, listed from the platform for the media pickers, a page at a time.
    vault = await get_json(gateway, creator, "/api/of/vault/media", limit=10)
    assert len(vault["media"]) == 10
    assert vault["nextCursor"]
    assert {media["kind"] for media in vault["media"]} == {"image", "video"}
    rest = await get_json(gateway, creator, "/api/of/vault/media", cursor=vault["nextCursor"])
    assert len(rest["media"]) == 2
    assert rest["nextCursor"] is None
    too_many = await gateway.get("/api/of/vault/media", headers=auth, params={"limit": 101})
    assert too_many.status_code == 422, too_many.text
    assert too_many.headers["content-type"].startswith("application/problem+json")

    fan = await simulator.new_fan(name="Sasha")
    await simulator.fan_writes(fan["id"], "are you there?")
    conversation = await eventually(
        lambda: get_json(gateway, creator, "/api/of/threads", limit=200),
        lambda page: any(
            c["fan"] and c["fan"]["platformFanId"] == str(fan["id"]) for c in page["conversations"]
        ),
    )
    conversation_id = next(
        c["id"]
        for c in conversation["conversations"]
        if c["fan"] and c["fan"]["platformFanId"] == str(fan["id"])
    )
    key = str(uuid.uuid4())
    for _ in range(2):  # a retry with the same key sends nothing again
        sent = await gateway.post(
            "/api/of/send",
            headers={**auth, "idempotency-key": key},
            json={"conversationId": conversation_id, "text": "Always, Sasha"},
        )
        assert sent.status_code in (200, 201), sent.text
    message_id = sent.json()["message"]["id"]
    await eventually(
        lambda: get_json(gateway, creator, f"/api/crm/conversations/{conversation_id}/messages"),
        lambda page: any(
            m["id"] == message_id and m["deliveryStatus"] == "sent" for m in page["messages"]
        ),
        within=60.0,
    )
    copies = (await simulator.control.get("/_control/sent", params={"fan_id": fan["id"]})).json()
    assert [copy["text"] for copy in copies] == ["Always, Sasha"]

    gone = await gateway.post("/api/of/disconnect", headers=auth)
    assert gone.json()["state"] == "disconnected"

    # The whole run's log (every part in this process, Chromium included) holds no secret.
    out, err = capfd.readouterr()
    logged = out + err
    assert "onlyfans.connect" in logged
    for secret in (PLATFORM_PASSWORD, VAULT_KEY):
        assert secret not in logged
