"""Presence is retained and honest: online on connect, offline on disconnect and at stop."""

from __future__ import annotations

from conftest import MakeBridge, MqttWatcher, OpenCharger, RunningTwin

from bridge import Bridge


async def test_presence_online_then_offline_and_the_twin_writes_the_shadow_connection(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher, twin: RunningTwin
) -> None:
    charger = await open_charger()
    presence = bridge.topics.presence(charger.charger_id)
    online = await watcher.wait_for(presence, lambda m: m and m["online"])
    assert online["ocppVersion"] == "1.6" and online["bridge"] == bridge.bridge_id
    reported = await twin.wait_reported(
        charger.charger_id, lambda r: (r.get("connection") or {}).get("online") is True
    )
    assert reported["connection"]["since"] == online["since"]
    await charger.close()
    offline = await watcher.wait_for(presence, lambda m: m and not m["online"])
    assert offline["since"] >= online["since"]
    reported = await twin.wait_reported(
        charger.charger_id, lambda r: r["connection"]["online"] is False
    )
    assert reported["connection"]["since"] == offline["since"]
    # One writer of online/since: the bridge's shadow reports never carry them (a second
    # write of the same facts would cost a shadow version and its documents each time).
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    assert not [r for r in watcher.reported(shadow) if "online" in r.get("connection", {})]


async def test_a_second_connection_replaces_the_first_and_stays_online(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    first = await open_charger()
    second = await open_charger(first.charger_id)
    assert await first.closed() == 1000
    assert "currentTime" in await second.result("Heartbeat", {})
    presence = bridge.topics.presence(first.charger_id)
    await watcher.wait_for(presence, lambda m: len(watcher.on(presence)) >= 2)
    assert [m["online"] for m in watcher.on(presence)] == [True, True]
    # Commands reach the new connection (its subscription survived the old teardown).
    command = bridge.topics.command(first.charger_id)
    watcher.publish(command, {"name": "clear-cache", "payload": {}, "clientToken": "r"})
    call = await second.next_call()
    await second.reply(call, {"status": "Accepted"})
    answer = await watcher.wait_for(f"{command}/result")
    assert answer["status"] == "ok"


async def test_bridge_status_and_chargers_go_offline_at_stop(
    make_bridge: MakeBridge, watcher: MqttWatcher, open_charger: OpenCharger
) -> None:
    bridge = await make_bridge()
    charger = await open_charger(target=bridge)
    status = bridge.topics.bridge_status(bridge.bridge_id)
    await watcher.wait_for(status, lambda m: m and m["online"])
    await bridge.stop()
    assert await charger.closed() == 1001
    await watcher.wait_for(
        bridge.topics.presence(charger.charger_id), lambda m: m and not m["online"]
    )
    await watcher.wait_for(status, lambda m: m and not m["online"])


async def test_asked_to_announce_the_bridge_publishes_its_chargers_presence_again(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    presence = bridge.topics.presence(charger.charger_id)
    first = await watcher.wait_for(presence, lambda m: m and m["online"])
    watcher.publish(bridge.topics.bridge_announce(bridge.bridge_id), {})
    await watcher.wait_for(presence, lambda m: len(watcher.on(presence)) >= 2)
    again = watcher.on(presence)[-1]
    assert again == first and again["epoch"] > 0
