"""Firmware end to end: catalog upload -> desired version -> UpdateFirmware -> download ->
install -> reboot -> reported version, through the real twin, bridge, API and simulator."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from e2e_operations import MODEL, Platform, platform, reported

from simulator.faults import FirmwareFailure

IMAGE = b"\x7fCTFW" + bytes(range(256)) * 64


@pytest.fixture
async def ops(tmp_path: Path, mosquitto_url: str) -> AsyncIterator[Platform]:
    async with platform(tmp_path, mosquitto_url, chargers=3) as p:
        yield p


async def upload(ops: Platform, version: str, vendor: str = MODEL.vendor) -> dict[str, Any]:
    answer = await ops.api.post(
        "/firmware",
        data={"vendor": vendor, "model": MODEL.model, "version": version, "notes": "e2e"},
        files={"file": (f"{version}.bin", IMAGE + version.encode(), "application/octet-stream")},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def want(ops: Platform, charger_id: str, version: str) -> Any:
    return await ops.api.patch(
        f"/chargers/{charger_id}/shadow/desired",
        json={"firmware": {"version": version}},
        headers={"Content-Type": "application/merge-patch+json"},
    )


def firmware_version(document: dict[str, Any]) -> Any:
    return (reported(document).get("firmware") or {}).get("version")


async def test_desired_firmware_is_downloaded_installed_and_reported(ops: Platform) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    image = await upload(ops, "1.5.0")
    assert image["sha256"] == hashlib.sha256(IMAGE + b"1.5.0").hexdigest()
    await ops.until(charger.id, lambda d: firmware_version(d) == "1.4.2")

    answer = await want(ops, charger.id, "1.5.0")
    assert answer.status_code == 200, answer.text

    done = await ops.until(
        charger.id, lambda d: firmware_version(d) == "1.5.0" and "delta" not in d["state"]
    )
    assert charger.firmware_version == "1.5.0"
    # The bridge mirrors the new version from the BootNotification before the charger
    # has read the answer and counted the boot: give it a moment.
    for _ in range(100):
        if charger.boots == 2:
            break
        await asyncio.sleep(0.05)
    assert charger.boots == 2  # rebooted into the new image
    firmware = reported(done)["firmware"]
    assert firmware["requested"]["sha256"] == image["sha256"]
    assert firmware["requested"]["via"] == "UpdateFirmware"
    assert "firmware" not in (reported(done).get("refused") or {})
    # The simulator checked the image's sha256 and walked the 1.6 statuses (section 4.5).
    received = [a for a, _ in charger.received if a == "UpdateFirmware"]
    assert received == ["UpdateFirmware"]
    audit = await ops.api.get(f"/chargers/{charger.id}/audit")
    assert audit.status_code == 200
    # Exactly one update was asked for, even across the reboot's reconnect and re-sent delta.
    await asyncio.sleep(0.5)
    assert [a for a, _ in charger.received if a == "UpdateFirmware"] == ["UpdateFirmware"]


@pytest.mark.parametrize("failure", [FirmwareFailure.CHECKSUM, FirmwareFailure.INSTALL])
async def test_a_failed_update_is_recorded_and_not_retried(
    ops: Platform, failure: FirmwareFailure
) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[1]
    charger.fail_firmware = failure
    await upload(ops, "1.6.0")
    await ops.until(charger.id, lambda d: firmware_version(d) == "1.4.2")
    assert (await want(ops, charger.id, "1.6.0")).status_code == 200

    expected = "DownloadFailed" if failure is FirmwareFailure.CHECKSUM else "InstallationFailed"
    failed = await ops.until(
        charger.id,
        lambda d: (reported(d).get("refused") or {}).get("firmware", {}).get("status") == expected,
    )
    refusal = reported(failed)["refused"]["firmware"]
    assert refusal["value"] == "1.6.0"
    assert failed["state"]["delta"] == {"firmware": {"version": "1.6.0"}}
    assert charger.firmware_version == "1.4.2"

    # The twin re-sends the delta when the charger comes back; nothing is retried.
    # (Back online with a new ``since``: the offline spell itself can be shorter than a poll.)
    connected_since = reported(failed)["connection"]["since"]
    await charger.close()
    await ops.until(
        charger.id,
        lambda d: (
            reported(d)["connection"]["online"] is True
            and reported(d)["connection"]["since"] != connected_since
        ),
        10,
    )
    await asyncio.sleep(1.0)
    assert [a for a, _ in charger.received if a == "UpdateFirmware"] == ["UpdateFirmware"]

    # Asking again (the same version written anew) is the operator's retry.
    charger.fail_firmware = None
    assert (await want(ops, charger.id, "1.6.0")).status_code == 200
    await ops.until(
        charger.id, lambda d: firmware_version(d) == "1.6.0" and "delta" not in d["state"]
    )


async def test_firmware_that_does_not_fit_is_refused_with_422(ops: Platform) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[2]
    await upload(ops, "9.9.9", vendor="SomeoneElse")
    await ops.until(charger.id, lambda d: firmware_version(d) == "1.4.2")

    answer = await want(ops, charger.id, "9.9.9")
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"].endswith("firmware-does-not-fit")
    assert "ChargeTwin CT-AC22" in problem["detail"]
    assert problem["errors"][0]["pointer"] == "/desired/firmware/version"
    document = await ops.shadow(charger.id)
    assert "firmware" not in document["state"]["desired"]
    assert not [a for a, _ in charger.received if a == "UpdateFirmware"]
