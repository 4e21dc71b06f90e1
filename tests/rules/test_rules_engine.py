"""The engine on both stores: lifecycle, error and no-data states, inhibition, silences,
acknowledgements, persistence across restarts, notifications and actions."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from probes import MqttProbe

from chargetwin.database import Database, connect
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from rules.actions import Actions, list_work_orders
from rules.alerts import Alert, AlertStore, Saved
from rules.engine import Engine
from rules.files import bundled_pack, load_rules
from rules.influx import InfluxStore
from rules.notifiers import Notifier
from rules.points import NS, FieldValue, Labels, Point, Selection
from rules.series import SeriesStore
from rules.sqlite_series import SQLiteSeriesStore
from rules.testing import T0, run_test_file

RULES = """groups:
  - name: g
    rules:
      - alert: Hot
        query: {measurement: meter_values, field: value, aggregation: max, window: 1m,
                group_by: [charger, connector]}
        condition: {op: ">", threshold: 70}
        for: 1m
        keep_firing_for: 1m
        severity: critical
        labels: {scope: connector}
        annotations: {summary: "$charger/$connector at $value"}
        actions:
          - {type: work_order, title: "Hot $charger"}
          - {type: command, name: reset, payload: {type: Soft}, rate_limit: {max: 1, per: 1h}}
      - alert: Offline
        kind: state
        query: {measurement: presence, field: state, group_by: [charger]}
        states: [offline]
        severity: critical
      - alert: Broken
        query: {measurement: connector_status, field: status, aggregation: mean, window: 1h}
        condition: {op: ">", threshold: 0}
      - alert: Silent
        kind: absence
        query: {measurement: meter_values, field: value, window: 1h, group_by: [charger]}
        absent_for: 10m
inhibit_rules:
  - source: {alertname: Offline}
    target: {scope: connector}
    equal: [charger]
"""


def temp(charger: str, value: float, t: float, connector: str = "1") -> Point:
    return Point(
        "meter_values", {"charger": charger, "connector": connector}, {"value": value},
        int((T0 + t) * NS),
    )  # fmt: skip


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = connect(f"sqlite:///{tmp_path}/chargetwin.db")
    await database.open()
    yield database
    await database.close()


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


async def make_engine(
    store: SeriesStore, db: Database, rules_path: Path, **kwargs: object
) -> Engine:
    engine = Engine(store, AlertStore(db), load_rules([rules_path]), **kwargs)  # type: ignore[arg-type]
    await engine.load()
    return engine


@pytest.mark.parametrize("name", sorted(p.name for p in bundled_pack().glob("*_test.yaml")))
async def test_rules_engine_pack_tests_pass_on_both_stores(
    series_store: SeriesStore, name: str
) -> None:
    async def same_store(folder: Path) -> SeriesStore:
        if isinstance(series_store, InfluxStore):  # a fresh database per test
            fresh = InfluxStore(series_store.url, f"t_{uuid.uuid4().hex[:12]}")
            await fresh.open()
            return fresh
        from rules.testing import sqlite_store

        return await sqlite_store(folder)

    assert await run_test_file(bundled_pack() / name, same_store) == []


async def test_rules_engine_lifecycle_pending_firing_resolved(
    series_store: SeriesStore, db: Database, rules_path: Path
) -> None:
    engine = await make_engine(series_store, db, rules_path)
    hot = engine.rules[0]
    await series_store.write([temp("CP-1", 80, 0), temp("CP-1", 81, 60), temp("CP-1", 50, 180)])
    [pending] = await engine.evaluate(T0, [hot])
    assert (pending.state, pending.value) == ("pending", 80.0)
    assert pending.labels == {
        "alertname": "Hot", "severity": "critical", "scope": "connector",
        "charger": "CP-1", "connector": "1",
    }  # fmt: skip
    [firing] = await engine.evaluate(T0 + 60, [hot])
    assert firing is pending and firing.state == "firing"
    assert firing.annotations == {"summary": "CP-1/1 at 81"}
    assert await engine.evaluate(T0 + 110, [hot]) == []  # keep_firing_for 1m
    [resolved] = await engine.evaluate(T0 + 180, [hot])
    assert resolved.state == "resolved" and resolved.resolved_at == T0 + 180
    stored = await AlertStore(db).find(states=["resolved"])
    assert [a.id for a in stored] == [firing.id]


async def test_rules_engine_pending_that_recovers_is_dropped(
    series_store: SeriesStore, db: Database, rules_path: Path
) -> None:
    engine = await make_engine(series_store, db, rules_path)
    await series_store.write([temp("CP-1", 80, 0), temp("CP-1", 20, 30)])
    [_pending] = await engine.evaluate(T0, [engine.rules[0]])
    [dropped] = await engine.evaluate(T0 + 61, [engine.rules[0]])
    assert dropped.state == "inactive"
    assert await AlertStore(db).find() == []


async def test_rules_engine_error_state_keeps_alerts_and_no_data_is_visible(
    series_store: SeriesStore, db: Database, rules_path: Path
) -> None:
    engine = await make_engine(series_store, db, rules_path)
    broken, silent = engine.rules[2], engine.rules[3]
    await series_store.write(
        [Point("connector_status", {"charger": "A"}, {"status": "Faulted"}, int(T0 * NS))]
    )
    assert await engine.evaluate(T0 + 1, [broken]) == []
    assert engine.states["Broken"]["health"] == "error"
    assert (
        "numeric" in engine.states["Broken"]["lastError"]
        or "mean" in engine.states["Broken"]["lastError"]
    )
    await engine.evaluate(T0 + 1, [silent])
    assert engine.states["Silent"]["health"] == "nodata"
    [state] = [s for s in await AlertStore(db).rule_states() if s["name"] == "Broken"]
    assert state["health"] == "error" and state["lastError"]


async def test_rules_engine_absence(
    series_store: SeriesStore, db: Database, rules_path: Path
) -> None:
    engine = await make_engine(series_store, db, rules_path)
    await series_store.write([temp("CP-1", 20, 0), temp("CP-2", 20, 500)])
    [alert] = await engine.evaluate(T0 + 700, [engine.rules[3]])
    assert alert.labels["charger"] == "CP-1" and alert.value == 700.0 and alert.state == "firing"


async def test_rules_engine_store_down_is_error_not_normal(db: Database, rules_path: Path) -> None:
    dead = InfluxStore("http://127.0.0.1:9", "nowhere", timeout=0.5)
    try:
        engine = await make_engine(dead, db, rules_path)
        assert await engine.evaluate(T0) == []
        assert {s["health"] for s in engine.states.values()} == {"error"}
    finally:
        await dead.close()


async def test_rules_engine_inhibition_silences_and_restart(
    series_store: SeriesStore, db: Database, rules_path: Path
) -> None:
    store = AlertStore(db)
    engine = await make_engine(series_store, db, rules_path, actions=Actions(db))
    await series_store.write(
        [
            temp("CP-1", 90, 0), temp("CP-1", 90, 60), temp("CP-2", 90, 0), temp("CP-2", 90, 60),
            Point("presence", {"charger": "CP-1"}, {"state": "offline"}, int(T0 * NS)),
        ]
    )  # fmt: skip
    await store.create_schema()
    await store.add_silence({"charger": "CP-2"}, T0, T0 + 3600, "ops", "maintenance")
    await engine.evaluate(T0)
    await engine.evaluate(T0 + 60)
    hot = {a.labels["charger"]: a for a in engine.firing("Hot")}
    assert hot["CP-1"].inhibited and not hot["CP-1"].silenced
    assert hot["CP-2"].silenced and not hot["CP-2"].inhibited
    assert not engine.firing("Offline")[0].inhibited
    # Neither was notified, so no action ran: no work orders.
    assert await list_work_orders(db) == []
    acked = await store.acknowledge(hot["CP-1"].id, "alice", comment="on it", expires_at=None)
    assert acked is not None and acked.as_dict()["acknowledgedBy"] == "alice"

    restarted = await make_engine(series_store, db, rules_path)
    assert {a.id for a in restarted.firing("Hot")} == {a.id for a in hot.values()}
    await restarted.evaluate(T0 + 90)
    again = await store.get(hot["CP-1"].id)
    assert again is not None and again.acknowledged_by == "alice" and again.state == "firing"


async def test_rules_engine_notifies_on_mqtt_and_webhook_and_runs_actions(
    db: Database, rules_path: Path, tmp_path: Path, mosquitto_url: str, prefix: str
) -> None:
    from rules.sqlite_series import SQLiteSeriesStore

    received: list[dict[str, object]] = []
    series = SQLiteSeriesStore(tmp_path / "series.db")
    await series.open()
    mqtt = MqttClient(mosquitto_url, f"test-rules-{uuid.uuid4().hex[:8]}")
    await mqtt.connect()
    probe = MqttProbe(mosquitto_url)
    server = await _webhook_server(received)
    try:
        await probe.subscribe(f"{prefix}/alerts/#")
        await probe.subscribe(f"{prefix}/chargers/+/commands")
        notifier = Notifier(
            mqtt=mqtt, prefix=prefix, webhooks=[server.url, server.url + "flaky"], backoff=0.05
        )
        await notifier.start()
        topics = Topics(prefix)
        actions = Actions(db, mqtt=mqtt, topics=topics)
        engine = await make_engine(series, db, rules_path, notifier=notifier, actions=actions)
        await series.write(
            [
                temp("CP-1", 90, 0),
                temp("CP-1", 90, 60),
                temp("CP-1", 90, 0, "2"),
                temp("CP-1", 95, 60, "2"),
            ]
        )
        await engine.evaluate(T0, [engine.rules[0]])
        await probe.expect(f"{prefix}/alerts/pending", rule="Hot")
        await engine.evaluate(T0 + 60, [engine.rules[0]])
        firing = await probe.expect(f"{prefix}/alerts/firing", rule="Hot")
        assert firing["labels"]["charger"] == "CP-1"  # type: ignore[index]
        command = await probe.expect(f"{prefix}/chargers/CP-1/commands", name="reset")
        assert command["payload"] == {"type": "Soft"}
        await probe.silent(f"{prefix}/chargers/CP-1/commands")  # rate limit: 1 per hour
        assert [r.outcome for r in actions.history if r.type == "command"] == [
            "done",
            "rate-limited",
        ]
        orders = await list_work_orders(db)
        assert sorted(o["connectorId"] for o in orders) == ["1", "2"]
        assert orders[0]["title"] == "Hot CP-1"
        for _ in range(100):
            if len(received) >= 4:
                break
            await asyncio.sleep(0.05)
        assert sorted(str(r["path"]) for r in received) == ["/", "/", "/flaky", "/flaky"]
        assert {r["body"]["status"] for r in received} == {"firing"}  # type: ignore[index]
        assert server.flaky_failures == 2  # each flaky delivery failed once, then succeeded
        await notifier.stop()
    finally:
        server.close()
        await server.wait_closed()
        probe.close()
        await mqtt.disconnect()
        await series.close()


class _Server:
    def __init__(self, server: asyncio.Server, url: str) -> None:
        self._server = server
        self.url = url
        self.flaky_failures = 0

    def close(self) -> None:
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


async def _webhook_server(received: list[dict[str, object]]) -> _Server:
    """A tiny real HTTP server: ``/`` answers 200, ``/flaky`` fails once per alert with 503."""
    seen: set[str] = set()
    holder: list[_Server] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        path = lines[0].split()[1]
        length = next(int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length"))
        body = json.loads(await reader.readexactly(length))
        key = f"{path}:{body['alert']['id']}"
        if path == "/flaky" and key not in seen:
            seen.add(key)
            holder[0].flaky_failures += 1
            writer.write(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        else:
            received.append({"path": path, "body": body})
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    holder.append(_Server(server, f"http://127.0.0.1:{port}/"))
    return holder[0]


class _CountingAlertStore(AlertStore):
    """The real alert store, noting which alerts each evaluation saves."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.saves: list[list[str]] = []

    async def save(self, alerts: Iterable[Alert], *, notify: Iterable[Alert] = ()) -> Saved:
        alerts = list(alerts)
        self.saves.append([f"{a.rule}:{a.state}" for a in alerts])
        return await super().save(alerts, notify=notify)


async def test_rules_engine_saves_only_what_changed(
    series_store: SeriesStore, db: Database, rules_path: Path
) -> None:
    alerts = _CountingAlertStore(db)
    engine = Engine(series_store, alerts, load_rules([rules_path]), value_refresh=120)
    await engine.load()
    hot = engine.rules[0]
    await series_store.write([temp("CP-1", 80, t) for t in range(0, 600, 10)])
    for t in (0, 30, 60, 90):
        await engine.evaluate(T0 + t, [hot])
    assert alerts.saves == [["Hot:pending"], [], ["Hot:firing"], []]  # value 80 throughout
    await series_store.write([temp("CP-1", 90, t) for t in range(100, 600, 10)])
    await engine.evaluate(T0 + 120, [hot])  # value moved, saved 60 s ago: not yet
    await engine.evaluate(T0 + 180, [hot])  # 120 s since the last save
    assert alerts.saves[4:] == [[], ["Hot:firing"]]
    [stored] = await alerts.find(states=["firing"])
    assert stored.value == 90.0 and stored.annotations == {"summary": "CP-1/1 at 90"}
    [current] = engine.firing()
    assert current.annotations == stored.annotations


class _CountingSeriesStore(SQLiteSeriesStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.asked: list[str] = []

    async def points(
        self, selection: Selection, start: int, end: int
    ) -> dict[Labels, list[tuple[int, FieldValue]]]:
        window = (end - start) // NS
        self.asked.append(f"points {selection.measurement}.{selection.field} {window}s")
        return await super().points(selection, start, end)


async def test_rules_engine_asks_a_shared_query_once_per_cycle(
    db: Database, tmp_path: Path
) -> None:
    """ConnectorFaulted, StuckInPreparing and StuckInFinishing read the same points (7 days);
    PortUptimeBudgetBurning reads its own 24 h window."""
    store = _CountingSeriesStore(tmp_path / "series.db")
    await store.open()
    try:
        engine = Engine(store, AlertStore(db), load_rules([bundled_pack()]))
        await engine.load()
        status = {"charger": "CP-1", "connector": "1"}
        await store.write(
            [Point("connector_status", status, {"status": "Preparing"}, int(T0 * NS))]
        )
        await engine.evaluate(T0 + 3600)
        assert store.asked.count("points connector_status.status 604800s") == 1
        assert store.asked.count("points connector_status.error_code 604800s") == 1
        assert store.asked.count("points connector_status.status 86400s") == 1
        [stuck] = engine.firing()
        assert stuck.rule == "StuckInPreparing" and stuck.value == 3600.0
    finally:
        await store.close()
