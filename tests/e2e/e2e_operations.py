"""An in-process platform for the operations end-to-end tests (imported, not a conftest).

Real parts throughout: the twin service, the bridge (``Bridge`` on a free port), the API
served by uvicorn on a free port (chargers download firmware and upload diagnostics over
HTTP), the real Mosquitto, an SQLite database in ``tmp_path``, and simulated chargers
(``simulator.Fleet``) over real websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from retained import noted

from api.app import create_app, serve
from api.backends import Backend
from bridge import Bridge, BridgeOptions
from chargetwin.database import connect
from chargetwin.mqtt import MqttClient
from chargetwin.settings import Settings
from chargetwin.topics import Topics
from simulator import Fleet, SimulatorOptions
from simulator.options import ChargerModel, SessionTiming
from twin.passwords import load_or_create_key
from twin.service import ShadowService

ADMIN = "e2e-ops-admin-token"
PASSWORD = "correct-horse-battery"
MODEL = ChargerModel("ChargeTwin", "CT-AC22", "1.4.2", 2, 22_000.0, 3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Platform:
    api: httpx.AsyncClient
    bridge: Bridge
    backend: Backend
    fleet: Fleet | None
    api_url: str

    async def shadow(self, charger_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/chargers/{charger_id}/shadow")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def until(
        self, charger_id: str, check: Callable[[dict[str, Any]], Any], timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll the shadow through the API until ``check`` holds; fail with the last one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            document = await self.shadow(charger_id)
            if check(document):
                return document
            if loop.time() > deadline:
                raise AssertionError(f"timed out; last shadow: {document}")
            await asyncio.sleep(0.1)


def reported(document: dict[str, Any]) -> dict[str, Any]:
    return dict(document["state"]["reported"])


@contextlib.asynccontextmanager
async def platform(
    tmp_path: Path,
    mqtt_url: str,
    *,
    chargers: int = 0,
    command_timeout: float = 5.0,
    ocpp_mix: tuple[tuple[str, float], ...] = (("1.6", 1.0),),
    sessions: SessionTiming | None = None,
    site: str | None = None,
    simulator: dict[str, Any] | None = None,
) -> AsyncIterator[Platform]:
    """``simulator``: simulator options that differ from this helper's."""
    prefix = noted(f"e2e-{uuid.uuid4().hex[:10]}")
    topics = Topics(prefix)
    api_port = free_port()
    public_url = f"http://127.0.0.1:{api_port}"
    settings = Settings(
        host="127.0.0.1",
        mqtt_url=mqtt_url,
        mqtt_prefix=prefix,
        data_dir=tmp_path,
        api_port=api_port,
        public_url=public_url,
        mqtt_subscribers="",  # the twin below is a bare ShadowService; no recorder runs
    )
    async with contextlib.AsyncExitStack() as stack:
        db = connect(settings.database_target)
        await db.open()
        stack.push_async_callback(db.close)

        api_mqtt = MqttClient(mqtt_url, f"e2e-api-{prefix}")
        await api_mqtt.connect()
        stack.push_async_callback(api_mqtt.disconnect)
        backend = Backend.build(
            db,
            api_mqtt,
            topics,
            admin_token=SecretStr(ADMIN),
            data_dir=tmp_path,
            public_url=public_url,
            command_timeout=command_timeout,
            password_key=load_or_create_key(tmp_path),  # the bridge's, as they share a data dir
        )
        await backend.create_schema()

        twin_mqtt = MqttClient(mqtt_url, f"e2e-twin-{prefix}")
        await twin_mqtt.connect()
        stack.push_async_callback(twin_mqtt.disconnect)
        twin = ShadowService(twin_mqtt, backend.shadows, backend.registry, topics)
        await twin.start()
        stack.push_async_callback(twin.stop)
        # Its subscriptions must be in place before the first request is published.
        await twin_mqtt.subscribe_acked(f"{prefix}/twin-ready", _ignore)

        stop_api = asyncio.Event()
        server = asyncio.create_task(
            serve(create_app(backend), "127.0.0.1", api_port, stop_api), name="e2e-api"
        )

        async def stop_server() -> None:
            stop_api.set()
            await server

        stack.push_async_callback(stop_server)
        api = httpx.AsyncClient(
            base_url=f"{public_url}/api/v1",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=30.0,
        )
        stack.push_async_callback(api.aclose)
        await _wait_listening(api)

        bridge = Bridge(
            settings,
            BridgeOptions(
                port=0,
                call_timeout=5.0,
                command_timeout=5.0,
                close_timeout=1.0,
                drain_timeout=2.0,
                mqtt_reconnect_delay=0.2,
                firmware_retries=0,
                firmware_retry_interval=0,
            ),
        )
        await bridge.start()
        stack.push_async_callback(bridge.stop)

        fleet = None
        if chargers:
            options = SimulatorOptions(
                url=f"ws://127.0.0.1:{bridge.port}/ocpp",
                chargers=chargers,
                id_prefix=f"E2E{uuid.uuid4().hex[:4]}-",
                password=PASSWORD,
                sessions=sessions or SessionTiming(auto_sessions=False),
                models=(MODEL,),
                ocpp_mix=ocpp_mix,
                seed=7,
                reboot_delay_s=0.2,
                firmware_install_s=0.2,
                reconnect_min_s=0.2,
                reconnect_max_s=1.0,
            )
            fleet = Fleet(replace(options, **(simulator or {})))
            for charger in fleet.chargers:
                body = {"id": charger.id, "password": PASSWORD}
                if site is not None:
                    body["site"] = site
                answer = await api.post("/chargers", json=body)
                assert answer.status_code == 201, answer.text
            stop_fleet = asyncio.Event()
            running = asyncio.create_task(fleet.run(stop_fleet), name="e2e-fleet")

            async def stop_running() -> None:
                stop_fleet.set()
                await running

            stack.push_async_callback(stop_running)
            await fleet.wait_for(chargers, timeout=20.0)

        yield Platform(api=api, bridge=bridge, backend=backend, fleet=fleet, api_url=public_url)


async def _wait_listening(api: httpx.AsyncClient) -> None:
    for _ in range(100):
        with contextlib.suppress(httpx.TransportError):
            await api.get("/health")
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the API did not start listening")


async def _ignore(topic: str, payload: bytes) -> None:
    return None
