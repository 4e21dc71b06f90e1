"""Rules with long windows carry their points across evaluations (rules.tracking): on both
stores the carried evaluation gives what reading the window whole gives, late points
count within ``settle`` and at the next full read, and failures and restarts read all."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from chargetwin.database import connect
from rules.alerts import AlertStore
from rules.engine import Engine
from rules.evaluations import Outcome, observe
from rules.files import Rule, bundled_pack, load_rules
from rules.points import NS, FieldValue, Labels, Point, Sample, Selection
from rules.series import SeriesError, SeriesReader, SeriesStore
from rules.sqlite_series import SQLiteSeriesStore
from rules.testing import T0
from rules.tracking import Tracker, tracked

RULES = """groups:
  - name: g
    interval: 30s
    rules:
      - alert: Faulted
        kind: state
        query: {measurement: connector_status, field: status, window: 1h,
                group_by: [charger, connector]}
        states: [Faulted, Unavailable]
        held_for: 2m
      - alert: Downtime
        query: {measurement: connector_status, field: status, aggregation: time_in,
                window: 1h, group_by: [charger, connector]}
        states: [Faulted]
        condition: {op: ">", threshold: 0.1}
      - alert: LowEnergy
        query: {measurement: sessions, field: energy, aggregation: mean, window: 1h,
                group_by: [charger], min_points: 2}
        condition: {op: "<", threshold: 5}
      - alert: EnergySpread
        query: {measurement: sessions, field: energy, aggregation: spread, window: 1h,
                group_by: [charger]}
        condition: {op: ">", threshold: 8}
      - alert: Sessions
        query: {measurement: sessions, field: energy, aggregation: count, window: 1h}
        condition: {op: ">", threshold: 20}
      - alert: NoSessions
        kind: absence
        query: {measurement: sessions, field: energy, window: 1h, group_by: [charger]}
        absent_for: 10m
"""
STATUSES = ["Available", "Charging", "Faulted", "Unavailable", "Preparing"]
SETTLE = 120.0


@pytest.fixture
def rules(tmp_path: Path) -> list[Rule]:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    ruleset = load_rules([path])
    assert not ruleset.findings
    assert all(tracked(rule, SETTLE) for rule in ruleset.rules)
    return ruleset.rules


def status(charger: str, connector: str, value: str, t: float) -> Point:
    tags = {"charger": charger, "connector": connector}
    return Point("connector_status", tags, {"status": value}, round((T0 + t) * NS))


def session(charger: str, energy: float, t: float) -> Point:
    return Point("sessions", {"charger": charger}, {"energy": energy}, round((T0 + t) * NS))


def random_points(rng: random.Random, start: float, end: float, count: int) -> list[Point]:
    out = []
    for _ in range(count):
        t = round(rng.uniform(start, end), 3)
        charger = f"CP-{rng.randrange(4)}"
        if rng.random() < 0.6:
            out.append(status(charger, str(rng.randrange(1, 3)), rng.choice(STATUSES), t))
        else:
            out.append(session(charger, rng.choice([0.0, 2.5, 7.0, 12.25]), t))
    return out


def same(a: Outcome, b: Outcome) -> bool:
    return a.no_data == b.no_data and [
        (o.labels, o.breach, pytest.approx(o.value)) for o in a.observations
    ] == [(o.labels, o.breach, o.value) for o in b.observations]


async def test_rules_tracking_equals_reading_the_window_whole(
    series_store: SeriesStore, rules: list[Rule]
) -> None:
    """Points arrive as time goes (some up to ``settle`` late); every evaluation from the
    carried points equals a fresh tracker's and the untracked query's."""
    rng = random.Random(3)
    await series_store.write(random_points(rng, -3 * 3600, 0, 300))
    trackers = {r.alert: Tracker(r, settle=SETTLE, refresh=3600) for r in rules}
    previous = 0.0
    for now in [30.0 * i for i in range(1, 40)] + [1500.0, 1530.0, 3000.0]:
        late = random_points(rng, previous - SETTLE + 1, previous, 2)  # written late
        await series_store.write(random_points(rng, previous, now, 6) + late)
        previous = now
        for rule in rules:
            carried = await observe(rule, series_store, T0 + now, trackers[rule.alert])
            fresh = Tracker(rule, settle=SETTLE, refresh=3600)
            assert carried == await observe(rule, series_store, T0 + now, fresh), (rule, now)
            assert same(carried, await observe(rule, series_store, T0 + now)), (rule, now)
    assert all(t.full_reads == 1 for t in trackers.values())  # a gap, but within the hour
    observed = [await observe(r, series_store, T0 + previous, trackers[r.alert]) for r in rules]
    assert all(o.observations for o in observed)  # the data exercised every rule


async def test_rules_tracking_late_points_count_at_the_next_full_read(
    series_store: SeriesStore, rules: list[Rule]
) -> None:
    faulted = rules[0]
    tracker = Tracker(faulted, settle=SETTLE, refresh=600)
    await series_store.write([status("CP-1", "1", "Available", 0)])
    assert (await observe(faulted, series_store, T0 + 1000, tracker)).observations == []
    # Within ``settle``: counts at once.
    await series_store.write([status("CP-1", "1", "Faulted", 950)])
    [held] = (await observe(faulted, series_store, T0 + 1030, tracker)).observations
    assert held.value == 80.0
    # Older than ``settle`` when it arrives: only seen by the next full read (1000 + 600 s).
    await series_store.write([status("CP-1", "1", "Unavailable", 700)])
    for now in (1060, 1590):
        [held] = (await observe(faulted, series_store, T0 + now, tracker)).observations
        assert held.value == now - 950
    [held] = (await observe(faulted, series_store, T0 + 1600, tracker)).observations
    assert held.value == 1600 - 700
    assert tracker.full_reads == 2
    # A state rule keeps only the newest point outside its states and the run after it.
    await series_store.write([status("CP-1", "1", v, 1600 + i) for i, v in enumerate(STATUSES)])
    await observe(faulted, series_store, T0 + 1800, tracker)
    assert tracker.carried == 1  # Preparing, the newest


class _FailingOnce:
    """A store whose next ``points`` query fails."""

    def __init__(self, store: SeriesStore) -> None:
        self.store = store
        self.fail = False
        self.asked: list[tuple[int, int]] = []

    async def aggregate(
        self, selection: Selection, function: str, start: int, end: int
    ) -> list[Sample]:
        assert function == "count"  # a tracked rule only counts a window before reading it
        return await self.store.aggregate(selection, function, start, end)

    async def last(self, selection: Selection, start: int | None, end: int) -> list[Sample]:
        return await self.store.last(selection, start, end)

    async def points(
        self, selection: Selection, start: int, end: int
    ) -> dict[Labels, list[tuple[int, FieldValue]]]:
        if self.fail:
            self.fail = False
            raise SeriesError("store down")
        self.asked.append((start, end))
        return await self.store.points(selection, start, end)


async def test_rules_tracking_reads_all_after_a_failure_or_going_back(
    series_store: SeriesStore, rules: list[Rule]
) -> None:
    mean = rules[2]
    failing = _FailingOnce(series_store)
    store: SeriesReader = failing
    tracker = Tracker(mean, settle=SETTLE, refresh=3600)
    await series_store.write([session("CP-1", 2.0, 10), session("CP-1", 4.0, 20)])
    [low] = (await observe(mean, store, T0 + 100, tracker)).observations
    assert low.value == 3.0
    await observe(mean, store, T0 + 200, tracker)
    settled = round((T0 + 100) * NS) - round(SETTLE * NS)
    assert failing.asked[-1] == (settled, round((T0 + 200) * NS))  # only what is new
    failing.fail = True
    await series_store.write([session("CP-1", 9.0, 150)])
    with pytest.raises(SeriesError):
        await observe(mean, store, T0 + 230, tracker)
    [low] = (await observe(mean, store, T0 + 260, tracker)).observations
    assert low.value == 5.0 and tracker.full_reads == 2
    [low] = (await observe(mean, store, T0 + 160, tracker)).observations  # going back
    assert low.value == 5.0 and tracker.full_reads == 3
    end = round((T0 + 160) * NS)
    assert failing.asked[-1] == (end - 3600 * NS, end)


async def test_rules_tracking_a_restarted_engine_gives_the_same_alerts(
    series_store: SeriesStore, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    rng = random.Random(11)
    await series_store.write(random_points(rng, -3600, 0, 200))
    databases = [connect(f"sqlite:///{tmp_path}/{name}.db") for name in ("a", "b")]
    for db in databases:
        await db.open()
    try:
        running = Engine(
            series_store, AlertStore(databases[0]), load_rules([path]), full_read_every=3600
        )
        await running.load()
        assert set(running.trackers) == {r.alert for r in running.rules}
        for now in range(30, 1230, 30):
            await series_store.write(random_points(rng, now - 60, now, 3))
            await running.evaluate(T0 + now)
        restarted = Engine(series_store, AlertStore(databases[1]), load_rules([path]))
        await restarted.load()
        await running.evaluate(T0 + 1230)
        await restarted.evaluate(T0 + 1230)
        assert running.firing()
        for rule in running.rules:
            assert sorted((a.fingerprint, a.value) for a in running.firing(rule.alert)) == sorted(
                (a.fingerprint, a.value) for a in restarted.firing(rule.alert)
            ), rule.alert
        # The first periodic full reads are staggered over the hour: some came already.
        assert sorted(t.full_reads for t in running.trackers.values()) == [1, 1, 1, 1, 2, 2]
    finally:
        for db in databases:
            await db.close()


async def test_rules_tracking_reads_whole_a_window_with_too_many_points(
    series_store: SeriesStore, rules: list[Rule]
) -> None:
    """Over ``max_carried`` points the rule is read whole (an aggregation's points are
    counted on the store first) until its next full read; the outcome is the same."""
    downtime, mean = rules[1], rules[2]
    await series_store.write(
        [session("CP-1", float(i), 10 * i) for i in range(5)]
        + [status("CP-1", "1", STATUSES[i % 3], 10 * i) for i in range(5)]
    )
    for rule in (mean, downtime):
        tracker = Tracker(rule, settle=SETTLE, refresh=600, max_carried=4)
        for now in (200, 230, 790):
            whole = await observe(rule, series_store, T0 + now)
            assert await observe(rule, series_store, T0 + now, tracker) == whole
            assert tracker.carried == 0 and tracker.full_reads == (rule is downtime)
        tracker.max_carried = 10
        assert await observe(rule, series_store, T0 + 800, tracker) == await observe(
            rule, series_store, T0 + 800
        )
        assert tracker.carried > 0 and tracker.full_reads == 1 + (rule is downtime)


class _CountingStore(SQLiteSeriesStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.full_reads: list[str] = []

    async def points(
        self, selection: Selection, start: int, end: int
    ) -> dict[Labels, list[tuple[int, FieldValue]]]:
        if end - start > 3600 * NS:
            self.full_reads.append(f"{selection.measurement}.{selection.field}")
        return await super().points(selection, start, end)


async def test_rules_tracking_rules_of_a_group_reading_the_same_points_read_all_together(
    tmp_path: Path,
) -> None:
    """GroundFailure and ComponentFailure (one group, connector_status.error_code over
    7 days) share each full read; ConnectorFaulted (that group) and StuckInPreparing /
    StuckInFinishing (another group) read connector_status.status at different times."""
    store = _CountingStore(tmp_path / "series.db")
    await store.open()
    db = connect(f"sqlite:///{tmp_path}/alerts.db")
    await db.open()
    try:
        engine = Engine(store, AlertStore(db), load_rules([bundled_pack()]))
        await engine.load()
        for now in range(0, 901, 30):  # the first full reads, then one periodic each
            await engine.evaluate(T0 + now)
        assert store.full_reads.count("connector_status.error_code") == 2  # first, periodic
        # First: one 7-day read (three rules asked together) and the 24 h one (uptime);
        # periodic: ConnectorFaulted, the two Stuck* rules together, the uptime rule.
        assert store.full_reads.count("connector_status.status") == 2 + 3
    finally:
        await db.close()
        await store.close()
