"""Operator commands over MQTT for an OCPP 2.0.1 station: the 2.0.1 action of each name,
the 2.0.1 schema checked before anything is sent, the 1.6 result contract.

A hand-written 2.0.1 client (frames of our own making) so each test sees exactly which
CALL the bridge sends, or that it sends none.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from conftest import PASSWORD, MqttWatcher, RawCharger, basic, url_of
from websockets.asyncio.client import connect

from bridge import Bridge

Open201 = Callable[..., Awaitable[RawCharger]]


@pytest.fixture
async def open_201(bridge: Bridge) -> AsyncIterator[Open201]:
    """Registered raw 2.0.1 clients; ``accepted``: booted before, so online at once."""
    opened: list[RawCharger] = []

    async def open_(*, accepted: bool = True) -> RawCharger:
        charger_id = f"cs-cmd-{uuid.uuid4().hex[:8]}"
        assert bridge.server is not None and bridge.services is not None
        await bridge.server.registry.register(charger_id, PASSWORD)
        if accepted:
            bridge.services.accepted.add(charger_id)
        ws = await connect(
            url_of(bridge, charger_id),
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            additional_headers=basic(charger_id, PASSWORD),
            ping_interval=None,
        )
        assert ws.subprotocol == "ocpp2.0.1"
        station = RawCharger(ws, charger_id)
        opened.append(station)
        return station

    yield open_
    for station in opened:
        await station.close()


def send(bridge: Bridge, watcher: MqttWatcher, station: RawCharger, request: dict[str, Any]) -> str:
    watcher.publish(bridge.topics.command(station.charger_id), request)
    return f"{bridge.topics.command(station.charger_id)}/result"


async def result_of(watcher: MqttWatcher, topic: str, token: str) -> dict[str, Any]:
    found: dict[str, Any] = await watcher.wait_for(topic, lambda m: m.get("clientToken") == token)
    return found


async def no_call(station: RawCharger) -> None:
    with pytest.raises(TimeoutError):
        await station.next_call(timeout=0.3)


async def test_a_command_name_becomes_its_2_0_1_action(
    bridge: Bridge, open_201: Open201, watcher: MqttWatcher
) -> None:
    station = await open_201()
    start = {"idToken": {"idToken": "04E91C2A", "type": "ISO14443"}, "remoteStartId": 5}
    topic = send(
        bridge, watcher, station, {"name": "remote-start", "payload": start, "clientToken": "s"}
    )
    call = await station.next_call()
    assert call[2:] == ["RequestStartTransaction", start]
    await station.reply(call, {"status": "Accepted", "transactionId": "tx-9"})
    assert await result_of(watcher, topic, "s") == {
        "clientToken": "s",
        "name": "remote-start",
        "status": "ok",
        "response": {"status": "Accepted", "transactionId": "tx-9"},
    }


async def test_a_payload_that_is_not_a_2_0_1_request_is_not_sent(
    bridge: Bridge, open_201: Open201, watcher: MqttWatcher
) -> None:
    station = await open_201()
    topic = send(
        bridge, watcher, station, {"name": "reset", "payload": {"type": "Soft"}, "clientToken": "b"}
    )
    answer = await result_of(watcher, topic, "b")
    assert (answer["status"], answer["code"]) == ("error", 400)
    assert "Reset" in answer["message"] and "PropertyConstraintViolation" in answer["message"]
    # A 1.6-only command is unknown for a 2.0.1 station.
    send(bridge, watcher, station, {"name": "get-configuration", "payload": {}, "clientToken": "u"})
    unknown = await result_of(watcher, topic, "u")
    assert unknown["code"] == 400 and "get-variables" in unknown["message"]
    # A password rotation is not built for 2.0.1: nothing is sent, no result is owed.
    send(bridge, watcher, station, {"name": "rotate-credentials", "clientToken": "r"})
    await no_call(station)
    assert not [m for m in watcher.on(topic) if m.get("clientToken") == "r"]


async def test_a_station_not_accepted_yet_takes_only_trigger(
    bridge: Bridge, open_201: Open201, watcher: MqttWatcher
) -> None:
    station = await open_201(accepted=False)
    topic = send(
        bridge, watcher, station, {"name": "clear-cache", "payload": {}, "clientToken": "c"}
    )
    assert (await result_of(watcher, topic, "c"))["code"] == 409
    await no_call(station)
    trigger = {"requestedMessage": "BootNotification"}
    send(bridge, watcher, station, {"name": "trigger", "payload": trigger, "clientToken": "t"})
    call = await station.next_call()
    assert call[2:] == ["TriggerMessage", trigger]
    await station.reply(call, {"status": "Accepted"})
    assert (await result_of(watcher, topic, "t"))["status"] == "ok"


async def test_a_get_variables_answer_is_mirrored_into_reported_config(
    bridge: Bridge, open_201: Open201, watcher: MqttWatcher
) -> None:
    station = await open_201()
    asked = {
        "getVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
            {
                "component": {"name": "EVSE", "evse": {"id": 1}},
                "variable": {"name": "Power"},
                "attributeType": "MaxSet",
            },
            {"component": {"name": "TxCtrlr"}, "variable": {"name": "Nope"}},
            {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}},
        ]
    }
    topic = send(
        bridge, watcher, station, {"name": "get-variables", "payload": asked, "clientToken": "g"}
    )
    call = await station.next_call()
    assert call[2:] == ["GetVariables", asked]
    results = [
        {
            "attributeStatus": "Accepted",
            "attributeValue": "120",
            "component": {"name": "OCPPCommCtrlr"},
            "variable": {"name": "HeartbeatInterval"},
        },
        {
            "attributeStatus": "Accepted",
            "attributeType": "MaxSet",
            "attributeValue": "11000",
            "component": {"name": "EVSE", "evse": {"id": 1}},
            "variable": {"name": "Power"},
        },
        {
            "attributeStatus": "UnknownVariable",
            "component": {"name": "TxCtrlr"},
            "variable": {"name": "Nope"},
        },
        {  # a station that (wrongly) reveals a WriteOnly secret: never into the shadow
            "attributeStatus": "Accepted",
            "attributeValue": "correct-horse-battery-staple",
            "component": {"name": "SecurityCtrlr"},
            "variable": {"name": "BasicAuthPassword"},
        },
    ]
    await station.reply(call, {"getVariableResult": results})
    assert (await result_of(watcher, topic, "g"))["response"] == {"getVariableResult": results}
    shadow = bridge.topics.shadow(station.charger_id, "update")
    report = await watcher.wait_for(shadow, lambda m: "config" in m["state"]["reported"])
    assert report["state"]["reported"]["config"] == {
        "OCPPCommCtrlr/HeartbeatInterval": "120",
        "EVSE@1/Power#MaxSet": "11000",
    }


async def test_change_availability_takes_the_1_6_body_as_a_rule_writes_it(
    bridge: Bridge, open_201: Open201, watcher: MqttWatcher
) -> None:
    """A rule's command goes to chargers of both versions: ``{connectorId: N, type}`` is
    ChangeAvailability of EVSE N (0: the station); the 2.0.1 body is taken as it is."""
    station = await open_201()
    body_16 = {"connectorId": 2, "type": "Inoperative"}
    topic = send(
        bridge,
        watcher,
        station,
        {"name": "change-availability", "payload": body_16, "clientToken": "a"},
    )
    call = await station.next_call()
    assert call[2:] == [
        "ChangeAvailability",
        {"operationalStatus": "Inoperative", "evse": {"id": 2}},
    ]
    await station.reply(call, {"status": "Accepted"})
    assert (await result_of(watcher, topic, "a"))["response"] == {"status": "Accepted"}
    shadow = bridge.topics.shadow(station.charger_id, "update")
    report = await watcher.wait_for(shadow, lambda m: "availability" in m["state"]["reported"])
    assert report["state"]["reported"]["availability"] == {"2": "Inoperative"}

    station_wide = {"connectorId": 0, "type": "Operative"}
    send(
        bridge,
        watcher,
        station,
        {"name": "change-availability", "payload": station_wide, "clientToken": "s"},
    )
    call = await station.next_call()
    assert call[2:] == ["ChangeAvailability", {"operationalStatus": "Operative"}]
    await station.reply(call, {"status": "Scheduled"})
    assert (await result_of(watcher, topic, "s"))["response"] == {"status": "Scheduled"}

    native = {"operationalStatus": "Inoperative", "evse": {"id": 1}}
    send(
        bridge,
        watcher,
        station,
        {"name": "change-availability", "payload": native, "clientToken": "n"},
    )
    call = await station.next_call()
    assert call[2:] == ["ChangeAvailability", native]
    await station.reply(call, {"status": "Rejected"})
    assert (await result_of(watcher, topic, "n"))["response"] == {"status": "Rejected"}

    # A connector id that is not a number is refused with the reason, nothing sent.
    text_id = {"connectorId": "2", "type": "Inoperative"}
    send(
        bridge,
        watcher,
        station,
        {"name": "change-availability", "payload": text_id, "clientToken": "x"},
    )
    refused = await result_of(watcher, topic, "x")
    assert (refused["status"], refused["code"]) == ("error", 400)
    assert "connectorId must be a whole number" in refused["message"]
    # A body of neither shape: the 2.0.1 schema check refuses it.
    send(
        bridge,
        watcher,
        station,
        {"name": "change-availability", "payload": {"type": "Sideways"}, "clientToken": "y"},
    )
    assert (await result_of(watcher, topic, "y"))["code"] == 400
    await no_call(station)
