"""Chargers held by one bridge process, memory per idle connection, and a reconnect storm.

    .venv/bin/python -m bench.bridge_connections [--runs 3] [--chargers 10000] [--storm 5000]

The broker is a private Mosquitto (bench/brokers.py). Per run, against
``chargetwin bridge`` (fresh SQLite
data dir, unique prefix) and the bare ``ocpp`` library baseline (:mod:`bench.ocpp_baseline`),
each its own process, with this process as the load generator (:mod:`bench.bridge_load`,
source addresses 127.0.0.1-8, ``RLIMIT_NOFILE`` raised to the hard limit):

1. connect ``--chargers`` chargers (upgrade + auth, 200 at a time; the first connection of
   each is a cold one: registry lookup and password hash check), let them sit idle, and
   read the server's RSS: (RSS with them - RSS before) / chargers;
2. reconnect storm: ``--storm`` of them drop their sockets at once and reconnect at once
   (or evenly over ``--spread`` seconds, as chargers with a random back-off do), each
   sending BootNotification as soon as it is open (the bridge then asks GetConfiguration,
   which the charger answers); the time from a charger's reconnect attempt to its
   BootNotification's CALLRESULT, p50 / p99 / max, and how many were answered. The
   chargers' passwords are in the bridge's verified cache by then (same process).

Targets (issue "OCPP 1.6J bridge"): 10,000 chargers at <= 50 KiB each; a storm of 5,000
with every BootNotification answered, p99 < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.bridge_load import (
    BOOT_FRAME,
    RawCharger,
    Server,
    open_charger,
    open_fleet,
    raise_nofile,
    register,
    rss_kib,
)
from bench.brokers import bench_broker
from bench.machine import describe, median, percentile


@dataclass
class Figures:
    held: list[int] = field(default_factory=list)
    connect_s: list[float] = field(default_factory=list)
    kib_per_charger: list[float] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    max_ms: list[float] = field(default_factory=list)
    storm_s: list[float] = field(default_factory=list)


def ignore(charger: RawCharger, payload: bytes) -> None:
    pass


async def storm(
    server: Server, chargers: list[RawCharger], spread: float, pause: float, figures: Figures
) -> None:
    """Drop these sockets, reconnect them (over ``spread`` seconds), BootNotification each.

    A charger's latency runs from its own reconnect attempt to its BootNotification's
    CALLRESULT, so a spread-out storm is not charged for the waiting before it starts.
    """
    ids = [c.charger_id for c in chargers]
    for charger in chargers:
        charger.close()
    await asyncio.gather(*(c.closed for c in chargers))
    await asyncio.sleep(pause)  # the server notices the closes
    latencies: list[float] = []
    all_answered = asyncio.Event()
    began: dict[str, float] = {}

    def on_boot(charger: RawCharger, payload: bytes) -> None:
        if payload.startswith(b'[3,"boot"'):
            latencies.append(time.perf_counter() - began[charger.charger_id])
            if len(latencies) == len(ids):
                all_answered.set()

    start = time.perf_counter()

    async def reconnect(index: int, charger_id: str) -> RawCharger | None:
        await asyncio.sleep(spread * index / len(ids))
        began[charger_id] = time.perf_counter()
        try:
            charger = await open_charger(
                charger_id, server.port, on_boot, f"127.0.0.{1 + (index + 3) % 8}"
            )
        except OSError:
            return None
        charger.send(BOOT_FRAME)
        return charger

    again = await asyncio.gather(*(reconnect(i, c) for i, c in enumerate(ids)))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_answered.wait(), 60)
    figures.storm_s.append(time.perf_counter() - start)
    figures.answered.append(len(latencies))
    figures.p50_ms.append(percentile(latencies, 50) * 1000)
    figures.p99_ms.append(percentile(latencies, 99) * 1000)
    figures.max_ms.append(max(latencies, default=float("nan")) * 1000)
    for charger in again:
        if charger is not None:
            charger.close()


async def measure(server: Server, ids: list[str], args: argparse.Namespace, f: Figures) -> None:
    await server.start()
    chargers: list[RawCharger] = []
    try:
        await asyncio.sleep(1.0)
        before = rss_kib(server.pid)
        start = time.perf_counter()
        chargers = await open_fleet(ids, server.port, ignore)
        f.connect_s.append(time.perf_counter() - start)
        await asyncio.sleep(3.0)  # idle: presence published, buffers settled
        f.held.append(len(chargers))
        f.kib_per_charger.append((rss_kib(server.pid) - before) / len(chargers))
        await storm(server, chargers[: args.storm], args.spread, args.pause, f)
    finally:
        for charger in chargers:
            charger.close()
        await server.stop()


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    print(f"machine: {describe()}")
    print(f"load: {args.chargers} chargers, storm of {args.storm}, {args.runs} runs\n")
    ids = [f"CX{i:05d}" for i in range(args.chargers)]
    baseline, bridge = Figures(), Figures()
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-conn-") as tmp:
            data = Path(tmp)
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            await register(data, ids)
            await measure(Server.bridge(data, prefix), ids, args, bridge)
            await measure(Server.baseline(data), ids, args, baseline)
        print(
            f"run {run + 1}: bridge {bridge.kib_per_charger[-1]:.1f} KiB/charger, storm p99 "
            f"{bridge.p99_ms[-1]:.0f} ms ({bridge.answered[-1]} answered); baseline "
            f"{baseline.kib_per_charger[-1]:.1f} KiB, p99 {baseline.p99_ms[-1]:.0f} ms",
            flush=True,
        )
    m = median
    print(f"\nIdle chargers held by one process (median of {args.runs} runs)")
    print(f"{'':30}{'ocpp library':>14}{'bridge':>10}{'target':>10}")
    print(f"{'chargers held':30}{m(baseline.held):>14,.0f}{m(bridge.held):>10,.0f}{'10,000':>10}")
    print(
        f"{'KiB RSS per idle charger':30}{m(baseline.kib_per_charger):>14.1f}"
        f"{m(bridge.kib_per_charger):>10.1f}{'<= 50':>10}"
    )
    print(
        f"{'seconds to connect them (cold)':30}{m(baseline.connect_s):>14.1f}"
        f"{m(bridge.connect_s):>10.1f}"
    )
    how = f"spread over {args.spread:g} s" if args.spread else "all at once"
    print(f"\nReconnect storm of {args.storm}, {how} (median of {args.runs} runs)")
    print(f"{'':30}{'ocpp library':>14}{'bridge':>10}{'target':>10}")
    print(
        f"{'BootNotifications answered':30}{m(baseline.answered):>14,.0f}"
        f"{m(bridge.answered):>10,.0f}{args.storm:>10,}"
    )
    print(f"{'p50 ms':30}{m(baseline.p50_ms):>14.0f}{m(bridge.p50_ms):>10.0f}")
    print(f"{'p99 ms':30}{m(baseline.p99_ms):>14.0f}{m(bridge.p99_ms):>10.0f}{'< 1000':>10}")
    print(f"{'max ms':30}{m(baseline.max_ms):>14.0f}{m(bridge.max_ms):>10.0f}")
    print(
        f"{'seconds until all answered':30}{m(baseline.storm_s):>14.1f}{m(bridge.storm_s):>10.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--storm", type=int, default=5_000)
    parser.add_argument(
        "--spread", type=float, default=0.0, help="reconnects spread over this many seconds"
    )
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds between the drop and the reconnects"
    )
    with bench_broker():
        asyncio.run(main(parser.parse_args()))
