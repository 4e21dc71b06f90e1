"""Retention of the embedded time-series store: old points go, the value held stays.

Real SQLite store files throughout; the recorder test writes through the real recorder
while a pass runs, and the rules and uptime history are read back through the same
queries the engine and the API use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chargetwin.database import connect
from chargetwin.topics import Topics
from fleet.outages import read_history
from rules.alerts import AlertStore
from rules.engine import Engine
from rules.files import load_rules
from rules.points import NS, Point, Selection
from rules.recorders import Recorder
from rules.retention import DAY, RetentionPolicy, SeriesRetention
from rules.spools import Spool
from rules.sqlite_series import SQLiteSeriesStore

NOW = 1_750_000_000.0
POLICY = RetentionPolicy.from_days(500, 200)
EVERYTHING = (-(2**62), 2**62)


def at(days_ago: float) -> int:
    return int((NOW - days_ago * DAY) * NS)


def status(charger: str, value: str, days_ago: float, connector: str = "1") -> Point:
    return Point(
        "connector_status",
        {"charger": charger, "connector": connector},
        {"status": value, "error_code": "NoError" if value != "Faulted" else "GroundFailure"},
        at(days_ago),
    )


def meter(charger: str, value: float, days_ago: float) -> Point:
    tags = {"charger": charger, "connector": "1", "measurand": "Power.Active.Import"}
    return Point("meter_values", tags, {"value": value}, at(days_ago))


def presence(charger: str, state: str, days_ago: float) -> Point:
    fields = {"state": state, "online": 1.0 if state == "online" else 0.0}
    return Point("presence", {"charger": charger}, fields, at(days_ago))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteSeriesStore]:
    series = SQLiteSeriesStore(tmp_path / "series.db")
    await series.open()
    yield series
    await series.close()


async def times(store: SQLiteSeriesStore, measurement: str, field: str) -> dict[str, list[int]]:
    """Every point's time per charger, oldest first."""
    selection = Selection(measurement, field, group_by=("charger",))
    return {
        dict(labels)["charger"]: [t for t, _ in points]
        for labels, points in (await store.points(selection, *EVERYTHING)).items()
    }


async def test_rules_retention_removes_old_points_and_keeps_the_value_held_at_the_cutoff(
    store: SQLiteSeriesStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.write(
        [
            # Status: 500 days; three old changes, two recent ones.
            status("CP-1", "Available", 600),
            status("CP-1", "Faulted", 550),
            status("CP-1", "Available", 520),
            status("CP-1", "Charging", 10),
            status("CP-1", "Available", 1),
            # Faulted for two years and nothing since: the state a rule must still see.
            status("CP-2", "Faulted", 730),
            presence("CP-2", "offline", 800),
            presence("CP-1", "online", 499),  # inside retention
            # Meter values: 200 days.
            meter("CP-1", 1.0, 300),
            meter("CP-1", 2.0, 250),
            meter("CP-1", 3.0, 201),
            meter("CP-1", 4.0, 199),
            meter("CP-1", 5.0, 1),
        ]
    )
    retention = SeriesRetention(store, POLICY)
    with caplog.at_level(logging.INFO, logger="rules.retention"):
        removed = await retention.run_pass(NOW)
    assert removed == {"connector_status": 4, "meter_values": 2}  # 2 points x 2 fields
    assert await times(store, "connector_status", "status") == {
        "CP-1": [at(520), at(10), at(1)],  # 520 days: the value held at the cutoff
        "CP-2": [at(730)],
    }
    assert await times(store, "connector_status", "error_code") == {
        "CP-1": [at(520), at(10), at(1)],
        "CP-2": [at(730)],
    }
    assert await times(store, "presence", "state") == {"CP-1": [at(499)], "CP-2": [at(800)]}
    assert await times(store, "meter_values", "value") == {"CP-1": [at(201), at(199), at(1)]}
    [line] = [r.getMessage() for r in caplog.records if "removed" in r.getMessage()]
    assert "removed 6 values (connector_status 4, meter_values 2)" in line
    assert "meter_values 200 d, others 500 d" in line

    assert await retention.run_pass(NOW) == {}  # nothing left to remove
    # A month later: 520 days is still the value held at the (moved) status cutoff; one
    # more meter value is past 200 days and superseded by the next one.
    assert await retention.run_pass(NOW + 30 * DAY) == {"meter_values": 1}


async def test_rules_retention_in_small_steps_removes_what_one_step_would(
    tmp_path: Path,
) -> None:
    points = [
        meter(f"CP-{c}", float(i), 400 - i) for c in range(12) for i in range(0, 400, 3)
    ] + [status(f"CP-{c}", ("Available", "Charging")[i % 2], 900 - i) for c in range(12)
         for i in range(0, 900, 7)]  # fmt: skip
    stores = []
    for name in ("small", "whole"):
        store = SQLiteSeriesStore(tmp_path / f"{name}.db")
        await store.open()
        await store.write(points)
        stores.append(store)
    try:
        small, whole = stores
        stepped = SeriesRetention(small, POLICY, max_series=5, max_rows=17, pause=0)
        at_once = SeriesRetention(whole, POLICY, max_series=10_000, max_rows=10**9)
        removed = await stepped.run_pass(NOW)
        assert removed == await at_once.run_pass(NOW)
        assert removed["meter_values"] > 17 * 12 and removed["connector_status"] > 17 * 12
        for measurement, field in (("meter_values", "value"), ("connector_status", "status")):
            assert await times(small, measurement, field) == await times(whole, measurement, field)
        # Every series kept exactly its points since the cutoff and the one before it.
        for charger, kept in (await times(small, "meter_values", "value")).items():
            assert kept[0] < at(200) <= kept[1], charger
            assert kept[1:] == [at(400 - i) for i in range(0, 400, 3) if 400 - i < 200]
    finally:
        for store in stores:
            await store.close()


STATE_RULES = """groups:
  - name: held
    rules:
      - alert: ConnectorFaulted
        kind: state
        query: {measurement: connector_status, field: status, group_by: [charger, connector]}
        states: [Faulted]
        held_for: 10m
        severity: critical
      - alert: DownMostOfTheDay
        query: {measurement: connector_status, field: status, aggregation: time_in,
                window: 24h, group_by: [charger, connector]}
        states: [Faulted, Unavailable]
        condition: {op: ">", threshold: 0.03}
        severity: warning
"""


async def test_rules_retention_keeps_what_rules_and_uptime_reports_read(
    store: SQLiteSeriesStore, tmp_path: Path
) -> None:
    await store.write(
        [
            status("CP-1", "Available", 900),
            status("CP-1", "Faulted", 730),  # Faulted for two years, nothing since
            status("CP-2", "Faulted", 700),
            status("CP-2", "Unavailable", 600),
            status("CP-2", "Available", 450),  # inside 500 days
            status("CP-2", "Faulted", 0.5),
            presence("CP-1", "online", 800),
            presence("CP-1", "offline", 600),
            presence("CP-1", "online", 550),  # held since, over the report's start
        ]
    )
    (tmp_path / "held.yaml").write_text(STATE_RULES)
    db = connect(f"sqlite:///{tmp_path}/alerts.db")
    await db.open()
    try:

        async def observe() -> list[tuple[str, dict[str, str], float]]:
            engine = Engine(store, AlertStore(db), load_rules([tmp_path / "held.yaml"]))
            await engine.load()
            await engine.evaluate(NOW)
            firing = [(a.rule, a.labels, a.value) for a in engine.firing()]
            return sorted(firing, key=lambda a: (a[0], sorted(a[1].items())))

        before_rules = await observe()
        # A year of uptime history, as the API reads it for a twelve-month report.
        before_history = await read_history(store, None, NOW - 365 * DAY, NOW)
        removed = await SeriesRetention(store, POLICY).run_pass(NOW)
        assert removed == {"connector_status": 4, "presence": 4}  # values: points x fields
        assert await observe() == before_rules
        assert await read_history(store, None, NOW - 365 * DAY, NOW) == before_history
    finally:
        await db.close()
    assert [(rule, labels["charger"]) for rule, labels, _ in before_rules] == [
        ("ConnectorFaulted", "CP-1"),
        ("ConnectorFaulted", "CP-2"),
        ("DownMostOfTheDay", "CP-1"),
        ("DownMostOfTheDay", "CP-2"),
    ]
    held = {labels["charger"]: value for rule, labels, value in before_rules if rule[0] == "C"}
    assert held["CP-1"] == pytest.approx(730 * DAY)  # measured from the two-year-old point
    assert before_history.status_before == {("CP-1", "1"): "Faulted", ("CP-2", "1"): "Available"}
    assert before_history.presence_before == {"CP-1": "online"}


async def test_rules_retention_runs_between_the_recorders_writes(
    store: SQLiteSeriesStore, tmp_path: Path
) -> None:
    old = [
        meter(f"CP-{c}", float(i), 400 - i / 100) for c in range(40) for i in range(2000)
    ]  # 80,000 points, all past 200 days
    await store.write(old)
    recorder = Recorder(store, Spool(tmp_path / "spool", max_bytes=1 << 24), Topics())
    await recorder.start()
    retention = SeriesRetention(store, POLICY, max_series=10, max_rows=2000, pause=0)
    sent = 0
    latencies: list[float] = []
    written_when_pass_started = written_when_pass_ended = -1
    recording = asyncio.Event()
    topic = "chargetwin/chargers/CP-LIVE/telemetry/meterValues"

    async def telemetry() -> None:
        nonlocal sent
        while written_when_pass_ended < 0 or sent < 50:
            value = {"measurand": "Power.Active.Import", "value": float(sent)}
            body = {"connectorId": 1, "timestamp": NOW + sent, "values": [value]}
            started = time.monotonic()
            await recorder.handle(topic, json.dumps(body).encode())
            latencies.append(time.monotonic() - started)
            sent += 1
            if sent == 10:
                recording.set()

    async def prune() -> dict[str, int]:
        nonlocal written_when_pass_started, written_when_pass_ended
        await recording.wait()
        written_when_pass_started = recorder.written
        removed = await retention.run_pass(NOW)
        written_when_pass_ended = recorder.written
        return removed

    try:
        _, removed = await asyncio.gather(telemetry(), prune())
    finally:
        await recorder.stop()
    assert removed == {"meter_values": 80_000 - 40}  # each series keeps its newest
    # The recorder's writes went on while the pass ran (one long transaction would have
    # held them all until its end), none was spooled, and none waited long.
    assert written_when_pass_ended > written_when_pass_started
    assert recorder.spooled == 0
    assert max(latencies) < 2.0, max(latencies)
    live = await times(store, "meter_values", "value")
    assert len(live["CP-LIVE"]) == sent
