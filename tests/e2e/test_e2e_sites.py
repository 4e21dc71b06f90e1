"""A site's limit end to end: simulated chargers start sessions through the real bridge,
the energy engine shares the site's limit among the connectors that charge and writes each
charger's desired ``chargingLimit``; a lower limit through the API is written at once.

Real parts: twin, bridge, API over uvicorn, simulator over websockets, Mosquitto, SQLite.
What the bridge does with ``chargingLimit`` (charging profiles) is asserted by its own
tests; here, the desired state the engine writes and the site's report.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from e2e_operations import Platform, platform

from chargetwin.mqtt import MqttClient
from chargetwin.shadow_client import ShadowClient
from fleet.energy import EnergyEngine
from fleet.sites import SiteStore

SITE = "e2e-depot"


def port_limits(document: dict[str, Any]) -> dict[str, float]:
    limits = (document["state"].get("desired") or {}).get("chargingLimit") or {}
    return {port: spec["limit"] for port, spec in (limits.get("connectors") or {}).items()}


async def site_report(p: Platform, check: Any, timeout: float = 20.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        for _ in range(100_000):
            site = (await p.api.get(f"/sites/{SITE}")).json()
            if site["reported"] and check(site["reported"]):
                return dict(site["reported"])
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


async def test_e2e_site_limit_is_shared_among_charging_connectors(
    tmp_path: Path, mosquitto_url: str
) -> None:
    async with platform(tmp_path, mosquitto_url, chargers=3) as p:
        assert p.fleet is not None
        ids = [c.id for c in p.fleet.chargers]
        marks = ", ".join("?" for _ in ids)
        await p.backend.db.execute(
            f"UPDATE chargers SET site = ? WHERE charger_id IN ({marks})", (SITE, *ids)
        )
        changed = await p.api.patch(
            f"/sites/{SITE}/energy",
            content='{"limitA": 40, "ratedA": 32, "failsafeA": 32}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert changed.status_code == 200, changed.text

        mqtt = MqttClient(mosquitto_url, f"e2e-energy-{uuid.uuid4().hex[:8]}")
        await mqtt.connect()
        topics = p.bridge.topics
        engine = EnergyEngine(
            SiteStore(p.backend.db), ShadowClient(mqtt, topics), mqtt, topics,
            interval=30.0, debounce=0.1,
        )  # fmt: skip
        try:
            async with engine.running():
                # every port idle: 0 A each (a new session waits for its share)
                for charger_id in ids:
                    await p.until(charger_id, lambda d: port_limits(d) == {"1": 0.0, "2": 0.0})
                for charger_id in ids[:2]:
                    started = await p.api.post(
                        f"/chargers/{charger_id}/commands/remote-start",
                        json={"idTag": "E2E-TAG", "connectorId": 1},
                    )
                    assert started.status_code == 200, started.text
                # the two sessions share the 40 A: 20 A each; the other ports stay at 0
                for charger_id in ids[:2]:
                    await p.until(charger_id, lambda d: port_limits(d) == {"1": 20.0, "2": 0.0})
                document = await p.shadow(ids[0])
                wanted = document["state"]["desired"]["chargingLimit"]
                assert wanted["site"] == SITE and wanted["failsafe"] == {"limit": 32.0, "phases": 3}
                report = await site_report(
                    p, lambda r: r["connectors"][f"{ids[0]}/1"]["state"] == "charging"
                )
                assert report["limitA"] == 40.0

                # a lower limit: written at once, without waiting for the engine's interval
                lowered = await p.api.patch(
                    f"/sites/{SITE}/energy",
                    content='{"limitA": 24}',
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                assert lowered.status_code == 200, lowered.text
                engine.wake()  # the API's wake-up goes to a fleet process; none runs here
                for charger_id in ids[:2]:
                    await p.until(charger_id, lambda d: port_limits(d) == {"1": 12.0, "2": 0.0})
                await site_report(p, lambda r: r["limitA"] == 24.0)
        finally:
            await mqtt.disconnect()
