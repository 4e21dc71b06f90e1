"""Time to evaluate the default rule pack over a 10,000-charger fleet's data.

    .venv/bin/python -m bench.rules_evaluation [--chargers 10000] [--store sqlite|influxdb]
                                              [--influx-url URL] [--runs 5]

Data per charger: presence, two connectors' status history, 10 minutes of temperature,
current and voltage per connector (1 per minute), a day of sessions and boots; a few
percent of chargers are faulty so alerts open. Baseline in the same run: the store's
raw time to answer one ``count`` over all meter values (the least any rule pays).
Target: < 2 s per evaluation cycle of the whole pack. "slowest rules" are the rules' own
times (query and alert update) while the pack's queries run concurrently.
"""

from __future__ import annotations

import argparse
import asyncio
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
        await db.close()
    print(f"baseline (one count over all meter values): median {median(base):.3f} s")
    print(
        f"pack of {len(engine.rules)} rules, {chargers:,} chargers: median "
        f"{median(cycles):.3f} s per cycle (first {cycles[0]:.3f} s); {firing} alerts firing; "
        "target < 2 s"
    )
    slow = sorted(engine.states.items(), key=lambda kv: -(kv[1].get("evaluationSeconds") or 0))[:3]
    print(
        "slowest rules: " + ", ".join(f"{n} {s.get('evaluationSeconds', 0):.3f} s" for n, s in slow)
    )
    print(f"cycles: {', '.join(f'{c:.3f}' for c in cycles)} s")
    print(
        f"CPU time per cycle (this process, all threads; not the InfluxDB server): median "
        f"{median(cpu):.3f} s"
    )
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--store", choices=["sqlite", "influxdb"], default="sqlite")
    parser.add_argument("--influx-url")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
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
