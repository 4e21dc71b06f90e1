"""Chargers held by one bridge process, memory per idle connection, and a reconnect storm.

    .venv/bin/python -m bench.bridge_connections [--runs 3] [--chargers 10000] [--storm 5000]
        [--restart] [--hashes keyed,scrypt14]

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
   BootNotification's CALLRESULT, p50 / p99 / max, and how many were answered (within
   ``--storm-timeout`` seconds). Without ``--restart`` the storm hits the same process;
   with it the server is stopped once the sockets are dropped and a fresh process takes
   the storm, every password checked cold, as after a bridge restart.

Passwords (``--hashes``, :data:`bench.bridge_load.HASH_SCHEMES`): ``keyed`` stores what the
API stores today (HMAC-SHA256 with the data dir's key); ``scrypt14`` what it stored
before (scrypt at the former default cost, ~40 ms per check), written again just before
the restart so the fresh bridge finds them as the older version left them. Each scheme is
a bridge of its own in every run.

Targets: 10,000 chargers at <= 50 KiB each; a storm of 5,000 with every BootNotification
answered, p99 < 1 s; after a restart at the default password settings, p99 < 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.bridge_load import (
    BOOT_FRAME,
    HASH_SCHEMES,
    PASSWORD,
    RawCharger,
    Server,
    cpu_seconds,
    open_charger,
    open_fleet,
    raise_nofile,
    register,
    rss_kib,
    stored_hashes,
)
from bench.brokers import bench_broker
from bench.machine import describe, median, percentile
from twin.passwords import PasswordHasher, check_scrypt, load_or_create_key


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
    storm_cpu_s: list[float] = field(default_factory=list)


def ignore(charger: RawCharger, payload: bytes) -> None:
    pass


async def storm(
    server: Server,
    chargers: list[RawCharger],
    args: argparse.Namespace,
    figures: Figures,
    between: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Drop these sockets, run ``between`` (a restart), reconnect them (over ``spread``
    seconds), BootNotification each.

    A charger's latency runs from its own reconnect attempt to its BootNotification's
    CALLRESULT, so a spread-out storm is not charged for the waiting before it starts.
    """
    spread = args.spread
    ids = [c.charger_id for c in chargers]
    for charger in chargers:
        charger.close()
    await asyncio.gather(*(c.closed for c in chargers))
    await asyncio.sleep(args.pause)  # the server notices the closes
    if between is not None:
        await between()
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
        await asyncio.wait_for(all_answered.wait(), args.storm_timeout)
    figures.storm_s.append(time.perf_counter() - start)
    figures.answered.append(len(latencies))
    figures.p50_ms.append(percentile(latencies, 50) * 1000)
    figures.p99_ms.append(percentile(latencies, 99) * 1000)
    figures.max_ms.append(max(latencies, default=float("nan")) * 1000)
    for charger in again:
        if charger is not None:
            charger.close()


async def measure(
    server: Server, ids: list[str], args: argparse.Namespace, f: Figures, scheme: str = "keyed"
) -> None:
    await server.start()
    chargers: list[RawCharger] = []

    async def restart() -> None:
        await server.stop()
        if server.name == "bridge":
            await register(server.data_dir, ids[: args.storm], scheme)
        await server.start()
        await asyncio.sleep(1.0)  # MQTT connected, as a restarted bridge would be

    try:
        await asyncio.sleep(1.0)
        before = rss_kib(server.pid)
        start = time.perf_counter()
        chargers = await open_fleet(ids, server.port, ignore)
        f.connect_s.append(time.perf_counter() - start)
        await asyncio.sleep(3.0)  # idle: presence published, buffers settled
        f.held.append(len(chargers))
        f.kib_per_charger.append((rss_kib(server.pid) - before) / len(chargers))
        await storm(server, chargers[: args.storm], args, f, restart if args.restart else None)
        if args.restart:
            f.storm_cpu_s.append(cpu_seconds(server.pid))
    finally:
        for charger in chargers:
            charger.close()
        await server.stop()


def check_cost(scheme: str) -> float:
    """Seconds of one password check of ``scheme`` on this machine, now (median of a few)."""
    with tempfile.TemporaryDirectory(prefix="bench-conn-") as tmp:
        stored = stored_hashes(Path(tmp), 1, scheme)[0]
        hasher = PasswordHasher(load_or_create_key(Path(tmp)))
    rounds = 1000 if scheme == "keyed" else 5
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            if hasher.check_fast(PASSWORD, stored) is None:
                check_scrypt(PASSWORD, stored)
        timings.append((time.perf_counter() - start) / rounds)
    return median(timings)


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    schemes = args.hashes.split(",")
    print(f"machine: {describe()}")
    costs = ", ".join(f"{scheme} {check_cost(scheme) * 1e6:,.0f} µs" for scheme in schemes)
    print(f"one password check: {costs}")
    print(
        f"load: {args.chargers} chargers, storm of {args.storm}"
        f"{' into a restarted server' if args.restart else ''}, passwords {schemes}, "
        f"{args.runs} runs\n"
    )
    ids = [f"CX{i:05d}" for i in range(args.chargers)]
    baseline = Figures()
    bridges = {scheme: Figures() for scheme in schemes}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-conn-") as tmp:
            data = Path(tmp)
            await register(data, ids)
            await measure(Server.baseline(data), ids, args, baseline)
            line = f"run {run + 1}: baseline p99 {baseline.p99_ms[-1]:.0f} ms"
        for scheme, bridge in bridges.items():
            with tempfile.TemporaryDirectory(prefix="bench-conn-") as tmp:
                data = Path(tmp)
                prefix = f"bench-{uuid.uuid4().hex[:8]}"
                await register(data, ids)
                await measure(Server.bridge(data, prefix), ids, args, bridge, scheme)
            line += (
                f"; bridge ({scheme}) {bridge.kib_per_charger[-1]:.1f} KiB/charger, storm p99 "
                f"{bridge.p99_ms[-1]:.0f} ms ({bridge.answered[-1]} answered)"
            )
        print(line, flush=True)
    m = median
    columns = [("ocpp library", baseline)] + [(f"bridge {s}", f) for s, f in bridges.items()]
    head = f"{'':32}" + "".join(f"{name:>17}" for name, _ in columns) + f"{'target':>10}"

    def row(
        label: str, values: Callable[[Figures], list[float]], fmt: str, target: str = ""
    ) -> None:
        cells = "".join(f"{m(values(f)):>17{fmt}}" for _, f in columns)
        print(f"{label:32}{cells}{target:>10}")

    print(f"\nIdle chargers held by one process (median of {args.runs} runs)")
    print(head)
    row("chargers held", lambda f: [float(x) for x in f.held], ",.0f", "10,000")
    row("KiB RSS per idle charger", lambda f: f.kib_per_charger, ".1f", "<= 50")
    row("seconds to connect them (cold)", lambda f: f.connect_s, ".1f")
    how = f"spread over {args.spread:g} s" if args.spread else "all at once"
    where = "a freshly restarted server" if args.restart else "the same process"
    print(f"\nReconnect storm of {args.storm} into {where}, {how} (median of {args.runs} runs)")
    print(head)
    row("BootNotifications answered", lambda f: [float(x) for x in f.answered], ",.0f",
        f"{args.storm:,}")  # fmt: skip
    row("p50 ms", lambda f: f.p50_ms, ".0f")
    row("p99 ms", lambda f: f.p99_ms, ".0f", "< 5000" if args.restart else "< 1000")
    row("max ms", lambda f: f.max_ms, ".0f")
    row("seconds until all answered", lambda f: f.storm_s, ".1f")
    if args.restart:
        row("server CPU s after the restart", lambda f: f.storm_cpu_s or [float("nan")], ".1f")
    print(f"(answers counted for {args.storm_timeout:g} s; nan: not all answered by then)")


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
    parser.add_argument(
        "--restart",
        action="store_true",
        help="the storm hits a freshly restarted server (every password checked cold)",
    )
    parser.add_argument(
        "--hashes",
        default="keyed",
        help=f"comma-separated password schemes, one bridge each: {', '.join(HASH_SCHEMES)}",
    )
    parser.add_argument(
        "--storm-timeout", type=float, default=60.0, help="seconds to wait for the answers"
    )
    with bench_broker():
        asyncio.run(main(parser.parse_args()))
