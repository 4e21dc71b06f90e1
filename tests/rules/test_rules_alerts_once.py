"""One open alert per label set in the store, on SQLite and PostgreSQL: even two engines
evaluating side by side (a leader and one that has not yet noticed it lost the lead) open,
announce and act on each alert once; duplicates left by older versions are removed; a
rule opens no second work order while its first is open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chargetwin.database import Database, connect
from fleet.work_orders import WorkOrderStore
from rules.actions import Actions, list_work_orders
from rules.alerts import FIRING, PENDING, SCHEMA, Alert, AlertStore, fingerprint
from rules.engine import Engine
from rules.files import load_rules
from rules.notifiers import Notifier
from rules.points import NS, Point
from rules.sqlite_series import SQLiteSeriesStore
from rules.testing import T0

RULES = """groups:
  - name: g
    rules:
      - alert: Hot
        query: {measurement: meter_values, field: value, aggregation: max, window: 1m,
                group_by: [charger, connector]}
        condition: {op: ">", threshold: 70}
        severity: critical
        annotations: {summary: "$charger/$connector at $value"}
        actions:
          - {type: work_order, title: "Hot $charger"}
"""


def temp(charger: str, value: float, t: float) -> Point:
    return Point(
        "meter_values", {"charger": charger, "connector": "1"}, {"value": value},
        int((T0 + t) * NS),
    )  # fmt: skip


class RecordingNotifier(Notifier):
    """Notes each transition instead of publishing it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str]] = []

    def transition(self, alert: Alert, *, webhook: bool) -> None:
        self.sent.append((alert.state, alert.labels["charger"]))


@pytest.fixture
async def series(tmp_path: Path) -> AsyncIterator[SQLiteSeriesStore]:
    store = SQLiteSeriesStore(tmp_path / "series.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def second_db(database_url: str) -> AsyncIterator[Database]:
    """Another connection (pool) to the same database, as a second process has."""
    database = connect(database_url)
    await database.open()
    yield database
    await database.close()


async def _engine(
    series: SQLiteSeriesStore, db: Database, path: Path
) -> tuple[Engine, RecordingNotifier]:
    notifier = RecordingNotifier()
    engine = Engine(
        series, AlertStore(db), load_rules([path]), notifier=notifier, actions=Actions(db)
    )
    await engine.load()
    return engine, notifier


async def _open_rows(db: Database) -> list[tuple[str, str]]:
    rows = await db.fetchall("SELECT id, labels FROM alerts WHERE state IN ('pending', 'firing')")
    return sorted(((str(r[0]), json.loads(r[1])["charger"]) for r in rows), key=lambda r: r[1])


async def test_two_engines_racing_open_announce_and_act_once(
    db: Database, second_db: Database, series: SQLiteSeriesStore, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    (a, sent_a), (b, sent_b) = [await _engine(series, d, path) for d in (db, second_db)]
    chargers = [f"CP-{n}" for n in range(8)]
    await series.write([temp(c, 90, t) for c in chargers for t in (0, 30, 60)])
    for t in (0, 10, 20):
        await asyncio.gather(a.evaluate(T0 + t), b.evaluate(T0 + t))
    rows = await _open_rows(db)
    assert [c for _, c in rows] == sorted(chargers)  # one open alert per label set
    # Both engines now hold the stored alerts, whichever opened them.
    ids = {alert_id for alert_id, _ in rows}
    assert {x.id for x in a.firing()} == ids == {x.id for x in b.firing()}
    # Each alert announced firing once, by one engine or the other; one work order each.
    firing = [c for state, c in sent_a.sent + sent_b.sent if state == FIRING]
    assert sorted(firing) == sorted(chargers)
    orders = await list_work_orders(db)
    assert sorted(o["chargerId"] for o in orders) == sorted(chargers)
    assert {o["alertId"] for o in orders} == ids

    # Cooled down: both resolve; the store takes one resolution per alert, so it is
    # announced once.
    await series.write([temp(c, 20, t) for c in chargers for t in (70, 80, 90, 100)])
    await asyncio.gather(a.evaluate(T0 + 130), b.evaluate(T0 + 130))
    assert await _open_rows(db) == []
    resolved = [c for state, c in sent_a.sent + sent_b.sent if state == "resolved"]
    assert sorted(resolved) == sorted(chargers)
    assert a.firing() == [] and b.firing() == []


async def test_store_refuses_a_second_open_alert_of_one_label_set(db: Database) -> None:
    store = AlertStore(db)
    await store.create_schema()
    labels = {"alertname": "Hot", "charger": "CP-1"}
    fp = fingerprint(labels)

    def alert(alert_id: str, at: float) -> Alert:
        return Alert(
            id=alert_id, fingerprint=fp, rule="Hot", state=FIRING, severity="critical",
            labels=labels, annotations={}, value=90.0, active_at=at, last_active_at=at,
            updated_at=at,
        )  # fmt: skip

    first, second = alert("first", 1.0), alert("second", 2.0)
    assert (await store.save([first], notify=[first])).notify == [first]
    saved = await store.save([second], notify=[second])
    assert saved.refused == {"second"} and saved.notify == [] and not second.stored
    assert [a.id for a in await store.open_alerts()] == ["first"]
    # The first notification is claimed once: a stored alert announced already is not again.
    stale = (await store.open_alerts())[0]
    stale.notified = False
    assert (await store.save([stale], notify=[stale])).notify == []
    # Resolved, the label set may open again.
    first.state, first.resolved_at = "resolved", 3.0
    assert (await store.save([first])).refused == set()
    third = alert("third", 4.0)
    assert (await store.save([third])).refused == set()
    # An alert closed in the store is not opened again by an update.
    first.state = FIRING
    assert (await store.save([first])).refused == {"first"}
    assert [a.id for a in await store.open_alerts()] == ["third"]


async def test_create_schema_removes_duplicates_of_older_versions(db: Database) -> None:
    await db.execute(SCHEMA[0])  # the table as before: no unique index
    labels = {"alertname": "Hot", "charger": "CP-1"}
    for alert_id, state, active_at in (
        ("old", PENDING, 1.0),
        ("older", FIRING, 0.5),
        ("newest", FIRING, 2.0),
        ("done", "resolved", 0.1),
    ):
        await db.execute(
            "INSERT INTO alerts (id, fingerprint, rule, state, severity, labels, annotations, "
            "active_at, last_active_at, updated_at) VALUES (?, ?, 'Hot', ?, 'critical', ?, "
            "'{}', ?, ?, ?)",
            (alert_id, fingerprint(labels), state, json.dumps(labels), active_at, active_at, 3.0),
        )
    store = AlertStore(db)
    await store.create_schema()
    await store.create_schema()  # again: nothing left to do
    rows = await db.fetchall("SELECT id FROM alerts ORDER BY id")
    assert [r[0] for r in rows] == ["done", "older"]


async def test_a_rule_opens_no_second_work_order_while_one_is_open(
    db: Database, series: SQLiteSeriesStore, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    engine, _ = await _engine(series, db, path)
    assert engine.actions is not None

    async def breach(t: float, value: float) -> None:
        await series.write([temp("CP-1", value, t)])
        await engine.evaluate(T0 + t)

    await breach(0, 90)  # fires, opens a work order
    await breach(120, 20)  # resolves
    await breach(240, 95)  # fires again: the order is still open
    [order] = await list_work_orders(db)
    assert [r.outcome for r in engine.actions.history] == ["done", "skipped"]
    assert engine.actions.history[-1].detail == f"work order {order['id']} is still open"
    await WorkOrderStore(db).update(order["id"], {"status": "resolved"}, actor="tech")
    await breach(360, 20)
    await breach(480, 99)  # the technician closed it: a new order
    assert len(await list_work_orders(db)) == 2
    assert [r.outcome for r in engine.actions.history] == ["done", "skipped", "done"]
