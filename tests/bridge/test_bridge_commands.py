"""Operator commands over MQTT: request, OCPP call, result with the charger's answer."""

from __future__ import annotations

from typing import Any

from conftest import MqttWatcher, OpenCharger, RawCharger

from bridge import Bridge


def topics(bridge: Bridge, charger: RawCharger) -> tuple[str, str]:
    command = bridge.topics.command(charger.charger_id)
    return command, f"{command}/result"


def by_token(token: str) -> Any:
    return lambda m: m.get("clientToken") == token


async def test_command_round_trip(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    command, result = topics(bridge, charger)
    watcher.publish(command, {"name": "reset", "payload": {"type": "Soft"}, "clientToken": "t1"})
    call = await charger.next_call()
    assert call[2:] == ["Reset", {"type": "Soft"}]
    await charger.reply(call, {"status": "Accepted"})
    answer = await watcher.wait_for(result, by_token("t1"))
    assert answer == {
        "clientToken": "t1",
        "name": "reset",
        "status": "ok",
        "response": {"status": "Accepted"},
    }


async def test_change_configuration_command_is_mirrored_into_reported(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    command, result = topics(bridge, charger)
    watcher.publish(
        command,
        {
            "name": "change-configuration",
            "clientToken": "t2",
            "payload": {"key": "MeterValueSampleInterval", "value": "15"},
        },
    )
    call = await charger.next_call()
    await charger.reply(call, {"status": "Accepted"})
    await watcher.wait_for(result, by_token("t2"))
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    report = await watcher.wait_for(shadow, lambda m: "config" in m["state"]["reported"])
    assert report["state"]["reported"]["config"] == {"MeterValueSampleInterval": "15"}


async def test_no_answer_in_time_is_504(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    command, result = topics(bridge, charger)
    watcher.publish(
        command, {"name": "unlock", "payload": {"connectorId": 1}, "clientToken": "slow"}
    )
    assert (await charger.next_call())[2] == "UnlockConnector"  # and never answered
    answer = await watcher.wait_for(result, by_token("slow"), timeout=5)
    assert (answer["status"], answer["code"]) == ("error", 504)


async def test_callerror_is_502(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    command, result = topics(bridge, charger)
    watcher.publish(command, {"name": "clear-cache", "payload": {}, "clientToken": "ce"})
    call = await charger.next_call()
    await charger.ws.send(f'[4, "{call[1]}", "InternalError", "busy", {{}}]')
    answer = await watcher.wait_for(result, by_token("ce"))
    assert (answer["status"], answer["code"], answer["ocppError"]) == (
        "error",
        502,
        "InternalError",
    )


async def test_bad_requests_are_400_without_bothering_the_charger(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    command, result = topics(bridge, charger)
    watcher.publish(command, {"name": "make-coffee", "payload": {}, "clientToken": "b1"})
    watcher.publish(command, {"name": "reset", "payload": {"type": "Gentle"}, "clientToken": "b2"})
    watcher.publish(command, {"name": "unlock", "payload": [], "clientToken": "b3"})
    watcher.publish(command, b"{not json")
    for token in ("b1", "b2", "b3"):
        answer = await watcher.wait_for(result, by_token(token))
        assert (answer["status"], answer["code"]) == ("error", 400), answer
    await watcher.wait_for(result, lambda m: m["clientToken"] is None)
    assert charger.calls.empty()
