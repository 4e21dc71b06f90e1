"""Where the bridge spends its time under MeterValues load or in a reconnect storm.

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.bridge_profile [--seconds 12] [--chargers 200] [--top 30]
    .venv/bin/python -m bench.bridge_profile --chargers 10000 --storm 5000 [--spread 10]

Starts ``chargetwin bridge`` (as :mod:`bench.bridge_throughput` does) and records it with
``py-spy record -f raw --gil`` (the thread holding the interpreter lock, so idle worker
threads do not count), then prints the functions with the most samples, by self time and
inclusive time. The load: closed-loop MeterValues from this process, or with ``--storm``
the reconnect storm of :mod:`bench.bridge_connections` (the recording covers the drop,
the pause and the reconnects). Not a benchmark: a map of the hot path to read before
optimising it. A garbage collection shows up as time in whatever line allocated when it
started (a JSON encoder, say); ``gc.callbacks`` in the bridge time them directly.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from bench.boots import mark_booted
from bench.bridge_connections import Figures, ignore, storm
from bench.bridge_load import BIN, MqttCounter, Server, open_fleet, raise_nofile, register
from bench.bridge_throughput import Load


def aggregate(raw: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"{total} samples\n--- self")
    for frame, n in own.most_common(top):
        print(f"{n / total * 100:5.1f}% {frame[:140]}")
    print("--- inclusive")
    for frame, n in inclusive.most_common(top):
        print(f"{n / total * 100:5.1f}% {frame[:140]}")


async def record(spy_bin: str, pid: int, seconds: float, raw: Path) -> asyncio.Task[int]:
    spy = await asyncio.create_subprocess_exec(
        spy_bin, "record", "-p", str(pid), "-f", "raw", "-r", "200", "--gil",
        "-d", str(seconds), "-o", str(raw),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return asyncio.create_task(spy.wait())


async def profile_storm(spy_bin: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        data = Path(tmp)
        ids = [f"ST{i:05d}" for i in range(args.chargers)]
        await register(data, ids)
        await mark_booted(data, ids)
        server = Server.bridge(data, f"profile-{uuid.uuid4().hex[:8]}")
        await server.start()
        chargers = []
        try:
            chargers = await open_fleet(ids, server.port, ignore)
            await asyncio.sleep(3.0)  # idle: presence published, buffers settled
            raw = data / "profile.txt"
            recording = await record(spy_bin, server.pid, args.seconds, raw)
            figures = Figures()
            await storm(server, chargers[: args.storm], args.spread, 1.0, figures)
            await recording
            print(
                f"storm of {args.storm} with {args.chargers} held: p99 {figures.p99_ms[0]:.0f} ms,"
                f" {figures.answered[0]} answered"
            )
            aggregate(raw, args.top)
        finally:
            for charger in chargers:
                charger.close()
            await server.stop()


async def main(args: argparse.Namespace) -> None:
    spy_bin = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if spy_bin is None:
        sys.exit("needs py-spy: .venv/bin/pip install py-spy")
    raise_nofile()
    if args.storm:
        await profile_storm(spy_bin, args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        data = Path(tmp)
        ids = [f"MV{i:05d}" for i in range(args.chargers)]
        await register(data, ids)
        await mark_booted(data, ids)
        prefix = f"profile-{uuid.uuid4().hex[:8]}"
        server = Server.bridge(data, prefix, "--ocpp-flood-rate=1000", "--ocpp-flood-burst=1000")
        await server.start()
        counter = MqttCounter(prefix, [f"{prefix}/chargers/+/telemetry/meterValues"])
        await counter.start()
        load = Load(server.port, ids, [])
        try:
            await load.connect()
            await load.closed_loop(2000, 2)
            raw = data / "profile.txt"
            recording = await record(spy_bin, server.pid, args.seconds, raw)
            while not recording.done():
                await load.closed_loop(5000, 2)
            aggregate(raw, args.top)
        finally:
            load.close()
            await counter.stop()
            await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--storm", type=int, default=0, help="profile a reconnect storm of N")
    parser.add_argument("--spread", type=float, default=0.0, help="storm over this many s")
    asyncio.run(main(parser.parse_args()))
