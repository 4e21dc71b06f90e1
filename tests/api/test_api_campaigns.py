"""Firmware campaigns over HTTP: validation, the fit rule, overlaps, pause / resume / cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_campaigns_helpers import NEW, add_image, desired_firmware, seed
from api_helpers import assert_problem

from api.backends import Backend
from fleet.rollouts import CampaignEngine
from twin.service import ShadowService

Auth = Callable[[str], dict[str, str]]
URL = "/api/v1/campaigns"


@pytest.fixture
def engine(backend: Backend) -> CampaignEngine:
    assert backend.campaigns is not None
    return CampaignEngine(backend.campaigns, backend.shadows, backend.shadow_client)


async def create(client: httpx.AsyncClient, auth: Auth, **body: Any) -> httpx.Response:
    return await client.post(URL, json=body, headers=auth("operator"))


async def test_a_campaign_is_split_into_canary_and_waves(
    client: httpx.AsyncClient, auth: Auth, backend: Backend, twin: ShadowService
) -> None:
    image = await add_image(backend)
    for i in range(10):
        await seed(backend, f"CP-{i}", site="Depot" if i < 8 else "Elsewhere")
    answer = await create(
        client,
        auth,
        name="depot",
        firmwareId=image.image_id,
        target={"vendor": "ChargeTwin", "site": "Depot"},
        canary=2,
        waves=["50%"],
        window={"cron": "0 2 * * *", "timezone": "Europe/Berlin", "durationMinutes": 90},
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert answer.headers["Location"] == f"{URL}/{body['id']}"
    assert body["state"] == "running"
    assert body["firmware"]["version"] == NEW
    assert [(p["name"], p["size"]) for p in body["phases"]] == [
        ("canary", 2),
        ("wave 1", 4),
        ("wave 2", 2),
    ]
    assert body["counts"]["queued"] == 8 and body["total"] == 8
    assert body["policy"]["window"] == {
        "cron": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "durationMinutes": 90,
    }
    fetched = (await client.get(f"{URL}/{body['id']}", headers=auth("viewer"))).json()
    assert fetched["phases"] == body["phases"]
    chargers = await client.get(
        f"{URL}/{body['id']}/chargers", params={"phase": 0}, headers=auth("viewer")
    )
    assert chargers.status_code == 200
    assert len(chargers.json()["items"]) == 2
    assert {c["state"] for c in chargers.json()["items"]} == {"queued"}
    listed = await client.get(URL, params={"state": "running"}, headers=auth("viewer"))
    assert [c["id"] for c in listed.json()] == [body["id"]]


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"canary": "ten"}, "/canary"),
        ({"canary": 0}, "/canary"),
        ({"failureThreshold": 120}, "/failureThreshold"),
        ({"window": {"cron": "every night"}}, "/window/cron"),
        ({"window": {"cron": "0 2 * * *", "timezone": "Mars/Olympus"}}, "/window/timezone"),
        ({"retries": -1}, "/retries"),
        ({"surprise": True}, "/surprise"),
    ],
)
async def test_invalid_campaigns_answer_422_naming_the_field(
    client: httpx.AsyncClient, auth: Auth, change: dict[str, Any], pointer: str
) -> None:
    body = {"name": "x", "firmwareId": "fw_1", "target": {"vendor": "ChargeTwin"}, **change}
    problem = assert_problem(await create(client, auth, **body), 422)
    assert any(e["pointer"].startswith(pointer) for e in problem["errors"]), problem


async def test_unknown_image_empty_or_unknown_target_answer_422(
    client: httpx.AsyncClient, auth: Auth, backend: Backend, twin: ShadowService
) -> None:
    image = await add_image(backend)
    await seed(backend, "CP-1")
    unknown = assert_problem(
        await create(client, auth, name="x", firmwareId="fw_nope", target={"vendor": "X"}), 422
    )
    assert unknown["type"].endswith("firmware-not-found")
    nothing = assert_problem(
        await create(client, auth, name="x", firmwareId=image.image_id, target={}), 422
    )
    assert nothing["type"].endswith("invalid-target")
    ghosts = assert_problem(
        await create(
            client, auth, name="x", firmwareId=image.image_id, target={"chargerIds": ["CP-9"]}
        ),
        422,
    )
    assert "CP-9" in ghosts["detail"]
    empty = assert_problem(
        await create(client, auth, name="x", firmwareId=image.image_id, target={"site": "Moon"}),
        422,
    )
    assert empty["type"].endswith("empty-target")
    assert (await client.post(URL, json={}, headers=auth("viewer"))).status_code == 403


async def test_firmware_that_does_not_fit_is_refused_or_its_chargers_skipped(
    client: httpx.AsyncClient, auth: Auth, backend: Backend, twin: ShadowService
) -> None:
    image = await add_image(backend)
    await seed(backend, "CP-1", tags=["pilot"])
    await seed(backend, "CP-2", tags=["pilot"], vendor="Voltaro", model="VX-11")
    await seed(backend, "CP-3", tags=["pilot"], vendor=None)  # never booted
    await seed(backend, "CP-4", tags=["pilot"], version=NEW)  # already there
    body = {"name": "pilot", "firmwareId": image.image_id, "target": {"tags": ["pilot"]}}

    problem = assert_problem(await create(client, auth, **body), 422)
    assert problem["type"].endswith("firmware-does-not-fit")
    assert "2 targeted charger(s)" in problem["detail"]
    messages = sorted(e["message"] for e in problem["errors"])
    assert messages[0].startswith("CP-2: it reports Voltaro VX-11")
    assert messages[1].startswith("CP-3: it never booted")
    assert await backend.campaigns.list() == []  # type: ignore[union-attr]

    answer = await create(client, auth, **body, skipIncompatible=True)
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert {e["id"] for e in created["excluded"]} == {"CP-2", "CP-3", "CP-4"}
    assert created["counts"]["skipped"] == 3 and created["counts"]["queued"] == 1
    assert [p["size"] for p in created["phases"]] == [1]
    skipped = await client.get(
        f"{URL}/{created['id']}/chargers", params={"state": "skipped"}, headers=auth("viewer")
    )
    reasons = {c["id"]: c["reason"] for c in skipped.json()["items"]}
    assert reasons["CP-4"] == f"it already runs {NEW}"


async def test_a_charger_is_in_one_active_campaign_at_most(
    client: httpx.AsyncClient,
    auth: Auth,
    backend: Backend,
    twin: ShadowService,
    engine: CampaignEngine,
) -> None:
    image = await add_image(backend)
    for i in range(4):
        await seed(backend, f"CP-{i}")
    first = await create(
        client, auth, name="a", firmwareId=image.image_id, target={"chargerIds": ["CP-0", "CP-1"]}
    )
    assert first.status_code == 201
    second = await create(
        client, auth, name="b", firmwareId=image.image_id, target={"vendor": "ChargeTwin"}
    )
    problem = assert_problem(second, 409)
    assert problem["type"].endswith("campaign-overlap")
    assert first.json()["id"] in problem["detail"]
    assert sorted(e["message"].split(":")[0] for e in problem["errors"]) == ["CP-0", "CP-1"]
    assert len(await backend.campaigns.list()) == 1  # type: ignore[union-attr]

    # Once cancelled and cleaned up by the engine, the chargers are free again.
    cancelled = await client.post(f"{URL}/{first.json()['id']}/cancel", headers=auth("operator"))
    assert cancelled.status_code == 200
    await engine.tick()
    again = await create(
        client, auth, name="b", firmwareId=image.image_id, target={"vendor": "ChargeTwin"}
    )
    assert again.status_code == 201, again.text


async def test_pause_resume_and_cancel_follow_the_campaign_state(
    client: httpx.AsyncClient,
    auth: Auth,
    backend: Backend,
    twin: ShadowService,
    engine: CampaignEngine,
) -> None:
    image = await add_image(backend)
    for i in range(3):
        await seed(backend, f"CP-{i}")
    created = await create(
        client, auth, name="x", firmwareId=image.image_id, target={"vendor": "ChargeTwin"}, canary=3
    )
    cid = created.json()["id"]
    await engine.tick()  # the canary starts: desired firmware set on all three
    assert await desired_firmware(backend, "CP-0") == {"version": NEW}

    paused = await client.post(f"{URL}/{cid}/pause", headers=auth("operator"))
    assert paused.json()["state"] == "paused"
    assert paused.json()["reason"] == "paused by operator"
    assert_problem(await client.post(f"{URL}/{cid}/pause", headers=auth("operator")), 409)
    resumed = await client.post(f"{URL}/{cid}/resume", json={}, headers=auth("operator"))
    assert resumed.json()["state"] == "running" and resumed.json()["reason"] is None
    assert_problem(await client.post(f"{URL}/{cid}/resume", headers=auth("operator")), 409)
    assert_problem(await client.post(f"{URL}/{cid}/pause", headers=auth("viewer")), 403)

    cancelled = await client.post(f"{URL}/{cid}/cancel", headers=auth("operator"))
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["counts"]["cancelled"] == 3
    assert_problem(await client.post(f"{URL}/{cid}/cancel", headers=auth("operator")), 409)
    # The engine removes the desired key it set (documented choice), and frees the chargers.
    await engine.tick()
    assert await desired_firmware(backend, "CP-0") is None
    await engine.tick()
    assert await backend.campaigns.conflicts(["CP-0", "CP-1", "CP-2"]) == {}  # type: ignore[union-attr]
    assert_problem(await client.get(f"{URL}/cmp_nope", headers=auth("viewer")), 404)
