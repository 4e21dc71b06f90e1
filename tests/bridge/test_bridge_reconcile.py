"""Shadow deltas become ChangeConfiguration / ChangeAvailability; outcomes are reported."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import MqttWatcher, OpenCharger, RawCharger

from bridge import Bridge


def delta(state: dict[str, Any], version: int = 1) -> dict[str, Any]:
    return {"state": state, "metadata": {}, "version": version, "timestamp": 1.0}


def reported_with(key: str) -> Any:
    return lambda m: key in m["state"]["reported"]


async def no_call(charger: RawCharger, within: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await charger.next_call(timeout=within)


async def test_config_delta_is_applied_and_refusals_are_reported_once(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    watcher.publish(delta_topic, delta({"config": {"HeartbeatInterval": 60, "Locked": "x"}}))

    first = await charger.next_call()
    assert first[2:] == ["ChangeConfiguration", {"key": "HeartbeatInterval", "value": "60"}]
    await charger.reply(first, {"status": "Accepted"})
    second = await charger.next_call()
    assert second[2:] == ["ChangeConfiguration", {"key": "Locked", "value": "x"}]
    await charger.reply(second, {"status": "Rejected"})

    accepted = await watcher.wait_for(shadow, reported_with("config"))
    assert accepted["state"]["reported"] == {
        "config": {"HeartbeatInterval": "60"},
        "refused": {"config": {"HeartbeatInterval": None}},
    }
    refused = await watcher.wait_for(
        shadow,
        lambda m: (
            (m["state"]["reported"]["refused"]["config"].get("Locked") or {})
            if "refused" in m["state"]["reported"]
            else False
        ),
    )
    assert refused["state"]["reported"]["refused"]["config"]["Locked"]["status"] == "Rejected"
    assert refused["state"]["reported"]["refused"]["config"]["Locked"]["value"] == "x"

    # The same delta again (the twin resends it): nothing is retried.
    watcher.publish(delta_topic, delta({"config": {"Locked": "x"}}, 2))
    await no_call(charger)

    # A new desired value is tried; accepted, it clears the refusal.
    watcher.publish(delta_topic, delta({"config": {"Locked": "y"}}, 3))
    third = await charger.next_call()
    assert third[2:] == ["ChangeConfiguration", {"key": "Locked", "value": "y"}]
    await charger.reply(third, {"status": "RebootRequired"})
    cleared = await watcher.wait_for(
        shadow, lambda m: m["state"]["reported"].get("config") == {"Locked": "y"}
    )
    assert cleared["state"]["reported"]["refused"] == {"config": {"Locked": None}}
    assert cleared["state"]["reported"]["rebootRequired"] is True


async def test_availability_delta_is_applied_per_connector(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    watcher.publish(delta_topic, delta({"availability": {"1": "Inoperative", "2": "Operative"}}))

    one = await charger.next_call()
    assert one[2:] == ["ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}]
    await charger.reply(one, {"status": "Accepted"})
    two = await charger.next_call()
    assert two[2:] == ["ChangeAvailability", {"connectorId": 2, "type": "Operative"}]
    await charger.reply(two, {"status": "Rejected"})

    await watcher.wait_for(
        shadow, lambda m: m["state"]["reported"].get("availability") == {"1": "Inoperative"}
    )
    refused = await watcher.wait_for(
        shadow,
        lambda m: bool(m["state"]["reported"].get("refused", {}).get("availability", {}).get("2")),
    )
    assert refused["state"]["reported"]["refused"]["availability"]["2"]["status"] == "Rejected"


async def test_after_boot_the_configuration_is_read_then_the_delta_applied(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    # The delta arrives while the charger is unresponsive; then it boots.
    watcher.publish(delta_topic, delta({"config": {"A": "1", "B": "2"}}))
    change = await charger.next_call()
    assert change[2] == "ChangeConfiguration"  # left unanswered: the call times out (2 s)
    await charger.result("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    # After the timed-out call, the boot's GetConfiguration; A already has its value.
    get_configuration = await charger.next_call(timeout=5)
    assert get_configuration[2] == "GetConfiguration"
    await charger.reply(
        get_configuration,
        {
            "configurationKey": [
                {"key": "A", "readonly": False, "value": "1"},
                {"key": "B", "readonly": False, "value": "0"},
            ]
        },
    )
    trigger = await charger.next_call()
    assert trigger[2] == "TriggerMessage"
    await charger.reply(trigger, {"status": "NotImplemented"})
    only_b = await charger.next_call()
    assert only_b[2:] == ["ChangeConfiguration", {"key": "B", "value": "2"}]
    await charger.reply(only_b, {"status": "Accepted"})
    await no_call(charger)


async def test_a_callerror_is_recorded_as_a_refusal(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    watcher.publish(delta_topic, delta({"config": {"Weird": "1"}}))
    call = await charger.next_call()
    await charger.ws.send(f'[4, "{call[1]}", "NotSupported", "no", {{}}]')
    report = await watcher.wait_for(shadow, reported_with("refused"))
    refusal = report["state"]["reported"]["refused"]["config"]["Weird"]
    assert (refusal["status"], refusal["reason"]) == ("CallError", "NotSupported")
    await asyncio.sleep(0)
