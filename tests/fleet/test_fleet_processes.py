"""The ``fleet`` component as real processes: one leader among standbys, a takeover after
kill -9 with no campaign step done twice, and API replicas that share one fleet leader.

Real everything: ``chargetwin twin``, ``bridge``, ``api`` and ``fleet`` processes on one
PostgreSQL schema and the real Mosquitto; 50 simulated OCPP chargers over real websockets
in the test process, which count every UpdateFirmware they receive.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fleet_cluster import ADMIN, IMAGE, LEADS, MODEL, NEW, cluster, running, simulated
from fleet_cluster import update_firmware_calls as calls

from chargetwin.database import connect
from fleet.campaigns import CampaignStore

pytestmark = pytest.mark.postgres


def client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30.0
    )


async def upload(api: httpx.AsyncClient) -> str:
    uploaded = await api.post(
        "/firmware",
        data={"vendor": MODEL.vendor, "model": MODEL.model, "version": NEW},
        files={"file": ("fw.bin", IMAGE, "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.text
    return str(uploaded.json()["id"])


async def create(api: httpx.AsyncClient, image_id: str, **policy: Any) -> str:
    body = {
        "name": "CT-AC22 1.5.0",
        "firmwareId": image_id,
        "target": {"vendor": MODEL.vendor, "model": MODEL.model, "firmwareVersion": "1.4.2"},
        "successThreshold": 100,
        "failureThreshold": 10,
        "retries": 0,
        "onlyIdle": True,
        "attemptTimeoutS": 600,
        **policy,
    }
    created = await api.post("/campaigns", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def campaign(api: httpx.AsyncClient, cid: str) -> dict[str, Any]:
    answer = await api.get(f"/campaigns/{cid}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_kill_9_of_the_leader_mid_campaign_a_standby_finishes_it_without_a_double_step(
    tmp_path: Path,
) -> None:
    chargers = 50
    async with (
        cluster(tmp_path, apis=1, fleets=2) as (c, urls, fleets),
        client(urls[0]) as api,
    ):
        leader, standby = fleets
        fleet = simulated(c.ocpp_port, chargers, install_s=0.5)
        async with running(fleet, api):
            image_id = await upload(api)
            cid = await create(api, image_id, canary=5, waves=["40%"], maxConcurrent=10)

            async def installed() -> int:
                return int((await campaign(api, cid))["counts"].get("installed", 0))

            await c.until(leader, lambda: _more_than(installed, 12), "a third installed")
            leader.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await leader.proc.wait()
            await c.until(standby, lambda: LEADS in standby.text(), "the standby to lead", 10)
            took = time.monotonic() - killed
            mid = await campaign(api, cid)
            assert mid["state"] == "running" and mid["counts"].get("installed", 0) < chargers

            async def done() -> bool:
                return (await campaign(api, cid))["state"] != "running"

            await c.until(standby, done, "the campaign to end", timeout=180)
            final = await campaign(api, cid)
            received = calls(fleet)

        assert took < 10, took
        assert final["state"] == "completed", final
        assert nonzero(final["counts"]) == {"installed": chargers}
        assert all(ch.firmware_version == NEW for ch in fleet.chargers)
        db = connect(c.database_url)
        await db.open()
        try:
            rows = await CampaignStore(db).chargers(cid, limit=1000)
        finally:
            await db.close()
        attempts = {r.charger_id: r.attempts for r in rows}
        assert set(attempts.values()) == {1}, attempts
        # Exactly one UpdateFirmware per charger per attempt, counted at the chargers.
        assert received == attempts, {k: v for k, v in received.items() if v != 1}
        print(f"takeover after kill -9: {took:.2f} s")


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {state: n for state, n in counts.items() if n}


async def _more_than(count: Any, n: int) -> bool:
    return int(await count()) > n


async def test_a_campaign_created_through_one_api_is_paused_through_another(
    tmp_path: Path,
) -> None:
    chargers = 6
    async with (
        cluster(tmp_path, apis=2, fleets=1) as (c, urls, fleets),
        client(urls[0]) as one,
        client(urls[1]) as two,
    ):
        [leader] = fleets
        fleet = simulated(c.ocpp_port, chargers, install_s=1.0)
        async with running(fleet, one):
            image_id = await upload(one)
            cid = await create(one, image_id, canary=1, waves=[], maxConcurrent=1)

            async def started() -> int:
                counts = (await campaign(two, cid))["counts"]
                return sum(n for state, n in counts.items() if state != "queued")

            await c.until(leader, lambda: _more_than(started, 1), "two chargers started")
            paused = await two.post(f"/campaigns/{cid}/pause")
            assert paused.status_code == 200, paused.text
            assert (await campaign(one, cid))["state"] == "paused"
            # What was in flight finishes; nothing new starts while paused.
            await asyncio.sleep(1.0)
            before = sum(calls(fleet).values())
            await asyncio.sleep(3.0)
            assert sum(calls(fleet).values()) == before
            held = await campaign(one, cid)
            assert held["state"] == "paused" and held["counts"]["queued"] >= 1, held

            resumed = await one.post(f"/campaigns/{cid}/resume", json={})
            assert resumed.status_code == 200, resumed.text

            async def done() -> bool:
                return (await campaign(two, cid))["state"] != "running"

            await c.until(leader, done, "the campaign to end", timeout=120)
            final = await campaign(two, cid)
            received = calls(fleet)
        assert final["state"] == "completed"
        assert nonzero(final["counts"]) == {"installed": chargers}
        assert set(received.values()) == {1}, received
