"""OCPP 2.0.1 TransactionEvent(Updated) with meter values per second through the bridge to MQTT.

    .venv/bin/python -m bench.ocpp201_transactions [--runs 3] [--stations 500] [--events 20000]

Needs ``mosquitto_sub``; the broker is a private Mosquitto (bench/brokers.py). Per run,
against a fresh ``chargetwin bridge`` process (fresh SQLite data dir, unique topic prefix,
stations registered with keyed password hashes and marked as booted before, so they talk
at once like stations reconnecting) and then against the baseline
(:mod:`bench.ocpp201_baseline`, the bare ``ocpp`` library's v201 CSMS), with this process as
the load generator (raw websocket clients of :mod:`bench.bridge_load`, ``ocpp2.0.1``):

- each station opens a transaction (TransactionEvent Started, seqNo 0) and then sends
  TransactionEvent Updated (triggerReason MeterValuePeriodic, the next seqNo, one
  MeterValue of five sampled values: energy register, power, current L1-L3), **one call in
  flight per station** as OCPP-J requires: the next leaves when the CALLRESULT of the
  previous arrives (closed loop);
- bridge: events / seconds until the last ``.../telemetry/meterValues`` of them arrived at
  an MQTT subscriber (each event is also a row in ``transaction_events_201``, the
  idempotence record, and an ``events/transaction`` message); baseline: events / seconds
  until the last CALLRESULT (it stores and publishes nothing). Server CPU seconds per
  1,000 events beside each.

The bridge runs with ``--ocpp-flood-rate 1000 --ocpp-flood-burst 1000`` (the default 50/s
per station would throttle the closed loop; the guard still runs per frame). Each figure
is the median of ``--runs``; the load average before the run is printed, as the machine
may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.boots import mark_booted
from bench.bridge_load import (
    MqttCounter,
    RawCharger,
    Server,
    cpu_seconds,
    open_fleet,
    raise_nofile,
    register,
    ws_frame,
)
from bench.brokers import bench_broker
from bench.machine import describe, median


class Station201(RawCharger):
    subprotocol = "ocpp2.0.1"


@dataclass
class Figures:
    rate: list[float] = field(default_factory=list)  # events/s (to MQTT, or answered)
    answered_rate: list[float] = field(default_factory=list)  # CALLRESULTs/s
    cpu_per_1000: list[float] = field(default_factory=list)
    lost: int = 0
    errors: int = 0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_frame(station: str, seq_no: int, started: bool = False) -> bytes:
    """One TransactionEvent CALL of ``station``'s transaction, as a websocket frame."""
    stamp = _now()
    energy = 100_000 + 5 * seq_no
    values = [
        {"value": energy, "measurand": "Energy.Active.Import.Register",
         "unitOfMeasure": {"unit": "Wh"}},
        {"value": 11_000.0, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}},
        *(
            {"value": 16.0, "measurand": "Current.Import", "phase": phase,
             "unitOfMeasure": {"unit": "A"}}
            for phase in ("L1", "L2", "L3")
        ),
    ]  # fmt: skip
    payload = {
        "eventType": "Started" if started else "Updated",
        "timestamp": stamp,
        "triggerReason": "CablePluggedIn" if started else "MeterValuePeriodic",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": f"TX-{station}", "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [{"timestamp": stamp, "sampledValue": values}],
    }
    message = [2, f"{station}-{seq_no}", "TransactionEvent", payload]
    return ws_frame(json.dumps(message, separators=(",", ":")).encode())


class Load:
    """Closed loop: each station sends its next event when the last one is answered."""

    def __init__(self, port: int, ids: list[str]) -> None:
        self.port = port
        self.ids = ids
        self.stations: list[RawCharger] = []
        self.seq: dict[str, int] = {}
        self.answers = 0
        self.errors = 0
        self.expected = 0
        self.remaining = 0
        self.last_answer = 0.0
        self.done = asyncio.Event()

    async def connect(self) -> None:
        self.stations = await open_fleet(self.ids, self.port, self._answer, kind=Station201)

    def _answer(self, station: RawCharger, payload: bytes) -> None:
        if payload.startswith(b"[4,"):
            self.errors += 1
        self.answers += 1
        self.last_answer = time.perf_counter()
        if self.remaining > 0:
            self.remaining -= 1
            self._send(station)
        elif self.answers >= self.expected:
            self.done.set()

    def _send(self, station: RawCharger, started: bool = False) -> None:
        seq = self.seq.get(station.charger_id, 0)
        self.seq[station.charger_id] = seq + 1
        station.send(event_frame(station.charger_id, seq, started))

    async def open_transactions(self) -> None:
        """Started (seqNo 0) on every station, all answered."""
        self.answers, self.expected, self.remaining = 0, len(self.stations), 0
        self.done.clear()
        for station in self.stations:
            self._send(station, started=True)
        await asyncio.wait_for(self.done.wait(), 120)

    async def closed_loop(self, events: int) -> float:
        """Send ``events`` Updated events, one in flight per station; the start time."""
        self.answers, self.expected = 0, events
        self.done.clear()
        first = min(events, len(self.stations))
        self.remaining = events - first
        start = time.perf_counter()
        for station in itertools.islice(self.stations, first):
            self._send(station)
        await asyncio.wait_for(self.done.wait(), 600)
        return start

    def close(self) -> None:
        for station in self.stations:
            station.close()


async def measure(
    server: Server, args: argparse.Namespace, ids: list[str], figures: Figures, prefix: str | None
) -> None:
    """One run against one server; ``prefix`` set means the bridge (count MQTT arrivals)."""
    await server.start()
    load = Load(server.port, ids)
    counter = None
    try:
        if prefix is not None:
            counter = MqttCounter(prefix, [f"{prefix}/chargers/+/telemetry/meterValues"])
            await counter.start()
        await load.connect()
        await load.open_transactions()
        await load.closed_loop(min(2000, args.events))  # warm-up
        await asyncio.sleep(1.0)
        if counter is not None:
            if not await counter.reached(len(ids) + min(2000, args.events), 60):
                print(f"  warm-up: {counter.count} telemetry messages arrived", flush=True)
            counter.count = 0
        load.errors = 0
        cpu0 = cpu_seconds(server.pid)
        start = await load.closed_loop(args.events)
        if counter is not None:
            await counter.reached(args.events, 60)
            figures.lost += args.events - counter.count
            figures.rate.append(counter.count / (counter.last_at - start))
        else:
            figures.rate.append(args.events / (load.last_answer - start))
        figures.answered_rate.append(args.events / (load.last_answer - start))
        figures.cpu_per_1000.append((cpu_seconds(server.pid) - cpu0) / args.events * 1000)
        figures.errors += load.errors
    finally:
        load.close()
        if counter is not None:
            await counter.stop()
        await server.stop()


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    print(f"machine: {describe()}")
    print(f"load average before the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"load: {args.stations} stations, one TransactionEvent in flight each, "
        f"{args.events} Updated events per run, {args.runs} runs\n"
    )
    ids = [f"TE{i:05d}" for i in range(args.stations)]
    baseline, bridge = Figures(), Figures()
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-201-tx-") as tmp:
            data = Path(tmp)
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            await register(data, ids)
            await mark_booted(data, ids)
            server = Server.bridge(
                data, prefix, "--ocpp-flood-rate=1000", "--ocpp-flood-burst=1000"
            )
            await measure(server, args, ids, bridge, prefix)
            await measure(
                Server.baseline(data, "bench.ocpp201_baseline"), args, ids, baseline, None
            )
        print(
            f"run {run + 1}: bridge {bridge.rate[-1]:,.0f} events/s to MQTT "
            f"({bridge.cpu_per_1000[-1]:.3f} CPU s / 1,000); baseline "
            f"{baseline.rate[-1]:,.0f}/s ({baseline.cpu_per_1000[-1]:.3f} CPU s / 1,000)",
            flush=True,
        )
    report(baseline, bridge, args)


def report(baseline: Figures, bridge: Figures, args: argparse.Namespace) -> None:
    m = median
    print(
        f"\nTransactionEvent(Updated) with meter values per second, {args.stations} stations, "
        f"one call in flight each (median of {args.runs} runs)"
    )
    print(f"{'':30}{'ocpp v201':>12}{'bridge':>12}")
    print(f"{'end to end (MQTT arrivals)':30}{'-':>12}{m(bridge.rate):>12,.0f}")
    print(
        f"{'answered (CALLRESULTs)':30}{m(baseline.answered_rate):>12,.0f}"
        f"{m(bridge.answered_rate):>12,.0f}"
    )
    print(
        f"{'server CPU s / 1,000 events':30}{m(baseline.cpu_per_1000):>12.3f}"
        f"{m(bridge.cpu_per_1000):>12.3f}"
    )
    print(f"{'CALLERRORs':30}{baseline.errors:>12}{bridge.errors:>12}")
    print(f"{'telemetry messages lost':30}{'-':>12}{bridge.lost:>12}")
    print(f"load average after the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stations", type=int, default=500)
    parser.add_argument("--events", type=int, default=20_000)
    with bench_broker():
        asyncio.run(main(parser.parse_args()))
