"""Fixtures of the API tests: the app on a real database and a real broker, with the real
twin service answering its shadow updates.

``api_client`` talks to the app in-process (httpx ``ASGITransport``); one test in
``test_api_server.py`` goes over a real uvicorn socket. The database is parametrized over
SQLite and PostgreSQL by the shared ``database_url`` fixture.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from api_helpers import ADMIN_ENV_TOKEN
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app
from api.backends import Backend
from api.tokens import create_token
from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from twin.service import ShadowService

TWIN_TIMEOUT = 3.0


@pytest.fixture
def topics(prefix: str) -> Topics:
    return Topics(prefix)


@pytest.fixture
async def api_mqtt(mosquitto_url: str) -> AsyncIterator[MqttClient]:
    client = MqttClient(mosquitto_url, f"test-api-{uuid.uuid4().hex[:8]}")
    await client.connect()
    yield client
    await client.disconnect()


@pytest.fixture
async def backend(db: Database, api_mqtt: MqttClient, topics: Topics) -> Backend:
    backend = Backend.build(
        db, api_mqtt, topics, admin_token=SecretStr(ADMIN_ENV_TOKEN), twin_timeout=TWIN_TIMEOUT
    )
    await backend.create_schema()
    return backend


@pytest.fixture
async def twin(
    backend: Backend, mosquitto_url: str, topics: Topics
) -> AsyncIterator[ShadowService]:
    """The real twin service, on its own MQTT connection as in its own process."""
    mqtt = MqttClient(mosquitto_url, f"test-twin-{topics.prefix}")
    await mqtt.connect()
    service = ShadowService(mqtt, backend.shadows, backend.registry, topics)
    await service.start()
    # Its subscriptions must be in place before the first request is published.
    await mqtt.subscribe_acked(f"{topics.prefix}/twin-ready", _ignore)
    yield service
    await service.stop()
    await mqtt.disconnect()


async def _ignore(topic: str, payload: bytes) -> None:
    return None


@pytest.fixture
def app(backend: Backend) -> FastAPI:
    return create_app(backend)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def tokens(db: Database, backend: Backend) -> dict[str, str]:
    """A secret per role, made the way ``chargetwin token create`` makes them."""
    return {
        role: await create_token(db, role, f"{role}-bot")
        for role in ("viewer", "operator", "admin")
    }


@pytest.fixture
def auth(tokens: dict[str, str]) -> Callable[[str], dict[str, str]]:
    def headers(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[role]}"}

    return headers


@pytest.fixture
def register(
    client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]]
) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def _register(charger_id: str, **extra: Any) -> dict[str, Any]:
        body = {"id": charger_id, "password": "correct-horse-battery", **extra}
        response = await client.post("/api/v1/chargers", json=body, headers=auth("admin"))
        assert response.status_code == 201, response.text
        return dict(response.json())

    return _register
