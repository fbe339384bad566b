"""One upstream's outage takes down its own routes, not the gateway: with the CRM stopped, the
gateway stays ready (and says the CRM is away), logins work, and CRM routes answer 503 with
Retry-After until it is back."""

from __future__ import annotations

from huntaze_devstack.testing import assert_problem
from tests.conftest import Suite


async def test_a_crm_outage_leaves_logins_and_readiness_alone(suite: Suite) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        async with suite.stopped("crm"):
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body["status"] == "degraded"
            assert body["unavailable"] == ["crm"]
            assert body["checks"]["auth"] == "SERVING"
            assert body["checks"]["crm"] != "SERVING"

            tokens = (await suite.login(client, email, password))["tokens"]
            bearer = {"authorization": f"Bearer {tokens['accessToken']}"}
            me = await client.get("/api/auth/me", headers=bearer)
            assert me.status_code == 200, me.text

            fans = await client.get("/api/crm/fans", headers=bearer)
            assert_problem(fans, 503)
            assert fans.headers["content-type"].startswith("application/problem+json")
            assert int(fans.headers["retry-after"]) >= 1

        back = await client.get("/readyz")
        assert back.json() == {
            "status": "ready",
            "checks": {
                "auth": "SERVING",
                "crm": "SERVING",
                "ai": "SERVING",
                "analytics": "SERVING",
                "campaigns": "SERVING",
                "revocations": "FOLLOWING",
            },
            "unavailable": [],
        }
        fans = await client.get("/api/crm/fans", headers=bearer)
        assert fans.status_code == 200, fans.text
