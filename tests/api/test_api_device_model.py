"""A desired ``config`` value an OCPP 2.0.1 station's device model refuses is a 422 before
anything is sent, with the checks the bridge makes (``twin.devicemodel``); the real twin
holds the reported device model, the real broker shows nothing is published."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from api_helpers import assert_problem
from probes import MqttProbe

from api.backends import Backend
from chargetwin.topics import Topics
from twin.devicemodel import config_problems
from twin.service import ShadowService

Headers = Callable[[str], dict[str, str]]
Register = Callable[..., Awaitable[dict[str, Any]]]

DEVICE_MODEL = {
    "OCPPCommCtrlr/HeartbeatInterval": {
        "mutability": "ReadWrite",
        "dataType": "integer",
        "minLimit": 10,
        "maxLimit": 86400,
    },
    "EVSE@1/AvailabilityState": {"mutability": "ReadOnly", "dataType": "OptionList"},
    "TxCtrlr/StopTxOnEVSideDisconnect": {"mutability": "ReadWrite", "dataType": "boolean"},
    "SampledDataCtrlr/TxUpdatedMeasurands": {
        "mutability": "ReadWrite",
        "dataType": "OptionList",
        "valuesList": "Energy.Active.Import.Register,Power.Active.Import",
    },
    "SecurityCtrlr/BasicAuthPassword": {"mutability": "WriteOnly", "dataType": "string"},
}


async def patch(client: httpx.AsyncClient, headers: dict[str, str], body: Any) -> httpx.Response:
    return await client.patch(
        "/api/v1/chargers/CS-1/shadow/desired",
        content=json.dumps(body).encode(),
        headers={**headers, "Content-Type": "application/merge-patch+json"},
    )


@pytest.fixture
async def probe(mosquitto_url: str, topics: Topics) -> AsyncIterator[MqttProbe]:
    observer = MqttProbe(mosquitto_url)
    await observer.subscribe(f"{topics.prefix}/#")
    yield observer
    observer.close()


@pytest.fixture
async def station(register: Register, backend: Backend, twin: ShadowService) -> str:
    """A registered 2.0.1 station whose device model is in its shadow."""
    await register("CS-1")
    reported = {
        "connection": {"online": True, "ocppVersion": "2.0.1"},
        "config": {"OCPPCommCtrlr/HeartbeatInterval": "300"},
        "deviceModel": DEVICE_MODEL,
    }
    await backend.shadow_client.update("CS-1", {"reported": reported})
    return "CS-1"


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ({"EVSE@1/AvailabilityState": "Faulted"}, "ReadOnly"),
        ({"OCPPCommCtrlr/HeartbeatInterval": "often"}, "not an integer"),
        ({"OCPPCommCtrlr/HeartbeatInterval": "5"}, "below the minimum 10"),
        ({"OCPPCommCtrlr/HeartbeatInterval": "90000"}, "above the maximum 86400"),
        ({"TxCtrlr/StopTxOnEVSideDisconnect": "yes"}, "not true or false"),
        ({"SampledDataCtrlr/TxUpdatedMeasurands": "Voltage"}, "not one of"),
        ({"HeartbeatInterval": "60"}, "COMPONENT/VARIABLE"),  # a 1.6 key
        ({"EVSE@x/AvailabilityState": "1"}, "not valid under any"),  # the schema's 422
    ],
)
async def test_a_value_the_device_model_refuses_is_422_and_never_sent(
    client: httpx.AsyncClient,
    auth: Headers,
    station: str,
    probe: MqttProbe,
    topics: Topics,
    config: dict[str, str],
    why: str,
) -> None:
    problem = assert_problem(await patch(client, auth("operator"), {"config": config}), 422)
    (key,) = config
    text = json.dumps(problem)
    assert why in text, problem
    if "not valid" not in why:
        assert problem["type"].endswith("device-model-refuses")
        pointer = "/desired/config/" + key.replace("/", "~1")
        assert [e["pointer"] for e in problem["errors"]] == [pointer]
    await probe.silent(topics.shadow("CS-1", "update"))
    audit = (await client.get("/api/v1/chargers/CS-1/audit", headers=auth("viewer"))).json()
    assert [(e["outcome"], e["status"]) for e in audit][:1] == [("invalid", 422)]


async def test_values_the_device_model_allows_pass_and_deletions_always_do(
    client: httpx.AsyncClient, auth: Headers, station: str
) -> None:
    allowed = {
        "OCPPCommCtrlr/HeartbeatInterval": "120",
        "TxCtrlr/StopTxOnEVSideDisconnect": "false",
        "SampledDataCtrlr/TxUpdatedMeasurands": "Power.Active.Import",
        "TxCtrlr/NotInTheModel": "anything",  # the station answers UnknownVariable
    }
    response = await patch(client, auth("operator"), {"config": allowed})
    assert response.status_code == 200, response.text
    deleted = await patch(client, auth("operator"), {"config": {"TxCtrlr/NotInTheModel": None}})
    assert deleted.status_code == 200, deleted.text


async def test_a_1_6_charger_is_not_checked_against_a_device_model(
    client: httpx.AsyncClient, auth: Headers, register: Register, backend: Backend, twin: Any
) -> None:
    await register("CS-1")
    await backend.shadow_client.update(
        "CS-1", {"reported": {"connection": {"online": True, "ocppVersion": "1.6"}}}
    )
    response = await patch(client, auth("operator"), {"config": {"HeartbeatInterval": "60"}})
    assert response.status_code == 200, response.text


def test_only_2_0_1_stations_are_checked_and_every_problem_is_named() -> None:
    reported = {"connection": {"ocppVersion": "2.0.1"}, "deviceModel": DEVICE_MODEL}
    problems = config_problems(
        {
            "EVSE@1/AvailabilityState": "Faulted",
            "OCPPCommCtrlr/HeartbeatInterval": "1",
            "OCPPCommCtrlr/HeartbeatInterval#Bogus": "1",
            "OCPPCommCtrlr/HeartbeatInterval#Target": "1",  # not in the model: left to it
            "TxCtrlr/StopTxOnEVSideDisconnect": None,
        },
        reported,
    )
    assert [key for key, _ in problems] == [
        "EVSE@1/AvailabilityState",
        "OCPPCommCtrlr/HeartbeatInterval",
        "OCPPCommCtrlr/HeartbeatInterval#Bogus",
    ]
    assert config_problems({"EVSE@1/AvailabilityState": "x"}, {"deviceModel": DEVICE_MODEL}) == []
