"""Shadow updates per second over MQTT with persistence, and publish-to-accepted latency.

    .venv/bin/python -m bench.shadow_updates [--mqtt-url URL] [--postgres-url URL] [--runs 3]

Runs the real twin (``chargetwin twin``) as its own process (one Python process: one
core) against the broker, on SQLite and on PostgreSQL, and a baseline in the same run: an
echo service that answers every update at once and stores nothing. For each it measures

* throughput: N reported updates over many chargers, at most WINDOW in flight;
* latency: publish -> ``accepted`` at half the measured throughput, p50 and p99;
* CPU seconds the service process used per 1,000 updates.

Targets (issue: foundation): >= 2,000 updates/s; p99 < 50 ms at half that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.brokers import bench_broker
from bench.machine import describe, median, percentile
from chargetwin.database import connect
from chargetwin.mqtt import MqttClient
from twin.registry import ChargerRegistry
from twin.stores import ShadowStore

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "chargetwin")


@dataclass
class Result:
    name: str
    throughput: float
    p50_ms: float
    p99_ms: float
    rate: float
    cpu_per_1000: float
    rejected: int


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Load:
    """The load generator: one MQTT client, answers matched by clientToken."""

    def __init__(self, url: str, prefix: str, chargers: int) -> None:
        self.prefix = prefix
        self.ids = [f"BENCH-{i:05d}" for i in range(chargers)]
        self.mqtt = MqttClient(url, f"{prefix}-load")
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.rejected = 0
        self.answered = asyncio.Event()
        self.window_free = asyncio.Event()
        self.window = 0
        self.seq = 0

    async def start(self) -> None:
        self.mqtt.subscribe(f"{self.prefix}/chargers/+/shadow/update/accepted", self._on_answer)
        self.mqtt.subscribe(f"{self.prefix}/chargers/+/shadow/update/rejected", self._on_answer)
        self.mqtt.subscribe(f"{self.prefix}/chargers/+/shadow/get/accepted", self._on_answer)
        await self.mqtt.connect()

    async def _on_answer(self, topic: str, payload: bytes) -> None:
        token = json.loads(payload).get("clientToken")
        sent = self.sent.pop(token, None)
        if sent is None:
            return
        self.latencies.append(time.perf_counter() - sent)
        if topic.endswith("/rejected"):
            self.rejected += 1
        if not self.sent:
            self.answered.set()
        self.window_free.set()

    def send(self) -> None:
        self.seq += 1
        charger = self.ids[self.seq % len(self.ids)]
        token = f"t{self.seq}"
        body = {
            "state": {
                "reported": {"connectors": {"1": {"status": "Charging", "energyWh": self.seq}}}
            },
            "clientToken": token,
        }
        self.sent[token] = time.perf_counter()
        self.mqtt.publish(f"{self.prefix}/chargers/{charger}/shadow/update", body)

    async def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.answered.clear()
            self.sent.clear()  # requests sent before the service subscribed are lost
            self.send()
            try:
                await asyncio.wait_for(self.answered.wait(), 1)
                self.latencies.clear()
                self.rejected = 0
                return
            except TimeoutError:
                continue
        raise RuntimeError("service did not answer")

    async def throughput(self, n: int, window: int) -> float:
        self.latencies.clear()
        start = time.perf_counter()
        for _ in range(n):
            while len(self.sent) >= window:
                self.window_free.clear()
                await self.window_free.wait()
            self.send()
            if self.seq % 200 == 0:
                await asyncio.sleep(0)
        self.answered.clear()
        if self.sent:
            await asyncio.wait_for(self.answered.wait(), 120)
        return n / (time.perf_counter() - start)

    async def paced(self, rate: float, seconds: float) -> list[float]:
        self.latencies.clear()
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send()
        self.answered.clear()
        if self.sent:
            await asyncio.wait_for(self.answered.wait(), 60)
        return list(self.latencies)


async def register(database_url: str, ids: list[str]) -> None:
    db = connect(database_url)
    await db.open()
    try:
        registry, store = ChargerRegistry(db), ShadowStore(db)
        await registry.create_schema()
        await store.create_schema()
        for charger_id in ids:
            await registry.register(charger_id, None)
    finally:
        await db.close()


async def measure(
    name: str, cmd: list[str], args: argparse.Namespace, url: str, prefix: str, ids: list[str]
) -> Result:
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    load = Load(url, prefix, len(ids))
    try:
        await load.start()
        await load.wait_ready()
        cpu0 = cpu_seconds(proc.pid)
        rate = await load.throughput(args.updates, args.window)
        cpu = cpu_seconds(proc.pid) - cpu0
        rejected = load.rejected
        latencies = await load.paced(rate / 2, args.seconds)
        print(
            f"  {name}: {rate:,.0f} updates/s; p50 {median(latencies) * 1e3:.1f} ms, "
            f"p99 {percentile(latencies, 99) * 1e3:.1f} ms at {rate / 2:,.0f}/s",
            flush=True,
        )
        return Result(
            name,
            rate,
            median(latencies) * 1e3,
            percentile(latencies, 99) * 1e3,
            rate / 2,
            cpu / args.updates * 1000,
            rejected + load.rejected,
        )
    finally:
        await load.mqtt.disconnect()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mqtt-url", default=None, help="a broker to use (default: a private Mosquitto)"
    )
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--chargers", type=int, default=1_000)
    parser.add_argument("--window", type=int, default=1_000, help="updates in flight")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency phase length")
    parser.add_argument("--runs", type=int, default=1, help="repeat and report medians")
    args = parser.parse_args()
    if args.mqtt_url is None:
        with bench_broker() as url:
            args.mqtt_url = url
            await run(args)
    else:
        await run(args)


async def run(args: argparse.Namespace) -> None:
    print(f"machine: {describe()}")
    print(
        f"broker: {args.mqtt_url}; {args.updates:,} updates over {args.chargers:,} chargers, "
        f"window {args.window}"
    )
    results: list[Result] = []
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"chargetwin-bench-{uuid.uuid4().hex[:8]}"
    for run in range(args.runs):
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        ids = [f"BENCH-{i:05d}" for i in range(args.chargers)]
        echo = [sys.executable, "-m", "bench.echo_twin", args.mqtt_url, prefix]
        results.append(
            await measure("baseline (echo, no storage)", echo, args, args.mqtt_url, prefix, ids)
        )
        targets = [("twin on SQLite", f"sqlite:///{tmp}/run{run}.db", None)]
        if args.postgres_url:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            import psycopg

            with psycopg.connect(args.postgres_url, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            sep = "&" if "?" in args.postgres_url else "?"
            pg = f"{args.postgres_url}{sep}options={quote(f'-csearch_path={schema}')}"
            targets.append(("twin on PostgreSQL", pg, schema))
        for name, database, schema in targets:
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            await register(database, ids)
            cmd = [
                CLI,
                "twin",
                "--mqtt-url",
                args.mqtt_url,
                "--database-url",
                database,
                "--mqtt-prefix",
                prefix,
                "--mqtt-client-id",
                prefix,
                "--log-level",
                "WARNING",
            ]
            results.append(await measure(name, cmd, args, args.mqtt_url, prefix, ids))
            if schema:
                with psycopg.connect(args.postgres_url, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")

    print("\nmedians over runs")
    print(
        f"{'service':32} {'updates/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'at /s':>8} "
        f"{'CPU s/1k':>9} {'rejected':>8}"
    )
    for name in dict.fromkeys(r.name for r in results):
        rows = [r for r in results if r.name == name]
        print(
            f"{name:32} {median([r.throughput for r in rows]):>10,.0f} "
            f"{median([r.p50_ms for r in rows]):>8.1f} {median([r.p99_ms for r in rows]):>8.1f} "
            f"{median([r.rate for r in rows]):>8,.0f} "
            f"{median([r.cpu_per_1000 for r in rows]):>9.3f} "
            f"{sum(r.rejected for r in rows):>8}"
        )
    print("\ntarget: >= 2,000 updates/s; p99 < 50 ms at half that rate")


if __name__ == "__main__":
    asyncio.run(main())
