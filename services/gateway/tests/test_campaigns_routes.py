"""The campaigns routes (declared in the campaigns proto) in front of real auth, CRM and
campaigns gRPC servers (in-process): create on the seed's path and the REST one, list, get,
edit, schedule, pause, resume, cancel, unsend, metrics and templates as JSON, and bad input as
problem documents."""

from __future__ import annotations

from typing import Any

from huntaze_devstack.testing import assert_problem, eventually, problem_fields

from .test_crm_routes import Creator, sign_up


async def _fans_and_list(live: Any, creator: Creator, count: int) -> str:
    ids = []
    for index in range(count):
        created = await live.client.post(
            "/api/crm/fans",
            json={
                "platform": "onlyfans",
                "platformFanId": f"{creator.id[:8]}-{index}",
                "displayName": f"Mia{index} Rose",
            },
            headers=creator.headers,
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    made = await live.client.post(
        "/api/crm/lists",
        json={"name": "Everyone", "kind": "static"},
        headers=creator.headers,
    )
    assert made.status_code == 201, made.text
    list_id = str(made.json()["id"])
    added = await live.client.post(
        f"/api/crm/lists/{list_id}/members", json={"fanIds": ids}, headers=creator.headers
    )
    assert added.status_code == 200, added.text
    return list_id


async def test_a_campaign_from_creation_to_its_metrics(live: Any) -> None:
    creator = await sign_up(live)
    list_id = await _fans_and_list(live, creator, 4)
    created = await live.client.post(
        "/api/of/campaigns",
        json={
            "name": "Friday PPV",
            "kind": "one_off",
            "listId": list_id,
            "holdoutPercent": 25,
            "variants": [{"key": "A", "text": "Hey {name}, new set!", "priceCents": 1200}],
            "exclusions": {"automatedWithinHours": 12},
        },
        headers=creator.headers,
    )
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert campaign["status"] == "draft"
    assert campaign["variants"][0]["priceCents"] == 1200
    campaign_id = campaign["id"]

    renamed = await live.client.patch(
        f"/api/campaigns/{campaign_id}", json={"name": "Friday drop"}, headers=creator.headers
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Friday drop"
    assert renamed.json()["holdoutPercent"] == 25

    listed = await live.client.get("/api/campaigns", headers=creator.headers)
    assert listed.status_code == 200, listed.text
    assert [c["id"] for c in listed.json()["campaigns"]] == [campaign_id]
    seed_path = await live.client.get("/api/of/campaigns?limit=1", headers=creator.headers)
    assert seed_path.json()["campaigns"][0]["id"] == campaign_id

    scheduled = await live.client.post(
        f"/api/campaigns/{campaign_id}/schedule", json={}, headers=creator.headers
    )
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["audienceCount"] == 4
    assert scheduled.json()["holdoutCount"] == 1

    # Every send handed to the CRM (no platform worker runs here to deliver them).
    await eventually(
        lambda: live.client.get(f"/api/campaigns/{campaign_id}", headers=creator.headers),
        lambda response: response.json()["status"] == "completed",
    )
    metrics = await live.client.get(
        f"/api/campaigns/{campaign_id}/metrics", headers=creator.headers
    )
    assert metrics.status_code == 200, metrics.text
    body = metrics.json()
    assert body["total"]["recipients"] == 3
    assert body["total"]["pending"] == 3
    assert body["variants"][0]["key"] == "A"
    assert body["holdout"] == 1
    assert "Not significant" in body["lift"]["verdict"]

    gone = await live.client.delete(f"/api/campaigns/{campaign_id}", headers=creator.headers)
    assert gone.status_code == 204, gone.text
    missing = await live.client.get(f"/api/campaigns/{campaign_id}", headers=creator.headers)
    assert_problem(missing, 404, "CAMPAIGN_NOT_FOUND")


async def test_pause_and_resume_a_scheduled_campaign(live: Any) -> None:
    creator = await sign_up(live)
    list_id = await _fans_and_list(live, creator, 1)
    created = await live.client.post(
        "/api/campaigns",
        json={
            "name": "Later",
            "kind": "one_off",
            "listId": list_id,
            "timezone": "Europe/Paris",
            "variants": [{"key": "A", "text": "Soon"}],
        },
        headers=creator.headers,
    )
    campaign_id = created.json()["id"]
    scheduled = await live.client.post(
        f"/api/campaigns/{campaign_id}/schedule",
        json={"sendAt": "2099-01-01T09:00"},
        headers=creator.headers,
    )
    assert scheduled.json()["sendAt"] == "2099-01-01T08:00:00Z"
    paused = await live.client.post(f"/api/campaigns/{campaign_id}/pause", headers=creator.headers)
    assert paused.json()["status"] == "paused"
    again = await live.client.post(f"/api/campaigns/{campaign_id}/pause", headers=creator.headers)
    assert_problem(again, 409, "CAMPAIGN_PAUSED")
    resumed = await live.client.post(
        f"/api/campaigns/{campaign_id}/resume", headers=creator.headers
    )
    assert resumed.json()["status"] == "scheduled"
    edit = await live.client.patch(
        f"/api/campaigns/{campaign_id}", json={"name": "x"}, headers=creator.headers
    )
    assert_problem(edit, 409, "CAMPAIGN_NOT_DRAFT")
    busy = await live.client.delete(f"/api/campaigns/{campaign_id}", headers=creator.headers)
    assert_problem(busy, 409, "CAMPAIGN_IN_PROGRESS")
    # One message, the same for everyone: the platform's mass-message queue will carry it, and
    # nothing of it can be unsent before it went out.
    assert scheduled.json()["massMessage"] is True
    nothing = await live.client.post(
        f"/api/campaigns/{campaign_id}/unsend", headers=creator.headers
    )
    assert_problem(nothing, 409, "NOTHING_TO_UNSEND")
    unknown = await live.client.post(
        "/api/campaigns/00000000-0000-4000-8000-000000000000/unsend", headers=creator.headers
    )
    assert_problem(unknown, 404, "CAMPAIGN_NOT_FOUND")
    other = await sign_up(live)
    foreign = await live.client.post(
        "/api/campaigns",
        json={
            "name": "Not mine",
            "kind": "one_off",
            "listId": list_id,
            "variants": [{"key": "A", "text": "Hi"}],
        },
        headers=other.headers,
    )
    assert_problem(foreign, 404, "LIST_NOT_FOUND")


async def test_templates_are_listed_and_edited(live: Any) -> None:
    creator = await sign_up(live)
    listed = await live.client.get("/api/campaigns/templates?niche=gaming", headers=creator.headers)
    assert listed.status_code == 200, listed.text
    templates = listed.json()["templates"]
    assert templates
    assert {t["niche"] for t in templates} == {"gaming"}
    first = templates[0]
    edited = await live.client.patch(
        f"/api/campaigns/templates/{first['id']}",
        json={"name": "My clip"},
        headers=creator.headers,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["name"] == "My clip"
    assert edited.json()["text"] == first["text"]
    assert edited.json()["results"]["campaigns"] == 0


async def test_bad_campaigns_are_problem_documents(live: Any) -> None:
    creator = await sign_up(live)
    unnamed = await live.client.post(
        "/api/campaigns", json={"kind": "one_off"}, headers=creator.headers
    )
    assert "name" in problem_fields(assert_problem(unnamed, 422))
    unknown = await live.client.post(
        "/api/campaigns",
        json={
            "name": "x",
            "kind": "sequence",
            "variants": [{"key": "A", "text": "Hi {nick}"}],
            "holdoutPercent": 80,
        },
        headers=creator.headers,
    )
    assert_problem(unknown, 422)
    not_an_id = await live.client.get("/api/campaigns/nope", headers=creator.headers)
    assert_problem(not_an_id, 422)
    anonymous = await live.client.get("/api/campaigns")
    assert_problem(anonymous, 401)
