"""A firmware campaign end to end: 50 simulated chargers over real websockets, the real
bridge, twin, API (uvicorn, which also serves the image) and Mosquitto, with the campaign
engine (:class:`fleet.rollouts.CampaignEngine`) on the API's database and broker, as the
``fleet`` component runs it.

The rollout goes canary -> wave 1 -> wave 2; three chargers of wave 1 fail to install, the
campaign pauses at the failure threshold before wave 2, the chargers are fixed, the
operator resumes, the failed ones are retried, and it completes with every charger on the
new version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_operations import MODEL, Platform, platform

from fleet.rollouts import CampaignEngine
from simulator.faults import FirmwareFailure
from twin.stores import ShadowFilter

CHARGERS = 50
IMAGE = b"\x7fCTFW-campaign" + bytes(range(256)) * 32
OLD, NEW = MODEL.firmware_version, "1.5.0"


@pytest.fixture
async def ops(tmp_path: Path, mosquitto_url: str) -> AsyncIterator[Platform]:
    async with platform(tmp_path, mosquitto_url, chargers=CHARGERS) as p:
        yield p


async def until(
    what: Callable[[], Any], check: Callable[[Any], bool], timeout: float = 30.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await what()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last: {value}")
        await asyncio.sleep(0.2)


async def test_a_staged_rollout_pauses_on_failures_and_completes_after_resume(
    ops: Platform,
) -> None:
    fleet, api, backend = ops.fleet, ops.api, ops.backend
    assert fleet is not None and backend.campaigns is not None
    uploaded = await api.post(
        "/firmware",
        data={"vendor": MODEL.vendor, "model": MODEL.model, "version": NEW},
        files={"file": ("fw.bin", IMAGE, "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.text
    every = ShadowFilter(vendor=MODEL.vendor, model=MODEL.model, firmware_version=OLD)
    await until(lambda: backend.shadows.count(every), lambda n: n == CHARGERS)

    created = await api.post(
        "/campaigns",
        json={
            "name": "CT-AC22 1.5.0",
            "firmwareId": uploaded.json()["id"],
            "target": {"vendor": MODEL.vendor, "model": MODEL.model, "firmwareVersion": OLD},
            "canary": 5,
            "waves": ["40%"],
            "successThreshold": 100,
            "failureThreshold": 10,
            "maxConcurrent": 25,
            "retries": 0,
            "onlyIdle": True,
            "window": {"cron": "* * * * *", "timezone": "Europe/Berlin"},
        },
    )
    assert created.status_code == 201, created.text
    campaign = created.json()
    cid = campaign["id"]
    assert [p["size"] for p in campaign["phases"]] == [5, 20, 25]
    wave1 = await api.get(f"/campaigns/{cid}/chargers", params={"phase": 1, "limit": 100})
    failing = [c["id"] for c in wave1.json()["items"][:3]]  # 3 of 20 = 15% > 10%
    for charger_id in failing:
        fleet[charger_id].fail_firmware = FirmwareFailure.INSTALL

    async def get() -> dict[str, Any]:
        answer = await api.get(f"/campaigns/{cid}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    engine = CampaignEngine(
        backend.campaigns, backend.shadows, backend.shadow_client, interval=0.25
    )
    async with engine.running():
        paused = await until(get, lambda c: c["state"] == "paused")
        assert "3 of 20 chargers failed in the wave 1" in paused["reason"]
        assert paused["phase"] == 1
        assert paused["phases"][0]["counts"] == {"installed": 5}
        assert paused["phases"][2]["counts"] == {"queued": 25}  # wave 2 never started
        failed = await api.get(f"/campaigns/{cid}/chargers", params={"state": "failed"})
        assert sorted(c["id"] for c in failed.json()["items"]) == sorted(failing)
        assert all("InstallationFailed" in c["reason"] for c in failed.json()["items"])
        # The in-flight rest of wave 1 still finishes while paused; nothing new starts.
        paused = await until(get, lambda c: c["phases"][1]["counts"].get("installed") == 17)
        assert paused["state"] == "paused"

        for charger_id in failing:
            fleet[charger_id].fail_firmware = None
        resumed = await api.post(f"/campaigns/{cid}/resume", json={"failed": "retry"})
        assert resumed.status_code == 200, resumed.text
        done = await until(get, lambda c: c["state"] in ("completed", "paused"), timeout=40.0)
    assert done["state"] == "completed", done
    assert done["counts"]["installed"] == CHARGERS and done["total"] == CHARGERS

    # Every targeted charger reports the desired version, in the shadow and on the charger.
    on_new = ShadowFilter(firmware_version=NEW, has_delta=False, limit=1000)
    assert len(await backend.shadows.list(on_new)) == CHARGERS
    assert all(c.firmware_version == NEW for c in fleet.chargers)
    for charger in fleet.chargers:
        asked = [a for a, _ in charger.received if a == "UpdateFirmware"]
        assert len(asked) == (2 if charger.id in failing else 1), charger.id
    # The chargers are free for the next campaign.
    assert await backend.campaigns.conflicts([c.id for c in fleet.chargers]) == {}
