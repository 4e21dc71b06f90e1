"""The alerts and rules endpoints, on the real app, a real database and a real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.backends import Backend
from api.tokens import create_token
from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from rules.alerts import AlertStore
from rules.engine import Engine
from rules.files import bundled_pack, load_rules
from rules.points import NS, Point
from rules.sqlite_series import SQLiteSeriesStore
from rules.testing import T0


@pytest.fixture
async def client(db: Database, mosquitto_url: str, prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    mqtt = MqttClient(mosquitto_url, f"test-rules-api-{uuid.uuid4().hex[:8]}")
    await mqtt.connect()
    backend = Backend.build(db, mqtt, Topics(prefix))
    await backend.create_schema()
    transport = httpx.ASGITransport(app=create_app(backend))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
    await mqtt.disconnect()


@pytest.fixture
async def headers(db: Database, client: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    return {
        role: {"Authorization": f"Bearer {await create_token(db, role, f'{role}-bot')}"}
        for role in ("viewer", "operator")
    }


@pytest.fixture
async def engine(db: Database, tmp_path: Path) -> AsyncIterator[Engine]:
    store = SQLiteSeriesStore(tmp_path / "series.db")
    await store.open()
    await store.write(
        [
            Point(
                "connector_status",
                {"charger": c, "connector": "1"},
                {"status": "Faulted"},
                int(T0 * NS),
            )
            for c in ("CP-1", "CP-2")
        ]
    )
    engine = Engine(store, AlertStore(db), load_rules([bundled_pack()]))
    await engine.load()
    await engine.evaluate(T0 + 120)
    yield engine
    await store.close()


async def test_rules_api_lists_filters_and_acknowledges_alerts(
    client: httpx.AsyncClient, headers: dict[str, dict[str, str]], engine: Engine
) -> None:
    response = await client.get(
        "/api/v1/alerts", params={"state": "firing", "chargerId": "CP-1"}, headers=headers["viewer"]
    )
    assert response.status_code == 200, response.text
    [alert] = response.json()
    assert alert["rule"] == "ConnectorFaulted" and alert["labels"]["charger"] == "CP-1"
    assert alert["acknowledged"] is False
    bad = await client.get("/api/v1/alerts", params={"state": "sad"}, headers=headers["viewer"])
    assert bad.status_code == 422
    path = f"/api/v1/alerts/{alert['id']}/acknowledge"
    assert (await client.post(path, headers=headers["viewer"])).status_code == 403
    acked = await client.post(path, json={"comment": "on it"}, headers=headers["operator"])
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged"] is True
    assert acked.json()["acknowledgedBy"] == "operator-bot"
    lapsing = await client.post(path, json={"expiresIn": 0.01}, headers=headers["operator"])
    assert lapsing.json()["acknowledged"] is True
    await asyncio.sleep(0.02)
    again = await client.get(
        "/api/v1/alerts", params={"chargerId": "CP-1"}, headers=headers["viewer"]
    )
    assert again.json()[0]["acknowledged"] is False
    missing = await client.post("/api/v1/alerts/nope/acknowledge", headers=headers["operator"])
    assert missing.status_code == 404


async def test_rules_api_silence_is_applied_by_the_engine(
    client: httpx.AsyncClient, headers: dict[str, dict[str, str]], engine: Engine
) -> None:
    body = {"matchers": {"charger": "CP-2"}, "startsAt": T0, "duration": 3600, "comment": "works"}
    response = await client.post("/api/v1/silences", json=body, headers=headers["operator"])
    assert response.status_code == 201, response.text
    assert response.json()["endsAt"] == T0 + 3600
    await engine.evaluate(T0 + 180)
    alerts = (
        await client.get("/api/v1/alerts", params={"state": "firing"}, headers=headers["viewer"])
    ).json()
    assert {a["labels"]["charger"]: a["silenced"] for a in alerts} == {"CP-1": False, "CP-2": True}
    refused = await client.post(
        "/api/v1/silences", json={"matchers": {"charger": "x"}}, headers=headers["operator"]
    )
    assert refused.status_code == 422


async def test_rules_api_lists_rules_with_health_and_validates_yaml(
    client: httpx.AsyncClient, headers: dict[str, dict[str, str]], engine: Engine
) -> None:
    rules = (await client.get("/api/v1/rules", headers=headers["viewer"])).json()
    by_name = {r["name"]: r for r in rules}
    assert by_name["ConnectorFaulted"]["health"] == "ok"
    assert by_name["ConnectorFaulted"]["firing"] == 2
    assert by_name["OverTemperature"]["health"] == "nodata"
    ok = await client.post(
        "/api/v1/rules/validate",
        content=(bundled_pack() / "over_temperature.yaml").read_bytes(),
        headers={**headers["viewer"], "Content-Type": "application/yaml"},
    )
    assert ok.json() == {"valid": True, "errors": []}
    bad = await client.post(
        "/api/v1/rules/validate",
        content=b"groups:\n  - name: g\n    rules:\n      - alert: X\n        query: {}\n",
        headers={**headers["viewer"], "Content-Type": "application/yaml"},
    )
    result = bad.json()
    assert result["valid"] is False
    assert {e["line"] for e in result["errors"]} == {4, 5}  # condition; query fields
