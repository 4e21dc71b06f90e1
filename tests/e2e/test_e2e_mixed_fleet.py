"""A mixed fleet through the fleet features: a simulated OCPP 1.6 charger and a simulated
OCPP 2.0.1 station on one site, against the real platform (twin, bridge, API over uvicorn,
Mosquitto, the telemetry recorder writing the status history the API reads).

- one configuration profile holding keys of both versions: each charger takes its own
  (ChangeConfiguration / SetVariables), and the drift report finds both in sync;
- a session on each, both in the sessions API and its EV-ChART CSV;
- one maintenance window on the site: desired availability takes the 1.6 charger out with
  the 1.6 ChangeAvailability and the station with the 2.0.1 one, and the window's end
  brings both back;
- one uptime report: the 1.6 connectors and the 2.0.1 EVSEs are ports alike, the window's
  minutes excluded for each;
- the rule pack's ``change-availability`` command action (written in the 1.6 shape) reaches
  both chargers.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e_operations import Platform, platform, reported

from chargetwin.mqtt import MqttClient
from rules.actions import Actions
from rules.alerts import Alert
from rules.files import bundled_pack, load_rules
from rules.recorders import Recorder
from rules.spools import Spool
from rules.sqlite_series import SQLiteSeriesStore
from simulator import SimulatedStation, sessions, transactions
from simulator.options import SessionTiming

SITE = "Depot-Mixed"
WINDOW_S = 4.0
QUICK = SessionTiming(
    # 3 s: the car ramps up at 10 A/s and the register counts whole Wh; a 1 s session
    # under load could end with meterStop = meterStart.
    auto_sessions=False,
    duration_s=(3.0, 3.0),
    plug_delay_s=0.1,
    unplug_delay_s=0.2,
)
PROFILE = {
    "HeartbeatInterval": "77",  # 1.6
    "OCPPCommCtrlr/HeartbeatInterval": "77",  # 2.0.1
    "SampledDataCtrlr/TxUpdatedInterval": "20",  # 2.0.1 only
}


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def config(document: dict[str, Any]) -> dict[str, Any]:
    return dict(reported(document).get("config") or {})


def online(document: dict[str, Any], version: str) -> bool:
    connection = reported(document).get("connection") or {}
    return connection.get("ocppVersion") == version and connection.get("online") is True


def desired_availability(document: dict[str, Any]) -> Any:
    return ((document["state"].get("desired") or {}).get("availability") or {}).get("0")


def changes(station: SimulatedStation) -> list[dict[str, Any]]:
    return [payload for action, payload in station.received if action == "ChangeAvailability"]


def port_statuses(document: dict[str, Any]) -> set[str]:
    connectors = reported(document).get("connectors") or {}
    return {c.get("status") for k, c in connectors.items() if k != "0"}


async def test_profile_sessions_window_uptime_and_rule_over_a_1_6_and_2_0_1_fleet(
    tmp_path: Path, mosquitto_url: str
) -> None:
    mix = (("1.6", 50.0), ("2.0.1", 50.0))
    async with platform(
        tmp_path, mosquitto_url, chargers=2, ocpp_mix=mix, sessions=QUICK, site=SITE
    ) as p:
        assert p.fleet is not None and p.backend.maintenance is not None
        (charger,) = [c for c in p.fleet.chargers if not isinstance(c, SimulatedStation)]
        (station,) = [c for c in p.fleet.chargers if isinstance(c, SimulatedStation)]
        await p.until(charger.id, lambda d: online(d, "1.6") and "HeartbeatInterval" in config(d))
        await p.until(
            station.id,
            lambda d: online(d, "2.0.1") and "OCPPCommCtrlr/HeartbeatInterval" in config(d),
        )

        await one_profile(p, charger.id, station)
        await a_session_each(p, charger, station)

        store = SQLiteSeriesStore(tmp_path / "series.db")
        recorder = Recorder(store, Spool(tmp_path / "spool", max_bytes=1 << 24), p.bridge.topics)
        mqtt = MqttClient(mosquitto_url, f"e2e-mix-{uuid.uuid4().hex[:8]}")
        await store.open()
        await mqtt.connect()
        await recorder.start(mqtt)
        try:
            for charger_id in (charger.id, station.id):
                await p.until(charger_id, lambda d: port_statuses(d) == {"Available"})
            await one_window_and_uptime(p, charger.id, station.id)
            # The station got the 2.0.1 shape: the whole station out, then back.
            assert changes(station) == [
                {"operationalStatus": "Inoperative"},
                {"operationalStatus": "Operative"},
            ]
            await the_pack_s_command_action(p, mqtt, charger.id, station.id)
            assert changes(station)[2:] == [{"operationalStatus": "Inoperative", "evse": {"id": 1}}]
        finally:
            for topic_filter in list(recorder.subscriptions):
                mqtt.unsubscribe(topic_filter)
            await recorder.stop()
            await mqtt.disconnect()
            await store.close()


async def one_profile(p: Platform, charger_id: str, station: SimulatedStation) -> None:
    body = {"config": PROFILE, "target": {"site": SITE}}
    put = await p.api.put("/profiles/mixed", json=body)
    assert put.status_code == 201, put.text
    applied = await p.api.post("/profiles/mixed/apply")
    assert applied.status_code == 200, applied.text
    assert (applied.json()["total"], applied.json()["applied"]) == (2, 2)

    # Each took the keys of its version, and nothing was refused.
    done_16 = await p.until(
        charger_id,
        lambda d: config(d).get("HeartbeatInterval") == "77" and "delta" not in d["state"],
    )
    assert done_16["state"]["desired"]["config"] == {"HeartbeatInterval": "77"}
    done_201 = await p.until(
        station.id,
        lambda d: (
            config(d).get("OCPPCommCtrlr/HeartbeatInterval") == "77"
            and config(d).get("SampledDataCtrlr/TxUpdatedInterval") == "20"
            and "delta" not in d["state"]
        ),
    )
    assert done_201["state"]["desired"]["config"] == {k: v for k, v in PROFILE.items() if "/" in k}
    for document in (done_16, done_201):
        assert not (reported(document).get("refused") or {}).get("config")
    assert station.device_model.value("OCPPCommCtrlr", "HeartbeatInterval") == "77"

    drift = await p.api.get("/profiles/mixed/drift")
    assert drift.status_code == 200, drift.text
    assert (drift.json()["total"], drift.json()["inSync"], drift.json()["chargers"]) == (2, 2, [])


async def a_session_each(p: Platform, charger: Any, station: SimulatedStation) -> None:
    charger.spawn(sessions.run_session(charger, charger.connectors[1], "TAG16", authorize=True))
    station.spawn(
        transactions.run_transaction(station, station.connectors[2], "TAG201", authorize=True)
    )
    items: list[dict[str, Any]] = []
    for _ in range(200):
        answer = await p.api.get("/sessions", params={"site": SITE})
        assert answer.status_code == 200, answer.text
        items = [i for i in answer.json()["items"] if i["charge_end_datetime"]]
        if len(items) == 2:
            break
        await asyncio.sleep(0.1)
    by_charger = {i["charger_id"]: i for i in items}
    assert sorted(by_charger) == sorted([charger.id, station.id]), items
    assert by_charger[charger.id]["port_id"] == f"{charger.id}/1"
    assert by_charger[station.id]["port_id"] == f"{station.id}/2"  # EVSE 2 is port 2
    for item in items:
        assert item["energy_kwh"] > 0 and item["successful_completion"] is True, item
    # Only the 2.0.1 station reports plug times (TransactionEvent trigger reasons).
    assert by_charger[station.id]["plug_start_datetime"]
    assert not by_charger[charger.id]["plug_start_datetime"]

    exported = await p.api.get("/sessions.csv", params={"site": SITE})
    assert exported.status_code == 200, exported.text
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(r["port_id"] for r in rows) == sorted([f"{charger.id}/1", f"{station.id}/2"])


async def one_window_and_uptime(p: Platform, charger_id: str, station_id: str) -> None:
    assert p.backend.maintenance is not None
    scheduler = p.backend.maintenance.scheduler
    scheduler.interval = 0.2
    async with scheduler.running():
        starts = time.time() + 1.5
        ends = starts + WINDOW_S
        created = await p.api.post(
            "/maintenance-windows",
            json={
                "title": "Site check",
                "site": SITE,
                "startsAt": _iso(starts),
                "endsAt": _iso(ends),
            },
        )
        assert created.status_code == 201, created.text

        def out(d: dict[str, Any]) -> bool:
            return (
                desired_availability(d) == "Inoperative"
                and (reported(d).get("availability") or {}).get("0") == "Inoperative"
                and port_statuses(d) == {"Unavailable"}
            )

        for charger_id_ in (charger_id, station_id):
            await p.until(charger_id_, out, timeout=10)
        assert time.time() < ends, "the chargers went out only after the window"

        def back(d: dict[str, Any]) -> bool:
            return (
                desired_availability(d) == "Operative"
                and (reported(d).get("availability") or {}).get("0") == "Operative"
                and port_statuses(d) == {"Available"}
                and "availability" not in (d["state"].get("delta") or {})
            )

        for charger_id_ in (charger_id, station_id):
            await p.until(charger_id_, back, timeout=15)
        assert time.time() >= ends

    ports: list[dict[str, Any]] = []
    for _ in range(100):
        answer = await p.api.get("/uptime", params={"site": SITE})
        assert answer.status_code == 200, answer.text
        ports = answer.json()["ports"]
        if len(ports) == 4 and all(
            q["outages"] and not any(o["open"] for o in q["outages"]) for q in ports
        ):
            break
        await asyncio.sleep(0.1)
    assert sorted(q["port_id"] for q in ports) == sorted(
        f"{c}/{n}" for c in (charger_id, station_id) for n in (1, 2)
    ), ports
    for port in ports:
        excluded = [o for o in port["outages"] if o["excluded_outage"]]
        assert {o["excluded_outage_reason"] for o in excluded} == {"scheduled_maintenance"}, port
        assert WINDOW_S / 60 - 1.5 / 60 < port["excluded_minutes"] <= WINDOW_S / 60 + 1e-6
        assert port["counted_outage_minutes"] < 3 / 60, port
        assert port["uptime"] > 99.99


async def the_pack_s_command_action(
    p: Platform, mqtt: MqttClient, charger_id: str, station_id: str
) -> None:
    """The pack's GroundFailure rule publishes ``change-availability {connectorId:
    "$connector", type: Inoperative}`` (dry run in the pack; run for real here) to each
    charger it fires for, whatever its version."""
    pack = load_rules([bundled_pack()])
    (rule,) = [r for r in pack.rules if r.alert == "GroundFailure"]
    rule = dataclasses.replace(
        rule, actions=tuple(dataclasses.replace(a, dry_run=False) for a in rule.actions)
    )
    actions = Actions(p.backend.db, mqtt=mqtt, topics=p.bridge.topics)
    now = time.time()
    for charger_id_ in (charger_id, station_id):
        alert = Alert(
            id=f"alert-{charger_id_}",
            fingerprint=charger_id_,
            rule=rule.alert,
            state="firing",
            severity=rule.severity,
            labels={"alertname": rule.alert, "charger": charger_id_, "connector": "1"},
            annotations={},
            value=1.0,
            active_at=now,
            last_active_at=now,
            updated_at=now,
        )
        assert [r.outcome for r in await actions.run(rule, alert)] == ["done"]
    for charger_id_ in (charger_id, station_id):
        document = await p.until(
            charger_id_,
            lambda d: (
                (reported(d).get("availability") or {}).get("1") == "Inoperative"
                and (reported(d).get("connectors") or {}).get("1", {}).get("status")
                == "Unavailable"
            ),
        )
        assert (reported(document).get("connectors") or {})["2"]["status"] == "Available"
