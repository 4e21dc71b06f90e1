"""A maintenance window end to end: the scheduler takes a simulated charger out through
its desired availability and brings it back, the work order links to the window, and the
window's minutes are excluded from the port's uptime.

Real parts: twin, bridge, API over uvicorn, simulator over websockets, Mosquitto, and the
telemetry recorder writing the status history into the SQLite series store the API reads.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e_operations import platform, reported

from chargetwin.mqtt import MqttClient
from rules.recorders import Recorder
from rules.spools import Spool
from rules.sqlite_series import SQLiteSeriesStore

WINDOW_S = 4.0


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def desired_availability(document: dict[str, Any]) -> Any:
    return ((document["state"].get("desired") or {}).get("availability") or {}).get("0")


def connector_statuses(document: dict[str, Any]) -> set[str]:
    connectors = reported(document).get("connectors") or {}
    return {c.get("status") for k, c in connectors.items() if k != "0"}


async def test_e2e_maintenance_window_takes_a_charger_out_and_back(
    tmp_path: Path, mosquitto_url: str
) -> None:
    async with platform(tmp_path, mosquitto_url, chargers=1) as p:
        assert p.fleet is not None and p.backend.maintenance is not None
        charger = p.fleet.chargers[0].id
        await p.until(charger, lambda d: connector_statuses(d) == {"Available"})

        # The recorder, as the rules component runs it, into the store the API reads.
        store = SQLiteSeriesStore(tmp_path / "series.db")
        recorder = Recorder(store, Spool(tmp_path / "spool", max_bytes=1 << 24), p.bridge.topics)
        recorder_mqtt = MqttClient(mosquitto_url, f"e2e-rec-{uuid.uuid4().hex[:8]}")
        await store.open()
        await recorder_mqtt.connect()
        await recorder.start(recorder_mqtt)
        scheduler = p.backend.maintenance.scheduler
        scheduler.interval = 0.2
        try:
            async with scheduler.running():
                starts = time.time() + 1.5
                ends = starts + WINDOW_S
                created = await p.api.post(
                    "/maintenance-windows",
                    json={
                        "title": "Cable check",
                        "chargerId": charger,
                        "startsAt": _iso(starts),
                        "endsAt": _iso(ends),
                        "createWorkOrder": True,
                    },
                )
                assert created.status_code == 201, created.text
                window = created.json()
                assert window["active"] is False and len(window["workOrders"]) == 1

                # Out: desired Inoperative, and the charger really reports it.
                out = await p.until(
                    charger,
                    lambda d: (
                        desired_availability(d) == "Inoperative"
                        and reported(d).get("availability", {}).get("0") == "Inoperative"
                        and connector_statuses(d) == {"Unavailable"}
                    ),
                    timeout=10,
                )
                assert time.time() < ends, "the charger went out only after the window"
                assert out["state"]["reported"]["connection"]["online"] is True
                during = (await p.api.get(f"/maintenance-windows/{window['id']}")).json()
                assert during["active"] is True

                # Back: the value held before (nothing desired, so the reported Operative).
                back = await p.until(
                    charger,
                    lambda d: (
                        desired_availability(d) == "Operative"
                        and reported(d).get("availability", {}).get("0") == "Operative"
                        and connector_statuses(d) == {"Available"}
                    ),
                    timeout=15,
                )
                assert "availability" not in (back["state"].get("delta") or {})
                assert time.time() >= ends

            orders = (await p.api.get("/work-orders", params={"windowId": window["id"]})).json()
            assert orders["total"] == 1
            order = orders["items"][0]
            assert (order["chargerId"], order["source"], order["status"]) == (
                charger,
                "window",
                "open",
            )
            resolved = await p.api.patch(
                f"/work-orders/{order['id']}", json={"status": "resolved", "note": "done"}
            )
            assert resolved.status_code == 200, resolved.text
            assert [h["kind"] for h in resolved.json()["history"]] == ["created", "status", "note"]

            # Uptime: the window's Unavailable minutes are excluded, not counted.
            ports: list[dict[str, Any]] = []
            for _ in range(100):
                answer = await p.api.get("/uptime", params={"chargerId": charger})
                assert answer.status_code == 200, answer.text
                ports = answer.json()["ports"]
                if ports and all(
                    p_["outages"] and not any(o["open"] for o in p_["outages"]) for p_ in ports
                ):
                    break
                await asyncio.sleep(0.1)
            assert sorted(p_["port_id"] for p_ in ports) == [f"{charger}/1", f"{charger}/2"]
            for port in ports:
                excluded = [o for o in port["outages"] if o["excluded_outage"]]
                assert excluded and {o["excluded_outage_reason"] for o in excluded} == {
                    "scheduled_maintenance"
                }
                # Out from (start + the twin/bridge/charger round trip) to the window's end.
                assert WINDOW_S / 60 - 1.5 / 60 < port["excluded_minutes"] <= WINDOW_S / 60 + 1e-6
                # Only the way back after the window's end counts against the operator.
                assert port["counted_outage_minutes"] < 3 / 60
                assert port["uptime"] > 99.99
        finally:
            for topic_filter in list(recorder.subscriptions):
                recorder_mqtt.unsubscribe(topic_filter)
            await recorder.stop()
            await recorder_mqtt.disconnect()
            await store.close()
