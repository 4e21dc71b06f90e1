"""Faults: messages acknowledged to chargers before, recorded after, and presence, per fault.

    .venv/bin/python -m bench.faults [--chargers 20] [--seconds 10] [--only NAME ...]

Each scenario starts ``chargetwin up`` as a child process on a fresh data dir (the
installed ``chargetwin``, or the source tree on ``PYTHONPATH``: that is how to measure
another version with the same load), with
``--mqtt-url`` to a private Mosquitto (production settings of ``mosquitto/``, see
:mod:`bench.brokers`) and ``--auto-register``; simulated chargers (raw OCPP-J 1.6 clients
over real websockets, one call in flight each, as OCPP-J 1.6 section 4.1.1 asks) send
MeterValues and StatusNotifications; halfway through, the fault:

- ``none``: no fault (the baseline of this run);
- ``broker``: Mosquitto restarts (SIGTERM, 1 s down, started again) with persistence,
  ``--broker-restarts`` times (3) with 2 s of load between them;
- ``broker-nopersist``: the same without persistence: every session and retained message
  is gone;
- ``broker-nopersist-split``: the same with one process per component (``chargetwin twin``,
  ``rules``, ``api``, ``bridge``), as ``docker-compose.yml`` runs them, and a recorder
  that comes back 1.5 s after the broker (stopped with SIGSTOP meanwhile, as on a busy
  host);
- ``kill9``: ``kill -9`` of the whole platform, restarted at once on the same data dir;
  two chargers stay away afterwards (their presence must turn offline);
- ``kill9-embedded``: the same with the embedded broker (no ``--mqtt-url``), which dies
  with the platform;
- ``influx``: the platform records into a private ``influxd`` (Debian's package), which
  restarts (2 s down).

A charger resends a message that got no CALLRESULT (timeout, CALLERROR, lost socket),
as a charger does. Acknowledged: the messages that got a CALLRESULT. Recorded: found,
after the load stops and the recorder settles, in the time series (MeterValues carry
their sequence number as value, statuses as ``info``) and, for statuses, the last
acknowledged one in the shadow. Lost = acknowledged and not recorded. Presence: seconds
from the end of the (last) fault until ``GET /chargers`` shows every connected charger online
and every absent one offline (``> 5`` when still wrong after 5 s, with how many).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from bench.brokers import _SETTINGS as BROKER_SETTINGS
from bench.machine import describe

ADMIN = "ct_bench_admin_" + uuid.uuid4().hex
PASSWORD = "bench-faults-charger-password"  # auto-registration stores it at first connect
PRESENCE_LIMIT = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


# --- the servers ---------------------------------------------------------------------------
class Broker:
    """A private Mosquitto that restarts on its port, with or without persistence."""

    def __init__(self, folder: Path, *, persistence: bool) -> None:
        self.port = free_port()
        settings = BROKER_SETTINGS.replace(
            "persistence false",
            f"persistence {'true' if persistence else 'false'}\npersistence_location {folder}/",
        )
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n{settings}user {getpass.getuser()}\n"
        )
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config)], stderr=subprocess.DEVNULL
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # Mosquitto saves its persistence file on SIGTERM
            self.proc.wait(10)
            self.proc = None


INFLUX_CONFIG = """reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
  max-row-limit = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""


class Influx:
    """A private influxd whose data survives its restarts."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("influxd")
        if binary is None:
            raise RuntimeError("influxd not found (Debian package influxdb)")
        self.binary, self.root, self.port = binary, root, free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "influxdb.conf"
        self.config.write_text(INFLUX_CONFIG.format(rpc=free_port(), http=self.port, root=root))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.root / "influxd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-config", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ping", timeout=1).status_code == 204:
                    return
            time.sleep(0.05)
        raise RuntimeError("influxd did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None


def failures(log_path: Path, offset: int) -> list[str]:
    """The runner's "COMPONENT stopped: ERROR" lines written after ``offset``."""
    with log_path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    return [line for line in lines if "ERROR   chargetwin:" in line and " stopped: " in line]


class Platform:
    """``chargetwin up`` (or one process per component) as child processes; restartable on
    the same ports and data dir."""

    def __init__(
        self,
        data_dir: Path,
        mqtt_url: str | None,
        influx_url: str | None,
        commands: tuple[str, ...] = ("up",),
    ) -> None:
        self.data_dir = data_dir
        self.commands = commands
        self.ocpp_port, self.api_port = free_port(), free_port()
        # Through the environment: every command takes the settings it uses from there,
        # while its options are only the ones it uses (`chargetwin rules` has no --ocpp-port).
        self.settings = {
            "CHARGETWIN_OCPP_PORT": str(self.ocpp_port),
            "CHARGETWIN_API_PORT": str(self.api_port),
            "CHARGETWIN_DATA_DIR": str(data_dir),
            "CHARGETWIN_AUTO_REGISTER": "true",
            "CHARGETWIN_LOG_LEVEL": "WARNING",
        }
        if mqtt_url:
            self.settings["CHARGETWIN_MQTT_URL"] = mqtt_url
        else:
            self.settings["CHARGETWIN_MQTT_PORT"] = str(free_port())
        if influx_url:
            self.settings["CHARGETWIN_INFLUX_URL"] = influx_url
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1"

    def start(self, timeout: float = 120.0) -> float:
        """Start, again while it exits at once (a port still held); returns the seconds."""
        env = {**os.environ, **self.settings, "CHARGETWIN_ADMIN_TOKEN": ADMIN}
        began = time.monotonic()
        log_path = self.data_dir / "platform.log"
        while True:
            offset = log_path.stat().st_size if log_path.exists() else 0
            for command in self.commands:
                with log_path.open("ab") as log:
                    self.procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "launch.cli", command],
                            cwd=self.data_dir,
                            env=env,
                            stdout=log,
                            stderr=log,
                        )
                    )
                if len(self.commands) > 1:
                    time.sleep(0.5)
            while self._running() and time.monotonic() - began < timeout:
                if listening(self.ocpp_port) and listening(self.api_port):
                    took = time.monotonic() - began
                    time.sleep(2.0)  # a component that fails at start says so in its log
                    failed = failures(log_path, offset)
                    if not failed and self._running():
                        return took
                    print(f"chargetwin: {failed[:1]}; starting again", file=sys.stderr)
                    break
                time.sleep(0.1)
            self.kill9()
            if time.monotonic() - began >= timeout:
                raise RuntimeError(f"chargetwin did not start in {timeout:g} s\n{self.log_tail()}")
            time.sleep(0.5)  # it exited: try again

    def signal(self, command: str, signum: signal.Signals) -> None:
        """Send ``signum`` to the process of ``command`` (one process per component)."""
        self.procs[self.commands.index(command)].send_signal(signum)

    def _running(self) -> bool:
        return all(proc.poll() is None for proc in self.procs)

    def kill9(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self.procs = []

    def stop(self) -> None:
        for proc in reversed(self.procs):  # the bridge first, as `chargetwin up` does
            proc.terminate()
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs = []

    def log_tail(self, lines: int = 15) -> str:
        text = (self.data_dir / "platform.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


# --- the chargers --------------------------------------------------------------------------
def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_ANSWERS: dict[str, dict[str, Any]] = {
    "GetConfiguration": {"configurationKey": []},
    "ChangeConfiguration": {"status": "Accepted"},
    "ChangeAvailability": {"status": "Accepted"},
    "TriggerMessage": {"status": "Accepted"},
}


@dataclass
class Charger:
    """A charger: one call in flight; resends what got no CALLRESULT."""

    charger_id: str
    ocpp_url: str
    acked_meter: set[int] = field(default_factory=set)
    acked_status: dict[int, float] = field(default_factory=dict)  # seq -> timestamp
    last_status: str | None = None  # info of the last status sent, if acknowledged
    resent: int = 0
    connected: bool = False
    ws: ClientConnection | None = None
    _answers: dict[str, asyncio.Future[list[Any]]] = field(default_factory=dict)

    async def _connect(self, stop: asyncio.Event) -> None:
        token = base64.b64encode(f"{self.charger_id}:{PASSWORD}".encode()).decode()
        while not stop.is_set():
            try:
                self.ws = await connect(
                    f"{self.ocpp_url}/{self.charger_id}",
                    subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                    additional_headers={"Authorization": f"Basic {token}"},
                    open_timeout=5,
                )
                self._reader = asyncio.create_task(self._read(self.ws))
                boot = {"chargePointVendor": "Bench", "chargePointModel": "Faults"}
                answer = await self._call("BootNotification", boot, 10)
                if answer[0] == 3:
                    self.connected = True
                    return
            except (OSError, InvalidHandshake, InvalidStatus, ConnectionClosed, TimeoutError):
                pass
            await self._drop()
            await asyncio.sleep(0.2)

    async def _drop(self) -> None:
        self.connected = False
        ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close()
            with contextlib.suppress(Exception):
                await self._reader

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                message = json.loads(frame)
                if message[0] == 2:
                    answer = _ANSWERS.get(message[2], {})
                    await ws.send(json.dumps([3, message[1], answer]))
                    continue
                future = self._answers.pop(message[1], None)
                if future is not None and not future.done():
                    future.set_result(message)
        for future in self._answers.values():
            if not future.done():
                future.set_exception(ConnectionClosed(None, None))
                future.exception()  # its caller may have timed out: no "never retrieved"
        self._answers.clear()

    async def _call(self, action: str, payload: dict[str, Any], timeout: float) -> list[Any]:
        assert self.ws is not None
        unique_id = uuid.uuid4().hex[:16]
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._answers[unique_id] = future
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        async with asyncio.timeout(timeout):
            return await future

    async def run(self, stop: asyncio.Event, away: asyncio.Event) -> None:
        """Send until ``stop``; while ``away`` is set, stay disconnected."""
        seq = 0
        while not stop.is_set():
            if away.is_set():
                await self._drop()
                await asyncio.sleep(0.1)
                continue
            if self.ws is None or not self.connected:
                await self._connect(stop)
                continue
            seq += 1
            at = time.time()
            status = seq % 5 == 0
            if status:
                action = "StatusNotification"
                payload: dict[str, Any] = {
                    "connectorId": 1,
                    "errorCode": "NoError",
                    "status": "Charging" if seq % 10 else "SuspendedEV",
                    "timestamp": iso(at),
                    "info": f"s{seq}",
                }
            else:
                action = "MeterValues"
                payload = {
                    "connectorId": 1,
                    "meterValue": [{"timestamp": iso(at), "sampledValue": [{"value": str(seq)}]}],
                }
            while not stop.is_set():  # until answered: a charger does not drop it
                try:
                    answer = await self._call(action, payload, 15)
                except (ConnectionClosed, TimeoutError, OSError):
                    self.resent += 1
                    await self._drop()
                    await self._connect(stop)
                    continue
                if answer[0] == 3:
                    if status:
                        self.acked_status[seq] = at
                        self.last_status = payload["info"]
                    else:
                        self.acked_meter.add(seq)
                    break
                self.resent += 1  # CALLERROR: not stored; send it again
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.005)
        await self._drop()


# --- what was recorded -----------------------------------------------------------------------
Recorded = tuple[dict[str, set[int]], dict[str, set[int]]]  # per charger: meter seqs, statuses


def recorded_sqlite(data_dir: Path) -> Recorded:
    meter: dict[str, set[int]] = {}
    status: dict[str, set[int]] = {}
    path = data_dir / "series.db"
    if not path.exists():
        return meter, status
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT s.measurement, s.tags, p.num, p.str FROM samples p "
            "JOIN series s ON s.id = p.series_id "
            "WHERE (p.measurement = 'meter_values' AND p.field = 'value') "
            "OR (p.measurement = 'connector_status' AND p.field = 'info')"
        ).fetchall()
    finally:
        conn.close()
    for measurement, tags, num, text in rows:
        charger = json.loads(tags).get("charger", "")
        if measurement == "meter_values" and num is not None:
            meter.setdefault(charger, set()).add(int(num))
        elif text and text.startswith("s"):
            status.setdefault(charger, set()).add(int(text[1:]))
    return meter, status


def recorded_influx(url: str) -> Recorded:
    meter: dict[str, set[int]] = {}
    status: dict[str, set[int]] = {}
    for measurement, column, into in (
        ("meter_values", "value", meter),
        ("connector_status", "info", status),
    ):
        query = f'SELECT "{column}" FROM "{measurement}" GROUP BY "charger"'
        answer = httpx.get(f"{url}/query", params={"db": "chargetwin", "q": query}, timeout=30)
        for result in answer.json().get("results", []):
            for series in result.get("series", []) or []:
                charger = series.get("tags", {}).get("charger", "")
                for _, value in series["values"]:
                    if isinstance(value, int | float):
                        into.setdefault(charger, set()).add(int(value))
                    elif isinstance(value, str) and value.startswith("s"):
                        into.setdefault(charger, set()).add(int(value[1:]))
    return meter, status


# --- one scenario ----------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    acked_meter: int = 0
    lost_meter: int = 0
    acked_status: int = 0
    lost_status: int = 0
    shadow_wrong: int = 0
    resent: int = 0
    presence: str = "-"
    note: str = ""


async def presence_right(api: httpx.AsyncClient, expected: dict[str, bool], since: float) -> str:
    """Seconds from ``since`` until every charger's ``online`` is as expected."""
    wrong = len(expected)
    while time.monotonic() - since <= PRESENCE_LIMIT:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            page = (await api.get("/chargers", params={"limit": 1000})).json()
            online = {item["id"]: item["online"] for item in page["items"]}
            wrong = sum(online.get(c) is not want for c, want in expected.items())
            if wrong == 0:
                return f"{time.monotonic() - since:.1f} s"
        await asyncio.sleep(0.2)
    return f"> 5 s ({wrong} wrong)"


async def settle(read: Callable[[], Recorded], chargers: list[Charger]) -> Recorded:
    """Read the store until it holds every acknowledged message or stops growing."""
    wanted = sum(len(c.acked_meter) + len(c.acked_status) for c in chargers)
    last, still = -1, 0.0
    while True:
        meter, status = await asyncio.to_thread(read)
        have = sum(len(v) for v in meter.values()) + sum(len(v) for v in status.values())
        if have >= wanted:
            return meter, status
        if have == last:
            still += 0.5
            if still >= 5:
                return meter, status
        else:
            last, still = have, 0.0
        await asyncio.sleep(0.5)


SPLIT = ("twin", "rules", "api", "bridge")  # one process each, as docker-compose.yml runs them


@dataclass(frozen=True)
class Scenario:
    name: str
    broker: str | None  # "persist", "volatile" or None (embedded)
    influx: bool = False
    commands: tuple[str, ...] = ("up",)


SCENARIOS = (
    Scenario("none", "volatile"),
    Scenario("broker", "persist"),
    Scenario("broker-nopersist", "volatile"),
    Scenario("broker-nopersist-split", "volatile", commands=SPLIT),
    Scenario("kill9", "volatile"),
    Scenario("kill9-embedded", None),
    Scenario("influx", "volatile", influx=True),
)


@contextlib.asynccontextmanager
async def servers(
    scenario: Scenario, root: Path
) -> AsyncIterator[tuple[Broker | None, Influx | None]]:
    broker = influx = None
    try:
        if scenario.broker is not None:
            (root / "broker").mkdir()
            broker = Broker(root / "broker", persistence=scenario.broker == "persist")
            broker.start()
        if scenario.influx:
            influx = Influx(root / "influx")
            influx.start()
        yield broker, influx
    finally:
        if influx is not None:
            influx.stop()
        if broker is not None:
            broker.stop()


async def run_scenario(scenario: Scenario, args: argparse.Namespace) -> Result:
    result = Result(scenario.name)
    with tempfile.TemporaryDirectory(prefix=f"bench-faults-{scenario.name}-") as tmp:
        root = Path(tmp)
        async with servers(scenario, root) as (broker, influx):
            data = root / "data"
            data.mkdir()
            platform = Platform(
                data,
                broker.url if broker else None,
                influx.url if influx else None,
                scenario.commands,
            )
            await asyncio.to_thread(platform.start)
            ocpp_url = f"ws://127.0.0.1:{platform.ocpp_port}/ocpp"
            chargers = [
                Charger(f"F{i:03d}-{uuid.uuid4().hex[:4]}", ocpp_url) for i in range(args.chargers)
            ]
            stop, stay, away = asyncio.Event(), asyncio.Event(), asyncio.Event()
            tasks = [
                asyncio.create_task(c.run(stop, away if i < 2 else stay))
                for i, c in enumerate(chargers)
            ]
            api = httpx.AsyncClient(
                base_url=platform.api, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
            )
            try:
                await asyncio.sleep(args.seconds / 2)
                notes: list[str] = []
                fault_over = await inject(
                    scenario, platform, broker, influx, away, notes, args.broker_restarts
                )
                result.note = "; ".join(notes)
                expected = {
                    c.charger_id: not (away.is_set() and i < 2) for i, c in enumerate(chargers)
                }
                result.presence = await presence_right(api, expected, fault_over)
                await asyncio.sleep(max(0.0, args.seconds / 2 - (time.monotonic() - fault_over)))
                stop.set()
                await asyncio.gather(*tasks)
                read = (
                    (lambda: recorded_influx(influx.url))
                    if influx is not None
                    else (lambda: recorded_sqlite(data))
                )
                meter, status = await settle(read, chargers)
                for c in chargers:
                    result.acked_meter += len(c.acked_meter)
                    result.lost_meter += len(c.acked_meter - meter.get(c.charger_id, set()))
                    result.acked_status += len(c.acked_status)
                    result.lost_status += len(set(c.acked_status) - status.get(c.charger_id, set()))
                    result.resent += c.resent
                    if c.last_status is not None:
                        shadow = (await api.get(f"/chargers/{c.charger_id}/shadow")).json()
                        reported = shadow.get("state", {}).get("reported", {})
                        info = reported.get("connectors", {}).get("1", {}).get("info")
                        result.shadow_wrong += info != c.last_status
            except Exception as exc:  # a scenario that breaks says so and the rest run
                result.note = f"{type(exc).__name__}: {exc}"
                print(platform.log_tail(), file=sys.stderr)
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                await api.aclose()
                await asyncio.to_thread(platform.stop)
    return result


async def inject(
    scenario: Scenario,
    platform: Platform,
    broker: Broker | None,
    influx: Influx | None,
    away: asyncio.Event,
    notes: list[str],
    restarts: int,
) -> float:
    """The fault; returns when it ended (monotonic)."""
    if scenario.name.startswith("broker") and broker is not None:
        for restart in range(restarts):
            if restart:
                await asyncio.sleep(2.0)  # load between restarts
            slow_recorder = "rules" in platform.commands
            if slow_recorder:  # its host is busy: it comes back 1.5 s after the broker
                platform.signal("rules", signal.SIGSTOP)
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(broker.start)
            if slow_recorder:
                await asyncio.sleep(1.5)
                platform.signal("rules", signal.SIGCONT)
    elif scenario.name.startswith("kill9"):
        away.set()  # two chargers will not come back
        platform.kill9()
        took = await asyncio.to_thread(platform.start)
        notes.append(f"restarted in {took:.1f} s")
    elif scenario.name == "influx" and influx is not None:
        await asyncio.to_thread(influx.stop)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(influx.start)
    return time.monotonic()


def report(results: list[Result]) -> None:
    print(
        f"\n{'fault':<18}{'MeterValues':>12}{'lost':>6}{'statuses':>10}{'lost':>6}"
        f"{'shadow wrong':>14}{'resent':>8}  presence right after"
    )
    for r in results:
        print(
            f"{r.name:<18}{r.acked_meter:>12,}{r.lost_meter:>6}{r.acked_status:>10,}"
            f"{r.lost_status:>6}{r.shadow_wrong:>14}{r.resent:>8}  {r.presence}"
            + (f"  [{r.note}]" if r.note else "")
        )
    print(
        "\nMeterValues / statuses: acknowledged to the chargers (CALLRESULT); lost: "
        "acknowledged and not in the time series. shadow wrong: chargers whose shadow lacks "
        "their last acknowledged status. resent: calls sent again after no answer or a "
        "CALLERROR."
    )


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {describe()}")
    print(f"load average: {os.getloadavg()[0]:.1f} (1 min) at start")
    print(
        f"load: {args.chargers} chargers, one call in flight each (MeterValues, every 5th a "
        f"StatusNotification), {args.seconds:g} s per scenario, the fault halfway"
    )
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    results = []
    for scenario in chosen:
        if scenario.influx and shutil.which("influxd") is None:
            results.append(Result(scenario.name, note="skipped: influxd not installed"))
            continue
        started = time.monotonic()
        results.append(await run_scenario(scenario, args))
        print(f"{scenario.name}: done in {time.monotonic() - started:.0f} s", flush=True)
    report(results)
    print(f"load average: {os.getloadavg()[0]:.1f} (1 min) at the end")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chargers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", nargs="*", help="scenario names", default=[])
    parser.add_argument(
        "--broker-restarts", type=int, default=3, help="restarts in the broker scenarios"
    )
    asyncio.run(main(parser.parse_args()))
