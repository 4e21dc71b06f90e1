"""MeterValues per second through the bridge to MQTT, and frame-to-shadow latency.

    .venv/bin/python -m bench.bridge_throughput [--runs 3] [--chargers 200] [--frames 30000]
        [--window 1]

Needs ``mosquitto_sub``; the broker is a private Mosquitto (bench/brokers.py).
Per run it starts, each as its
own process: the baseline (:mod:`bench.ocpp_baseline`, the bare ``ocpp`` library), then
``chargetwin bridge`` and ``chargetwin twin`` sharing a fresh SQLite data dir and a unique
topic prefix. The load generator is this process (:mod:`bench.bridge_load`).

1. throughput: every charger keeps ``--window`` MeterValues frames in flight (one
   MeterValue of five sampled values each) until ``--frames`` are sent. Bridge: frames /
   seconds until the last ``.../telemetry/meterValues`` arrived at an MQTT subscriber.
   Baseline: frames / seconds until the last CALLRESULT (it publishes nothing).
2. latency at half the bridge's measured rate: MeterValues paced at that rate, plus
   ``--status-rate`` StatusNotifications per second from other chargers, one outstanding
   each; the time from sending one to its ``shadow/update/accepted`` (bridge + twin) or to
   its CALLRESULT (baseline), p50 and p99.

The bridge runs with ``--ocpp-flood-rate 1000 --ocpp-flood-burst 1000`` (the default
50/s per charger would throttle the closed-loop chargers; the guard still runs per frame).
Targets (issue "OCPP 1.6J bridge"): >= 5,000 MeterValues/s; p99 < 50 ms at half the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.boots import mark_booted
from bench.bridge_load import (
    BIN,
    MqttCounter,
    RawCharger,
    Server,
    cpu_seconds,
    meter_values_frame,
    open_fleet,
    raise_nofile,
    register,
    status_frame,
)
from bench.brokers import bench_broker, broker_url
from bench.machine import describe, median, percentile

MV = meter_values_frame()
STATUS = (status_frame("Available"), status_frame("Preparing"))


@dataclass
class Figures:
    rate: list[float] = field(default_factory=list)  # MeterValues/s
    answered_rate: list[float] = field(default_factory=list)  # CALLRESULTs/s
    cpu_per_1000: list[float] = field(default_factory=list)  # server CPU s per 1,000 frames
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    bridge_p50_ms: list[float] = field(default_factory=list)
    bridge_p99_ms: list[float] = field(default_factory=list)
    latency_rate: list[float] = field(default_factory=list)
    lost: int = 0


class Load:
    """Meter chargers (closed loop or paced) and status chargers (one outstanding each)."""

    def __init__(self, port: int, meter_ids: list[str], status_ids: list[str]) -> None:
        self.port = port
        self.meter_ids = meter_ids
        self.status_ids = status_ids
        self.meters: list[RawCharger] = []
        self.statuses: dict[str, RawCharger] = {}
        self.answers = 0
        self.expected = 0
        self.remaining = 0
        self.done = asyncio.Event()
        self.last_answer = 0.0
        self.latencies: list[float] = []
        self.bridge_latencies: list[float] = []  # to the bridge's own shadow/update
        self.update_seen: set[str] = set()
        self.latency_via_answer = True  # baseline: CALLRESULT; bridge: shadow accepted

    async def connect(self) -> None:
        self.meters = await open_fleet(self.meter_ids, self.port, self._meter_answer)
        statuses = await open_fleet(self.status_ids, self.port, self._status_answer)
        self.statuses = {c.charger_id: c for c in statuses}

    def _meter_answer(self, charger: RawCharger, payload: bytes) -> None:
        self.answers += 1
        self.last_answer = time.perf_counter()
        if self.remaining > 0:
            self.remaining -= 1
            charger.send(MV)
        elif self.answers >= self.expected:
            self.done.set()

    def _status_answer(self, charger: RawCharger, payload: bytes) -> None:
        if self.latency_via_answer:
            self._status_done(charger)

    def on_accepted(self, topic: str) -> None:
        charger = self.statuses.get(topic.split("/")[-4])
        if charger is not None and not self.latency_via_answer:
            self._status_done(charger)

    def on_update(self, topic: str) -> None:
        charger = self.statuses.get(topic.split("/")[-3])
        if charger is not None and charger.sent_at and charger.charger_id not in self.update_seen:
            self.update_seen.add(charger.charger_id)
            self.bridge_latencies.append(time.perf_counter() - charger.sent_at)

    def _status_done(self, charger: RawCharger) -> None:
        if charger.sent_at:
            self.latencies.append(time.perf_counter() - charger.sent_at)
            charger.sent_at = 0.0

    async def closed_loop(self, frames: int, window: int) -> float:
        """Send ``frames`` MeterValues, ``window`` in flight per charger; seconds taken."""
        self.answers, self.expected = 0, frames
        self.done.clear()
        first = min(frames, window * len(self.meters))
        self.remaining = frames - first
        start = time.perf_counter()
        for _, charger in zip(range(first), itertools.cycle(self.meters), strict=False):
            charger.send(MV)
        await asyncio.wait_for(self.done.wait(), 300)
        return start

    async def paced(self, rate: float, status_rate: float, seconds: float) -> int:
        """MeterValues at ``rate`` and StatusNotifications at ``status_rate``; frames sent."""
        self.latencies.clear()
        self.bridge_latencies.clear()
        self.answers, self.expected, self.remaining = 0, 1 << 62, 0
        meters = itertools.cycle(self.meters)
        statuses = itertools.cycle(list(self.statuses.values()))
        flip = itertools.cycle(STATUS)
        sent = status_sent = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(int(elapsed * rate) - sent):
                next(meters).send(MV)
                sent += 1
            while status_sent < int(elapsed * status_rate):
                status_sent += 1
                charger = next(statuses)
                if not charger.sent_at:  # one outstanding per charger (OCPP-J 4.1.1)
                    self.update_seen.discard(charger.charger_id)
                    charger.sent_at = time.perf_counter()
                    charger.send(next(flip))
            await asyncio.sleep(0.002)
        await asyncio.sleep(1.0)  # let the last answers come in
        return sent

    def close(self) -> None:
        for charger in [*self.meters, *self.statuses.values()]:
            charger.close()


async def measure(
    server: Server,
    args: argparse.Namespace,
    meter_ids: list[str],
    status_ids: list[str],
    figures: Figures,
    latency_rate: float | None,
    prefix: str | None = None,
) -> None:
    """One run against one server; ``prefix`` set means the bridge (count MQTT arrivals)."""
    await server.start()
    load = Load(server.port, meter_ids, status_ids)
    counter = accepted = updates = None
    try:
        if prefix is not None:
            counter = MqttCounter(prefix, [f"{prefix}/chargers/+/telemetry/meterValues"])
            accepted = MqttCounter(
                prefix, [f"{prefix}/chargers/+/shadow/update/accepted"], load.on_accepted
            )
            updates = MqttCounter(prefix, [f"{prefix}/chargers/+/shadow/update"], load.on_update)
            await counter.start()
            await accepted.start()
            await updates.start()
            load.latency_via_answer = False
        await load.connect()
        await load.closed_loop(min(2000, args.frames), args.window)  # warm-up
        await asyncio.sleep(1.0)
        if counter is not None:
            counter.count = 0
        cpu0 = cpu_seconds(server.pid)
        start = await load.closed_loop(args.frames, args.window)
        if counter is not None:
            await counter.reached(args.frames, 60)
            figures.lost += args.frames - counter.count
            figures.rate.append(counter.count / (counter.last_at - start))
        else:
            figures.rate.append(args.frames / (load.last_answer - start))
        figures.answered_rate.append(args.frames / (load.last_answer - start))
        figures.cpu_per_1000.append((cpu_seconds(server.pid) - cpu0) / args.frames * 1000)
        rate = latency_rate if latency_rate is not None else figures.rate[-1] / 2
        await asyncio.sleep(1.0)
        await load.paced(rate, args.status_rate, args.latency_seconds)
        figures.latency_rate.append(rate)
        figures.p50_ms.append(percentile(load.latencies, 50) * 1000)
        figures.p99_ms.append(percentile(load.latencies, 99) * 1000)
        figures.bridge_p50_ms.append(percentile(load.bridge_latencies, 50) * 1000)
        figures.bridge_p99_ms.append(percentile(load.bridge_latencies, 99) * 1000)
    finally:
        load.close()
        for mqtt in (counter, accepted, updates):
            if mqtt is not None:
                await mqtt.stop()
        await server.stop()


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    print(f"machine: {describe()}")
    print(
        f"load: {args.chargers} chargers x window {args.window}, {args.frames} MeterValues per "
        f"run, {args.runs} runs; latency: {args.latency_seconds:g} s, "
        f"{args.status_rate:g} StatusNotification/s + MeterValues at half the bridge's rate\n"
    )
    meter_ids = [f"MV{i:05d}" for i in range(args.chargers)]
    status_ids = [f"ST{i:05d}" for i in range(args.status_chargers)]
    baseline, bridge = Figures(), Figures()
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
            data = Path(tmp)
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            await register(data, meter_ids + status_ids)
            await mark_booted(data, meter_ids + status_ids)
            twin = await asyncio.create_subprocess_exec(
                str(BIN / "chargetwin"), "twin", f"--mqtt-url={broker_url()}",
                f"--mqtt-prefix={prefix}", f"--data-dir={data}",
                stdout=asyncio.subprocess.DEVNULL, stderr=(data / "twin.log").open("wb"),
            )  # fmt: skip
            try:
                server = Server.bridge(
                    data, prefix, "--ocpp-flood-rate=1000", "--ocpp-flood-burst=1000",
                    "--mqtt-subscribers=twin",
                )  # fmt: skip
                await measure(
                    server, args, meter_ids, status_ids, bridge, args.latency_rate, prefix
                )
                await measure(
                    Server.baseline(data), args, meter_ids, status_ids, baseline,
                    bridge.latency_rate[-1],
                )  # fmt: skip
            finally:
                twin.terminate()
                await twin.wait()
        print(
            f"run {run + 1}: bridge {bridge.rate[-1]:,.0f} MeterValues/s to MQTT, p99 "
            f"{bridge.p99_ms[-1]:.1f} ms; baseline {baseline.rate[-1]:,.0f}/s, p99 "
            f"{baseline.p99_ms[-1]:.1f} ms",
            flush=True,
        )
    report(baseline, bridge, args)


def report(baseline: Figures, bridge: Figures, args: argparse.Namespace) -> None:
    m = median
    print(f"\nMeterValues per second (median of {args.runs} runs)")
    print(f"{'':28}{'ocpp library':>16}{'bridge':>12}{'target':>10}")
    print(f"{'end to end (MQTT arrivals)':28}{'-':>16}{m(bridge.rate):>12,.0f}{'>= 5,000':>10}")
    print(
        f"{'answered (CALLRESULTs)':28}{m(baseline.answered_rate):>16,.0f}"
        f"{m(bridge.answered_rate):>12,.0f}"
    )
    print(
        f"{'server CPU s / 1,000 frames':28}{m(baseline.cpu_per_1000):>16.3f}"
        f"{m(bridge.cpu_per_1000):>12.3f}"
    )
    print(f"{'telemetry messages lost':28}{'-':>16}{bridge.lost:>12}")
    print(
        f"\nStatusNotification latency at {m(bridge.latency_rate):,.0f} MeterValues/s "
        f"+ {args.status_rate:g} status/s (median of {args.runs} runs)"
    )
    print(f"{'':16}{'ocpp library':>14}{'bridge':>14}{'bridge + twin':>16}{'target':>10}")
    print(f"{'to':16}{'CALLRESULT':>14}{'shadow/update':>14}{'.../accepted':>16}")
    print(
        f"{'p50 ms':16}{m(baseline.p50_ms):>14.1f}{m(bridge.bridge_p50_ms):>14.1f}"
        f"{m(bridge.p50_ms):>16.1f}"
    )
    print(
        f"{'p99 ms':16}{m(baseline.p99_ms):>14.1f}{m(bridge.bridge_p99_ms):>14.1f}"
        f"{m(bridge.p99_ms):>16.1f}{'< 50':>10}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument(
        "--window",
        type=int,
        default=1,
        help="frames in flight per charger (1, as OCPP-J allows a real charger)",
    )
    parser.add_argument("--frames", type=int, default=30_000)
    parser.add_argument("--status-chargers", type=int, default=100)
    parser.add_argument("--status-rate", type=float, default=100.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="MeterValues/s during the latency step (default: half the measured rate)",
    )
    with bench_broker():
        asyncio.run(main(parser.parse_args()))
