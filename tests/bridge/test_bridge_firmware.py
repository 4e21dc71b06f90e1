"""Firmware deltas become UpdateFirmware from the catalog, for the booted vendor/model only."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import MqttWatcher, OpenCharger, RawCharger

from bridge import Bridge
from twin.catalog import FirmwareCatalog

SHA = "ab" * 32


def delta(version: str, at: float) -> dict[str, Any]:
    return {
        "state": {"firmware": {"version": version}},
        "metadata": {"firmware": {"version": {"timestamp": at}}},
        "version": 1,
        "timestamp": at,
    }


async def add_image(bridge: Bridge, model: str = "M", **extra: Any) -> None:
    assert bridge.db is not None
    await FirmwareCatalog(bridge.db).add(
        vendor="V", model=model, version="2.0", sha256=SHA, size=10, source="upload", **extra
    )


async def boot(charger: RawCharger, firmware: str = "1.0") -> None:
    payload = {"chargePointVendor": "V", "chargePointModel": "M", "firmwareVersion": firmware}
    await charger.result("BootNotification", payload)
    await charger.after_boot()


async def no_call(charger: RawCharger, within: float = 0.4) -> None:
    with pytest.raises(TimeoutError):
        await charger.next_call(timeout=within)


def refusal(watcher: MqttWatcher, topic: str) -> Any:
    return lambda m: (m["state"]["reported"].get("refused") or {}).get("firmware")


async def test_update_waits_for_boot_and_fails_once(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    await add_image(bridge)
    charger = await open_charger()
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    asked = time.time()
    watcher.publish(delta_topic, delta("2.0", asked))
    await no_call(charger)  # vendor and model unknown until the charger boots

    await boot(charger)
    update = await charger.next_call()
    assert update[2] == "UpdateFirmware"
    location = update[3]["location"]
    assert location.startswith(f"http://127.0.0.1:8000/api/v1/firmware/files/{SHA}?")
    assert parse_qs(urlsplit(location).query) == {"sha256": [SHA], "version": ["2.0"]}
    assert (update[3]["retries"], update[3]["retryInterval"]) == (3, 60)
    await charger.reply(update, {})
    requested = await watcher.wait_for(
        shadow, lambda m: "requested" in (m["state"]["reported"].get("firmware") or {})
    )
    assert requested["state"]["reported"]["firmware"]["requested"]["version"] == "2.0"

    await charger.result("FirmwareStatusNotification", {"status": "Downloading"})
    watcher.publish(delta_topic, delta("2.0", asked))
    await no_call(charger)  # in progress: not asked again
    await charger.result("FirmwareStatusNotification", {"status": "DownloadFailed"})
    failed = await watcher.wait_for(shadow, refusal(watcher, shadow))
    assert failed["state"]["reported"]["refused"]["firmware"]["status"] == "DownloadFailed"
    watcher.publish(delta_topic, delta("2.0", asked))
    await no_call(charger)  # a failure is not retried ...
    watcher.publish(delta_topic, delta("2.0", time.time() + 1))
    again = await charger.next_call()  # ... until the operator asks again
    assert again[2] == "UpdateFirmware"
    await charger.reply(again, {})


async def test_an_image_for_another_model_is_never_sent(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    await add_image(bridge, model="Other")
    charger = await open_charger()
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    await boot(charger)
    watcher.publish(
        bridge.topics.shadow(charger.charger_id, "update", "delta"), delta("2.0", time.time())
    )
    refused = await watcher.wait_for(shadow, refusal(watcher, shadow))
    assert refused["state"]["reported"]["refused"]["firmware"]["status"] == "NotInCatalog"
    await no_call(charger)


async def test_signed_images_fall_back_to_update_firmware(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    await add_image(bridge, signing_certificate="-----BEGIN CERTIFICATE-----", signature="c2ln")
    charger = await open_charger()
    await boot(charger)
    watcher.publish(
        bridge.topics.shadow(charger.charger_id, "update", "delta"), delta("2.0", time.time())
    )
    signed = await charger.next_call()
    assert signed[2] == "SignedUpdateFirmware"
    assert signed[3]["firmware"]["signature"] == "c2ln"
    await charger.ws.send(f'[4, "{signed[1]}", "NotImplemented", "no security extension", {{}}]')
    plain = await charger.next_call()
    assert plain[2] == "UpdateFirmware"
    await charger.reply(plain, {})


async def test_the_running_version_is_left_alone(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    await add_image(bridge)
    charger = await open_charger()
    await boot(charger, firmware="2.0")
    watcher.publish(
        bridge.topics.shadow(charger.charger_id, "update", "delta"), delta("2.0", time.time())
    )
    await no_call(charger)
