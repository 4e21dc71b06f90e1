"""OCPP 1.6 section 4.2: nothing but BootNotification counts until a boot is accepted; a
charger accepted before may reconnect without booting again."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import MqttWatcher, OpenCharger

from bridge import Bridge
from bridge.times import iso_time
from twin.documents import ShadowDocument
from twin.stores import ShadowStore

STATUS = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}


async def test_a_charger_that_never_booted_is_refused_and_not_online(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger(accepted=False)
    presence = bridge.topics.presence(charger.charger_id)
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    status_events = bridge.topics.events(charger.charger_id, "status")

    answer = await charger.call("StatusNotification", {**STATUS, "timestamp": iso_time()})
    assert answer[0] == 4 and answer[2] == "SecurityError", answer
    assert (await charger.call("Heartbeat", {}))[2] == "SecurityError"
    # The bridge asks it to boot, once.
    trigger = await charger.next_call()
    assert trigger[2:] == ["TriggerMessage", {"requestedMessage": "BootNotification"}]
    await charger.reply(trigger, {"status": "Accepted"})
    # A command is not passed on either (a TriggerMessage would be).
    command = bridge.topics.command(charger.charger_id)
    watcher.publish(command, {"name": "reset", "payload": {"type": "Soft"}, "clientToken": "r"})
    refused = await watcher.wait_for(f"{command}/result")
    assert (refused["status"], refused["code"]) == ("error", 409)
    # Nothing was mirrored and the charger was never online.
    assert not watcher.on(status_events)
    assert not [m for m in watcher.on(presence) if m and m["online"]]
    assert not [r for r in watcher.reported(shadow) if "connectors" in r]

    await charger.boot()
    online = await watcher.wait_for(presence, lambda m: m and m["online"])
    assert online["online"] is True
    assert (await charger.call("StatusNotification", {**STATUS, "timestamp": iso_time()}))[0] == 3
    await watcher.wait_for(status_events)


async def test_a_delta_waits_for_the_boot(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger(accepted=False)
    delta = bridge.topics.shadow(charger.charger_id, "update", "delta")
    watcher.publish(delta, {"state": {"config": {"HeartbeatInterval": 60}}})
    await asyncio.sleep(0.3)
    assert charger.calls.empty()
    await charger.result("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    seen: list[Any] = []
    while not any(c[2] == "ChangeConfiguration" for c in seen):
        call = await charger.next_call()
        seen.append(call)
        answers = {"GetConfiguration": {"configurationKey": []}}
        await charger.reply(call, answers.get(call[2], {"status": "Accepted"}))
    assert seen[-1][3] == {"key": "HeartbeatInterval", "value": "60"}


async def test_a_charger_accepted_before_need_not_boot_again(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    # Booted through another bridge (or before a restart): the shadow store knows it.
    assert bridge.db is not None
    charger_id = "cp-accepted-before"
    earlier = ShadowDocument(charger_id)
    earlier.apply({"reported": {"chargePoint": {"vendor": "V", "model": "M"}}}, 1.0)
    earlier.version = 1
    await ShadowStore(bridge.db).save_many([(earlier, 0)])

    charger = await open_charger(charger_id, accepted=False)
    assert (await charger.call("Heartbeat", {}))[0] == 3
    presence = bridge.topics.presence(charger_id)
    await watcher.wait_for(presence, lambda m: m and m["online"])
    assert (await charger.call("StatusNotification", {**STATUS, "timestamp": iso_time()}))[0] == 3
    assert charger.calls.empty()  # no boot asked for


async def test_an_unreadable_boot_history_does_not_lock_a_charger_out(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    assert bridge.db is not None
    await bridge.db.execute("ALTER TABLE shadows RENAME TO shadows_elsewhere")
    try:
        charger = await open_charger(accepted=False)
        assert (await charger.call("Heartbeat", {}))[0] == 3
        presence = bridge.topics.presence(charger.charger_id)
        await watcher.wait_for(presence, lambda m: m and m["online"])
    finally:
        await bridge.db.execute("ALTER TABLE shadows_elsewhere RENAME TO shadows")
