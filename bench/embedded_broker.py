"""QoS 1 messages lost, duplicated and delivered per second by each embedded-broker candidate.

    .venv/bin/python -m bench.embedded_broker [--runs 3] [--rate 5000 --rate 10000]
        [--seconds 5] [--subscribers 2] [--work-us 0] [--broker NAME ...]

The shape of the embedded deployment's heaviest flow: one publisher (the bridge) sends
QoS 1 messages of 300 bytes at ``--rate`` for ``--seconds``; ``--subscribers`` QoS 1
subscribers (the twin and the recorder) count what arrives. Each client is its own
process (paho-mqtt), so the broker is the only thing they share. ``--work-us`` makes each
subscriber spend that long on every message, as a busy twin does.

Per broker and rate: messages the broker acknowledged to the publisher (PUBACK), then per
subscriber the acknowledged messages that never arrived (lost), arrivals of a message
already seen (duplicates), and the delivered rate (the slowest subscriber's messages over
the time from the first publish to its last arrival). A subscriber gives up 8 s after its
last arrival once the publisher is done (amqtt drops a delivery after 5 s).

Candidates: ``mosquitto-default`` (the baseline: Mosquitto 2 with only a loopback listener
and anonymous access), ``mosquitto-embedded`` (what ``chargetwin up`` runs:
:class:`chargetwin.broker.MosquittoBroker`), ``amqtt`` (:class:`chargetwin.broker.AmqttBroker`
in a process of its own, which flatters it) and ``rumqttd`` (the broker compiled into the
``iotcore`` wheel; skipped when that package is not installed).

The ``-platform`` rows run the subscribers as ``chargetwin up`` does: the platform's own
MQTT client (:class:`chargetwin.mqtt.MqttClient`, gmqtt) on one event loop, which for
``amqtt-platform`` also runs the broker, as in ``chargetwin up``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.machine import describe, median

PAYLOAD_BYTES = 300
IDLE_AFTER_DONE_S = 8.0
TOPIC = "bench/embedded/meterValues"

BROKERS = (
    "mosquitto-default",
    "mosquitto-embedded",
    "amqtt",
    "rumqttd",
    "mosquitto-platform",
    "amqtt-platform",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no broker listening on {port}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Broker:
    port: int
    pid: int  # the process whose CPU time is the broker's
    log: Callable[[], str] = lambda: ""


@contextlib.contextmanager
def _mosquitto_default(folder: Path) -> Iterator[Broker]:
    port = _free_port()
    config = folder / "default.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"log_dest none\nuser {getpass.getuser()}\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port)
        yield Broker(port, proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def _mosquitto_embedded(folder: Path) -> Iterator[Broker]:
    from chargetwin.broker import MosquittoBroker, find_mosquitto

    binary = find_mosquitto()
    assert binary is not None
    broker = MosquittoBroker(_free_port(), folder / "mosquitto", binary=binary)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(broker.start())
        pid = int(broker.pid_file.read_text())
        yield Broker(broker.port, pid)
    finally:
        loop.run_until_complete(broker.stop())
        loop.close()


AMQTT_MAIN = """
import asyncio, logging, sys
from chargetwin.broker import AmqttBroker
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
async def main():
    broker = AmqttBroker(int(sys.argv[1]))
    await broker.start()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await broker.stop()
asyncio.run(main())
"""


@contextlib.contextmanager
def _amqtt(folder: Path) -> Iterator[Broker]:
    port = _free_port()
    log_file = folder / "amqtt.log"
    with log_file.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", AMQTT_MAIN, str(port)], stdin=subprocess.PIPE, stderr=err
        )
        try:
            _wait_listening(port)
            yield Broker(port, proc.pid, log_file.read_text)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def _rumqttd(folder: Path) -> Iterator[Broker]:
    from iotcore import Broker as RumqttBroker

    port = _free_port()
    broker = RumqttBroker(port=port, listen="127.0.0.1", max_inflight_count=100)
    broker.start()
    process = broker._process  # iotcore runs rumqttd in a child process
    assert process is not None
    try:
        yield Broker(port, process.pid)
    finally:
        broker.stop()


@contextlib.contextmanager
def _inside_the_subscribers(folder: Path) -> Iterator[None]:
    yield None  # amqtt-platform: the subscriber process runs the broker too


LAUNCHERS: dict[str, Callable[[Path], contextlib.AbstractContextManager[Broker | None]]] = {
    "mosquitto-default": _mosquitto_default,
    "mosquitto-embedded": _mosquitto_embedded,
    "amqtt": _amqtt,
    "rumqttd": _rumqttd,
    "mosquitto-platform": _mosquitto_embedded,
    "amqtt-platform": _inside_the_subscribers,
}


def _available(name: str) -> bool:
    if name == "rumqttd":
        try:
            import iotcore  # noqa: F401
        except ImportError:
            return False
    if name.startswith("mosquitto"):
        return bool(shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK))
    return True


def _client(name: str) -> Any:
    from paho.mqtt.client import CallbackAPIVersion, Client

    return Client(CallbackAPIVersion.VERSION2, client_id=name, clean_session=True)


def _subscriber(
    port: int,
    name: str,
    total: int,
    work_us: float,
    ready: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
    results: multiprocessing.Queue[dict[str, Any]],
) -> None:
    seen = bytearray(total)
    state = {"unique": 0, "dups": 0, "last": 0.0}
    work_s = work_us / 1e6

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        seq = int(message.payload[:10])
        if seen[seq]:
            state["dups"] += 1
        else:
            seen[seq] = 1
            state["unique"] += 1
        state["last"] = time.time()
        if work_s:
            until = time.perf_counter() + work_s
            while time.perf_counter() < until:
                pass

    client = _client(name)
    client.max_inflight_messages_set(100)
    client.on_message = on_message
    client.on_subscribe = lambda *args: ready.set()
    client.connect("127.0.0.1", port, keepalive=60)
    client.subscribe(TOPIC, qos=1)
    client.loop_start()
    done_seen_at = 0.0
    while state["unique"] < total:
        time.sleep(0.1)
        if done.is_set():
            done_seen_at = done_seen_at or time.time()
            if time.time() - max(state["last"], done_seen_at) > IDLE_AFTER_DONE_S:
                break
    client.disconnect()
    client.loop_stop()
    results.put({"name": name, **state})


def _publisher(
    port: int, total: int, rate: float, results: multiprocessing.Queue[dict[str, Any]]
) -> None:
    acked = [0]
    client = _client(f"bench-publisher-{os.getpid()}")
    client.max_inflight_messages_set(100)
    client.on_publish = lambda *args: acked.__setitem__(0, acked[0] + 1)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    padding = b"x" * (PAYLOAD_BYTES - 10)
    started = time.time()
    start = time.perf_counter()
    for seq in range(total):
        ahead = start + seq / rate - time.perf_counter()
        if ahead > 0.002:
            time.sleep(ahead)
        client.publish(TOPIC, b"%010d" % seq + padding, qos=1)
    sent_s = time.perf_counter() - start
    deadline = time.monotonic() + 60
    while acked[0] < total and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    results.put({"name": "publisher", "started": started, "sent_s": sent_s, "acked": acked[0]})


async def _platform_subscribers(
    kind: str,
    port: int,
    total: int,
    count: int,
    work_us: float,
    ready: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
) -> list[dict[str, float]]:
    from chargetwin.broker import AmqttBroker
    from chargetwin.mqtt import MqttClient

    broker = AmqttBroker(port) if kind == "amqtt" else None
    if broker is not None:
        await broker.start()
    states = [{"unique": 0.0, "dups": 0.0, "last": 0.0} for _ in range(count)]
    seen = [bytearray(total) for _ in range(count)]

    def handler(i: int) -> Callable[[str, bytes], Any]:
        async def on_message(topic: str, payload: bytes) -> None:
            seq = int(payload[:10])
            if seen[i][seq]:
                states[i]["dups"] += 1
            else:
                seen[i][seq] = 1
                states[i]["unique"] += 1
            states[i]["last"] = time.time()
            until = time.perf_counter() + work_us / 1e6
            while time.perf_counter() < until:
                pass

        return on_message

    url = f"mqtt://127.0.0.1:{port}"
    clients = [MqttClient(url, f"bench-platform-{i}-{os.getpid()}") for i in range(count)]
    for i, client in enumerate(clients):
        await client.connect()
        await client.subscribe_acked(TOPIC, handler(i))
    ready.set()
    await asyncio.to_thread(done.wait)  # the publisher finished
    done_at = time.time()
    while min(st["unique"] for st in states) < total:
        if time.time() - max(done_at, *(st["last"] for st in states)) > IDLE_AFTER_DONE_S:
            break
        await asyncio.sleep(0.1)
    for client in clients:
        await client.disconnect()
    if broker is not None:
        await broker.stop()
    return states


class _TimeoutCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "Timeout waiting for PUBACK" in record.getMessage()


def _platform_process(
    kind: str,
    port: int,
    total: int,
    count: int,
    work_us: float,
    ready: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
    results: multiprocessing.Queue[dict[str, Any]],
) -> None:
    counter = _TimeoutCounter()
    logging.getLogger("amqtt").addHandler(counter)
    states = asyncio.run(_platform_subscribers(kind, port, total, count, work_us, ready, done))
    results.put({"name": "subscribers", "states": states, "timeouts": counter.count})


def _platform_trial(
    broker: Broker | None, kind: str, total: int, rate: float, subscribers: int, work_us: float
) -> Trial:
    """Subscribers as the platform runs them: MqttClients on one event loop (with amqtt)."""
    port = broker.port if broker is not None else _free_port()
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[dict[str, Any]] = ctx.Queue()
    ready, done = ctx.Event(), ctx.Event()
    subs = ctx.Process(
        target=_platform_process,
        args=(kind, port, total, subscribers, work_us, ready, done, results),
    )
    subs.start()
    if not ready.wait(60):
        raise RuntimeError("the platform-shaped subscribers did not subscribe")
    pub = ctx.Process(target=_publisher, args=(port, total, rate, results))
    pub.start()
    pub.join(300)
    done.set()
    outcome = {}
    for _ in range(2):
        item = results.get(timeout=300)
        outcome[item["name"]] = item
    subs.join(60)
    publisher, states = outcome["publisher"], outcome["subscribers"]["states"]
    acked = int(publisher["acked"])
    slowest = min(states, key=lambda st: st["unique"])
    return Trial(
        acked=acked,
        lost=sum(max(0, acked - int(st["unique"])) for st in states),
        dups=sum(int(st["dups"]) for st in states),
        delivered_rate=slowest["unique"] / max(1e-9, slowest["last"] - publisher["started"]),
        broker_cpu_s=float("nan"),  # the broker shares its process with the subscribers
        puback_timeouts=int(outcome["subscribers"]["timeouts"]),
    )


@dataclass
class Trial:
    acked: int
    lost: int  # summed over subscribers
    dups: int
    delivered_rate: float  # the slowest subscriber
    broker_cpu_s: float
    puback_timeouts: int


def _trial(broker: Broker, total: int, rate: float, subscribers: int, work_us: float) -> Trial:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[dict[str, Any]] = ctx.Queue()
    done = ctx.Event()
    readies = [ctx.Event() for _ in range(subscribers)]
    subs = [
        ctx.Process(
            target=_subscriber,
            args=(
                broker.port,
                f"bench-sub-{i}-{os.getpid()}",
                total,
                work_us,
                readies[i],
                done,
                results,
            ),
        )
        for i in range(subscribers)
    ]
    for proc in subs:
        proc.start()
    for ready in readies:
        if not ready.wait(30):
            raise RuntimeError("a subscriber did not subscribe")
    cpu_before = _cpu_seconds(broker.pid)
    log_before = broker.log()
    pub = ctx.Process(target=_publisher, args=(broker.port, total, rate, results))
    pub.start()
    pub.join(300)
    done.set()
    outcome: dict[str, dict[str, Any]] = {}
    for _ in range(subscribers + 1):
        item = results.get(timeout=300)
        outcome[item["name"]] = item
    for proc in subs:
        proc.join(30)
    publisher = outcome.pop("publisher")
    acked = int(publisher["acked"])
    slowest = min(outcome.values(), key=lambda s: s["unique"])
    span = max(1e-9, slowest["last"] - publisher["started"])
    new_log = broker.log()[len(log_before) :]
    return Trial(
        acked=acked,
        lost=sum(max(0, acked - s["unique"]) for s in outcome.values()),
        dups=sum(int(s["dups"]) for s in outcome.values()),
        delivered_rate=slowest["unique"] / span,
        broker_cpu_s=_cpu_seconds(broker.pid) - cpu_before,
        puback_timeouts=new_log.count("Timeout waiting for PUBACK"),
    )


@dataclass
class Figures:
    trials: list[Trial] = field(default_factory=list)

    def line(self, name: str, rate: float, total: int) -> str:
        t = self.trials
        return (
            f"{name:<19} {rate:>7.0f} {median([x.acked for x in t]):>9.0f}/{total:<7} "
            f"{median([x.lost for x in t]):>7.0f} {median([x.dups for x in t]):>6.0f} "
            f"{median([x.delivered_rate for x in t]):>10.0f} "
            f"{median([x.broker_cpu_s for x in t]) * 1e6 / max(1, total):>9.1f} "
            f"{median([x.puback_timeouts for x in t]):>8.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, action="append", help="msg/s (repeatable)")
    parser.add_argument("--seconds", type=float, default=5.0, help="publishing time per trial")
    parser.add_argument("--subscribers", type=int, default=2)
    parser.add_argument("--work-us", type=float, default=0.0, help="µs per message per subscriber")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--broker", action="append", choices=BROKERS)
    args = parser.parse_args()
    rates = args.rate or [5000.0, 10000.0]
    names = [n for n in (args.broker or BROKERS) if _available(n)]
    print(describe())
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min)")
    print(
        f"{args.subscribers} QoS 1 subscribers, {PAYLOAD_BYTES}-byte messages, "
        f"{args.seconds:g} s per trial, {args.work_us:g} µs work per message, "
        f"median of {args.runs} run(s)"
    )
    print(
        f"{'broker':<19} {'msg/s':>7} {'acked/sent':>17} {'lost':>7} {'dups':>6} "
        f"{'delivered/s':>10} {'cpu ms/1k':>9} {'timeouts':>8}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            for rate in rates:
                total = int(rate * args.seconds)
                figures = Figures()
                for run in range(args.runs):
                    workdir = Path(folder) / f"{name}-{rate:.0f}-{run}"
                    workdir.mkdir()
                    with LAUNCHERS[name](workdir) as broker:
                        if name.endswith("-platform"):
                            kind = name.removesuffix("-platform")
                            trial = _platform_trial(
                                broker, kind, total, rate, args.subscribers, args.work_us
                            )
                        else:
                            assert broker is not None
                            trial = _trial(broker, total, rate, args.subscribers, args.work_us)
                        figures.trials.append(trial)
                print(figures.line(name, rate, total), flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min)")


if __name__ == "__main__":
    main()
