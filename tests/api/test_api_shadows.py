"""Shadow reads and desired-state changes, end to end through the real twin service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from api_helpers import assert_problem
from probes import MqttProbe

from api.backends import Backend
from chargetwin.mqtt import MqttClient
from chargetwin.shadow_client import ShadowClient
from chargetwin.topics import Topics
from twin.service import ShadowService

Headers = Callable[[str], dict[str, str]]
Register = Callable[..., Awaitable[dict[str, Any]]]
MERGE_PATCH = "application/merge-patch+json"


async def patch_desired(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    patch: Any,
    *,
    charger_id: str = "CP-1",
    if_match: str | None = None,
    content_type: str = MERGE_PATCH,
) -> httpx.Response:
    extra = {"Content-Type": content_type}
    if if_match is not None:
        extra["If-Match"] = if_match
    return await client.patch(
        f"/api/v1/chargers/{charger_id}/shadow/desired",
        content=json.dumps(patch).encode(),
        headers={**headers, **extra},
    )


@pytest.fixture
async def charger(register: Register) -> str:
    await register("CP-1")
    return "CP-1"


@pytest.fixture
async def probe(mosquitto_url: str, topics: Topics) -> AsyncIterator[MqttProbe]:
    observer = MqttProbe(mosquitto_url)
    await observer.subscribe(f"{topics.prefix}/#")
    yield observer
    observer.close()


async def test_a_new_chargers_shadow_is_empty_at_version_0(
    client: httpx.AsyncClient, auth: Headers, charger: str
) -> None:
    response = await client.get("/api/v1/chargers/CP-1/shadow", headers=auth("viewer"))
    assert response.status_code == 200
    assert response.headers["etag"] == '"0"'
    assert response.json()["state"] == {"reported": {}, "desired": {}}
    assert_problem(await client.get("/api/v1/chargers/CP-9/shadow", headers=auth("viewer")), 404)


async def test_a_patch_reaches_the_twin_and_comes_back_as_a_delta(
    client: httpx.AsyncClient,
    auth: Headers,
    charger: str,
    twin: ShadowService,
    probe: MqttProbe,
    topics: Topics,
) -> None:
    patch = {"config": {"HeartbeatInterval": "300"}, "availability": {"1": "Inoperative"}}
    response = await patch_desired(client, auth("operator"), patch)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"1"'
    assert response.json() == {"version": 1, "desired": patch}

    update = await probe.expect(topics.shadow("CP-1", "update"))
    assert update["state"] == {"desired": patch} and "clientToken" in update
    delta = await probe.expect(topics.shadow("CP-1", "update", "delta"))
    assert delta["state"] == patch and delta["version"] == 1

    shadow = await client.get("/api/v1/chargers/CP-1/shadow", headers=auth("viewer"))
    assert shadow.headers["etag"] == '"1"'
    assert shadow.json()["state"]["delta"] == patch
    summary = (await client.get("/api/v1/chargers/CP-1", headers=auth("viewer"))).json()
    assert summary["hasDelta"] is True


async def test_merge_patch_null_deletes_and_objects_merge(
    client: httpx.AsyncClient, auth: Headers, charger: str, twin: ShadowService
) -> None:
    first = {"config": {"HeartbeatInterval": "300", "MeterValueSampleInterval": "60"}}
    assert (await patch_desired(client, auth("operator"), first)).status_code == 200
    response = await patch_desired(
        client,
        auth("operator"),
        {"config": {"MeterValueSampleInterval": None, "ConnectionTimeOut": "90"}},
        content_type="application/json",
    )
    assert response.status_code == 200, response.text
    expected = {"config": {"HeartbeatInterval": "300", "ConnectionTimeOut": "90"}}
    assert response.json() == {"version": 2, "desired": expected}
    shadow = (await client.get("/api/v1/chargers/CP-1/shadow", headers=auth("viewer"))).json()
    assert shadow["state"]["desired"] == expected


async def test_if_match_makes_a_change_conditional(
    client: httpx.AsyncClient, auth: Headers, charger: str, twin: ShadowService
) -> None:
    ops = auth("operator")
    patch = {"config": {"HeartbeatInterval": "300"}}
    assert (await patch_desired(client, ops, patch, if_match='"0"')).status_code == 200
    ok = await patch_desired(client, ops, {"config": {"HeartbeatInterval": "120"}}, if_match='"1"')
    assert ok.status_code == 200 and ok.headers["etag"] == '"2"'

    stale = await patch_desired(client, ops, patch, if_match='"1"')
    problem = assert_problem(stale, 412)
    assert stale.headers["etag"] == '"2"' and '"2"' in problem["detail"]
    assert (await patch_desired(client, ops, patch, if_match="*")).status_code == 200
    assert_problem(await patch_desired(client, ops, patch, if_match='W/"3"'), 400)
    assert_problem(await patch_desired(client, ops, patch, if_match='"3'), 400)
    assert_problem(await patch_desired(client, ops, patch, if_match="2"), 412)  # bare, stale
    assert (await patch_desired(client, ops, patch, if_match="3")).status_code == 200
    shadow = (await client.get("/api/v1/chargers/CP-1/shadow", headers=auth("viewer"))).json()
    assert shadow["version"] == 4 and shadow["state"]["desired"] == patch


@pytest.mark.parametrize(
    ("patch", "pointer"),
    [
        ({"availability": {"1": "Broken"}}, "/desired/availability/1"),
        ({"config": {"HeartbeatInterval": 300}}, "/desired/config/HeartbeatInterval"),
        ({"firmware": {"url": "http://x"}}, "/desired/firmware"),
        ({"colour": "red"}, "/desired"),
        ({"config": {"AuthorizationKey": "30313233"}}, "/desired/config/AuthorizationKey"),
    ],
)
async def test_an_invalid_desired_state_is_422_with_the_pointer_and_never_sent(
    client: httpx.AsyncClient,
    auth: Headers,
    charger: str,
    probe: MqttProbe,
    topics: Topics,
    patch: dict[str, Any],
    pointer: str,
) -> None:
    problem = assert_problem(await patch_desired(client, auth("operator"), patch), 422)
    assert problem["type"].endswith("invalid-desired-state")
    assert pointer in [e["pointer"] for e in problem["errors"]], problem
    await probe.silent(topics.shadow("CP-1", "update"))


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"[1, 2]", MERGE_PATCH, 422),
        (b"null", MERGE_PATCH, 422),
        (b"{not json", MERGE_PATCH, 400),
        (b'{"config": {}}', "text/plain", 415),
        (b"\xff\xfe", MERGE_PATCH, 400),
        # Hostile JSON that once answered 500 (the audit log or the twin could not hold it).
        (b'{"config": {"HeartbeatInterval": "\\ud800"}}', MERGE_PATCH, 400),
        (b'{"config": {"a\\udfffb": "x"}}', MERGE_PATCH, 400),
        (b'{"config": ' * 5_000 + b"{}" + b"}" * 5_000, MERGE_PATCH, 400),
        (b'{"config": {"a": NaN}}', MERGE_PATCH, 400),
        (b'{"config": {"a": 1e999}}', MERGE_PATCH, 400),
        (b'{"availability": {"1": 1' + b"0" * 30 + b"}}", MERGE_PATCH, 400),
    ],
)
async def test_bad_patch_bodies(
    client: httpx.AsyncClient,
    auth: Headers,
    charger: str,
    body: bytes,
    content_type: str,
    status: int,
) -> None:
    response = await client.patch(
        "/api/v1/chargers/CP-1/shadow/desired",
        content=body,
        headers={**auth("operator"), "Content-Type": content_type},
    )
    assert_problem(response, status)


async def test_patching_an_unknown_charger_is_404(client: httpx.AsyncClient, auth: Headers) -> None:
    assert_problem(await patch_desired(client, auth("operator"), {}, charger_id="CP-9"), 404)


async def test_no_answer_from_the_twin_is_a_504_and_audited(
    client: httpx.AsyncClient, auth: Headers, charger: str, backend: Backend, topics: Topics
) -> None:
    # No twin runs in this test.
    backend.shadow_client = ShadowClient(backend.mqtt, topics, timeout=0.3)
    response = await patch_desired(client, auth("operator"), {"config": {"A": "1"}})
    assert_problem(response, 504)
    entries = await backend.audit.list(charger_id="CP-1")
    assert [(e.outcome.value, e.status) for e in entries] == [("timeout", 504)]


@pytest.fixture
async def refusing_twin(mosquitto_url: str, topics: Topics) -> AsyncIterator[Callable[[int], None]]:
    """A stand-in twin that rejects every update with the code it is told."""
    code = {"value": 400}
    mqtt = MqttClient(mosquitto_url, f"test-refuser-{topics.prefix}")
    await mqtt.connect()

    async def refuse(topic: str, payload: bytes) -> None:
        token = json.loads(payload).get("clientToken")
        answer = {"code": code["value"], "message": "refused by stand-in", "clientToken": token}
        mqtt.publish(f"{topic}/rejected", answer)

    await mqtt.subscribe_acked(topics.all_shadow_requests("update"), refuse)

    def set_code(value: int) -> None:
        code["value"] = value

    yield set_code
    await mqtt.disconnect()


@pytest.mark.parametrize(
    ("twin_code", "if_match", "status"),
    [
        (409, '"0"', 412),
        (409, None, 409),
        (413, None, 413),
        (400, None, 400),
        (422, None, 422),
        (404, None, 404),
        (500, None, 502),
    ],
)
async def test_twin_refusals_map_to_http_statuses(
    client: httpx.AsyncClient,
    auth: Headers,
    charger: str,
    backend: Backend,
    refusing_twin: Callable[[int], None],
    twin_code: int,
    if_match: str | None,
    status: int,
) -> None:
    refusing_twin(twin_code)
    response = await patch_desired(
        client, auth("operator"), {"config": {"A": "1"}}, if_match=if_match
    )
    problem = assert_problem(response, status)
    assert "refused by stand-in" in problem["detail"]
    entries = await backend.audit.list(charger_id="CP-1")
    assert entries[0].status == status and entries[0].outcome.value in (
        "rejected",
        "precondition-failed",
    )


async def test_a_change_the_twin_got_past_its_deadline_is_a_504_audited_as_expired(
    client: httpx.AsyncClient,
    auth: Headers,
    charger: str,
    backend: Backend,
    refusing_twin: Callable[[int], None],
) -> None:
    """The twin answers 408 to a request past its deadline and did not apply it: the
    audit says so (not the "may have been applied" of a timeout)."""
    refusing_twin(408)
    response = await patch_desired(client, auth("operator"), {"config": {"A": "1"}})
    problem = assert_problem(response, 504)
    assert "not applied" in problem["detail"]
    entries = await backend.audit.list(charger_id="CP-1")
    assert [(e.outcome.value, e.status) for e in entries] == [("expired", 504)]


async def test_every_change_and_refusal_is_audited(
    client: httpx.AsyncClient, auth: Headers, charger: str, twin: ShadowService
) -> None:
    ok_patch = {"config": {"HeartbeatInterval": "300"}}
    assert (await patch_desired(client, auth("operator"), ok_patch)).status_code == 200
    assert (
        await patch_desired(client, auth("admin"), {"availability": {"1": "x"}})
    ).status_code == 422
    assert (
        await patch_desired(client, auth("operator"), ok_patch, if_match='"7"')
    ).status_code == 412
    assert (await patch_desired(client, auth("viewer"), ok_patch)).status_code == 403

    response = await client.get("/api/v1/chargers/CP-1/audit", headers=auth("viewer"))
    assert response.status_code == 200
    entries = response.json()
    assert [(e["outcome"], e["status"], e["actor"], e["role"]) for e in entries] == [
        ("precondition-failed", 412, "operator-bot", "operator"),
        ("invalid", 422, "admin-bot", "admin"),
        ("accepted", 200, "operator-bot", "operator"),
    ]
    accepted = entries[-1]
    assert accepted["patch"] == ok_patch and accepted["version"] == 1
    assert accepted["actorId"].startswith("tok_") and accepted["chargerId"] == "CP-1"
    assert "/desired/availability/1" in entries[1]["detail"]

    fleet = (
        await client.get("/api/v1/audit?chargerId=CP-1&limit=1", headers=auth("viewer"))
    ).json()
    assert [e["outcome"] for e in fleet] == ["precondition-failed"]
    legacy = (await client.get("/api/v1/audit?charger_id=CP-2", headers=auth("viewer"))).json()
    assert legacy == []
    assert_problem(await client.get("/api/v1/chargers/CP-9/audit", headers=auth("viewer")), 404)
