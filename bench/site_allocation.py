"""Cost of the site energy allocator (issue 12).

    .venv/bin/python -m bench.site_allocation [--connectors 500] [--sites 1000]
                                              [--chargers 20] [--runs 21] [--engine]

1. One allocation of a site with ``--connectors`` connectors (target < 20 ms), for each
   strategy: the median of ``--runs`` runs of :func:`fleet.allocation.allocate` on a site
   of mixed connectors (charging, idle, offline, refused, unconfirmed, unknown load,
   settled EVs). Baseline in the same run: the trivial equal split of the limit.
2. ``--sites`` sites of ``--chargers`` two-port chargers each, all re-allocated once per
   minute (target < 10 % of a core): the CPU time (``time.process_time``) of one round
   of every site, over 60 s. Baseline: the equal split of every site.
3. With ``--engine``: the whole engine's full pass over the same fleet in an SQLite
   database (registry, shadows, site states, reports; each site read in three queries and
   its report written), in the steady state where no limit changes; the shadow client
   answers at once (the twin's own cost is measured by bench.shadow_updates).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.machine import describe, median
from chargetwin.database import connect
from chargetwin.topics import Topics
from fleet.allocation import STRATEGIES, Connector, Policy, State, allocate, equal_split
from fleet.energy import EnergyEngine
from fleet.sites import SiteStore
from twin.registry import ChargerRegistry
from twin.stores import ShadowStore

NOW = 1_765_000_000.0


def site(rng: random.Random, ports: int, prefix: str = "") -> list[Connector]:
    out = []
    for i in range(ports):
        roll = rng.random()
        state = (
            State.CHARGING if roll < 0.6 else State.IDLE if roll < 0.85
            else State.OFFLINE if roll < 0.95 else State.REFUSED
        )  # fmt: skip
        rated = rng.choice([16.0, 32.0])
        out.append(
            Connector(
                f"{prefix}CP{i // 2}", str(i % 2 + 1), state, rated,
                phases=rng.choice([1, 3]),
                confirmed=None if rng.random() < 0.1 else rng.uniform(0, rated),
                failsafe=rng.choice([None, 10.0]),
                measured=None if rng.random() < 0.1 else rng.uniform(0, rated),
                offered=rng.uniform(0, rated),
                under_since=rng.choice([None, NOW - 120]),
                started_at=NOW - rng.uniform(0, 7200),
                priority=rng.randint(0, 2),
                running_since=rng.choice([None, NOW - rng.uniform(0, 2000)]),
            )
        )  # fmt: skip
    return out


def timed(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def one_site(connectors: int, runs: int) -> None:
    rng = random.Random(12)
    ports = site(rng, connectors)
    limit = connectors * 8.0  # about a third of what the charging ports could take
    print(f"\n1. one site of {connectors} connectors, limit {limit:.0f} A (median of {runs}):")
    base = timed(lambda: equal_split(ports, limit), runs)
    print(f"   baseline equal split   {base * 1000:8.3f} ms")
    for strategy in STRATEGIES:
        policy = Policy(limit, strategy=strategy)
        took = timed(lambda policy=policy: allocate(ports, policy, NOW), runs)  # type: ignore[misc]
        verdict = "ok" if took < 0.020 else "OVER the 20 ms target"
        print(f"   allocate {strategy:<13} {took * 1000:8.3f} ms  ({verdict})")


def fleet_round(sites: int, chargers: int, runs: int) -> None:
    rng = random.Random(7)
    fleet = [site(rng, chargers * 2, f"S{s}-") for s in range(sites)]
    limit = chargers * 2 * 8.0
    policy = Policy(limit)

    def cpu(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(runs):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return median(times)

    base = cpu(lambda: [equal_split(ports, limit) for ports in fleet])
    took = cpu(lambda: [allocate(ports, policy, NOW) for ports in fleet])
    print(
        f"\n2. {sites} sites x {chargers} chargers (2 ports), all re-allocated once a minute"
        f" (median of {runs} rounds):"
    )
    print(f"   baseline equal split   {base:8.3f} s CPU per round = {base / 60:6.2%} of a core")
    verdict = "ok" if took / 60 < 0.10 else "OVER the 10 % target"
    print(f"   allocate (equal)       {took:8.3f} s CPU per round = {took / 60:6.2%} of a core"
          f"  ({verdict})")  # fmt: skip


class InstantShadows:
    """Answers every update at once and keeps the desired state it was sent (for the
    engine's steady state): the bench measures the engine, not the twin."""

    def __init__(self) -> None:
        self.sent: dict[str, dict[str, Any]] = {}

    async def update_many(self, states: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        self.sent.update(states)
        return {charger_id: {"version": 1} for charger_id in states}


class CountedReports:
    """Takes the report the engine publishes after each site's pass (encoded, as the MQTT
    client would) and counts it: the bench measures the engine, not the broker."""

    def __init__(self) -> None:
        self.published = 0
        self.bytes = 0

    def publish(self, topic: str, payload: str, *, qos: int = 1, retain: bool = False) -> None:
        self.published += 1
        self.bytes += len(payload.encode())


async def engine_pass(sites: int, chargers: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = connect(f"sqlite:///{Path(folder) / 'bench.db'}")
        await db.open()
        try:
            store = SiteStore(db)
            for schema in (store, ShadowStore(db), ChargerRegistry(db)):
                await schema.create_schema()
            rows, shadows = [], []
            for s in range(sites):
                for c in range(chargers):
                    charger_id = f"S{s}-CP{c}"
                    rows.append((charger_id, f"site-{s}", "[]", NOW))
                    reported = {
                        "connection": {"online": True},
                        "connectors": {
                            "1": {"status": "Charging" if c % 3 else "Available"},
                            "2": {"status": "Charging" if c % 2 else "Available"},
                        },
                    }
                    document = {"state": {"reported": reported, "desired": {}}, "version": 1}
                    shadows.append((charger_id, json.dumps(document)))
            await db.execute_batch(
                [("INSERT INTO chargers (charger_id, site, tags, created_at) VALUES (?, ?, ?, ?)",
                  row) for row in rows]
                + [("INSERT INTO shadows (charger_id, version, document, writes, updated_at)"
                    " VALUES (?, 1, ?, '{}', 0)", row) for row in shadows]
            )  # fmt: skip
            for s in range(sites):
                await store.patch_energy(f"site-{s}", {"limitA": chargers * 8}, actor="bench")
            client = InstantShadows()
            reports = CountedReports()
            engine = EnergyEngine(store, client, reports, Topics("bench"))  # type: ignore[arg-type]
            await engine.tick(now=NOW)  # first pass: writes every limit
            # the twin would now hold them as desired state
            await db.execute_batch(
                [
                    ("UPDATE shadows SET document = ? WHERE charger_id = ?",
                     (json.dumps({"state": {"reported": json.loads(doc)["state"]["reported"],
                                            "desired": client.sent[cid]["desired"]}}), cid))
                    for cid, doc in shadows
                ]
            )  # fmt: skip
            client.sent.clear()
            reports.published = reports.bytes = 0
            cpu, wall = [], []
            for run in range(runs):  # a minute apart, as the engine's interval
                start, start_cpu = time.perf_counter(), time.process_time()
                await engine.tick(now=NOW + 60 * (run + 1))
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            took = median(cpu)
            verdict = "ok" if took / 60 < 0.10 else "OVER the 10 % target"
            print(f"\n3. the engine's full pass, {sites} sites x {chargers} chargers on SQLite"
                  f" (steady state, median of {runs}):")  # fmt: skip
            print(f"   {median(wall):8.3f} s wall, {took:8.3f} s CPU per pass = "
                  f"{took / 60:6.2%} of a core once a minute  ({verdict});"
                  f" {len(client.sent)} limits rewritten;"
                  f" {reports.published // runs} reports published per pass,"
                  f" {reports.bytes // max(1, reports.published)} bytes each")  # fmt: skip
        finally:
            await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connectors", type=int, default=500)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--chargers", type=int, default=20)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--engine", action="store_true", help="also the engine's full pass")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    one_site(args.connectors, args.runs)
    fleet_round(args.sites, args.chargers, max(3, args.runs // 4))
    if args.engine:
        asyncio.run(engine_pass(args.sites, args.chargers, 3))


if __name__ == "__main__":
    main()
