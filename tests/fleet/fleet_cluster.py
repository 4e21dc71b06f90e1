"""A platform of real ``chargetwin`` processes on one PostgreSQL schema and the real
Mosquitto, for the fleet leadership tests (imported by them, not a conftest).

Each component runs as ``python -m launch.cli COMMAND`` with its own log file; the
simulated chargers run in the test process (``simulator.Fleet``) so the test can count
the calls each charger received.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
from brokers import Mosquitto
from retained import noted

from simulator import Fleet, SimulatorOptions
from simulator.options import ChargerModel, SessionTiming

POSTGRES_URL = os.environ.get(
    "CHARGETWIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ADMIN = "ct_fleet_admin_" + uuid.uuid4().hex
PASSWORD = "fleet-test-charger-password"
MODEL = ChargerModel("ChargeTwin", "CT-AC22", "1.4.2", 2, 22_000.0, 3)
NEW = "1.5.0"
IMAGE = b"\x7fCTFW-fleet" + bytes(range(256)) * 16
LEADS = "fleet: this process leads now"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_schema() -> Any:
    """A PostgreSQL URL whose tables live in a schema of their own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@dataclass
class Component:
    name: str
    proc: asyncio.subprocess.Process
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


@dataclass
class Cluster:
    data_dir: Path
    database_url: str
    mqtt_url: str
    prefix: str = field(default_factory=lambda: noted(f"fleet-{uuid.uuid4().hex[:10]}"))
    ocpp_port: int = field(default_factory=free_port)
    components: list[Component] = field(default_factory=list)
    public_url: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "CHARGETWIN_HOST": "127.0.0.1",
            "CHARGETWIN_DATA_DIR": str(self.data_dir),
            "CHARGETWIN_DATABASE_URL": self.database_url,
            "CHARGETWIN_MQTT_URL": self.mqtt_url,
            "CHARGETWIN_MQTT_PREFIX": self.prefix,
            "CHARGETWIN_MQTT_SUBSCRIBERS": "twin",
            "CHARGETWIN_ADMIN_TOKEN": ADMIN,
            "CHARGETWIN_OCPP_PORT": str(self.ocpp_port),
            "CHARGETWIN_CAMPAIGN_INTERVAL": "0.5",
            # The twin's client id is stable per host by default: ours must be our own.
            "CHARGETWIN_MQTT_CLIENT_ID": f"{self.prefix}-{uuid.uuid4().hex[:6]}",
            # Firmware downloads go to the first API (the image is in the shared data dir).
            **({"CHARGETWIN_PUBLIC_URL": self.public_url} if self.public_url else {}),
            **extra,
        }

    async def start(self, command: str, name: str, **extra: str) -> Component:
        log = self.data_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "launch.cli", command,
                stdout=out, stderr=asyncio.subprocess.STDOUT, env=self.env(**extra),
            )  # fmt: skip
        component = Component(name, proc, log)
        self.components.append(component)
        return component

    async def start_api(self, name: str) -> str:
        """An API process; its base URL once it answers."""
        port = free_port()
        if not self.public_url:
            self.public_url = f"http://127.0.0.1:{port}"
        component = await self.start("api", name, CHARGETWIN_API_PORT=str(port))
        url = f"http://127.0.0.1:{port}/api/v1"
        async with httpx.AsyncClient() as http:
            await self.until(component, lambda: _healthy(http, url), f"{name} to answer")
        return url

    async def until(
        self, component: Component | None, check: Callable[[], Awaitable[bool] | bool],
        what: str, timeout: float = 60.0,
    ) -> float:  # fmt: skip
        """Wait for ``check``; the seconds it took. Fails at once if ``component`` died."""
        begin = time.monotonic()
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return time.monotonic() - begin
            if component is not None and not component.alive:
                raise AssertionError(f"{component.name} ended:\n{component.text()[-4000:]}")
            if time.monotonic() - begin > timeout:
                logs = "\n".join(f"--- {c.name}\n{c.text()[-2000:]}" for c in self.components)
                raise AssertionError(f"timed out waiting for {what}\n{logs}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for component in reversed(self.components):
            if component.alive:
                with contextlib.suppress(ProcessLookupError):
                    component.proc.send_signal(signal.SIGTERM)
        for component in self.components:
            try:
                await asyncio.wait_for(component.proc.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    component.proc.kill()
                await component.proc.wait()


async def _healthy(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(f"{url}/health")).status_code == 200
    except httpx.HTTPError:
        return False


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@contextlib.asynccontextmanager
async def cluster(
    data_dir: Path, *, apis: int, fleets: int
) -> AsyncIterator[tuple[Cluster, list[str], list[Component]]]:
    """A Mosquitto of its own, the twin, ``apis`` API processes, the bridge and ``fleets``
    fleet processes; yields the cluster, the API base URLs and the fleet components (the
    first one leads)."""
    broker_dir = data_dir / "mosquitto"
    broker_dir.mkdir()
    broker = Mosquitto(broker_dir, persistence=False)
    broker.start()
    with postgres_schema() as database_url:
        c = Cluster(data_dir, database_url, broker.url)
        try:
            twin = await c.start("twin", "twin")
            await c.until(twin, lambda: "twin service started" in twin.text(), "the twin")
            urls = [await c.start_api(f"api{i + 1}") for i in range(apis)]
            bridge = await c.start("bridge", "bridge")
            await c.until(bridge, lambda: _listening(c.ocpp_port), "the bridge")
            fleet = []
            for i in range(fleets):
                component = await c.start("fleet", f"fleet{i + 1}")
                fleet.append(component)
                if i == 0:  # the first one leads: the test knows which to kill
                    await c.until(component, lambda: LEADS in fleet[0].text(), "a leader")
            for component in fleet[1:]:
                await c.until(component, lambda: "standby" in component.text(), "a standby")  # noqa: B023
            yield c, urls, fleet
        finally:
            await c.stop()
            broker.stop()


def simulated(ocpp_port: int, chargers: int, install_s: float) -> Fleet:
    return Fleet(
        SimulatorOptions(
            url=f"ws://127.0.0.1:{ocpp_port}/ocpp",
            chargers=chargers,
            id_prefix=f"FL{uuid.uuid4().hex[:4]}-",
            password=PASSWORD,
            sessions=SessionTiming(auto_sessions=False),
            models=(MODEL,),
            seed=11,
            reboot_delay_s=0.2,
            firmware_install_s=install_s,
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
            keep_received=1000,
        )
    )


@contextlib.asynccontextmanager
async def running(fleet: Fleet, api: httpx.AsyncClient) -> AsyncIterator[Fleet]:
    """Register the simulated chargers through the API and run them until the block ends."""
    for charger in fleet.chargers:
        answer = await api.post("/chargers", json={"id": charger.id, "password": PASSWORD})
        assert answer.status_code == 201, answer.text
    stop = asyncio.Event()
    task = asyncio.create_task(fleet.run(stop), name="fleet-test-chargers")
    try:
        await fleet.wait_for(len(fleet.chargers), timeout=60.0)
        yield fleet
    finally:
        stop.set()
        await task


def update_firmware_calls(fleet: Fleet) -> dict[str, int]:
    return {
        c.id: sum(1 for action, _ in c.received if action == "UpdateFirmware")
        for c in fleet.chargers
    }
