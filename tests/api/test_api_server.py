"""The API as ``chargetwin api`` runs it: uvicorn on a real socket, in the caller's loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from api_helpers import ADMIN_ENV_TOKEN, assert_problem, free_port
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app, run_api
from api.backends import Backend
from api.routes.health import VERSION
from chargetwin.database import Database, connect
from chargetwin.mqtt import MqttClient
from chargetwin.settings import Settings
from chargetwin.topics import Topics
from twin.service import ShadowService


async def wait_until_serving(client: httpx.AsyncClient, run: asyncio.Task[None]) -> None:
    for _ in range(200):
        assert not run.done(), run
        try:
            if (await client.get("/api/v1/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.025)
    raise AssertionError("the API did not come up")


async def test_run_api_serves_until_stopped(
    tmp_path: Path, mosquitto_url: str, prefix: str
) -> None:
    port = free_port()
    database = tmp_path / "api.db"
    settings = Settings(
        host="127.0.0.1",
        api_port=port,
        mqtt_url=mosquitto_url,
        mqtt_prefix=prefix,
        database_url=f"sqlite:///{database}",
        admin_token=SecretStr(ADMIN_ENV_TOKEN),
        data_dir=tmp_path,
    )
    # The twin runs beside the API, as in a one-process deployment.
    twin_db = connect(settings.database_target)
    await twin_db.open()
    twin_mqtt = MqttClient(mosquitto_url, f"test-twin-{prefix}")
    await twin_mqtt.connect()
    backend = Backend.build(twin_db, twin_mqtt, Topics(prefix))
    await backend.create_schema()
    twin = ShadowService(twin_mqtt, backend.shadows, backend.registry, Topics(prefix))
    await twin.start()

    stop = asyncio.Event()
    run = asyncio.create_task(run_api(settings, stop))
    admin = {"Authorization": f"Bearer {ADMIN_ENV_TOKEN}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_until_serving(client, run)
            health = (await client.get("/api/v1/health")).json()
            assert health == {"status": "ok", "mqtt": True, "database": True, "version": VERSION}

            created = await client.post(
                "/api/v1/chargers",
                json={"id": "CP-1", "password": "correct-horse-battery"},
                headers=admin,
            )
            assert created.status_code == 201, created.text
            patched = await client.patch(
                "/api/v1/chargers/CP-1/shadow/desired",
                content=json.dumps({"config": {"HeartbeatInterval": "30"}}),
                headers={
                    **admin,
                    "Content-Type": "application/merge-patch+json",
                    "If-Match": '"0"',
                },
            )
            assert patched.status_code == 200, patched.text
            assert patched.headers["etag"] == '"1"'
            assert "server" not in patched.headers
            assert_problem(await client.get("/api/v1/chargers/CP-1/nothing", headers=admin), 404)
            audit = (await client.get("/api/v1/audit", headers=admin)).json()
            assert [(e["actor"], e["outcome"]) for e in audit] == [
                ("CHARGETWIN_ADMIN_TOKEN", "accepted")
            ]
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
        await twin.stop()
        await twin_mqtt.disconnect()
        await twin_db.close()
    assert run.result() is None


async def test_health_is_503_when_mqtt_is_down(db: Database, topics: Topics) -> None:
    offline = MqttClient("mqtt://127.0.0.1:1", "never-connected")
    backend = Backend.build(db, offline, topics)
    app: FastAPI = create_app(backend)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "degraded",
        "mqtt": False,
        "database": True,
        "version": VERSION,
    }
