"""Boot to Accepted for OCPP 2.0.1 stations connecting at once, device-model read included.

    .venv/bin/python -m bench.ocpp201_boots [--stations 1000] [--runs 1] [--parts 3]
                                           [--device-model synthetic|simulator]

Per run, against a fresh ``chargetwin bridge`` process (private Mosquitto, fresh SQLite data
dir, keyed password hashes as the API stores them), with this process as the load
generator (raw websocket clients of :mod:`bench.bridge_load`):

- **2.0.1**: ``--stations`` stations connect at once (``ocpp2.0.1``) and send
  BootNotification; each answers the bridge's GetBaseReport with Accepted and a device model
  of 30 variables in ``--parts`` NotifyReport parts (``--device-model synthetic``, the
  default) or the simulated station's realistic one (``simulator``: the controllers,
  EVSEs and connectors of :mod:`simulator.devicemodels`, 63 variables in 4 parts of 20 as
  its ``ItemsPerMessage`` says), then its TriggerMessage with Accepted and a new
  BootNotification. The figure: from a station's connection attempt to the
  CALLRESULT ``Accepted`` of its boot, p50 / p99 / max, and how many got there within
  ``--timeout`` seconds. Target (issue 11): p99 < 5 s for 1,000 stations. Beside it the
  bridge process's CPU seconds during the phase, which a shared machine's load changes
  far less than the times.
- **baseline, same run, same bridge process**: as many 1.6 chargers connect at once and
  send BootNotification (Accepted at once; the bridge then asks GetConfiguration, answered
  empty): from the connection attempt to the boot's CALLRESULT.

Each phase uses its own charger ids, so both are cold (registry read, password check);
the baseline's sockets are closed ``--pause`` seconds before the 2.0.1 phase starts. A
station whose upgrade the server does not complete within websockets' open timeout (10 s)
is counted as not answered, with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.bridge_load import (
    BOOT_FRAME,
    PASSWORD,
    RawCharger,
    Server,
    call_frame,
    cpu_seconds,
    raise_nofile,
    register,
    ws_frame,
)
from bench.brokers import bench_broker
from bench.machine import describe, median, percentile

BOOT_201 = call_frame(
    "boot",
    "BootNotification",
    {"chargingStation": {"model": "Bench-201", "vendorName": "Bench"}, "reason": "PowerUp"},
)


def device_model(parts: int) -> list[list[dict[str, Any]]]:
    """30 variables in ``parts`` NotifyReport parts."""
    entries = [
        {
            "component": {"name": "Ctrlr" + str(i % 5)},
            "variable": {"name": f"Variable{i}"},
            "variableAttribute": [{"type": "Actual", "mutability": "ReadWrite", "value": str(i)}],
            "variableCharacteristics": {"dataType": "integer", "supportsMonitoring": False},
        }
        for i in range(30)
    ]
    size = -(-len(entries) // parts)
    return [entries[i : i + size] for i in range(0, len(entries), size)]


def simulator_device_model() -> list[list[dict[str, Any]]]:
    """The report of a simulated two-EVSE station, in the parts it sends them."""
    from simulator.devicemodels import report_parts, station_device_model
    from simulator.options import DEFAULT_MODELS

    model = station_device_model(
        DEFAULT_MODELS[0],
        charger_id="s201-bench",
        serial_number="CT-AC22-BENCH",
        firmware_version=DEFAULT_MODELS[0].firmware_version,
        heartbeat_s=300,
        meter_s=10,
    )
    return report_parts(model.report("FullInventory"), 20)


class Station(RawCharger):
    """A 2.0.1 station: the boot sequence of bridge.v201 (Pending, report, trigger)."""

    parts: list[list[dict[str, Any]]] = []

    def __init__(self, charger_id: str, done: asyncio.Future[float]) -> None:
        super().__init__(charger_id, self._answered)
        self.done = done

    def upgrade(self, host: str, port: int, path_prefix: str = "/ocpp/") -> None:
        assert self.transport is not None
        auth = base64.b64encode(f"{self.charger_id}:{PASSWORD}".encode()).decode()
        self.transport.write(
            (
                f"GET {path_prefix}{self.charger_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: ocpp2.0.1\r\nAuthorization: Basic {auth}\r\n\r\n"
            ).encode()
        )

    def _answered(self, charger: RawCharger, payload: bytes) -> None:
        message = json.loads(payload)
        accepted = message[0] == 3 and message[1] == "boot" and message[2].get("status")
        if accepted == "Accepted" and not self.done.done():
            self.done.set_result(time.perf_counter())

    def _answer_call(self, payload: bytes) -> None:
        _, unique_id, action, body = json.loads(payload)
        self.send(ws_frame(json.dumps([3, unique_id, {"status": "Accepted"}]).encode()))
        if action == "GetBaseReport":
            for seq_no, data in enumerate(self.parts):
                report = {
                    "requestId": body["requestId"],
                    "generatedAt": "2026-01-01T00:00:00Z",
                    "seqNo": seq_no,
                    "tbc": seq_no < len(self.parts) - 1,
                    "reportData": data,
                }
                self.send(call_frame(f"r{seq_no}", "NotifyReport", report))
        elif action == "TriggerMessage" and body.get("requestedMessage") == "BootNotification":
            self.send(BOOT_201)


class Charger16(RawCharger):
    def __init__(self, charger_id: str, done: asyncio.Future[float]) -> None:
        super().__init__(charger_id, self._answered)
        self.done = done

    def _answered(self, charger: RawCharger, payload: bytes) -> None:
        if not self.done.done():
            self.done.set_result(time.perf_counter())


async def boot_all(
    kind: type[RawCharger], ids: list[str], port: int, first: bytes, timeout: float
) -> tuple[list[float], int]:
    """Connect every id at once, send ``first``; seconds from attempt to Accepted."""
    loop = asyncio.get_running_loop()
    chargers: list[RawCharger] = []
    failures: dict[str, int] = {}

    async def one(index: int, charger_id: str) -> float | None:
        done: asyncio.Future[float] = loop.create_future()
        started = time.perf_counter()
        try:
            _, charger = await loop.create_connection(
                lambda: kind(charger_id, done),  # type: ignore[arg-type]
                "127.0.0.1",
                port,
                local_addr=(f"127.0.0.{1 + index % 8}", 0),
            )
            chargers.append(charger)
            charger.upgrade("127.0.0.1", port)
            await charger.opened
            charger.send(first)  # call_frame: already a websocket frame
            return await asyncio.wait_for(done, timeout) - started
        except (OSError, TimeoutError) as exc:
            why = f"{type(exc).__name__}: {str(exc)[:80]}"
            failures[why] = failures.get(why, 0) + 1
            return None

    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(ids)))
    for charger in chargers:
        charger.close()
    for why, count in failures.items():
        print(f"  {count} failed: {why}")
    times = [r for r in results if r is not None]
    return times, len(ids) - len(times)


async def run(args: argparse.Namespace) -> None:
    if args.device_model == "simulator":
        Station.parts = simulator_device_model()
    else:
        Station.parts = device_model(args.parts)
    for number in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as folder:
            data_dir = Path(folder)
            new = [f"s201-{i:05d}" for i in range(args.stations)]
            old = [f"c16-{i:05d}" for i in range(args.stations)]
            await register(data_dir, new + old)
            server = Server.bridge(data_dir, f"bench-{uuid.uuid4().hex[:8]}")
            await server.start()
            try:
                cpu = cpu_seconds(server.pid)
                base, base_lost = await boot_all(
                    Charger16, old, server.port, BOOT_FRAME, args.timeout
                )
                base_cpu = cpu_seconds(server.pid) - cpu
                await asyncio.sleep(args.pause)  # the baseline's disconnects handled
                cpu = cpu_seconds(server.pid)
                times, lost = await boot_all(Station, new, server.port, BOOT_201, args.timeout)
                boot_cpu = cpu_seconds(server.pid) - cpu
            finally:
                await server.stop()
        for name, values, missing, cpu in (
            ("1.6 boot (baseline)", base, base_lost, base_cpu),
            ("2.0.1 boot to Accepted", times, lost, boot_cpu),
        ):
            if not values:
                print(f"run {number}: {name}: none answered")
                continue
            print(
                f"run {number}: {name:<24} p50 {median(values):6.2f} s  "
                f"p99 {percentile(values, 99):6.2f} s  max {max(values):6.2f} s  "
                f"answered {len(values)}/{len(values) + missing}  "
                f"bridge CPU {cpu:5.2f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--parts", type=int, default=3, help="parts of the synthetic model")
    parser.add_argument(
        "--device-model",
        choices=("synthetic", "simulator"),
        default="synthetic",
        help="30 synthetic variables, or the simulated station's realistic device model",
    )
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--pause", type=float, default=5.0, help="seconds between phases")
    args = parser.parse_args()
    raise_nofile()
    print(describe())
    if args.device_model == "simulator":
        parts = simulator_device_model()
        described = f"{sum(len(p) for p in parts)} variables (the simulator's) in {len(parts)}"
    else:
        described = f"30 variables in {args.parts}"
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.stations} connecting at once, device model of {described} parts")
    with bench_broker():
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
