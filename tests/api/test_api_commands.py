"""Commands over HTTP: validation, the offline 409, the bridge's answers, timeouts, audit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from api_helpers import ADMIN_ENV_TOKEN, assert_problem
from probes import MqttProbe
from pydantic import SecretStr

from api.backends import Backend
from api.routes.commands import SCHEMA_COMMANDS, SchemaCommand
from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from twin.service import ShadowService

Auth = Callable[[str], dict[str, str]]
CID = "CP-CMD-1"


@pytest.fixture
async def backend(db: Database, api_mqtt: MqttClient, topics: Topics) -> Backend:
    backend = Backend.build(
        db,
        api_mqtt,
        topics,
        admin_token=SecretStr(ADMIN_ENV_TOKEN),
        twin_timeout=3.0,
        public_url="http://api.example:8000",
        command_timeout=1.0,
    )
    await backend.create_schema()
    return backend


@pytest.fixture
async def online(
    twin: ShadowService, backend: Backend, register: Callable[..., Awaitable[dict[str, Any]]]
) -> str:
    await register(CID)
    await backend.shadow_client.update(CID, {"reported": {"connection": {"online": True}}})
    return CID


@pytest.fixture
async def bridge_probe(mosquitto_url: str, topics: Topics) -> AsyncIterator[MqttProbe]:
    """Stands in for a bridge on the documented command topics (bridge/README.md)."""
    probe = MqttProbe(mosquitto_url)
    await probe.subscribe(topics.command(CID))
    yield probe
    probe.close()


async def answer(probe: MqttProbe, topics: Topics, result: dict[str, Any]) -> dict[str, Any]:
    request = await probe.expect(topics.command(CID))
    await probe.publish(
        f"{topics.command(CID)}/result",
        {"clientToken": request["clientToken"], "name": request["name"], **result},
    )
    return request


async def test_a_command_is_sent_and_its_answer_returned(
    client: httpx.AsyncClient, auth: Auth, online: str, bridge_probe: MqttProbe, topics: Topics
) -> None:
    call = asyncio.create_task(
        client.post(
            f"/api/v1/chargers/{CID}/commands/unlock",
            json={"connectorId": 1},
            headers=auth("operator"),
        )
    )
    request = await answer(
        bridge_probe, topics, {"status": "ok", "response": {"status": "Unlocked"}}
    )
    assert (request["name"], request["payload"]) == ("unlock", {"connectorId": 1})
    response = await call
    assert response.status_code == 200, response.text
    assert response.json()["response"] == {"status": "Unlocked"}
    audit = (await client.get(f"/api/v1/chargers/{CID}/audit", headers=auth("viewer"))).json()
    assert (audit[0]["action"], audit[0]["outcome"], audit[0]["patch"]) == (
        "command.unlock",
        "accepted",
        {"connectorId": 1},
    )


async def test_callerror_is_502_and_diagnostics_get_an_upload_grant(
    client: httpx.AsyncClient, auth: Auth, online: str, bridge_probe: MqttProbe, topics: Topics
) -> None:
    call = asyncio.create_task(
        client.post(
            f"/api/v1/chargers/{CID}/commands/get-diagnostics",
            json={"retries": 1},
            headers=auth("operator"),
        )
    )
    error = {"status": "error", "code": 502, "message": "x", "ocppError": "InternalError"}
    request = await answer(bridge_probe, topics, error)
    location = request["payload"]["location"]
    assert location.startswith(f"http://api.example:8000/api/v1/diagnostics/uploads/{CID}/")
    assert location.endswith("/") and request["payload"]["retries"] == 1
    body = assert_problem(await call, 502)
    assert body["type"].endswith("charger-error")
    audit = (await client.get(f"/api/v1/chargers/{CID}/audit", headers=auth("viewer"))).json()
    assert audit[0]["outcome"] == "rejected"
    assert location.split("/")[-2] not in json.dumps(audit)  # the grant is not logged


async def test_no_answer_is_504_and_bad_requests_are_refused(
    client: httpx.AsyncClient, auth: Auth, online: str, register: Callable[..., Any]
) -> None:
    url = f"/api/v1/chargers/{CID}/commands"
    assert_problem(await client.post(f"{url}/reset", json={}, headers=auth("operator")), 504)
    assert_problem(await client.post(f"{url}/unlock", json={}, headers=auth("operator")), 422)
    bad = await client.post(f"{url}/reset", json={"type": "Warm"}, headers=auth("operator"))
    assert assert_problem(bad, 422)["errors"][0]["pointer"] == "/type"
    assert_problem(await client.post(f"{url}/reset", json={}, headers=auth("viewer")), 403)
    assert_problem(await client.post(f"{url}/explode", json={}, headers=auth("operator")), 404)
    unknown = "/api/v1/chargers/NOPE/commands/reset"
    assert_problem(await client.post(unknown, json={}, headers=auth("operator")), 404)
    await register("CP-CMD-OFF")
    offline = "/api/v1/chargers/CP-CMD-OFF/commands/clear-cache"
    body = assert_problem(await client.post(offline, headers=auth("operator")), 409)
    assert body["type"].endswith("charger-offline")


def test_every_command_the_bridge_sends_has_an_http_operation(app: Any) -> None:
    from bridge.commands import COMMANDS as BRIDGE_COMMANDS

    paths = app.openapi()["paths"]
    missing = [
        name
        for name in BRIDGE_COMMANDS
        if f"/api/v1/chargers/{{charger_id}}/commands/{name}" not in paths
    ]
    assert not missing, f"bridge commands without an HTTP operation: {missing}"


@pytest.mark.parametrize("command", SCHEMA_COMMANDS, ids=lambda c: c.name)
async def test_an_ocpp_request_body_goes_to_the_charger_as_it_is(
    client: httpx.AsyncClient,
    auth: Auth,
    online: str,
    bridge_probe: MqttProbe,
    topics: Topics,
    command: SchemaCommand,
) -> None:
    call = asyncio.create_task(
        client.post(
            f"/api/v1/chargers/{CID}/commands/{command.name}",
            json=command.example,
            headers=auth("operator"),
        )
    )
    request = await answer(
        bridge_probe, topics, {"status": "ok", "response": {"status": "Accepted"}}
    )
    assert (request["name"], request["payload"]) == (command.name, command.example)
    response = await call
    assert response.status_code == 200, response.text
    audit = (await client.get(f"/api/v1/chargers/{CID}/audit", headers=auth("viewer"))).json()
    assert (audit[0]["action"], audit[0]["outcome"]) == (f"command.{command.name}", "accepted")


async def test_an_ocpp_request_body_is_checked_against_the_ocpp_schema(
    client: httpx.AsyncClient, auth: Auth, online: str
) -> None:
    url = f"/api/v1/chargers/{CID}/commands"
    bad = await client.post(
        f"{url}/reserve-now",
        json={"connectorId": "one", "expiryDate": "2026-12-24T18:00:00Z", "idTag": "A"},
        headers=auth("operator"),
    )
    body = assert_problem(bad, 422)
    pointers = {e["pointer"] for e in body["errors"]}
    assert "/connectorId" in pointers  # wrong type
    assert "" in pointers  # reservationId missing at the top
    nested = await client.post(
        f"{url}/set-charging-profile",
        json={"connectorId": 1, "csChargingProfiles": {"chargingProfileId": 1}},
        headers=auth("operator"),
    )
    assert all(e["pointer"].startswith("/csChargingProfiles") for e in assert_problem(
        nested, 422)["errors"])  # fmt: skip
    not_json = await client.post(
        f"{url}/get-log",
        content=b"{nope",
        headers={**auth("operator"), "content-type": "application/json"},
    )
    assert_problem(not_json, 400)
    too_big = await client.post(
        f"{url}/cancel-reservation", json={"reservationId": 2**40}, headers=auth("operator")
    )
    assert assert_problem(too_big, 422)["errors"][0]["pointer"] == "/reservationId"  # int32
    viewer = await client.post(f"{url}/get-local-list-version", json={}, headers=auth("viewer"))
    assert_problem(viewer, 403)


async def test_change_configuration_once_refuses_credentials(
    client: httpx.AsyncClient, auth: Auth, online: str
) -> None:
    secret = await client.post(
        f"/api/v1/chargers/{CID}/commands/change-configuration",
        json={"key": "AuthorizationKey", "value": "0123456789abcdef0123"},
        headers=auth("operator"),
    )
    body = assert_problem(secret, 422)
    assert body["errors"][0]["pointer"] == "/key"
    assert "0123456789abcdef0123" not in secret.text
