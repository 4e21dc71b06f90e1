"""Twin workers in a share group when one of them dies: how long do requests wait?

    python -m bench.twin_failover [--requests 40] [--chargers 8] [--rounds 3]

A private Mosquitto with persistence (production settings of ``mosquitto/``), PostgreSQL
(``--database-url``; a schema of its own, dropped at the end), two ``chargetwin twin``
child processes with ``--mqtt-share-group``, and the platform's shadow client sending
desired changes as the API does (5 s timeout, a deadline). Per round:

- baseline: both workers alive, ``--requests`` changes sent at once;
- kill -9: one worker killed, then the same number of changes at once and as many
  bridge-style reports; answer times, 504s, and reports missing from the shadows;
- clean stop: the worker restarted, then stopped with SIGTERM, then the changes again;
- silent loss: the worker restarted, then frozen with SIGSTOP (its socket stays open, as
  when its host or network is lost), then the changes again: the broker notices only after
  1.5 keepalives (5 s), so changes given to it in the meantime end as 504 (408, expired:
  not applied, as the deadline wants) rather than wait.

The killed or stopped worker's session is taken over by its peer (``twin/adoption.py``).
Prints per phase the medians over the rounds of the median and the largest answer time,
the 504s and the lost reports, the machine and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg

from bench.brokers import _SETTINGS
from bench.machine import describe, median
from chargetwin.database import connect
from chargetwin.mqtt import MqttClient
from chargetwin.shadow_client import ShadowClient, ShadowRequestError
from chargetwin.topics import Topics
from twin.registry import ChargerRegistry
from twin.stores import ShadowStore

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, folder: Path, database: str, requests: int, chargers: int) -> None:
        self.folder, self.database = folder, database
        self.requests, self.chargers = requests, chargers
        self.port = _free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.topics = Topics(self.prefix)
        self.workers: dict[str, asyncio.subprocess.Process] = {}
        self.online: set[str] = set()
        self.broker: subprocess.Popen[bytes] | None = None

    def start_broker(self) -> None:
        config = self.folder / "mosquitto.conf"
        settings = _SETTINGS.replace("persistence false", "persistence true")
        config.write_text(
            f"listener {self.port} 127.0.0.1\n{settings}"
            f"persistence_location {self.folder}/\nuser {getpass.getuser()}\n"
        )
        self.broker = subprocess.Popen(["mosquitto", "-c", str(config)])
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    async def start_worker(self, name: str) -> None:
        with (self.folder / f"{name}.log").open("ab") as log:
            self.workers[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "launch.cli",
                "twin",
                "--mqtt-url",
                self.url,
                "--mqtt-prefix",
                self.prefix,
                "--mqtt-client-id",
                f"{self.prefix}-{name}",
                "--mqtt-share-group",
                "bench",
                "--database-url",
                self.database,
                "--data-dir",
                str(self.folder),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while name not in self.online:
            if time.monotonic() > deadline:
                raise RuntimeError(f"twin worker {name} did not announce itself")
            await asyncio.sleep(0.05)

    async def on_status(self, topic: str, payload: bytes) -> None:
        status = json.loads(payload) if payload else {}
        name = topic.split("/")[-2].removeprefix(f"{self.prefix}-").removesuffix("-twin")
        (self.online.add if status.get("online") else self.online.discard)(name)

    async def end(self, name: str, sig: signal.Signals) -> None:
        process = self.workers.pop(name)
        process.send_signal(sig)
        await process.wait()

    async def changes(self, client: ShadowClient, label: str) -> tuple[list[float], int]:
        async def change(i: int) -> float | None:
            started = time.monotonic()
            try:
                await client.update(
                    f"CP-{i % self.chargers}", {"desired": {"config": {f"K{i}": label}}}
                )
            except ShadowRequestError:
                return None
            return time.monotonic() - started

        results = await asyncio.gather(*(change(i) for i in range(self.requests)))
        return [r for r in results if r is not None], sum(r is None for r in results)

    async def lost_reports(self, bridge: MqttClient, label: str) -> int:
        at = time.time()
        for i in range(self.requests):
            bridge.publish(
                self.topics.shadow(f"CP-{i % self.chargers}", "update"),
                {"state": {"reported": {"round": f"{label}-{i}"}}, "timestamp": at + i * 1e-3},
            )
        await bridge.drain(10)
        newest = {
            c: f"{label}-{max(range(c, self.requests, self.chargers))}"
            for c in range(self.chargers)
        }
        db = connect(self.database)
        await db.open()
        try:
            store = ShadowStore(db)
            deadline = time.monotonic() + 30
            while True:
                seen = {}
                for c in range(self.chargers):
                    doc = await store.get_document(f"CP-{c}") or {"state": {"reported": {}}}
                    seen[c] = doc["state"]["reported"].get("round")
                missing = sum(seen[c] != newest[c] for c in newest)
                if not missing or time.monotonic() > deadline:
                    return missing
                await asyncio.sleep(0.2)
        finally:
            await db.close()

    async def applied(self, label: str) -> int:
        """How many changes of ``label`` the shadows hold."""
        db = connect(self.database)
        await db.open()
        try:
            store, count = ShadowStore(db), 0
            for c in range(self.chargers):
                doc = await store.get_document(f"CP-{c}") or {"state": {}}
                config = (doc["state"].get("desired") or {}).get("config") or {}
                count += sum(value == label for value in config.values())
            return count
        finally:
            await db.close()

    async def stop(self) -> None:
        for process in self.workers.values():
            process.kill()
            await process.wait()
        if self.broker is not None:
            self.broker.terminate()
            self.broker.wait(5)


async def run(args: argparse.Namespace) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in args.database_url else "?"
    database = f"{args.database_url}{sep}options={quote(f'-csearch_path={schema}')}"
    folder = Path(tempfile.mkdtemp(prefix="twin-failover-"))
    bench = Bench(folder, database, args.requests, args.chargers)
    phases: dict[str, list[tuple[float, float, int, int]]] = {}
    try:
        db = connect(database)
        await db.open()
        registry = ChargerRegistry(db)
        await registry.create_schema()
        await ShadowStore(db).create_schema()
        for c in range(args.chargers):
            await registry.register(f"CP-{c}", None)
        await db.close()
        bench.start_broker()
        api = MqttClient(bench.url, f"{bench.prefix}-api")
        await api.connect()
        await api.subscribe_acked(f"{bench.prefix}/services/twin/+/status", bench.on_status)
        client = ShadowClient(api, bench.topics, timeout=5.0)
        bridge = MqttClient(bench.url, f"{bench.prefix}-bridge")
        await bridge.connect()
        await bench.start_worker("w1")
        for r in range(args.rounds):
            await bench.start_worker("w2")
            times, timeouts = await bench.changes(client, f"base-{r}")
            phases.setdefault("both workers alive", []).append(
                (median(times), max(times, default=0), timeouts, 0)
            )
            await bench.end("w2", signal.SIGKILL)
            times, timeouts = await bench.changes(client, f"kill-{r}")
            lost = await bench.lost_reports(bridge, f"kill-{r}")
            phases.setdefault("just after kill -9 of one", []).append(
                (median(times), max(times, default=0), timeouts, lost)
            )
            await bench.start_worker("w2")
            await bench.end("w2", signal.SIGTERM)
            times, timeouts = await bench.changes(client, f"stop-{r}")
            lost = await bench.lost_reports(bridge, f"stop-{r}")
            phases.setdefault("just after a clean stop of one", []).append(
                (median(times), max(times, default=0), timeouts, lost)
            )
            await bench.start_worker("w2")
            bench.workers["w2"].send_signal(signal.SIGSTOP)
            times, timeouts = await bench.changes(client, f"frozen-{r}")
            lost = await bench.lost_reports(bridge, f"frozen-{r}")
            phases.setdefault("just after one froze (SIGSTOP)", []).append(
                (median(times), max(times, default=0), timeouts, lost)
            )
            await asyncio.sleep(10)  # the frozen worker's session taken over meanwhile
            late = await bench.applied(f"frozen-{r}") - len(times)
            phases.setdefault("  504s applied after all", []).append((0, 0, late, 0))
            await bench.end("w2", signal.SIGKILL)
        await api.disconnect()
        await bridge.disconnect()
    finally:
        await bench.stop()
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"machine: {describe()}")
    print(
        f"{args.requests} desired changes at once over {args.chargers} chargers per phase, "
        f"{args.rounds} rounds; medians over the rounds"
    )
    print(f"{'phase':34} {'median s':>9} {'max s':>7} {'504s':>5} {'reports lost':>13}")
    for phase, rows in phases.items():
        print(
            f"{phase:34} {median([r[0] for r in rows]):9.2f} {median([r[1] for r in rows]):7.2f}"
            f" {sum(r[2] for r in rows):5d} {sum(r[3] for r in rows):13d}"
        )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--chargers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CHARGETWIN_TEST_POSTGRES_URL", POSTGRES_URL),
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
