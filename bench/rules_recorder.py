"""Recorder throughput into InfluxDB against the raw rate of posting line protocol.

    .venv/bin/python -m bench.rules_recorder [--influx-url URL] [--points 200000] [--runs 3]
        [--without-sites]

Starts a private influxd (Debian's influxdb) unless ``--influx-url`` is given. Baseline:
pre-built, pre-gzipped line protocol POSTed to ``/write`` in 5,000-line batches, one
request at a time. Measured: meterValues MQTT payloads fed to the recorder's handler
(site lookup, JSON decoding, points, line protocol, gzip, batching, up to two writes in
flight, the durability wait), 512 messages in flight as from a broker. The 1,000
chargers are registered in a SQLite charger registry, in 10 sites, as the rules
component runs with one (``--without-sites``: registered without one, so the points carry
no ``site`` tag, for comparison). Target: >= 50,000 points/s.
The broker's own cost is left out on purpose: it is the same for any recorder. The
machine's load average is printed: on a shared machine, compare runs of the same moment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.machine import describe, median
from chargetwin.database import connect
from chargetwin.topics import Topics
from rules.influx import InfluxStore, to_body
from rules.points import Point, Selection
from rules.recorders import Recorder
from rules.sites import SiteDirectory
from rules.spools import Spool
from twin.registry import ChargerRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "rules"))

VALUES_PER_MESSAGE = 4
IN_FLIGHT = 512
CHARGERS = 1000


def payload(i: int) -> bytes:
    return json.dumps(
        {
            "connectorId": 1 + i % 2,
            "transactionId": i,
            "timestamp": 1_700_000_000 + i / 1000,
            "values": [
                {
                    "measurand": m,
                    "phase": None,
                    "unit": u,
                    "value": float(i % 1000),
                    "context": "Sample.Periodic",
                    "location": "Outlet",
                }
                for m, u in (
                    ("Energy.Active.Import.Register", "Wh"),
                    ("Power.Active.Import", "W"),
                    ("Current.Import", "A"),
                    ("Voltage", "V"),
                )
            ],
        }
    ).encode()


def site_of(charger: int, with_sites: bool) -> str | None:
    return f"site-{charger % 10}" if with_sites else None


async def baseline(url: str, points: int, with_sites: bool) -> float:
    store = InfluxStore(url, f"bench_{uuid.uuid4().hex[:8]}")
    await store.open()
    from rules.measurements import meter_values

    batch: list[Point] = []
    bodies = []
    for i in range(points // VALUES_PER_MESSAGE):
        charger = {"charger": f"CP-{i % CHARGERS}"}
        if site := site_of(i % CHARGERS, with_sites):
            charger["site"] = site
        batch.extend(meter_values(charger, json.loads(payload(i)), 0).points)
        if len(batch) >= 5000:
            bodies.append(to_body(batch))
            batch = []
    if batch:
        bodies.append(to_body(batch))
    started = time.perf_counter()
    for body in bodies:
        await store.write_body(body)
    elapsed = time.perf_counter() - started
    await store.close()
    return points / elapsed


CPU_US: list[float] = []  # the recorder's own CPU time per point, per run: load-independent
SERVER_US: list[float] = []  # influxd's CPU time per point, when the bench started it


def server_cpu(pid: int | None) -> float:
    """CPU seconds influxd has used so far (0 when it is not ours to look at)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def recorder_rate(url: str, points: int, server_pid: int | None, with_sites: bool) -> float:
    store = InfluxStore(url, f"bench_{uuid.uuid4().hex[:8]}")
    await store.open()
    messages = [
        (f"chargetwin/chargers/CP-{i % CHARGERS}/telemetry/meterValues", payload(i))
        for i in range(points // VALUES_PER_MESSAGE)
    ]
    with tempfile.TemporaryDirectory() as folder:
        db = connect(f"sqlite:///{folder}/chargetwin.db")
        await db.open()
        registry = ChargerRegistry(db)
        await registry.create_schema()
        for i in range(CHARGERS):
            await registry.register(f"CP-{i}", None, site=site_of(i, with_sites))
        sites = SiteDirectory(db)
        await sites.start()
        spool = Spool(Path(folder) / "spool", max_bytes=1 << 30)
        recorder = Recorder(store, spool, Topics(), sites=sites)
        await recorder.start()
        queue = iter(messages)

        async def worker() -> None:
            for topic, body in queue:
                await recorder.handle(topic, body)

        started, cpu, server = time.perf_counter(), time.process_time(), server_cpu(server_pid)
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        elapsed = time.perf_counter() - started
        CPU_US.append((time.process_time() - cpu) / points * 1e6)
        SERVER_US.append((server_cpu(server_pid) - server) / points * 1e6)
        await recorder.stop()
        await sites.stop()
        await db.close()
    by_site = Selection("meter_values", "value", group_by=("site",))
    counts = await store.aggregate(by_site, "count", 0, 2**62)
    assert sum(int(c.value) for c in counts) == points, f"only {counts} of {points} points"
    assert len(counts) == (10 if with_sites else 1), counts
    await store.close()
    return points / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--influx-url")
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--without-sites", action="store_true")
    args = parser.parse_args()
    with_sites = not args.without_sites
    server = None
    url = args.influx_url
    if url is None:
        from influx_servers import InfluxServer

        server = InfluxServer(Path(tempfile.mkdtemp(prefix="bench-influxd-")))
        server.start()
        url = server.url
    try:
        print(f"machine: {describe()}")
        print(
            f"InfluxDB: {url}; {args.points} points per run, {args.runs} runs, "
            f"{'with' if with_sites else 'without'} site tags"
        )
        raw = [await baseline(url, args.points, with_sites) for _ in range(args.runs)]
        pid = server.pid if server is not None else None
        rec = [await recorder_rate(url, args.points, pid, with_sites) for _ in range(args.runs)]
        runs = ", ".join(f"{r:,.0f}" for r in raw)
        print(f"baseline (pre-built line protocol to /write): median {median(raw):,.0f} points/s")
        print(f"  runs: {runs}")
        print(f"recorder (MQTT payloads -> InfluxDB):         median {median(rec):,.0f} points/s")
        print(f"  runs: {', '.join(f'{r:,.0f}' for r in rec)}")
        print(
            f"recorder CPU time (this process, influxd not counted): median "
            f"{median(CPU_US):.1f} us/point, i.e. {1e6 / median(CPU_US):,.0f} points/s per core"
        )
        if pid is not None:
            print(
                f"influxd CPU time while the recorder wrote: median {median(SERVER_US):.1f} "
                "us/point"
            )
        print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
        print(f"recorder / baseline: {median(rec) / median(raw):.0%}; target >= 50,000 points/s")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
