"""Retention of the embedded time-series store: a pass, and how long it holds the writer.

    .venv/bin/python -m bench.series_retention [--chargers 2500] [--runs 3]

Builds a store of ``--chargers`` chargers: 4 meter-value series each with 100 points
over 300 days, and one connector-status series with 100 points (2 fields) over 800 days;
then, on a fresh copy per run, times a retention pass (meter values 200 days, the rest
500), its longest step (the most a recorder write waits behind it), and a steady-state
pass with nothing due. Baseline of the same run: the same deletion as one plain
``DELETE ... WHERE time < cutoff`` per measurement in one transaction (it does not keep
the value held at the cutoff, and holds the write lock for all of it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.machine import describe, median
from rules.points import NS, Point
from rules.retention import DAY, RetentionPolicy, SeriesRetention
from rules.sqlite_series import SQLiteSeriesStore

NOW = 1_750_000_000.0
POLICY = RetentionPolicy.from_days(500, 200)
MEASURANDS = ("Power.Active.Import", "Energy.Active.Import.Register", "Current.Import", "Voltage")


def points(chargers: int) -> list[Point]:
    out = []
    for c in range(chargers):
        for measurand in MEASURANDS:
            tags = {"charger": f"CP-{c}", "connector": "1", "measurand": measurand}
            for i in range(100):
                t = int((NOW - (300 - 3 * i) * DAY) * NS)
                out.append(Point("meter_values", tags, {"value": float(i)}, t))
        tags = {"charger": f"CP-{c}", "connector": "1"}
        fields = {"status": "Available", "error_code": "NoError"}
        for i in range(100):
            out.append(
                Point("connector_status", tags, fields, int((NOW - (800 - 8 * i) * DAY) * NS))
            )
    return out


async def build(path: Path, chargers: int) -> None:
    store = SQLiteSeriesStore(path)
    await store.open()
    batch = points(chargers)
    for start in range(0, len(batch), 50_000):
        await store.write(batch[start : start + 50_000])
    await store.close()


def plain_delete(path: Path) -> tuple[float, int]:
    cutoffs, default = POLICY.cutoffs(NOW)
    conn = sqlite3.connect(path, isolation_level=None)
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    removed = conn.execute(
        "DELETE FROM samples WHERE measurement = 'meter_values' AND time < ?",
        (cutoffs["meter_values"],),
    ).rowcount
    removed += conn.execute(
        "DELETE FROM samples WHERE measurement != 'meter_values' AND time < ?", (default,)
    ).rowcount
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed, removed


async def pass_with_steps(path: Path) -> tuple[float, float, float, int]:
    """Pass time, longest step, steady-state pass time, values removed."""
    store = SQLiteSeriesStore(path)
    await store.open()
    try:
        cutoffs, default = POLICY.cutoffs(NOW)
        longest, removed = 0.0, 0
        started = time.perf_counter()
        next_after: int | None = 0
        while next_after is not None:
            step_started = time.perf_counter()
            step = await store.prune(cutoffs, default, after=next_after)
            longest = max(longest, time.perf_counter() - step_started)
            removed += sum(step.removed.values())
            next_after = step.resume_after
        elapsed = time.perf_counter() - started
        steady_started = time.perf_counter()
        assert await SeriesRetention(store, POLICY, pause=0).run_pass(NOW) == {}
        steady = time.perf_counter() - steady_started
    finally:
        await store.close()
    return elapsed, longest, steady, removed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=2500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    try:
        source = folder / "source.db"
        await build(source, args.chargers)
        values = args.chargers * (4 * 100 + 2 * 100)
        print(f"machine: {describe()}")
        print(f"store: {args.chargers * 5} series, {values:,} values; {args.runs} runs")
        plain, passes, longest, steady = [], [], [], []
        for run in range(args.runs):
            copy = folder / f"run-{run}.db"
            shutil.copy(source, copy)
            elapsed, plain_removed = plain_delete(copy)
            plain.append(elapsed)
            shutil.copy(source, copy)
            elapsed, step, idle, removed = await pass_with_steps(copy)
            passes.append(elapsed)
            longest.append(step)
            steady.append(idle)
        print(
            f"baseline (plain DELETE, one transaction): median {median(plain):.2f} s, "
            f"{plain_removed:,} values, write lock held throughout"
        )
        print(
            f"retention pass (in steps, keeps the held value): median {median(passes):.2f} s, "
            f"{removed:,} values"
        )
        print(f"  longest step (write lock held): median {median(longest) * 1000:.1f} ms")
        print(f"  steady-state pass, nothing due: median {median(steady):.2f} s")
        print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    asyncio.run(main())
