"""Scale-out on one machine: every component replicated, ``kill -9`` of one process of each kind.

    .venv/bin/python -m bench.scale_out [--chargers 500] [--meter-interval 10] [--load 30]
    .venv/bin/python -m bench.scale_out --no-kills --chargers 100   # the load only
    .venv/bin/python -m bench.scale_out --balancer asyncio          # without HAProxy
    .venv/bin/python -m bench.scale_out proxy PORT BACKEND_PORT...   # the fallback balancer

The topology of docs/deployment.md (*Scale-out*), each part a process of its own:

- a private Mosquitto on a free port (production settings of ``mosquitto/``), a private
  PostgreSQL database (``CREATE DATABASE`` on the server of ``CHARGETWIN_TEST_POSTGRES_URL``,
  dropped at the end) and a private ``influxd`` on free ports;
- HAProxy in TCP mode in front of 2 bridges (``leastconn``, health-checked) and of 2 API
  processes; without ``haproxy`` installed (or with ``--balancer asyncio``), a small
  asyncio TCP balancer (``proxy`` below) in a child process per frontend instead;
- 2 twin workers and 2 recorders (``chargetwin rules``) with ``--mqtt-share-group``,
  2 API processes (one data dir: the firmware files), a fleet leader and a standby;
- simulated chargers (:mod:`simulator`) with charging sessions, connected through the
  balancer; every call a charger got a CALLRESULT for is noted (the *ledger*).

After a measured stretch of load, a firmware campaign starts and, while the chargers charge
and the campaign runs, one process of each kind is killed with SIGKILL and started again,
in turn: the fleet's leader first, then the first bridge, twin worker, recorder and API
process. A quarter of the chargers then drop their sockets (churn), so that the balancer
brings some back to the restarted bridge. Afterwards it checks, against the chargers' own
ledger:

- every shadow holds the last status each connector reported and the firmware version of
  the charger's last boot;
- every acknowledged MeterValues sample is in InfluxDB (one Energy.Active.Import.Register
  point per sample, keyed by charger, connector and the sample's millisecond timestamp);
- no shadow version went backwards: versions read through the API never fall, no version
  was announced twice with different states, and no stored version is below one announced
  on ``shadow/update/documents``;
- commands reach chargers on either bridge, sent through either API process;
- the campaign started before the kills completes, every charger it took on the new
  version.

It prints these, with the load the topology carried (calls acknowledged per second, the
median and 95th percentile of CALL -> CALLRESULT, also per action, and the cores busy per
kind of process), the load average and the machine. ``tests/e2e/test_e2e_scale_out.py``
runs the same scenario, smaller.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import paho.mqtt.client as paho
import psycopg
from ocpp.v16 import call as v16

from bench.brokers import _SETTINGS as BROKER_SETTINGS
from bench.faults import Influx
from bench.machine import describe, median, percentile
from simulator import ChargerState, Fleet, SimulatorOptions
from simulator.chargers import SimulatedCharger
from simulator.options import SessionTiming

ADMIN = "ct_scale_admin_" + uuid.uuid4().hex
PASSWORD = "scale-out-charger-password"
PASSWORD_KEY = "scale-out-password-key-" + uuid.uuid4().hex
POSTGRES_URL = os.environ.get(
    "CHARGETWIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# The order of the kills: the fleet's leader first, while the campaign it runs is young.
KINDS = ("fleet", "bridge", "twin", "rules", "api")
CAMPAIGN_VENDOR, CAMPAIGN_MODEL, OLD, NEW = "ChargeTwin", "CT-AC22", "1.4.2", "1.5.0-scale"
IMAGE = b"\x7fCTFW-scale-out" + bytes(range(256)) * 16
# A line each kind logs once it serves (INFO): a restarted process counts as up after it.
READY = {
    "bridge": ": serving",
    "twin": "twin service started",
    "rules": "MQTT connected to",
    "api": "API listening on",
    "fleet": "chargetwin.leadership: fleet: ",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# --- the engines: broker, PostgreSQL database, balancer ------------------------------------
class Broker:
    """A private Mosquitto with the production settings of ``mosquitto/``."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n{BROKER_SETTINGS}user {getpass.getuser()}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.config)], stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Database:
    """A database of its own on the PostgreSQL server of ``POSTGRES_URL``, dropped at the end."""

    def __init__(self, base_url: str = POSTGRES_URL) -> None:
        self.name = f"ct_scale_{uuid.uuid4().hex[:10]}"
        parts = urlsplit(base_url)
        self.base_url = base_url
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def create(self) -> None:
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name}")

    def drop(self) -> None:
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


HAPROXY = """global
    maxconn {maxconn}
defaults
    mode tcp
    timeout connect 2s
    timeout check 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    retries 3
    option redispatch
frontend ocpp
    bind 127.0.0.1:{ocpp}
    default_backend bridges
backend bridges
    balance leastconn
    option httpchk
    http-check send meth GET uri / ver HTTP/1.1 hdr Host localhost
    http-check expect status 404
{bridges}
frontend api
    bind 127.0.0.1:{api}
    default_backend apis
backend apis
    balance roundrobin
    option httpchk
    http-check send meth GET uri /api/v1/health ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
{apis}
"""


class Balancer:
    """HAProxy in TCP mode in front of the bridges and of the API processes; without
    ``haproxy``, the asyncio balancer of this module (``proxy``), one per frontend."""

    def __init__(
        self, folder: Path, bridges: list[int], apis: list[int], *, haproxy: bool = True
    ) -> None:
        self.folder, self.bridges, self.apis = folder, bridges, apis
        self.ocpp_port, self.api_port = free_port(), free_port()
        found = shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
        )
        self.binary = found if haproxy else None
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def kind(self) -> str:
        if self.binary:
            return "haproxy"
        return "asyncio proxy" + ("" if shutil.which("haproxy") else " (haproxy not installed)")

    def start(self) -> None:
        log = (self.folder / "balancer.log").open("ab")
        if self.binary:

            def servers(prefix: str, ports: list[int]) -> str:
                return "\n".join(
                    f"    server {prefix}{i + 1} 127.0.0.1:{port} check inter 1000 fall 2 rise 1"
                    for i, port in enumerate(ports)
                )

            config = self.folder / "haproxy.cfg"
            config.write_text(
                HAPROXY.format(
                    # Two descriptors per proxied connection, within this process's limit.
                    maxconn=min(50_000, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100) // 2),
                    ocpp=self.ocpp_port,
                    api=self.api_port,
                    bridges=servers("bridge", self.bridges),
                    apis=servers("api", self.apis),
                )
            )
            self.procs.append(
                subprocess.Popen([self.binary, "-db", "-f", str(config)], stdout=log, stderr=log)
            )
        else:
            for port, backends in ((self.ocpp_port, self.bridges), (self.api_port, self.apis)):
                args = [sys.executable, "-m", "bench.scale_out", "proxy", str(port)]
                self.procs.append(
                    subprocess.Popen(
                        [*args, *map(str, backends)], stdout=log, stderr=log, cwd=_ROOT
                    )
                )
        log.close()
        wait_port(self.ocpp_port)
        wait_port(self.api_port)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(10)
        self.procs = []


_ROOT = Path(__file__).resolve().parent.parent


async def proxy(port: int, backends: list[int]) -> None:
    """A TCP balancer: each connection goes to the next backend that accepts it."""
    turn = 0

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal turn
        for _ in range(len(backends)):
            backend = backends[turn % len(backends)]
            turn += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
            except OSError:
                continue
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            return
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


# --- the platform's processes ---------------------------------------------------------------
@dataclass
class Process:
    """One ``chargetwin KIND`` process; restartable with the same settings and data dir."""

    name: str
    kind: str
    env: dict[str, str]
    data_dir: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    cpu_before: float = 0.0  # CPU seconds of the incarnations killed before this one
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def start(self) -> int:
        """Start; returns the offset of the log where this incarnation begins."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "launch.cli", self.kind],
                env=self.env,
                cwd=_ROOT,
                stdout=log,
                stderr=log,
            )
        self.starts += 1
        return offset

    def wait_ready(self, offset: int, timeout: float = 90.0) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            with self.log.open("rb") as log:
                log.seek(offset)
                if READY[self.kind] in log.read().decode(errors="replace"):
                    # A bridge logs "serving" once it listens; a bare TCP probe would make
                    # it log a failed opening handshake.
                    if self.port is None or self.kind == "bridge":
                        return time.monotonic() - began
                    try:
                        socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                        return time.monotonic() - began
                    except OSError:
                        pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {timeout:g} s:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        return self.cpu_before + self._cpu_now()

    def _cpu_now(self) -> float:
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill9(self) -> None:
        if self.proc is not None:
            self.cpu_before += self._cpu_now()
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.cpu_before += self._cpu_now()
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def leads(self) -> bool:
        """For a fleet process: whether its last leadership line says it leads."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lead, standby = text.rfind("this process leads now"), text.rfind(": standby")
        return lead > standby


@dataclass
class Topology:
    """The engines and every component process, started and stopped together."""

    root: Path
    counts: dict[str, int] = field(
        default_factory=lambda: {"twin": 2, "rules": 2, "fleet": 2, "api": 2, "bridge": 2}
    )
    broker: Broker | None = None
    influx: Influx | None = None
    database: Database | None = None
    balancer: Balancer | None = None
    processes: list[Process] = field(default_factory=list)
    haproxy: bool = True  # False: the asyncio balancer even where haproxy is installed

    @property
    def api_url(self) -> str:
        assert self.balancer is not None
        return f"http://127.0.0.1:{self.balancer.api_port}/api/v1"

    @property
    def ocpp_url(self) -> str:
        assert self.balancer is not None
        return f"ws://127.0.0.1:{self.balancer.ocpp_port}/ocpp"

    def of(self, kind: str) -> list[Process]:
        return [p for p in self.processes if p.kind == kind]

    def start(self) -> None:
        (self.root / "broker").mkdir(parents=True, exist_ok=True)
        self.broker = Broker(self.root / "broker")
        self.broker.start()
        self.influx = Influx(self.root / "influxd")
        self.influx.start()
        self.database = Database()
        self.database.create()
        bridge_ports = [free_port() for _ in range(self.counts["bridge"])]
        api_ports = [free_port() for _ in range(self.counts["api"])]
        self.balancer = Balancer(self.root, bridge_ports, api_ports, haproxy=self.haproxy)
        common = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CHARGETWIN_")},
            "CHARGETWIN_HOST": "127.0.0.1",
            "CHARGETWIN_MQTT_URL": self.broker.url,
            "CHARGETWIN_DATABASE_URL": self.database.url,
            "CHARGETWIN_INFLUX_URL": self.influx.url,
            "CHARGETWIN_INFLUX_DATABASE": "chargetwin",
            "CHARGETWIN_CHARGER_PASSWORD_KEY": PASSWORD_KEY,
            "CHARGETWIN_ADMIN_TOKEN": ADMIN,
            "CHARGETWIN_PUBLIC_URL": f"http://127.0.0.1:{self.balancer.api_port}",
            "CHARGETWIN_CAMPAIGN_INTERVAL": "1",
            "CHARGETWIN_LOG_LEVEL": "INFO",
        }
        for kind in ("twin", "rules", "fleet", "api", "bridge"):  # the runner's start order
            for i in range(self.counts[kind]):
                name = f"{kind}-{i + 1}"
                env = {**common, "CHARGETWIN_MQTT_CLIENT_ID": f"scale-{name}"}
                data_dir = self.root / "data" / name
                port = None
                if kind in ("twin", "rules"):
                    env["CHARGETWIN_MQTT_SHARE_GROUP"] = "chargetwin"
                if kind == "api":
                    port = api_ports[i]
                    env["CHARGETWIN_API_PORT"] = str(port)
                    data_dir = self.root / "data" / "api"  # one folder: the firmware files
                if kind == "bridge":
                    port = bridge_ports[i]
                    env["CHARGETWIN_OCPP_PORT"] = str(port)
                env["CHARGETWIN_DATA_DIR"] = str(data_dir)
                self.processes.append(Process(name, kind, env, data_dir, port))
        # The first of each kind alone, in the runner's order: replicas starting together
        # on a fresh database race in their CREATE TABLE IF NOT EXISTS (docs/deployment.md,
        # Scale-out); the other replicas then together, on the schema made.
        firsts = [self.of(kind)[0] for kind in ("twin", "rules", "fleet", "api", "bridge")]
        for process in firsts:
            process.wait_ready(process.start())
        others = [(p, p.start()) for p in self.processes if p not in firsts]
        for process, offset in others:
            process.wait_ready(offset)
        self.balancer.start()

    def restart(self, process: Process) -> float:
        """``kill -9`` and start again; returns seconds until it serves again."""
        process.kill9()
        began = time.monotonic()
        offset = process.start()
        process.wait_ready(offset)
        return time.monotonic() - began

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        for part in (self.balancer, self.influx, self.broker):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        if self.database is not None:
            with contextlib.suppress(Exception):
                self.database.drop()


@contextlib.asynccontextmanager
async def topology(root: Path, *, haproxy: bool = True) -> AsyncIterator[Topology]:
    topo = Topology(root, haproxy=haproxy)
    try:
        await asyncio.to_thread(topo.start)
        yield topo
    finally:
        await asyncio.to_thread(topo.stop)


# --- what the chargers were told: the ledger --------------------------------------------------
def millis(timestamp: str) -> int:
    return round(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass
class Ledger:
    """Every call a charger got a CALLRESULT for, as the charger saw it."""

    meter: dict[str, set[tuple[str, int]]] = field(default_factory=dict)  # (connector, ms)
    status: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    # Statuses sent after the last acknowledged one and never answered: the platform may
    # or may not have taken them (the socket died with the CALLRESULT on its way).
    unanswered: dict[str, dict[str, list[tuple[str, str]]]] = field(default_factory=dict)
    firmware: dict[str, str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    by_action: dict[str, list[float]] = field(default_factory=dict)  # before the kills
    acked: int = 0
    failed: int = 0
    phase: str = "load"
    acked_in: dict[str, int] = field(default_factory=dict)

    def instrument(self, charger: SimulatedCharger) -> None:
        original = charger.call

        async def call(payload: Any) -> Any:
            began = time.perf_counter()
            try:
                answer = await original(payload)
            except BaseException:
                self.failed += 1
                if isinstance(payload, v16.StatusNotification):
                    sent = (str(payload.status), str(payload.error_code))
                    per = self.unanswered.setdefault(charger.id, {})
                    per.setdefault(str(payload.connector_id), []).append(sent)
                raise
            took = time.perf_counter() - began
            self.latencies.append(took)
            if self.phase == "load":
                self.by_action.setdefault(type(payload).__name__, []).append(took)
            self.acked += 1
            self.acked_in[self.phase] = self.acked_in.get(self.phase, 0) + 1
            self._note(charger, payload)
            return answer

        charger.call = call  # type: ignore[method-assign]

    def _note(self, charger: SimulatedCharger, payload: Any) -> None:
        if isinstance(payload, v16.MeterValues):
            samples = self.meter.setdefault(charger.id, set())
            for value in payload.meter_value:
                if any(
                    s.get("measurand") == "Energy.Active.Import.Register"
                    for s in value["sampledValue"]
                ):
                    samples.add((str(payload.connector_id), millis(value["timestamp"])))
        elif isinstance(payload, v16.StatusNotification):
            connector = str(payload.connector_id)
            self.status.setdefault(charger.id, {})[connector] = (
                str(payload.status),
                str(payload.error_code),
            )
            self.unanswered.get(charger.id, {}).pop(connector, None)
        elif isinstance(payload, v16.BootNotification):
            self.firmware[charger.id] = str(payload.firmware_version)


# --- what the platform announced: shadow versions -------------------------------------------
class VersionWatch:
    """``shadow/update/documents`` of every charger, from a client of its own (paho)."""

    def __init__(self, broker_url: str, prefix: str = "chargetwin") -> None:
        self.announced: dict[str, dict[int, str]] = {}  # charger -> version -> state digest
        self.conflicts: list[str] = []
        self.inversions = 0  # a lower version announced after a higher one (order of arrival)
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()
        parts = urlsplit(broker_url)
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"scale-watch-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(
            f"{prefix}/chargers/+/shadow/update/documents", qos=1
        )
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        charger = message.topic.split("/")[2]
        try:
            current = json.loads(message.payload)["current"]
            version = int(current["version"])
        except (ValueError, KeyError, TypeError):
            return
        digest = hashlib.sha256(
            json.dumps(current.get("state"), sort_keys=True).encode()
        ).hexdigest()
        with self._lock:
            seen = self.announced.setdefault(charger, {})
            if version in seen and seen[version] != digest:
                self.conflicts.append(f"{charger} v{version}")
            seen[version] = digest
            if version < self._last.get(charger, 0):
                self.inversions += 1
            self._last[charger] = max(version, self._last.get(charger, 0))

    def highest(self) -> dict[str, int]:
        with self._lock:
            return {c: max(v) for c, v in self.announced.items() if v}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# --- the scenario -----------------------------------------------------------------------------
@dataclass
class Options:
    chargers: int = 500
    meter_interval: int = 10
    load_s: float = 30.0  # before the first kill, and between kills: load_s / 3
    kills: tuple[str, ...] = KINDS
    haproxy: bool = True
    campaign_concurrency: int = 5
    settle_s: float = 90.0
    seed: int = 7


@dataclass
class Results:
    chargers: int = 0
    balancer: str = ""
    restarts: dict[str, float] = field(default_factory=dict)  # process -> seconds to serve
    acked: int = 0
    acked_meter: int = 0
    missing_meter: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    shadow_wrong: dict[str, str] = field(default_factory=dict)
    versions_fell: list[str] = field(default_factory=list)
    version_conflicts: list[str] = field(default_factory=list)
    stored_below_announced: list[str] = field(default_factory=list)
    inversions: int = 0
    commands: list[tuple[str, str, str, int, str]] = field(default_factory=list)
    bridges_seen: set[str] = field(default_factory=set)
    campaign: dict[str, Any] = field(default_factory=dict)
    # kind -> (campaign state, chargers installed) when a process of that kind was killed
    campaign_at_kill: dict[str, tuple[str, int]] = field(default_factory=dict)
    fleet_leader_killed: bool = False
    campaign_targets: int = 0  # chargers of the campaign's model in the fleet
    campaign_chargers: int = 0  # chargers the campaign took
    firmware_wrong: list[str] = field(default_factory=list)
    load_rate: float = 0.0  # calls acknowledged per second before the kills
    latency_ms: tuple[float, float] = (0.0, 0.0)  # median, p95 before the kills
    # action -> (calls, median ms, p95 ms) from the boots to the first kill
    by_action: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # kind -> CPU seconds per second
    sessions: int = 0
    charger_errors: int = 0
    failed_calls: int = 0
    elapsed: float = 0.0
    load_average: tuple[float, float] = (0.0, 0.0)  # at start, at the end


async def until(
    what: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await what()
        if check(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.5)


async def register(api: httpx.AsyncClient, ids: list[str]) -> None:
    semaphore = asyncio.Semaphore(8)

    async def one(charger_id: str) -> None:
        async with semaphore:
            answer = await api.post("/chargers", json={"id": charger_id, "password": PASSWORD})
            if answer.status_code not in (201, 409):
                raise RuntimeError(f"registering {charger_id}: {answer.status_code} {answer.text}")

    await asyncio.gather(*(one(i) for i in ids))


async def shadows(api: httpx.AsyncClient, ids: list[str]) -> dict[str, dict[str, Any]]:
    semaphore = asyncio.Semaphore(8)
    out: dict[str, dict[str, Any]] = {}

    async def one(charger_id: str) -> None:
        async with semaphore:
            for _ in range(3):
                with contextlib.suppress(httpx.HTTPError):
                    answer = await api.get(f"/chargers/{charger_id}/shadow")
                    if answer.status_code == 200:
                        out[charger_id] = answer.json()
                        return
                await asyncio.sleep(0.5)

    await asyncio.gather(*(one(i) for i in ids))
    return out


def shadow_problem(document: dict[str, Any] | None, ledger: Ledger, charger_id: str) -> str:
    """What differs between a shadow and the charger's ledger; "" when nothing."""
    if document is None:
        return "no shadow"
    reported = document.get("state", {}).get("reported", {})
    problems = []
    for connector, (status, error) in sorted(ledger.status.get(charger_id, {}).items()):
        held = reported.get("connectors", {}).get(connector, {})
        maybe = ledger.unanswered.get(charger_id, {}).get(connector, [])
        if (held.get("status"), held.get("errorCode")) not in [(status, error), *maybe]:
            problems.append(
                f"connector {connector}: {held.get('status')}/{held.get('errorCode')} "
                f"!= {status}/{error}"
            )
    firmware = ledger.firmware.get(charger_id)
    if firmware is not None and reported.get("firmware", {}).get("version") != firmware:
        problems.append(f"firmware {reported.get('firmware', {}).get('version')} != {firmware}")
    return "; ".join(problems)


def recorded_meter(influx_url: str) -> dict[str, set[tuple[str, int]]]:
    query = (
        'SELECT "value" FROM "meter_values" WHERE "measurand" = '
        '\'Energy.Active.Import.Register\' GROUP BY "charger", "connector"'
    )
    answer = httpx.get(
        f"{influx_url}/query",
        params={"db": "chargetwin", "q": query, "epoch": "ns"},
        timeout=60,
    )
    out: dict[str, set[tuple[str, int]]] = {}
    for result in answer.json().get("results", []):
        for series in result.get("series", []) or []:
            tags = series.get("tags", {})
            points = out.setdefault(tags.get("charger", ""), set())
            # To the nearest millisecond: the recorder goes through a float (to_ns), so
            # "...017Z" may be stored as ...016999936 ns.
            points.update(
                (tags.get("connector", ""), (int(row[0]) + 500_000) // 1_000_000)
                for row in series["values"]
            )
    return out


class VersionPoller:
    """Reads a sample of shadows through the balanced API every second: versions only rise."""

    def __init__(self, api: httpx.AsyncClient, ids: list[str]) -> None:
        self.api, self.ids = api, ids
        self.last: dict[str, int] = {}
        self.fell: list[str] = []
        self.reads = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for charger_id, document in (await shadows(self.api, self.ids)).items():
                self.observe(charger_id, int(document.get("version", 0)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()

    def observe(self, charger_id: str, version: int) -> None:
        self.reads += 1
        before = self.last.get(charger_id, 0)
        if version < before:
            self.fell.append(f"{charger_id}: {before} -> {version}")
        self.last[charger_id] = max(before, version)


async def run(root: Path, options: Options, say: Callable[[str], None] = print) -> Results:
    """The whole scenario on a fresh topology under ``root``; every check's findings."""
    results = Results(chargers=options.chargers, load_average=(os.getloadavg()[0], 0.0))
    began = time.monotonic()
    async with topology(root, haproxy=options.haproxy) as topo:
        assert topo.balancer is not None and topo.broker is not None and topo.influx is not None
        results.balancer = topo.balancer.kind
        say(f"topology up in {time.monotonic() - began:.0f} s ({results.balancer})")
        headers = {"Authorization": f"Bearer {ADMIN}"}
        api = httpx.AsyncClient(base_url=topo.api_url, headers=headers, timeout=60)
        watch = VersionWatch(topo.broker.url)
        sim = SimulatorOptions(
            url=topo.ocpp_url,
            chargers=options.chargers,
            id_prefix="SO-",  # with the seed: the same models, so the same campaign, each run
            password=PASSWORD,
            meter_interval_s=options.meter_interval,
            heartbeat_interval_s=60,
            sessions=SessionTiming(
                idle_s=(2.0, 10.0), duration_s=(15.0, 40.0), plug_delay_s=0.5, unplug_delay_s=1.0
            ),
            seed=options.seed,
            ramp_s=min(30.0, options.chargers / 25),
            reconnect_min_s=0.5,
            reconnect_max_s=5.0,
            firmware_install_s=3.0,
            response_timeout_s=20.0,
        )
        fleet = Fleet(sim)
        ledger = Ledger()
        for charger in fleet.chargers:
            ledger.instrument(charger)
        ids = [c.id for c in fleet.chargers]
        stop_fleet, stop_poll = asyncio.Event(), asyncio.Event()
        fleet_task: asyncio.Task[None] | None = None
        poll_task: asyncio.Task[None] | None = None
        try:
            await register(api, ids)
            fleet_task = asyncio.create_task(fleet.run(stop_fleet), name="scale-out-fleet")
            await fleet.wait_for(options.chargers, timeout=120 + options.chargers / 5)
            say(f"{options.chargers} chargers booted through the balancer")
            poller = VersionPoller(api, ids[:: max(1, len(ids) // 40)])
            poll_task = asyncio.create_task(poller.run(stop_poll), name="scale-out-versions")

            # The load the topology carries, measured before any fault.
            cpu0 = {p.name: p.cpu_seconds() for p in topo.processes}
            acked0, lat0, t0 = ledger.acked, len(ledger.latencies), time.monotonic()
            await asyncio.sleep(options.load_s)
            span = time.monotonic() - t0
            results.load_rate = (ledger.acked - acked0) / span
            window = ledger.latencies[lat0:]
            results.latency_ms = (median(window) * 1000, percentile(window, 95) * 1000)
            results.by_action = {
                action: (len(v), median(v) * 1000, percentile(v, 95) * 1000)
                for action, v in sorted(ledger.by_action.items())
            }
            for p in topo.processes:
                results.cpu[p.kind] = (
                    results.cpu.get(p.kind, 0.0) + (p.cpu_seconds() - cpu0[p.name]) / span
                )
            say(
                f"load: {results.load_rate:.0f} calls/s acknowledged, CALL->CALLRESULT median "
                f"{results.latency_ms[0]:.0f} ms, p95 {results.latency_ms[1]:.0f} ms"
            )

            # The campaign, started right before the kills (the fleet leader's first).
            targets = [
                c.id
                for c in fleet.chargers
                if (c.model.vendor, c.model.model) == (CAMPAIGN_VENDOR, CAMPAIGN_MODEL)
            ]
            results.campaign_targets = len(targets)
            campaign_id = await start_campaign(api, targets, options.campaign_concurrency)
            say(f"campaign {campaign_id} started on {len(targets)} chargers")

            async def campaign() -> dict[str, Any]:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = await api.get(f"/campaigns/{campaign_id}")
                    if answer.status_code == 200:
                        return dict(answer.json())
                return {}

            # kill -9, one process of each kind in turn.
            ledger.phase = "kills"
            for kind in options.kills:
                processes = topo.of(kind)
                victim = processes[0]
                if kind == "fleet":
                    victim = next((p for p in processes if p.leads()), processes[0])
                    results.fleet_leader_killed = victim.leads()
                now = await campaign()
                results.campaign_at_kill[kind] = (
                    str(now.get("state")),
                    int(now.get("counts", {}).get("installed", 0)),
                )
                took = await asyncio.to_thread(topo.restart, victim)
                results.restarts[victim.name] = took
                say(f"kill -9 {victim.name}: serving again after {took:.1f} s")
                await asyncio.sleep(options.load_s / 3)
            ledger.phase = "after"

            # The campaign completes.

            results.campaign = await until(
                campaign,
                lambda c: c.get("state") in ("completed", "cancelled"),
                options.settle_s + len(targets) * 2,
            )
            say(f"campaign: {results.campaign.get('state')} {results.campaign.get('counts')}")
            # The chargers the campaign took (those whose shadow showed the old version
            # when it was created) are on the new version, on the charger itself.
            taken = await campaign_chargers(api, campaign_id)
            results.campaign_chargers = len(taken)
            results.firmware_wrong = [
                c.id for c in fleet.chargers if c.id in taken and c.firmware_version != NEW
            ]

            # The chargers of a killed bridge all went to the other one; some churn (a
            # quarter of the sockets dropped, as a mobile network does) brings chargers
            # back to it through the balancer's leastconn.
            churned = {c.id: c.connects for c in fleet.chargers[::4]}
            for charger in fleet.chargers[::4]:
                await charger.close()

            async def back() -> int:
                return sum(
                    fleet[i].connects > n and fleet[i].state == ChargerState.BOOTED
                    for i, n in churned.items()
                )

            await until(back, lambda n: n == len(churned), 60 + options.chargers / 5)
            await asyncio.sleep(2.0)  # their presence reaches the shadows
            # Commands reach chargers on either bridge, through either API process.
            results.commands = await commands(topo, fleet, ids, api)
            results.bridges_seen = {bridge for _, bridge, _, _, _ in results.commands}
            say(f"commands: {[(c, b, a, s) for c, b, a, s, _ in results.commands]}")
        finally:
            stop_fleet.set()
            if fleet_task is not None:
                await asyncio.gather(fleet_task, return_exceptions=True)
            stop_poll.set()
            if poll_task is not None:
                await asyncio.gather(poll_task, return_exceptions=True)
        results.acked = ledger.acked
        results.failed_calls = ledger.failed
        results.sessions = fleet.counts.sessions_started
        results.charger_errors = fleet.counts.errors

        # Every shadow equals what its charger last reported (the chargers have stopped).
        async def wrong() -> dict[str, str]:
            docs = await shadows(api, ids)
            found = {c: shadow_problem(docs.get(c), ledger, c) for c in ids}
            for charger_id, document in docs.items():
                poller.observe(charger_id, int(document.get("version", 0)))
            return {c: p for c, p in found.items() if p}

        results.shadow_wrong = await until(wrong, lambda w: not w, options.settle_s / 3)
        say(f"shadows differing from their charger: {len(results.shadow_wrong)}")

        # Every acknowledged MeterValues sample is in InfluxDB.
        influx_url = topo.influx.url
        acked_meter = sum(len(v) for v in ledger.meter.values())
        results.acked_meter = acked_meter

        async def missing() -> dict[str, list[tuple[str, int]]]:
            recorded = await asyncio.to_thread(recorded_meter, influx_url)
            return {
                c: sorted(samples - recorded.get(c, set()))
                for c, samples in ledger.meter.items()
                if samples - recorded.get(c, set())
            }

        results.missing_meter = await until(missing, lambda m: not m, options.settle_s / 3)
        say(
            f"MeterValues acknowledged: {acked_meter}, missing in InfluxDB: "
            f"{sum(len(v) for v in results.missing_meter.values())}"
        )

        # No shadow version went backwards.
        await asyncio.sleep(1.0)
        watch.close()
        final = await shadows(api, ids)
        results.versions_fell = poller.fell
        results.version_conflicts = watch.conflicts
        results.inversions = watch.inversions
        for charger_id, highest in watch.highest().items():
            stored = int(final.get(charger_id, {}).get("version", 0))
            if stored < highest:
                results.stored_below_announced.append(f"{charger_id}: {stored} < {highest}")
        await api.aclose()
        results.cpu = dict(sorted(results.cpu.items()))
    results.elapsed = time.monotonic() - began
    results.load_average = (results.load_average[0], os.getloadavg()[0])
    return results


async def start_campaign(api: httpx.AsyncClient, targets: list[str], concurrency: int) -> str:
    uploaded = await api.post(
        "/firmware",
        data={"vendor": CAMPAIGN_VENDOR, "model": CAMPAIGN_MODEL, "version": NEW},
        files={"file": ("fw.bin", IMAGE, "application/octet-stream")},
    )
    if uploaded.status_code != 201:
        raise RuntimeError(f"firmware upload: {uploaded.status_code} {uploaded.text}")

    async def on_old() -> int:
        docs = await shadows(api, targets)
        return sum(
            d.get("state", {}).get("reported", {}).get("firmware", {}).get("version") == OLD
            for d in docs.values()
        )

    await until(on_old, lambda n: n == len(targets), 60)
    created = await api.post(
        "/campaigns",
        json={
            "name": "scale-out",
            "firmwareId": uploaded.json()["id"],
            "target": {"vendor": CAMPAIGN_VENDOR, "model": CAMPAIGN_MODEL, "firmwareVersion": OLD},
            "canary": 1,
            "waves": ["50%"],
            "successThreshold": 100,
            "failureThreshold": 100,
            "maxConcurrent": concurrency,
            "retries": 3,
            "onlyIdle": False,
        },
    )
    if created.status_code != 201:
        raise RuntimeError(f"campaign: {created.status_code} {created.text}")
    return str(created.json()["id"])


async def campaign_chargers(api: httpx.AsyncClient, campaign_id: str) -> set[str]:
    out: set[str] = set()
    offset = 0
    while True:
        answer = await api.get(
            f"/campaigns/{campaign_id}/chargers", params={"limit": 500, "offset": offset}
        )
        items = answer.json().get("items", []) if answer.status_code == 200 else []
        out.update(str(item["id"]) for item in items if item.get("phase", 0) >= 0)
        if len(items) < 500:
            return out
        offset += len(items)


async def commands(
    topo: Topology, fleet: Fleet, ids: list[str], api: httpx.AsyncClient
) -> list[tuple[str, str, str, int, str]]:
    """TriggerMessage Heartbeat to two chargers of every bridge, one through each API
    process; (charger, bridge, api, HTTP status, what the charger received)."""
    apis = topo.of("api")
    docs = await shadows(api, ids)
    by_bridge: dict[str, list[str]] = {}
    for charger_id, document in docs.items():
        connection = document.get("state", {}).get("reported", {}).get("connection", {})
        if connection.get("online") and connection.get("bridge"):
            by_bridge.setdefault(str(connection["bridge"]), []).append(charger_id)
    out = []
    for bridge, chargers in sorted(by_bridge.items()):
        for charger_id, process in zip(chargers, apis, strict=False):
            url = f"http://127.0.0.1:{process.port}/api/v1"
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
            ) as client:
                before = sum(a == "TriggerMessage" for a, _ in fleet[charger_id].received)
                answer = await client.post(
                    f"/chargers/{charger_id}/commands/trigger",
                    json={"requestedMessage": "Heartbeat"},
                )
                after = sum(a == "TriggerMessage" for a, _ in fleet[charger_id].received)
                got = "TriggerMessage" if after > before else "nothing"
                out.append((charger_id, bridge, process.name, answer.status_code, got))
    return out


# --- the report -------------------------------------------------------------------------------
def report(r: Results, options: Options) -> str:
    def count(d: dict[str, Any]) -> int:
        return sum(len(v) if isinstance(v, list | set) else 1 for v in d.values())

    lines = [
        f"machine: {describe()}",
        f"balancer: {r.balancer}; chargers: {r.chargers}, MeterValues every "
        f"{options.meter_interval} s while charging, sessions 15-40 s, idle 2-10 s",
        f"load average (1 min): {r.load_average[0]:.1f} at start, {r.load_average[1]:.1f} "
        "at the end",
        "",
        f"before the kills ({options.load_s:g} s): {r.load_rate:.1f} calls/s acknowledged; "
        f"CALL -> CALLRESULT median {r.latency_ms[0]:.0f} ms, p95 {r.latency_ms[1]:.0f} ms",
        "per action since the boots (calls, median / p95 ms): "
        + ", ".join(f"{a} {n} {m:.0f}/{p:.0f}" for a, (n, m, p) in r.by_action.items()),
        "CPU (cores busy) per kind of process: "
        + ", ".join(f"{k} {v:.2f}" for k, v in r.cpu.items()),
        "",
        "kill -9 and restart (seconds until serving again): "
        + ", ".join(f"{k} {v:.1f}" for k, v in r.restarts.items()),
        f"calls acknowledged: {r.acked:,}; failed (no answer, lost socket): {r.failed_calls:,}; "
        f"sessions started: {r.sessions:,}; charger errors: {r.charger_errors}",
        f"MeterValues samples acknowledged: {r.acked_meter:,}; missing in InfluxDB: "
        f"{count(r.missing_meter)}",
        f"shadows differing from their charger's last report: {len(r.shadow_wrong)}",
        f"versions read that fell: {len(r.versions_fell)}; one version announced with two "
        f"states: {len(r.version_conflicts)}; stored below announced: "
        f"{len(r.stored_below_announced)}; announcements out of order: {r.inversions}",
        f"commands: {len([c for c in r.commands if c[3] == 200 and c[4] != 'nothing'])} of "
        f"{len(r.commands)} reached their charger, bridges: {sorted(r.bridges_seen)}",
        f"campaign: {r.campaign.get('state')} {r.campaign.get('counts')} of "
        f"{r.campaign_chargers} taken of {r.campaign_targets} of the model; taken and not on "
        f"{NEW}: {len(r.firmware_wrong)}; "
        + (
            "at each kill (state, installed): "
            + ", ".join(f"{k} {v[0]} {v[1]}" for k, v in r.campaign_at_kill.items())
            + f"; the fleet process killed was the leader: {r.fleet_leader_killed}"
            if r.campaign_at_kill
            else "no kills"
        ),
        f"took {r.elapsed:.0f} s",
    ]
    details = {
        "missing MeterValues": list(r.missing_meter.items())[:5],
        "shadows wrong": list(r.shadow_wrong.items())[:5],
        "versions fell": r.versions_fell[:5],
        "version conflicts": r.version_conflicts[:5],
        "stored below announced": r.stored_below_announced[:5],
        "firmware wrong": r.firmware_wrong[:5],
    }
    for name, items in details.items():
        if items:
            lines.append(f"  {name} (first 5): {items}")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "proxy":
        port, backends = int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(proxy(port, backends))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chargers", type=int, default=500)
    parser.add_argument("--meter-interval", type=int, default=10, help="seconds (charging)")
    parser.add_argument("--load", type=float, default=30.0, help="seconds measured before kills")
    parser.add_argument("--no-kills", action="store_true", help="measure the load only")
    parser.add_argument(
        "--balancer",
        choices=("haproxy", "asyncio"),
        default="haproxy",
        help="asyncio: this module's own balancer (used anyway when haproxy is missing)",
    )
    parser.add_argument("--campaign-concurrency", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    args = parser.parse_args()
    options = Options(
        chargers=args.chargers,
        meter_interval=args.meter_interval,
        load_s=args.load,
        kills=() if args.no_kills else KINDS,
        haproxy=args.balancer == "haproxy",
        campaign_concurrency=args.campaign_concurrency,
    )
    root = Path(tempfile.mkdtemp(prefix="scale-out-"))
    print(f"machine: {describe()}\nload average: {os.getloadavg()[0]:.1f}\nfolder: {root}")
    try:
        results = asyncio.run(run(root, options, lambda line: print(line, flush=True)))
        print()
        print(report(results, options))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
