"""Configuration profiles over HTTP: CRUD, apply through the real twin, and the drift report."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from api_campaigns_helpers import report, seed
from api_helpers import assert_problem

from api.backends import Backend
from twin.service import ShadowService

Auth = Callable[[str], dict[str, str]]
URL = "/api/v1/profiles"
CONFIG = {"HeartbeatInterval": "60", "MeterValueSampleInterval": "30"}


async def test_profiles_are_created_read_replaced_and_deleted(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    body = {"name": "depot", "config": CONFIG, "target": {"site": "Depot"}}
    created = await client.post(URL, json=body, headers=auth("operator"))
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"{URL}/depot"
    assert created.json()["target"] == {"site": "Depot"}
    assert_problem(await client.post(URL, json=body, headers=auth("operator")), 409)
    assert_problem(await client.post(URL, json=body, headers=auth("viewer")), 403)

    replaced = await client.put(
        f"{URL}/depot", json={"config": {"HeartbeatInterval": "90"}}, headers=auth("operator")
    )
    assert replaced.status_code == 200
    assert replaced.json()["config"] == {"HeartbeatInterval": "90"}
    assert replaced.json()["target"] is None
    made = await client.put(f"{URL}/other", json={"config": CONFIG}, headers=auth("operator"))
    assert made.status_code == 201
    listed = await client.get(URL, headers=auth("viewer"))
    assert [p["name"] for p in listed.json()] == ["depot", "other"]
    assert (await client.delete(f"{URL}/other", headers=auth("operator"))).status_code == 204
    assert_problem(await client.get(f"{URL}/other", headers=auth("viewer")), 404)
    assert_problem(await client.delete(f"{URL}/other", headers=auth("operator")), 404)


async def test_invalid_profiles_answer_422(client: httpx.AsyncClient, auth: Auth) -> None:
    for body, pointer in (
        ({"name": "x", "config": {"bad key!": "1"}}, "/config"),
        ({"name": "x", "config": {"K": "v" * 501}}, "/config"),
        ({"name": "x", "config": {"K": 5}}, "/config/K"),
        ({"name": "x", "config": {}}, "/config"),
        ({"name": "bad name", "config": CONFIG}, "/name"),
        ({"name": "x", "config": CONFIG, "target": {"colour": "red"}}, "/target/colour"),
    ):
        problem = assert_problem(await client.post(URL, json=body, headers=auth("operator")), 422)
        assert any(e["pointer"] == pointer for e in problem["errors"]), (body, problem)


async def test_apply_merges_the_profile_and_drift_says_why_chargers_differ(
    client: httpx.AsyncClient, auth: Auth, backend: Backend, twin: ShadowService
) -> None:
    for i in range(1, 6):
        await seed(backend, f"CP-{i}", tags=["depot"])
    await seed(backend, "CP-9", tags=["elsewhere"])
    await report(backend, "CP-1", {"config": {"HeartbeatInterval": "300"}})
    await backend.shadow_client.update("CP-1", {"desired": {"config": {"Other": "1"}}})
    body = {"name": "depot", "config": CONFIG, "target": {"tags": ["depot"]}}
    assert (await client.post(URL, json=body, headers=auth("operator"))).status_code == 201

    # Apply to four of the five (the fifth stays "not-applied").
    subset = {"target": {"chargerIds": ["CP-1", "CP-2", "CP-3", "CP-4"]}}
    applied = await client.post(f"{URL}/depot/apply", json=subset, headers=auth("operator"))
    assert applied.status_code == 200, applied.text
    assert applied.json() == {
        "profile": "depot",
        "total": 4,
        "applied": 4,
        "failed": [],
        "batches": 1,
    }
    document = await backend.shadows.get_document("CP-1") or {}
    assert document["state"]["desired"]["config"] == {**CONFIG, "Other": "1"}  # merged

    await report(backend, "CP-1", {"config": CONFIG})  # CP-1 took it: in sync
    await report(backend, "CP-3", {"connection": {"online": False}})
    await report(
        backend,
        "CP-4",
        {
            "config": {"HeartbeatInterval": "60"},
            "refused": {
                "config": {"MeterValueSampleInterval": {"value": "30", "status": "Rejected"}}
            },
        },
    )
    drift = await client.get(f"{URL}/depot/drift", headers=auth("viewer"))
    assert drift.status_code == 200, drift.text
    report_ = drift.json()
    assert report_["total"] == 5 and report_["inSync"] == 1
    reasons = {
        c["id"]: {k["key"]: (k["reason"], k.get("status")) for k in c["keys"]}
        for c in report_["chargers"]
    }
    assert reasons == {
        "CP-2": {
            "HeartbeatInterval": ("pending", None),
            "MeterValueSampleInterval": ("pending", None),
        },
        "CP-3": {
            "HeartbeatInterval": ("offline", None),
            "MeterValueSampleInterval": ("offline", None),
        },
        "CP-4": {"MeterValueSampleInterval": ("refused", "Rejected")},
        "CP-5": {
            "HeartbeatInterval": ("not-applied", None),
            "MeterValueSampleInterval": ("not-applied", None),
        },
    }
    assert report_["counts"] == {"refused": 1, "not-applied": 2, "offline": 2, "pending": 2}
    cp3 = next(c for c in report_["chargers"] if c["id"] == "CP-3")
    assert cp3["online"] is False

    # A profile without a target needs one given at apply time.
    await client.put(f"{URL}/bare", json={"config": CONFIG}, headers=auth("operator"))
    assert_problem(await client.post(f"{URL}/bare/apply", headers=auth("operator")), 422)
    assert_problem(await client.get(f"{URL}/bare/drift", headers=auth("viewer")), 422)
    assert_problem(await client.post(f"{URL}/nope/apply", headers=auth("operator")), 404)


async def test_a_profile_of_both_versions_gives_each_charger_the_keys_of_its_version(
    client: httpx.AsyncClient, auth: Auth, backend: Backend, twin: ShadowService
) -> None:
    """1.6 keys and 2.0.1 ``COMPONENT/VARIABLE`` keys in one profile: a charger takes the
    keys of its ``reported.connection.ocppVersion`` (all while the version is not known),
    and drift counts only those."""
    for charger_id in ("MIX-16", "MIX-201", "MIX-NEW"):
        await seed(backend, charger_id, tags=["mixed"])
    await report(backend, "MIX-16", {"connection": {"online": True, "ocppVersion": "1.6"}})
    await report(backend, "MIX-201", {"connection": {"online": True, "ocppVersion": "2.0.1"}})
    both = {
        "HeartbeatInterval": "60",
        "OCPPCommCtrlr/HeartbeatInterval": "60",
        "SampledDataCtrlr/TxUpdatedInterval": "30",
    }
    body = {"name": "mixed", "config": both, "target": {"tags": ["mixed"]}}
    assert (await client.post(URL, json=body, headers=auth("operator"))).status_code == 201

    applied = await client.post(f"{URL}/mixed/apply", headers=auth("operator"))
    assert applied.status_code == 200, applied.text
    assert (applied.json()["total"], applied.json()["applied"]) == (3, 3)
    desired = {}
    for charger_id in ("MIX-16", "MIX-201", "MIX-NEW"):
        document = await backend.shadows.get_document(charger_id) or {}
        desired[charger_id] = document["state"]["desired"]["config"]
    assert desired == {
        "MIX-16": {"HeartbeatInterval": "60"},
        "MIX-201": {
            "OCPPCommCtrlr/HeartbeatInterval": "60",
            "SampledDataCtrlr/TxUpdatedInterval": "30",
        },
        "MIX-NEW": both,
    }

    # Each reports its own keys: both in sync, neither drifted for the other version's key.
    await report(backend, "MIX-16", {"config": {"HeartbeatInterval": "60"}})
    await report(
        backend,
        "MIX-201",
        {
            "config": {
                "OCPPCommCtrlr/HeartbeatInterval": "60",
                "SampledDataCtrlr/TxUpdatedInterval": "45",  # not yet
            }
        },
    )
    drift = await client.get(f"{URL}/mixed/drift", headers=auth("viewer"))
    assert drift.status_code == 200, drift.text
    keys = {c["id"]: sorted(k["key"] for k in c["keys"]) for c in drift.json()["chargers"]}
    assert keys == {
        "MIX-201": ["SampledDataCtrlr/TxUpdatedInterval"],
        "MIX-NEW": sorted(both),  # version unknown: every key counts
    }
    assert drift.json()["inSync"] == 1
