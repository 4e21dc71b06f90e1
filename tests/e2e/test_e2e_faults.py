"""Nothing acknowledged to a charger is lost when a broker without persistence restarts.

Real parts: a private Mosquitto without persistence, the twin and the recorder (SQLite
store) as ``chargetwin up`` runs them, the bridge, and raw OCPP-J clients over websockets.
The broker restarts mid-stream; the bridge comes back before the twin and the recorder
(its reconnect delay is shorter), which is when it used to publish into a broker where
nobody was subscribed yet.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from brokers import Mosquitto
from websockets.asyncio.client import ClientConnection, connect

from bridge.app import Bridge, BridgeOptions
from chargetwin.settings import Settings
from rules.app import run_rules
from twin.app import run_twin

CHARGERS = 5
MESSAGES = 60  # per charger: 300 in all
RESTART_AT = 20  # the broker restarts when the first charger got this many answers
PASSWORD = "e2e-faults-charger-password"


async def _call(ws: ClientConnection, action: str, payload: dict[str, Any]) -> list[Any]:
    unique_id = uuid.uuid4().hex[:12]
    await ws.send(json.dumps([2, unique_id, action, payload]))
    async with asyncio.timeout(20):
        while True:
            message = json.loads(await ws.recv())
            if message[0] == 2:  # GetConfiguration after the boot, reconciliation
                await ws.send(json.dumps([3, message[1], {"configurationKey": []}]))
            elif message[1] == unique_id:
                return list(message)


async def _charger(
    url: str, charger_id: str, acked: set[int], restart: asyncio.Event, first: bool
) -> None:
    token = base64.b64encode(f"{charger_id}:{PASSWORD}".encode()).decode()
    async with connect(
        f"{url}/{charger_id}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Basic {token}"},
    ) as ws:
        boot = await _call(
            ws, "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
        )
        assert boot[0] == 3, boot
        for seq in range(MESSAGES):
            if first and seq == RESTART_AT:
                restart.set()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{seq:03d}Z"
            payload = {
                "connectorId": 1,
                "meterValue": [{"timestamp": stamp, "sampledValue": [{"value": str(seq)}]}],
            }
            answer = await _call(ws, "MeterValues", payload)
            if answer[0] == 3:
                acked.add(seq)
            await asyncio.sleep(0.01)


def _recorded(series: Path) -> dict[str, set[int]]:
    if not series.exists():
        return {}
    conn = sqlite3.connect(f"file:{series}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT s.tags, p.num FROM samples p JOIN series s ON s.id = p.series_id "
            "WHERE p.measurement = 'meter_values' AND p.field = 'value'"
        ).fetchall()
    finally:
        conn.close()
    out: dict[str, set[int]] = {}
    for tags, num in rows:
        out.setdefault(json.loads(tags)["charger"], set()).add(int(num))
    return out


async def test_a_broker_restart_without_persistence_loses_no_acknowledged_meter_value(
    tmp_path: Path,
) -> None:
    broker = Mosquitto(tmp_path, persistence=False)
    broker.start()
    data = tmp_path / "data"
    data.mkdir()
    settings = Settings(
        host="127.0.0.1",
        mqtt_url=broker.url,
        mqtt_prefix=f"test-{uuid.uuid4().hex[:12]}",
        mqtt_client_id=f"faults-{uuid.uuid4().hex[:8]}",
        data_dir=data,
        auto_register=True,
    )
    stop = asyncio.Event()
    components = [
        asyncio.create_task(run_twin(settings, stop), name="twin"),
        asyncio.create_task(run_rules(settings, stop), name="rules"),
    ]
    bridge = Bridge(settings, BridgeOptions(port=0, mqtt_reconnect_delay=0.1, close_timeout=1.0))
    restart = asyncio.Event()
    acked = {f"cp-{i}-{uuid.uuid4().hex[:6]}": set[int]() for i in range(CHARGERS)}
    try:  # everything started is stopped, even when a start fails
        await bridge.start()
        url = f"ws://127.0.0.1:{bridge.port}/ocpp"
        chargers = [
            asyncio.create_task(_charger(url, charger_id, seqs, restart, i == 0))
            for i, (charger_id, seqs) in enumerate(acked.items())
        ]
        await restart.wait()
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
        await asyncio.gather(*chargers)
        assert all(len(seqs) == MESSAGES for seqs in acked.values())

        def lost() -> dict[str, list[int]]:
            recorded = _recorded(data / "series.db")
            return {
                c: sorted(seqs - recorded.get(c, set()))
                for c, seqs in acked.items()
                if seqs - recorded.get(c, set())
            }

        for _ in range(100):  # the recorder writes within milliseconds; 20 s at most
            if not lost():
                break
            await asyncio.sleep(0.2)
        assert lost() == {}, "acknowledged MeterValues missing from the time series"
    finally:
        try:
            await bridge.stop()
            stop.set()
            await asyncio.gather(*components)
        finally:
            broker.stop()
