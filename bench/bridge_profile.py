"""Where the bridge spends its time under MeterValues load: py-spy samples, aggregated.

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.bridge_profile [--seconds 12] [--chargers 200] [--top 30]

Starts ``chargetwin bridge`` (as :mod:`bench.bridge_throughput` does), drives closed-loop
MeterValues at it from this process, records the bridge with ``py-spy record -f raw`` and
prints the functions with the most samples, by self time and inclusive time. Not a
benchmark: a map of the hot path to read before optimising it.
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

from bench.bridge_load import BIN, MqttCounter, Server, raise_nofile, register
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


async def main(args: argparse.Namespace) -> None:
    spy_bin = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if spy_bin is None:
        sys.exit("needs py-spy: .venv/bin/pip install py-spy")
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        data = Path(tmp)
        ids = [f"MV{i:05d}" for i in range(args.chargers)]
        await register(data, ids)
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
            spy = await asyncio.create_subprocess_exec(
                spy_bin, "record", "-p", str(server.pid), "-f", "raw", "-r", "200",
                "-d", str(args.seconds), "-o", str(raw),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            recording = asyncio.create_task(spy.wait())
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
    asyncio.run(main(parser.parse_args()))
