"""Commands over HTTP: validation, the offline 409, the bridge's answers, timeouts, audit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from api_helpers import ADMIN_ENV_TOKEN, assert_problem
from jsonschema import Draft7Validator
from probes import MqttProbe
from pydantic import SecretStr

from api.backends import Backend
from api.ocpp_schemas import request_schema
from api.routes.commands import (
    CATALOG,
    COMMANDS_201,
    SCHEMA_COMMANDS,
    SchemaCommand,
    body_example,
    body_schema,
)
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
    from bridge.v201.commands import COMMANDS as BRIDGE_201

    paths = app.openapi()["paths"]
    missing = [
        name
        for name in [*BRIDGE_COMMANDS, *BRIDGE_201]
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


# --- both OCPP versions ---------------------------------------------------------------------
@pytest.fixture
async def online_201(online: str, backend: Backend) -> str:
    """The charger of ``online``, connected with OCPP 2.0.1 as the bridge reports it."""
    await backend.shadow_client.update(
        CID, {"reported": {"connection": {"online": True, "ocppVersion": "2.0.1"}}}
    )
    return CID


def test_the_api_and_the_bridge_agree_on_each_version_s_commands() -> None:
    from bridge.commands import COMMANDS as BRIDGE_16
    from bridge.v201.commands import COMMANDS as BRIDGE_201

    for version, bridge in (("1.6", BRIDGE_16), ("2.0.1", BRIDGE_201)):
        api = {name: command.action for name, command in CATALOG[version].items()}
        assert api == bridge, version


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_every_listed_example_fits_its_schema(version: str) -> None:
    for command in CATALOG[version].values():
        errors = list(Draft7Validator(body_schema(command)).iter_errors(body_example(command)))
        assert not errors, (version, command.name, errors)


async def test_the_list_of_commands_follows_the_charger_s_version(
    client: httpx.AsyncClient, auth: Auth, online: str, backend: Backend
) -> None:
    url = f"/api/v1/chargers/{CID}/commands"
    v16 = await client.get(url, headers=auth("viewer"))
    assert v16.status_code == 200, v16.text
    assert v16.json()["ocppVersion"] == "1.6"
    names = {c["name"]: c for c in v16.json()["commands"]}
    assert names["reset"]["action"] == "Reset" and "get-variables" not in names
    assert names["reset"]["requestSchema"]["properties"]["type"]["enum"] == ["Hard", "Soft"]
    assert names["remote-start"]["action"] == "RemoteStartTransaction"

    await backend.shadow_client.update(CID, {"reported": {"connection": {"ocppVersion": "2.0.1"}}})
    v201 = (await client.get(url, headers=auth("viewer"))).json()
    assert v201["ocppVersion"] == "2.0.1"
    names = {c["name"]: c for c in v201["commands"]}
    assert names["remote-start"]["action"] == "RequestStartTransaction"
    assert names["get-diagnostics"]["action"] == "GetLog"
    assert names["reset"]["requestSchema"]["properties"]["type"]["enum"] == [
        "Immediate",
        "OnIdle",
    ]
    assert "get-configuration" not in names and "get-variables" in names
    assert_problem(await client.get("/api/v1/chargers/NOPE/commands", headers=auth("viewer")), 404)
    assert_problem(await client.get(url), 401)


def test_the_openapi_documents_both_versions_bodies(app: Any) -> None:
    paths = app.openapi()["paths"]
    assert "get" in paths["/api/v1/chargers/{charger_id}/commands"]
    body = paths["/api/v1/chargers/{charger_id}/commands/reset"]["post"]["requestBody"]
    content = body["content"]["application/json"]
    titles = [s["title"] for s in content["schema"]["oneOf"]]
    assert titles == ["ResetBody (OCPP 1.6)", "ResetRequest (OCPP 2.0.1)"]
    assert set(content["examples"]) == {"OCPP 1.6", "OCPP 2.0.1"}
    only_201 = paths["/api/v1/chargers/{charger_id}/commands/get-variables"]["post"]
    assert "oneOf" not in only_201["requestBody"]["content"]["application/json"]["schema"]


async def test_a_body_of_the_other_version_is_refused_before_anything_is_sent(
    client: httpx.AsyncClient,
    auth: Auth,
    online: str,
    bridge_probe: MqttProbe,
    topics: Topics,
    backend: Backend,
) -> None:
    url = f"/api/v1/chargers/{CID}/commands"
    # A 2.0.1 body to a 1.6 charger, and a 2.0.1-only command.
    bad = await client.post(f"{url}/reset", json={"type": "Immediate"}, headers=auth("operator"))
    assert assert_problem(bad, 422)["errors"][0]["pointer"] == "/type"
    start = {"idToken": {"idToken": "A", "type": "ISO14443"}, "remoteStartId": 1}
    bad = await client.post(f"{url}/remote-start", json=start, headers=auth("operator"))
    assert_problem(bad, 422)
    only_201 = await client.post(f"{url}/get-variables", json={}, headers=auth("operator"))
    assert assert_problem(only_201, 404)["type"].endswith("command-not-available")

    # A 1.6 body to a 2.0.1 charger.
    await backend.shadow_client.update(CID, {"reported": {"connection": {"ocppVersion": "2.0.1"}}})
    bad = await client.post(f"{url}/remote-start", json={"idTag": "A"}, headers=auth("operator"))
    body = assert_problem(bad, 422)
    assert body["type"].endswith("invalid-command") and "OCPP 2.0.1" in body["detail"]
    messages = " ".join(e["message"] for e in body["errors"])
    assert "idToken" in messages and "idTag" in messages  # missing, and not allowed
    with pytest.raises(AssertionError):
        await bridge_probe.expect(topics.command(CID), timeout=0.3)  # nothing was published


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS_201 if isinstance(c, SchemaCommand)], ids=lambda c: c.name
)
async def test_a_2_0_1_request_goes_to_the_bridge_as_it_is(
    client: httpx.AsyncClient,
    auth: Auth,
    online_201: str,
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
    assert (await call).status_code == 200


async def test_get_diagnostics_to_a_2_0_1_charger_is_a_get_log_request(
    client: httpx.AsyncClient, auth: Auth, online_201: str, bridge_probe: MqttProbe, topics: Topics
) -> None:
    call = asyncio.create_task(
        client.post(
            f"/api/v1/chargers/{CID}/commands/get-diagnostics",
            json={"retries": 2, "startTime": "2026-12-01T00:00:00Z"},
            headers=auth("operator"),
        )
    )
    request = await answer(
        bridge_probe, topics, {"status": "ok", "response": {"status": "Accepted"}}
    )
    payload = request["payload"]
    assert request["name"] == "get-diagnostics"
    assert payload["logType"] == "DiagnosticsLog" and payload["retries"] == 2
    assert payload["log"]["remoteLocation"].startswith(
        f"http://api.example:8000/api/v1/diagnostics/uploads/{CID}/"
    )
    assert payload["log"]["oldestTimestamp"].startswith("2026-12-01T00:00:00")
    assert not list(Draft7Validator(request_schema("GetLog", "2.0.1")).iter_errors(payload))
    assert (await call).status_code == 200
