"""The bridge against an OCPP client nobody here wrote, in strict mode: the npm package
``ocpp-rpc`` (tests/strict_clients/station.js) validates every message the bridge sends it,
calls and answers, against the official OCPP 2.0.1 and 1.6 JSON schemas, and sends only
messages that pass them. So the bridge and this project's simulator cannot agree on a
mistake. What the station did is then read back as an operator's tools see it: the shadow
through the real twin over MQTT, the events and telemetry on MQTT, the session records.

Needs Node.js and ``npm ci`` in tests/strict_clients (scripts/test runs it); skipped only
when ``node`` is not installed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BROKER_URL, PASSWORD, MqttWatcher, RunningTwin, register

from bridge import Bridge
from chargetwin.mqtt import MqttClient
from fleet.sessions import find_sessions
from rules.alerts import AlertStore
from rules.engine import Engine
from rules.files import bundled_pack, load_rules
from rules.points import Selection
from rules.recorders import Recorder
from rules.series import SeriesStore
from rules.spools import Spool
from rules.sqlite_series import SQLiteSeriesStore

NODE = shutil.which("node")
CLIENTS = Path(__file__).resolve().parents[1] / "strict_clients"

pytestmark = pytest.mark.skipif(
    NODE is None,
    reason="node is not installed: the strict ocpp-rpc station needs Node.js",
)


async def run_station(bridge: Bridge, charger_id: str, protocol: str) -> dict[str, Any]:
    """Run the strict station to its end; its report, which must hold no failure."""
    assert NODE is not None
    if not (CLIENTS / "node_modules" / "ocpp-rpc").is_dir():
        pytest.fail(f"ocpp-rpc is not installed: run `npm ci` in {CLIENTS} (scripts/test does)")
    await register(bridge, charger_id)
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(CLIENTS / "station.js"),
        f"ws://127.0.0.1:{bridge.port}/ocpp",
        charger_id,
        PASSWORD,
        protocol,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines = out.decode().strip().splitlines()
    assert lines, f"the station printed nothing (exit {process.returncode}): {err.decode()}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert report["failures"] == [], json.dumps(report["failures"], indent=1) + err.decode()
    assert process.returncode == 0, err.decode()
    assert report["protocol"] == protocol
    return report


async def shadow_over_mqtt(bridge: Bridge, watcher: MqttWatcher, charger_id: str) -> Any:
    """The whole shadow document as the twin answers ``shadow/get`` on MQTT."""
    token = uuid.uuid4().hex
    watcher.publish(bridge.topics.shadow(charger_id, "get"), {"clientToken": token})
    return await watcher.wait_for(
        bridge.topics.shadow(charger_id, "get", "accepted"),
        lambda m: m.get("clientToken") == token,
    )


@pytest.fixture
async def recorded(bridge: Bridge, tmp_path: Path) -> AsyncIterator[SeriesStore]:
    """The recorder (``chargetwin rules``' half that writes) on the bridge's topics, into an
    embedded series store: what the bridge publishes, as rules will read it."""
    store = SQLiteSeriesStore(tmp_path / "series.db")
    await store.open()
    mqtt = MqttClient(BROKER_URL, f"strict-recorder-{uuid.uuid4().hex[:8]}")
    await mqtt.connect()
    recorder = Recorder(store, Spool(tmp_path / "spool", max_bytes=1 << 20), bridge.topics)
    await recorder.start(mqtt)
    yield store
    await recorder.stop()
    await mqtt.disconnect()
    await store.close()


async def wait_recorded(store: SeriesStore, selection: Selection, points: int) -> list[Any]:
    """Every point of ``selection`` once there are ``points`` of them, as (labels, time, value)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        groups = await store.points(selection, 0, 2**62)
        found = [(dict(labels), t, v) for labels, pts in groups.items() for t, v in pts]
        if len(found) >= points or loop.time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_a_strict_2_0_1_station_boots_charges_and_reports(
    bridge: Bridge, twin: RunningTwin, watcher: MqttWatcher, recorded: SeriesStore
) -> None:
    charger_id = f"strict-{uuid.uuid4().hex[:8]}"
    report = await run_station(bridge, charger_id, "ocpp2.0.1")
    boots = [answer["status"] for answer in report["answers"]["BootNotification"]]
    assert boots[0] == "Pending" and boots[-1] == "Accepted"
    assert len(report["answers"]["NotifyReport"]) == 2
    [ended] = [
        answer for answer in report["answers"]["TransactionEvent"] if "idTokenInfo" in answer
    ]
    assert ended["idTokenInfo"]["status"] in {"Accepted", "Invalid"}

    # The shadow, read through the twin over MQTT.
    await twin.wait_reported(
        charger_id, lambda r: (r.get("connectors") or {}).get("1", {}).get("status") == "Occupied"
    )
    document = await shadow_over_mqtt(bridge, watcher, charger_id)
    reported = document["state"]["reported"]
    assert reported["connection"]["ocppVersion"] == "2.0.1"
    assert reported["chargePoint"]["model"] == "Strict-201"
    assert reported["firmware"]["version"] == "1.2.3"
    assert reported["config"]["OCPPCommCtrlr/HeartbeatInterval"] == "300"
    assert reported["config"]["EVSE@1/AvailabilityState"] == "Available"
    assert reported["deviceModel"]["Connector@1.1/Problem"]["dataType"] == "boolean"
    assert reported["connectors"]["1"]["status"] == "Occupied"

    # Events and telemetry on MQTT.
    topic = bridge.topics.events(charger_id, "transaction")
    stopped = await watcher.wait_for(topic, lambda m: m["event"] == "stopped")
    assert [m["event"] for m in watcher.on(topic)] == [
        "started", "updated", "updated", "updated", "stopped",
    ]  # fmt: skip
    assert stopped["transactionId"] == report["transactionId"]
    assert (stopped["meterStart"], stopped["meterStop"]) == (1000, 4000)
    assert stopped["reason"] == "EVDisconnected" and stopped["connectorId"] == 1
    [event] = watcher.on(bridge.topics.events(charger_id, "deviceEvent"))
    assert event["key"] == "Connector@1.1/Problem" and event["actualValue"] == "true"
    assert (event["evseId"], event["evseConnectorId"], event["techCode"]) == (1, 1, "E-17")
    meter = watcher.on(bridge.topics.telemetry(charger_id, "meterValues"))
    assert len(meter) == 4 and all(m["evseId"] == 1 for m in meter)

    # The session record, plug-in and plug-out times included.
    assert bridge.db is not None
    [session], _ = await find_sessions(bridge.db, charger_ids=[charger_id])
    record = session.record()
    assert record["energy_kwh"] == 3.0 and record["successful_completion"] is True
    assert record["id_tag"] == "STRICT-TAG"
    assert record["plug_start_datetime"] is not None and record["plug_end_datetime"] is not None
    assert record["plug_start_datetime"] <= record["plug_end_datetime"]

    # Recorded from MQTT: the device event, and meter values with their EVSE.
    tags = ("charger", "key", "component", "variable", "connector", "evse", "evse_connector")
    [(labels, _, state)] = await wait_recorded(
        recorded, Selection("device_events", "state", group_by=tags), 1
    )
    assert state == "true"
    assert labels == {
        "charger": charger_id, "key": "Connector@1.1/Problem", "component": "Connector",
        "variable": "Problem", "connector": "1", "evse": "1", "evse_connector": "1",
    }  # fmt: skip
    [(_, _, code)] = await wait_recorded(recorded, Selection("device_events", "tech_code"), 1)
    assert code == "E-17"
    energy = Selection(
        "meter_values",
        "value",
        {"measurand": ("Energy.Active.Import.Register",)},
        ("charger", "connector", "evse"),
    )
    readings = await wait_recorded(recorded, energy, 4)
    assert sorted(v for _, _, v in readings) == [1000.0, 2500.0, 2600.0, 4000.0]
    assert {tuple(sorted(labels.items())) for labels, _, _ in readings} == {
        (("charger", charger_id), ("connector", "1"), ("evse", "1")),
    }

    # The bundled pack's rule over the recorded event: the connector's problem fires once
    # it has held for 30 s.
    engine = Engine(recorded, AlertStore(bridge.db), load_rules([bundled_pack()]))
    await engine.load()
    await engine.evaluate(time.time() + 60)
    [problem] = engine.firing("PortProblem")
    assert dict(problem.labels) == {
        "alertname": "PortProblem", "charger": charger_id, "connector": "1",
        "component": "Connector", "key": "Connector@1.1/Problem", "severity": "critical",
        "scope": "connector",
    }  # fmt: skip


async def test_a_strict_1_6_station_boots_and_charges(
    bridge: Bridge, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    charger_id = f"strict16-{uuid.uuid4().hex[:8]}"
    report = await run_station(bridge, charger_id, "ocpp1.6")
    assert report["answers"]["Authorize"][0]["idTagInfo"]["status"] in {"Accepted", "Invalid"}

    await twin.wait_reported(
        charger_id, lambda r: (r.get("connectors") or {}).get("1", {}).get("status") == "Available"
    )
    document = await shadow_over_mqtt(bridge, watcher, charger_id)
    reported = document["state"]["reported"]
    assert reported["connection"]["ocppVersion"] == "1.6"
    assert reported["chargePoint"]["model"] == "Strict-16"
    assert reported["config"]["HeartbeatInterval"] == "300"

    stopped = await watcher.wait_for(
        bridge.topics.events(charger_id, "transaction"), lambda m: m["event"] == "stopped"
    )
    assert stopped["transactionId"] == report["transactionId"]
    assert (stopped["meterStart"], stopped["meterStop"]) == (1000, 4000)
    assert bridge.db is not None
    [session], _ = await find_sessions(bridge.db, charger_ids=[charger_id])
    record = session.record()
    assert record["energy_kwh"] == 3.0
    assert (record["plug_start_datetime"], record["plug_end_datetime"]) == (None, None)
