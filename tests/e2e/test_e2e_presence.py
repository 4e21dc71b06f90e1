"""Presence is right within seconds after every restart, and every change is recorded.

Real parts: a Mosquitto of the test's own (stopped and started again), the twin service,
the recorder on the embedded time-series store, the bridge (in this process, or a
``chargetwin bridge`` child process that is killed with SIGKILL), SQLite, and chargers
made of hand-written OCPP-J frames over real websockets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from brokers import Mosquitto, free_port
from probes import MqttProbe
from websockets.asyncio.client import ClientConnection, connect

from bridge import Bridge, BridgeOptions
from chargetwin.database import Database
from chargetwin.database import connect as connect_db
from chargetwin.mqtt import MqttClient
from chargetwin.readiness import ServiceAnnouncer
from chargetwin.settings import Settings
from chargetwin.topics import Topics
from fleet.work_orders import WorkOrderStore
from rules.points import Selection
from rules.recorders import Recorder
from rules.spools import Spool
from rules.sqlite_series import SQLiteSeriesStore
from twin.registry import ChargerRegistry
from twin.service import ShadowService
from twin.stores import ShadowStore

PASSWORD = "presence-password-1"
GRACE = 1.0  # the twin's wait for bridges to announce themselves after it (re)connects


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float, what: str = "condition"
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


class Charger:
    """An OCPP-J 1.6 charger of hand-written frames: it boots and answers every call."""

    def __init__(self, charger_id: str, ws: ClientConnection) -> None:
        self.id = charger_id
        self.ws = ws
        self.calls: list[list[Any]] = []
        self._answers: dict[str, asyncio.Future[list[Any]]] = {}
        self._reader = asyncio.create_task(self._read(), name=f"charger-{charger_id}")

    @classmethod
    async def open(cls, port: int, charger_id: str) -> Charger:
        token = base64.b64encode(f"{charger_id}:{PASSWORD}".encode()).decode()
        ws = await connect(
            f"ws://127.0.0.1:{port}/ocpp/{charger_id}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {token}"},
            ping_interval=None,
        )
        charger = cls(charger_id, ws)
        boot = await charger.call(
            "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
        )
        assert boot[2]["status"] == "Accepted", boot
        return charger

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                message = json.loads(frame)
                if message[0] == 2:
                    self.calls.append(message)
                    answer: dict[str, Any] = (
                        {"configurationKey": []}
                        if message[2] == "GetConfiguration"
                        else {"status": "Accepted"}
                    )
                    await self.ws.send(json.dumps([3, message[1], answer]))
                else:
                    future = self._answers.pop(message[1], None)
                    if future is not None:
                        future.set_result(message)

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        unique_id = uuid.uuid4().hex[:16]
        future = self._answers[unique_id] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        return await asyncio.wait_for(future, 10)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class Stack:
    """Broker, twin, recorder and the database they share; bridges come and go."""

    def __init__(self, folder: Path, *, persistence: bool = True) -> None:
        self.folder = folder
        (folder / "broker").mkdir()
        self.broker = Mosquitto(folder / "broker", persistence=persistence)
        self.prefix = f"presence-{uuid.uuid4().hex[:8]}"
        self.topics = Topics(self.prefix)
        self.settings = Settings(
            host="127.0.0.1",
            mqtt_url=self.broker.url,
            mqtt_prefix=self.prefix,
            data_dir=folder,
        )
        self.db: Database = connect_db(self.settings.database_target)
        self.shadows = ShadowStore(self.db)
        self.series = SQLiteSeriesStore(folder / "series.db")
        self.twin: ShadowService | None = None
        self.twin_mqtt: MqttClient | None = None
        self.recorder: Recorder | None = None
        self.recorder_mqtt: MqttClient | None = None
        self.bridges: list[Bridge] = []
        self.chargers: list[Charger] = []
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        self.broker.start()
        await self.db.open()
        await self.shadows.create_schema()
        registry = ChargerRegistry(self.db)
        await registry.create_schema()
        await self.series.open()
        await self.start_twin()
        # As `chargetwin rules` runs it: announced, so bridges publish once it subscribed.
        announcer = ServiceAnnouncer(self.topics, "rules", f"{self.prefix}-rules")
        self.recorder_mqtt = MqttClient(
            self.broker.url,
            f"{self.prefix}-rules",
            clean_session=False,
            reconnect_delay=0.2,
            will=announcer.will,
        )
        await self.recorder_mqtt.connect()
        self.recorder = Recorder(
            self.series, Spool(self.folder / "spool", max_bytes=1 << 20), self.topics
        )
        await self.recorder.start(self.recorder_mqtt)
        await announcer.start(self.recorder_mqtt)

    async def start_twin(self) -> None:
        # As `chargetwin twin` runs it: a stable client id, a persistent session, announced.
        announcer = ServiceAnnouncer(self.topics, "twin", f"{self.prefix}-twin")
        self.twin_mqtt = MqttClient(
            self.broker.url,
            f"{self.prefix}-twin",
            clean_session=False,
            reconnect_delay=0.2,
            will=announcer.will,
        )
        registry = ChargerRegistry(self.db)
        self.twin = ShadowService(
            self.twin_mqtt, self.shadows, registry, self.topics, presence_grace=GRACE
        )
        await self.twin.start()
        await self.twin_mqtt.connect()
        await announcer.start(self.twin_mqtt)

    async def stop_twin(self) -> None:
        assert self.twin is not None and self.twin_mqtt is not None
        await self.twin.stop()
        await self.twin_mqtt.disconnect()
        self.twin = self.twin_mqtt = None

    async def stop(self) -> None:
        for charger in self.chargers:
            await charger.close()
        for bridge in self.bridges:
            await bridge.stop()
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if self.recorder is not None:
            await self.recorder.stop()
        if self.recorder_mqtt is not None:
            await self.recorder_mqtt.disconnect()
        if self.twin is not None:
            await self.stop_twin()
        await self.series.close()
        await self.db.close()
        self.broker.stop()

    async def bridge(self, name: str) -> Bridge:
        options = BridgeOptions(
            port=0,
            bridge_id=name,
            mqtt_reconnect_delay=0.2,
            drain_timeout=2.0,
            close_timeout=1.0,
            call_timeout=3.0,
            command_timeout=3.0,
        )
        settings = self.settings.model_copy(update={"mqtt_client_id": f"{self.prefix}-{name}"})
        bridge = Bridge(settings, options)
        await bridge.start()
        self.bridges.append(bridge)
        return bridge

    async def bridge_process(self, name: str) -> tuple[asyncio.subprocess.Process, int]:
        """``chargetwin bridge`` as a child process; returns it and its OCPP port."""
        port = free_port()
        with (self.folder / f"{name}.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "launch.cli",
                "bridge",
                "--mqtt-url",
                self.broker.url,
                "--mqtt-prefix",
                self.prefix,
                "--mqtt-client-id",
                f"{self.prefix}-{name}",
                "--ocpp-port",
                str(port),
                "--data-dir",
                str(self.folder),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.processes.append(process)
        await _wait_port(port, process)
        return process, port

    async def charger(self, port: int, charger_id: str | None = None) -> Charger:
        charger_id = charger_id or f"cp-{uuid.uuid4().hex[:8]}"
        registry = ChargerRegistry(self.db)
        if not await registry.exists(charger_id):
            await registry.register(charger_id, PASSWORD)
        charger = await Charger.open(port, charger_id)
        self.chargers.append(charger)
        return charger

    async def connection(self, charger_id: str) -> dict[str, Any]:
        doc = await self.shadows.load(charger_id)
        connection = doc.reported.get("connection") if doc is not None else None
        return connection if isinstance(connection, dict) else {}

    async def online(self, chargers: list[Charger], want: bool, timeout: float = 5.0) -> None:
        async def check() -> bool:
            states = [(await self.connection(c.id)).get("online") for c in chargers]
            return all(state is want for state in states)

        what = f"{len(chargers)} chargers {'online' if want else 'offline'}"
        await eventually(check, timeout, what)

    async def presence_points(self, charger_id: str) -> list[tuple[float, str]]:
        selection = Selection("presence", "state", {"charger": (charger_id,)})
        found = await self.series.points(selection, 0, int((time.time() + 3600) * 1e9))
        return [(t / 1e9, str(v)) for series in found.values() for t, v in series]


async def _wait_port(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        assert process.returncode is None, "the child process exited"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """A broker with persistence unless the test asks otherwise (indirect parameter)."""
    s = Stack(tmp_path, persistence=getattr(request, "param", True))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.mark.parametrize(
    "stack", [True, False], ids=["persistent-broker", "volatile-broker"], indirect=True
)
async def test_after_a_broker_restart_held_chargers_are_online_and_take_commands(
    stack: Stack,
) -> None:
    bridge = await stack.bridge("b1")
    assert bridge.port is not None
    chargers = [await stack.charger(bridge.port) for _ in range(3)]
    await stack.online(chargers, True)

    stack.broker.stop()
    stack.broker.start()
    restarted = time.monotonic()
    await stack.online(chargers, True, timeout=5.0)
    # And they stay online: the twin's check of silent bridges (after its grace) finds the
    # bridge announced, and nothing later overrules the re-announcement.
    await asyncio.sleep(max(0.0, GRACE + 0.5 - (time.monotonic() - restarted)))
    await stack.online(chargers, True, timeout=0.1)

    # A command reaches the charger and its answer comes back (the API's 409 is gone too:
    # it answers from the shadow's connection.online, checked above).
    probe = MqttProbe(stack.broker.url)
    try:
        command = stack.topics.command(chargers[0].id)
        await probe.subscribe(f"{command}/result")
        await probe.publish(command, {"name": "clear-cache", "payload": {}, "clientToken": "c1"})
        result = await probe.expect(f"{command}/result", timeout=5.0)
        assert result["status"] == "ok", result
    finally:
        probe.close()
    # Whatever the twin inferred while the broker was away, the series ends online.
    for charger in chargers:

        async def ends_online(c: Charger = charger) -> bool:
            points = await stack.presence_points(c.id)
            return bool(points) and points[-1][1] == "online"

        await eventually(ends_online, 5.0, f"the presence of {charger.id} to end online")


async def test_a_killed_bridge_takes_its_chargers_offline_and_the_outage_is_recorded(
    stack: Stack,
) -> None:
    process, port = await stack.bridge_process("b-killed")
    chargers = [await stack.charger(port) for _ in range(3)]
    await stack.online(chargers, True)

    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    killed = time.time()
    await stack.online(chargers, False, timeout=5.0)
    for charger in chargers:
        connection = await stack.connection(charger.id)
        assert (
            connection["source"] == "twin"
            and connection["bridge"] == f"{stack.prefix}-b-killed-bridge"
        )

        async def offline_point(c: Charger = charger) -> list[tuple[float, str]]:
            points = await stack.presence_points(c.id)
            return [p for p in points if p[1] == "offline"]

        recorded = await eventually(offline_point, 5.0, f"an offline point of {charger.id}")
        assert killed - 1 <= recorded[-1][0] <= time.time()


async def test_a_restarted_twin_keeps_live_chargers_and_drops_those_of_a_dead_bridge(
    stack: Stack,
) -> None:
    bridge = await stack.bridge("b-live")
    assert bridge.port is not None
    live = [await stack.charger(bridge.port) for _ in range(2)]
    process, port = await stack.bridge_process("b-doomed")
    doomed = [await stack.charger(port) for _ in range(2)]
    await stack.online(live + doomed, True)

    await stack.stop_twin()
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    await stack.start_twin()
    await stack.online(doomed, False, timeout=5.0)
    # Past the twin's grace: the live bridge's chargers were never taken offline.
    await asyncio.sleep(GRACE + 0.5)
    await stack.online(live, True, timeout=0.1)
    for charger in live:
        assert [s for _, s in await stack.presence_points(charger.id)] == ["online"]


async def test_a_bridge_that_reconnects_to_mqtt_announces_its_chargers_again(
    stack: Stack,
) -> None:
    """The bridge's MQTT connection drops without a clean stop (the broker publishes its
    will) while its sockets stay open; after each reconnect the chargers are online, and
    each connection's will names that connection's epoch."""
    bridge = await stack.bridge("b-flaky")
    assert bridge.port is not None and bridge.mqtt is not None
    chargers = [await stack.charger(bridge.port) for _ in range(2)]
    await stack.online(chargers, True)
    watch = MqttProbe(stack.broker.url)
    try:
        status = stack.topics.bridge_status("b-flaky")
        await watch.subscribe(status)
        announced = await watch.expect(status, online=True)
        for _ in range(2):
            bridge.mqtt._client._connection._transport.abort()  # the TCP link only
            will = await watch.expect(status, online=False)
            assert will["epoch"] == announced["epoch"]
            # Delivery is at least once: the status of the connection that just died may
            # come again (it was in flight when the link broke), before the new one.
            announced = await watch.expect(status, online=True)
            while announced["epoch"] == will["epoch"]:
                announced = await watch.expect(status, online=True)
            assert announced["epoch"] > will["epoch"]

            async def back(epoch: float = announced["epoch"]) -> bool:
                connections = [await stack.connection(c.id) for c in chargers]
                return all(c["online"] is True and c["epoch"] == epoch for c in connections)

            await eventually(back, 5.0, "the chargers announced under the new epoch")
    finally:
        watch.close()
    # The twin inferred an outage at each will; the series shows it, and ends online.
    for charger in chargers:

        async def recorded(c: Charger = charger) -> list[str]:
            states = [state for _, state in await stack.presence_points(c.id)]
            return states if states == ["online", "offline"] * 2 + ["online"] else []

        await eventually(recorded, 5.0, f"the presence history of {charger.id}")


class Platform:
    """``chargetwin up`` as a child process (embedded broker), on fresh ports each start."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.admin = "ct_presence_admin_" + uuid.uuid4().hex
        self.process: asyncio.subprocess.Process | None = None
        self.api_port = self.ocpp_port = 0

    async def start(self) -> None:
        # New ports each time: a port of the killed process may still be held a while.
        self.api_port, self.ocpp_port, mqtt_port = free_port(), free_port(), free_port()
        env = {**os.environ, "CHARGETWIN_ADMIN_TOKEN": self.admin}
        with (self.folder / "platform.log").open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "launch.cli",
                "up",
                "--api-port",
                str(self.api_port),
                "--ocpp-port",
                str(self.ocpp_port),
                "--mqtt-port",
                str(mqtt_port),
                "--data-dir",
                str(self.folder),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        async with self.http() as http:

            async def healthy() -> bool:
                assert self.process is not None and self.process.returncode is None
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/health")).status_code == 200
                return False

            await eventually(healthy, 30.0, "the platform to start")
        await _wait_port(self.ocpp_port, self.process)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}/api/v1",
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=10,
        )

    async def online(self, charger_id: str) -> Any:
        async with self.http() as http:
            doc = (await http.get(f"/chargers/{charger_id}/shadow")).json()
        return doc["state"]["reported"].get("connection", {}).get("online")

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()
        self.process = None


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    # Work orders' columns made before the first start: on a fresh SQLite file the API
    # and the rules engine add them concurrently at start-up, and one of them may fail
    # with "duplicate column name" (a start-up race outside what this file tests).
    db = connect_db(Settings(data_dir=tmp_path).database_target)
    await db.open()
    try:
        await WorkOrderStore(db).create_schema()
    finally:
        await db.close()
    p = Platform(tmp_path)
    await p.start()
    yield p
    if p.process is not None:
        p.process.send_signal(signal.SIGINT)
        await asyncio.wait_for(p.process.wait(), 30)


async def test_after_a_kill_9_of_the_platform_chargers_not_back_are_offline(
    platform: Platform,
) -> None:
    ids = [f"K9-{i}" for i in range(2)]
    async with platform.http() as http:
        for charger_id in ids:
            created = await http.post("/chargers", json={"id": charger_id, "password": PASSWORD})
            assert created.status_code == 201, created.text
    chargers = [await Charger.open(platform.ocpp_port, charger_id) for charger_id in ids]
    for charger_id in ids:
        await eventually(lambda c=charger_id: platform.online(c), 10.0, f"{charger_id} online")

    await platform.kill()
    for charger in chargers:
        await charger.close()
    await platform.start()
    started = time.monotonic()
    back = await Charger.open(platform.ocpp_port, ids[0])
    try:

        async def settled() -> bool:
            return await platform.online(ids[0]) is True and await platform.online(ids[1]) is False

        await eventually(settled, 5.0, "the reconnected charger online, the other offline")
        assert time.monotonic() - started < 5.0
    finally:
        await back.close()
