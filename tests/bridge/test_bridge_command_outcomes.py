"""One-off operator commands: their outcome is the command's answer, never a refusal in
the shadow (refusals explain desired state only)."""

from __future__ import annotations

from typing import Any

from conftest import MqttWatcher, OpenCharger

from bridge import Bridge


def has_refusal(message: dict[str, Any]) -> bool:
    return "refused" in message["state"]["reported"]


async def test_a_refused_change_configuration_command_leaves_no_refusal(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    command = bridge.topics.command(charger.charger_id)
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    watcher.publish(
        command,
        {
            "name": "change-configuration",
            "clientToken": "no",
            "payload": {"key": "LocalAuthListEnabled", "value": "true"},
        },
    )
    call = await charger.next_call()
    assert call[2] == "ChangeConfiguration"
    await charger.reply(call, {"status": "Rejected"})
    answer = await watcher.wait_for(f"{command}/result", lambda m: m["clientToken"] == "no")
    assert answer["response"] == {"status": "Rejected"}

    watcher.publish(
        command,
        {
            "name": "change-availability",
            "clientToken": "busy",
            "payload": {"connectorId": 1, "type": "Inoperative"},
        },
    )
    call = await charger.next_call()
    await charger.reply(call, {"status": "Rejected"})
    await watcher.wait_for(f"{command}/result", lambda m: m["clientToken"] == "busy")
    # The shadow updates go out before the result on the same session (QoS 1, in order).
    assert not [m for m in watcher.on(shadow) if has_refusal(m)]


async def test_a_command_that_gives_the_desired_value_clears_its_refusal(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    command = bridge.topics.command(charger.charger_id)
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    watcher.publish(delta_topic, {"state": {"config": {"HeartbeatInterval": 60}}})
    call = await charger.next_call()
    await charger.reply(call, {"status": "Rejected"})
    await watcher.wait_for(shadow, has_refusal)

    watcher.publish(
        command,
        {
            "name": "change-configuration",
            "clientToken": "yes",
            "payload": {"key": "HeartbeatInterval", "value": "60"},
        },
    )
    call = await charger.next_call()
    await charger.reply(call, {"status": "Accepted"})
    report = await watcher.wait_for(
        shadow, lambda m: m["state"]["reported"].get("config") == {"HeartbeatInterval": "60"}
    )
    assert report["state"]["reported"]["refused"] == {"config": {"HeartbeatInterval": None}}


async def test_a_refusal_goes_when_its_leaf_leaves_the_delta(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    watcher.publish(delta_topic, {"state": {"config": {"Locked": "x"}}})
    call = await charger.next_call()
    await charger.reply(call, {"status": "Rejected"})
    await watcher.wait_for(shadow, has_refusal)

    # The operator deleted desired.config.Locked; another leaf still differs.
    watcher.publish(delta_topic, {"state": {"availability": {"1": "Operative"}}})
    call = await charger.next_call()
    assert call[2] == "ChangeAvailability"
    cleared = await watcher.wait_for(
        shadow, lambda m: m["state"]["reported"].get("refused") == {"config": {"Locked": None}}
    )
    assert cleared
    await charger.reply(call, {"status": "Accepted"})


async def test_a_failed_one_off_firmware_update_is_not_a_refusal_of_desired_firmware(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    await charger.boot(firmwareVersion="2.0")
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    # Desired is what it runs; a field engineer tries an image by hand, and it fails.
    watcher.publish(delta_topic, {"state": {"firmware": {"version": "2.0"}}})
    command = bridge.topics.command(charger.charger_id)
    payload = {"location": "ftp://field/x.bin", "retrieveDate": "2030-01-01T00:00:00Z"}
    watcher.publish(command, {"name": "update-firmware", "payload": payload, "clientToken": "fw"})
    call = await charger.next_call()
    assert call[2] == "UpdateFirmware"
    await charger.reply(call, {})
    await watcher.wait_for(f"{command}/result", lambda m: m["clientToken"] == "fw")
    await charger.result("FirmwareStatusNotification", {"status": "InstallationFailed"})
    # Everything the status caused is published before this marker (QoS 1, in order).
    await charger.result("DataTransfer", {"vendorId": "marker"})
    await watcher.wait_for(bridge.topics.events(charger.charger_id, "dataTransfer"))
    assert not [m for m in watcher.on(shadow) if has_refusal(m)]


async def test_an_accepted_authorization_key_is_never_mirrored_into_the_shadow(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    """The key is the charger's password; the shadow is readable by every viewer."""
    charger = await open_charger()
    command = bridge.topics.command(charger.charger_id)
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    for token, key in (("secret", "AuthorizationKey"), ("plain", "HeartbeatInterval")):
        watcher.publish(
            command,
            {
                "name": "change-configuration",
                "clientToken": token,
                "payload": {"key": key, "value": "3031323334353637383930313233343536373839"},
            },
        )
        call = await charger.next_call()
        await charger.reply(call, {"status": "Accepted"})
        await watcher.wait_for(f"{command}/result", lambda m, t=token: m["clientToken"] == t)
    configs = [m["state"]["reported"].get("config") or {} for m in watcher.on(shadow)]
    assert any("HeartbeatInterval" in c for c in configs)
    assert not any("AuthorizationKey" in c for c in configs)
