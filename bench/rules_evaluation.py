"""Time to evaluate the default rule pack over a 10,000-charger fleet's data.

    .venv/bin/python -m bench.rules_evaluation [--chargers 10000] [--store sqlite|influxdb]
                                              [--influx-url URL] [--runs 5]

Data per charger: presence, two connectors' status history, 10 minutes of temperature,
current and voltage per connector (1 per minute), a day of sessions and boots; a few
percent of chargers are faulty so alerts open. Baseline in the same run: the store's
raw time to answer one ``count`` over all meter values (the least any rule pays).

Cycles are one second apart on a fixed fleet. The first cycle reads every rule's window
whole (a *full read*); the rules with long windows (state, ``time_in``, sessions, boots:
``rules.tracking``) then read only their points newer than ``settle`` (2 min) before the
previous cycle, which is what every later cycle does in service, except that each such
rule reads all again every 15 minutes, staggered (rules of one group that read the same
points together, sharing the query): such a cycle holds one full read, measured for each
in turn after the others. Target: < 2 s per cycle of the whole pack, the median of the
cycles after the first; the first is shown beside it. "slowest rules" are the rules' own
times (query and alert update) while the pack's queries run concurrently.

Without ``--influx-url``, ``--store influxdb`` starts a private ``influxd`` (Debian's 1.6,
configured as ``tests/rules/influx_servers.py``) in a temporary folder and stops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.machine import describe, median
from chargetwin.database import connect
from rules.alerts import AlertStore
from rules.engine import Engine
from rules.files import bundled_pack, load_rules
from rules.influx import InfluxStore
from rules.points import NS, Point, Selection
from rules.series import SeriesStore
from rules.sqlite_series import SQLiteSeriesStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "rules"))

NOW = 1_700_000_000.0


def fleet(chargers: int) -> list[Point]:
    rng = random.Random(7)
    out: list[Point] = []

    def at(seconds_ago: float) -> int:
        return int((NOW - seconds_ago) * NS)

    for c in range(chargers):
        cid = f"CP-{c:05d}"
        faulty = rng.random() < 0.03
        out.append(
            Point(
                "presence",
                {"charger": cid},
                {"state": "offline" if faulty and c % 2 else "online"},
                at(3600),
            )
        )
        out.append(Point("boots", {"charger": cid}, {"count": 1.0}, at(7200)))
        for conn in ("1", "2"):
            tags = {"charger": cid, "connector": conn}
            out.append(
                Point(
                    "connector_status",
                    tags,
                    {"status": "Available", "error_code": "NoError"},
                    at(7200),
                )
            )
            status = "Faulted" if faulty else rng.choice(["Available", "Charging", "Preparing"])
            out.append(
                Point(
                    "connector_status", tags, {"status": status, "error_code": "NoError"}, at(1800)
                )
            )
            for minute in range(10):
                for measurand, value in (
                    ("Temperature", 75.0 if faulty else 35.0),
                    ("Current.Import", 32.0),
                    ("Voltage", 230.0),
                ):
                    out.append(
                        Point(
                            "meter_values",
                            {**tags, "measurand": measurand},
                            {"value": value},
                            at(minute * 60),
                        )
                    )
            for s in range(3):
                ok = 0.0 if faulty else 1.0
                out.append(
                    Point(
                        "sessions",
                        {**tags, "event": "stopped"},
                        {"successful": ok, "zero_energy": 1.0 - ok, "sessions": 1.0},
                        at(3600 * (s + 1)),
                    )
                )
    return out  # fmt: skip


async def run(store: SeriesStore, chargers: int, runs: int) -> None:
    points = fleet(chargers)
    started = time.perf_counter()
    for i in range(0, len(points), 5000):
        await store.write(points[i : i + 5000])
    print(f"loaded {len(points):,} points in {time.perf_counter() - started:.1f} s")
    with tempfile.TemporaryDirectory() as folder:
        db = connect(f"sqlite:///{folder}/alerts.db")
        await db.open()
        engine = Engine(store, AlertStore(db), load_rules([bundled_pack()]))
        await engine.load()
        base, cycles, cpu = [], [], []
        for r in range(runs):
            t = time.perf_counter()
            await store.aggregate(Selection("meter_values", "value"), "count", 0, int(NOW * NS))
            base.append(time.perf_counter() - t)
            t, c = time.perf_counter(), time.process_time()
            await engine.evaluate(NOW + r)
            cycles.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        firing = len(engine.firing())
        # In service each carried rule reads all again every 15 minutes, staggered (rules of
        # one group reading the same points together): a cycle then holds one such full
        # read, each in turn here.
        refreshing = []
        phases = sorted({tracker.phase for tracker in engine.trackers.values()})
        for i, phase in enumerate(phases):
            for tracker in engine.trackers.values():
                if tracker.phase == phase:
                    tracker.forget()
            t = time.perf_counter()
            await engine.evaluate(NOW + runs + i)
            refreshing.append(time.perf_counter() - t)
        # The same-run reference for the carried windows: a cycle that reads every window
        # whole, as every cycle did before rules carried their points.
        whole = Engine(store, AlertStore(db), engine.ruleset, settle=math.inf)
        await whole.load()
        t = time.perf_counter()
        await whole.evaluate(NOW + runs + len(refreshing))
        whole_cycle = time.perf_counter() - t
        await db.close()
    print(f"baseline (one count over all meter values): median {median(base):.3f} s")
    print(f"reference: one cycle reading every window whole: {whole_cycle:.3f} s")
    steady = cycles[1:]
    print(
        f"pack of {len(engine.rules)} rules ({len(engine.trackers)} carried across cycles), "
        f"{chargers:,} chargers: median {median(steady):.3f} s per cycle after the first "
        f"(first, full reads: {cycles[0]:.3f} s); {firing} alerts firing; target < 2 s"
    )
    print(
        f"cycles with one periodic full read (each of {len(refreshing)} in turn): median "
        f"{median(refreshing):.3f} s, max {max(refreshing):.3f} s"
    )
    slow = sorted(engine.states.items(), key=lambda kv: -(kv[1].get("evaluationSeconds") or 0))[:3]
    print(
        "slowest rules: " + ", ".join(f"{n} {s.get('evaluationSeconds', 0):.3f} s" for n, s in slow)
    )
    print(f"cycles: {', '.join(f'{c:.3f}' for c in cycles)} s")
    print(
        f"CPU time per cycle after the first (this process, all threads; not the InfluxDB "
        f"server): median {median(cpu[1:]):.3f} s (first {cpu[0]:.3f} s)"
    )
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--store", choices=["sqlite", "influxdb"], default="sqlite")
    parser.add_argument("--influx-url")
    parser.add_argument("--runs", type=int, default=5, help="cycles (at least 2)")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs: at least 2 (the first cycle is a full read)")
    print(f"machine: {describe()}")
    print(f"store: {args.store}")
    with tempfile.TemporaryDirectory() as folder:
        server = None
        store: SeriesStore
        if args.store == "sqlite":
            store = SQLiteSeriesStore(Path(folder) / "series.db")
        else:
            url = args.influx_url
            if url is None:
                from influx_servers import InfluxServer

                server = InfluxServer(Path(folder) / "influxd")
                server.start()
                url = server.url
            store = InfluxStore(url, f"bench_{uuid.uuid4().hex[:8]}", timeout=60)
        await store.open()
        try:
            await run(store, args.chargers, args.runs)
        finally:
            await store.close()
            if server is not None:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main())
