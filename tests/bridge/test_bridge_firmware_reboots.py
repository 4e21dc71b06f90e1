"""A charger that reports Installed and then boots on the old version failed the update:
recorded at once as ``InstalledButNotRunning``, which a campaign counts as a failure."""

from __future__ import annotations

import time
from typing import Any

from conftest import MqttWatcher, OpenCharger, RawCharger

from bridge import Bridge
from fleet.rollouts import RETRY, progress
from twin.catalog import FirmwareCatalog
from twin.documents import ShadowDocument
from twin.stores import ShadowStore

SHA = "cd" * 32


def delta(version: str, at: float) -> dict[str, Any]:
    return {
        "state": {"firmware": {"version": version}},
        "metadata": {"firmware": {"version": {"timestamp": at}}},
    }


async def boot(charger: RawCharger, firmware: str) -> None:
    payload = {"chargePointVendor": "V", "chargePointModel": "M", "firmwareVersion": firmware}
    await charger.result("BootNotification", payload)
    await charger.after_boot()


def refused_firmware(message: dict[str, Any]) -> Any:
    return (message["state"]["reported"].get("refused") or {}).get("firmware")


async def add_image(bridge: Bridge) -> None:
    assert bridge.db is not None
    await FirmwareCatalog(bridge.db).add(
        vendor="V", model="M", version="2.0", sha256=SHA, size=10, source="upload"
    )


async def test_installed_then_booted_on_the_old_version_after_a_reconnect(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    await add_image(bridge)
    assert bridge.db is not None
    charger_id = "cp-rollback"
    asked = time.time() - 60
    # What the earlier connection left: 2.0 requested, then Installed, then the socket went.
    earlier = ShadowDocument(charger_id)
    earlier.apply({"desired": {"firmware": {"version": "2.0"}}}, asked)
    earlier.apply(
        {
            "reported": {
                "chargePoint": {"vendor": "V", "model": "M", "firmwareVersion": "1.0"},
                "firmware": {
                    "version": "1.0",
                    "requested": {"version": "2.0", "at": asked + 1},
                    "status": "Installed",
                    "updatedAt": asked + 30,
                },
            }
        },
        asked + 30,
    )
    earlier.version = 1
    await ShadowStore(bridge.db).save_many([(earlier, 0)])

    charger = await open_charger(charger_id)
    shadow = bridge.topics.shadow(charger_id, "update")
    watcher.publish(bridge.topics.shadow(charger_id, "update", "delta"), delta("2.0", asked))
    await boot(charger, firmware="1.0")
    report = await watcher.wait_for(shadow, refused_firmware)
    refusal = refused_firmware(report)
    assert (refusal["value"], refusal["status"]) == ("2.0", "InstalledButNotRunning")
    assert "1.0" in refusal["reason"]

    # The campaign engine reads it as a failed attempt with that reason, not "no news".
    document = {
        "state": {
            "desired": {"firmware": {"version": "2.0"}},
            "reported": {"firmware": {"version": "1.0"}, "refused": {"firmware": refusal}},
        },
        "metadata": {"desired": {"firmware": {"version": {"timestamp": asked}}}},
    }
    assert progress(document, "2.0", asked, 3600, time.time()) == (
        RETRY,
        "InstalledButNotRunning",
    )


async def test_installed_then_booted_on_the_old_version_on_the_same_socket(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    await add_image(bridge)
    charger = await open_charger()
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    await boot(charger, firmware="1.0")
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    watcher.publish(delta_topic, delta("2.0", time.time()))
    update = await charger.next_call()
    assert update[2] == "UpdateFirmware"
    await charger.reply(update, {})
    for status in ("Downloading", "Downloaded", "Installing", "Installed"):
        await charger.result("FirmwareStatusNotification", {"status": status})
    assert not [m for m in watcher.on(shadow) if refused_firmware(m)]

    await boot(charger, firmware="1.0")
    report = await watcher.wait_for(shadow, refused_firmware)
    assert refused_firmware(report)["status"] == "InstalledButNotRunning"


async def test_installed_then_booted_on_the_new_version_is_success(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    await add_image(bridge)
    charger = await open_charger()
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    await boot(charger, firmware="1.0")
    watcher.publish(
        bridge.topics.shadow(charger.charger_id, "update", "delta"), delta("2.0", time.time())
    )
    update = await charger.next_call()
    await charger.reply(update, {})
    await charger.result("FirmwareStatusNotification", {"status": "Installed"})
    await boot(charger, firmware="2.0")
    await watcher.wait_for(
        shadow, lambda m: (m["state"]["reported"].get("firmware") or {}).get("version") == "2.0"
    )
    assert not [m for m in watcher.on(shadow) if refused_firmware(m)]
