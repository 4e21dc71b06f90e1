"""Fixtures for the bridge tests: a real bridge, real Mosquitto, raw OCPP-J clients.

The OCPP clients here are hand-written websocket frames, not our own code, so a test
fails when the bridge speaks OCPP-J wrongly rather than agreeing with itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from retained import noted
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge import Bridge, BridgeOptions
from chargetwin.settings import Settings
from twin.app import run_twin
from twin.stores import ShadowStore

BROKER_URL = os.environ.get("CHARGETWIN_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
PASSWORD = "correct-horse-battery"


async def eventually(
    check: Callable[[], Any], timeout: float = 5.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- MQTT ------------------------------------------------------------------------------------
class MqttWatcher:
    """An independent paho-mqtt subscriber that records every message it receives."""

    def __init__(
        self, url: str, filters: list[str], client_id: str | None = None, clean: bool = True
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.filters = filters
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"watch-{uuid.uuid4().hex[:8]}",
            clean_session=clean,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def start(self) -> None:
        self.client.connect(self.host, self.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise AssertionError("watcher could not subscribe")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[Any]:
        """Decoded JSON payloads received on ``topic``, oldest first."""
        with self._lock:
            return [json.loads(p) if p else None for t, p in self.messages if t == topic]

    def reported(self, topic: str) -> list[dict[str, Any]]:
        """The ``state.reported`` of every shadow update on ``topic``."""
        return [m["state"]["reported"] for m in self.on(topic)]

    async def wait_for(
        self,
        topic: str,
        match: Callable[[Any], bool] = lambda _: True,
        timeout: float = 5.0,
    ) -> Any:
        """The first payload on ``topic`` that ``match`` accepts."""

        def find() -> Any:
            for payload in self.on(topic):
                if match(payload):
                    return [payload]
            return None

        return (await eventually(find, timeout, f"a matching message on {topic}"))[0]

    def publish(self, topic: str, payload: Any, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, data, qos=1, retain=retain)
        info.wait_for_publish(5)


@pytest.fixture
def prefix() -> str:
    return noted(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def watcher(prefix: str) -> Iterator[MqttWatcher]:
    watch = MqttWatcher(BROKER_URL, [f"{prefix}/#"])
    watch.start()
    yield watch
    # Leave no retained messages of this test on the shared broker.
    with watch._lock:
        retained = {t for t, _ in watch.messages if t.endswith(("/presence", "/status"))}
    for topic in retained:
        watch.publish(topic, b"", retain=True)
    watch.stop()


# --- the bridge ------------------------------------------------------------------------------
MakeBridge = Callable[..., Awaitable[Bridge]]


@pytest.fixture
async def make_bridge(tmp_path: Any, prefix: str) -> AsyncIterator[MakeBridge]:
    bridges: list[Bridge] = []

    async def make(
        *,
        database_url: str | None = None,
        mqtt_url: str = BROKER_URL,
        auto_register: bool = False,
        mqtt_subscribers: str = "",
        **options: Any,
    ) -> Bridge:
        settings = Settings(
            host="127.0.0.1",
            mqtt_url=mqtt_url,
            mqtt_prefix=prefix,
            data_dir=tmp_path,
            database_url=database_url,
            auto_register=auto_register,
            # No twin or recorder runs here: publish without waiting for their announcement.
            mqtt_subscribers=mqtt_subscribers,
        )
        defaults: dict[str, Any] = {
            "port": 0,
            "call_timeout": 2.0,
            "command_timeout": 2.0,
            "mqtt_reconnect_delay": 0.2,
            "drain_timeout": 2.0,
            "close_timeout": 1.0,
            "status_grace": 0.5,
        }
        bridge = Bridge(settings, BridgeOptions(**(defaults | options)))
        bridges.append(bridge)
        await bridge.start()
        return bridge

    yield make
    for bridge in bridges:
        await bridge.stop()


@pytest.fixture
async def bridge(make_bridge: MakeBridge, watcher: MqttWatcher) -> Bridge:
    return await make_bridge()


async def register(bridge: Bridge, charger_id: str, password: str = PASSWORD) -> None:
    assert bridge.server is not None
    await bridge.server.registry.register(charger_id, password)


def url_of(bridge: Bridge, charger_id: str) -> str:
    return f"ws://127.0.0.1:{bridge.port}/ocpp/{charger_id}"


# --- a charger made of raw OCPP-J frames ------------------------------------------------------
class RawCharger:
    """Sends hand-written OCPP-J frames; collects the bridge's CALLs and answers."""

    def __init__(self, ws: ClientConnection, charger_id: str) -> None:
        self.ws = ws
        self.charger_id = charger_id
        self.calls: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.answers: dict[str, asyncio.Future[list[Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                message = json.loads(frame)
                if message[0] == 2:
                    await self.calls.put(message)
                    continue
                future = self.answers.pop(message[1], None)
                if future is not None and not future.done():
                    future.set_result(message)
        except ConnectionClosed:
            pass

    def _expect(self, unique_id: str) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.answers[unique_id] = future
        return future

    async def send_raw(self, frame: str | bytes, answer_id: str, timeout: float = 5.0) -> list[Any]:
        """Send any frame and wait for the answer carrying ``answer_id``."""
        future = self._expect(answer_id)
        await self.ws.send(frame)
        async with asyncio.timeout(timeout):
            return await future

    async def call(self, action: str, payload: dict[str, Any], timeout: float = 5.0) -> list[Any]:
        """Send a CALL and return the whole answer frame (CALLRESULT or CALLERROR)."""
        unique_id = uuid.uuid4().hex
        return await self.send_raw(json.dumps([2, unique_id, action, payload]), unique_id, timeout)

    async def result(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a CALL that must succeed; return the CALLRESULT payload."""
        answer = await self.call(action, payload)
        assert answer[0] == 3, answer
        result: dict[str, Any] = answer[2]
        return result

    async def next_call(self, timeout: float = 5.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            return await self.calls.get()

    async def reply(self, call: list[Any], payload: dict[str, Any]) -> None:
        await self.ws.send(json.dumps([3, call[1], payload]))

    async def boot(self, **fields: Any) -> None:
        """BootNotification (vendor V, model M, plus ``fields``), then answer the calls the
        bridge makes after it: GetConfiguration (empty) and TriggerMessage StatusNotification
        (Rejected, so no StatusNotification is owed)."""
        payload = {"chargePointVendor": "V", "chargePointModel": "M", **fields}
        await self.result("BootNotification", payload)
        await self.after_boot()

    async def after_boot(self) -> None:
        get_configuration = await self.next_call()
        assert get_configuration[2] == "GetConfiguration"
        await self.reply(get_configuration, {"configurationKey": []})
        trigger = await self.next_call()
        assert trigger[2:] == ["TriggerMessage", {"requestedMessage": "StatusNotification"}]
        await self.reply(trigger, {"status": "Rejected"})

    async def closed(self, timeout: float = 5.0) -> int | None:
        async with asyncio.timeout(timeout):
            await self.ws.wait_closed()
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


OpenCharger = Callable[..., Awaitable[RawCharger]]


@pytest.fixture
async def open_charger(bridge: Bridge) -> AsyncIterator[OpenCharger]:
    """Register (unless told not to) and connect raw chargers; close them afterwards."""
    chargers: list[RawCharger] = []

    async def open_(
        charger_id: str | None = None,
        *,
        password: str = PASSWORD,
        target: Bridge | None = None,
        registered: bool = True,
        accepted: bool = True,
    ) -> RawCharger:
        """``accepted``: the charger booted on this bridge before (so it may talk at once,
        like a charger reconnecting); False for one that must boot first."""
        target = target or bridge
        charger_id = charger_id or f"cp-{uuid.uuid4().hex[:10]}"
        if registered and target.server is not None:
            registry = target.server.registry  # keyed as the API's would be
            if not await registry.exists(charger_id):
                await registry.register(charger_id, password)
        if accepted and target.services is not None:
            target.services.accepted.add(charger_id)
        ws = await connect(
            url_of(target, charger_id),
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers=basic(charger_id, password),
            max_size=None,
            ping_interval=None,
        )
        charger = RawCharger(ws, charger_id)
        chargers.append(charger)
        return charger

    yield open_
    for charger in chargers:
        await charger.close()


# --- a real twin, for tests about what a shadow ends up holding -----------------------------
class RunningTwin:
    """The twin component (``twin.app.run_twin``) on the bridge's database and prefix."""

    def __init__(self, bridge: Bridge) -> None:
        assert bridge.db is not None
        self.store = ShadowStore(bridge.db)

    async def document(self, charger_id: str) -> dict[str, Any]:
        return await self.store.get_document(charger_id) or {}

    async def reported(self, charger_id: str) -> dict[str, Any]:
        return dict(((await self.document(charger_id)).get("state") or {}).get("reported") or {})

    async def wait_reported(
        self, charger_id: str, check: Callable[[dict[str, Any]], Any], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The shadow's reported state once ``check`` accepts it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reported = await self.reported(charger_id)
            if check(reported):
                return reported
            if loop.time() > deadline:
                raise AssertionError(f"shadow of {charger_id} never matched: {reported}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def twin(bridge: Bridge, watcher: MqttWatcher) -> AsyncIterator[RunningTwin]:
    settings = bridge.settings.model_copy(update={"mqtt_client_id": f"t-{uuid.uuid4().hex[:8]}"})
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(run_twin(settings, stop))
    probe = f"probe-{uuid.uuid4().hex[:6]}"
    answered = bridge.topics.shadow(probe, "get", "rejected")

    def ready() -> bool:
        if task.done():
            task.result()  # raise what stopped it
        watcher.publish(bridge.topics.shadow(probe, "get"), {})
        return bool(watcher.on(answered))

    await eventually(ready, timeout=10, what="the twin to answer")
    yield RunningTwin(bridge)
    stop.set()
    await task


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_errors: the test expects ERROR log lines (not failed by them)"
    )


@pytest.fixture(autouse=True)
def no_logged_errors(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Fail a test that logs an error or exception (Home Assistant's habit)."""
    caplog.set_level(logging.INFO)
    yield
    if request.node.get_closest_marker("allow_errors"):
        return
    bad = [r.getMessage() for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not bad, bad
