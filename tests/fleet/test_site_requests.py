"""A site's energy state over MQTT (get and update, like a shadow) against the real broker
and database: answers, versions, refusals with their reasons, the audit and the wake-up."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from retained import noted

from chargetwin.audit import AuditLog
from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from fleet.site_requests import SiteRequests
from fleet.sites import SiteStore
from twin.registry import ChargerRegistry


@dataclass
class Requester:
    mqtt: MqttClient
    base: str
    answers: asyncio.Queue[tuple[str, dict[str, Any]]]
    wakes: list[int]
    audit: AuditLog

    async def ask(self, site: str, operation: str, payload: bytes) -> tuple[str, dict[str, Any]]:
        self.mqtt.publish(f"{self.base}/{site}/energy/{operation}", payload, qos=1)
        topic, answer = await asyncio.wait_for(self.answers.get(), 5)
        return topic.rsplit("/", 1)[1], answer


@pytest.fixture
async def requester(db: Database, mosquitto_url: str) -> AsyncIterator[Requester]:
    topics = Topics(noted(f"test-{uuid.uuid4().hex[:12]}"))
    registry = ChargerRegistry(db)
    await registry.create_schema()
    await registry.register("CP-1", None, site="depot")
    sites, audit = SiteStore(db), AuditLog(db)
    await sites.create_schema()
    await audit.create_schema()
    server = MqttClient(mosquitto_url, f"test-fleet-{topics.prefix}")
    client = MqttClient(mosquitto_url, f"test-client-{topics.prefix}")
    await server.connect()
    await client.connect()
    wakes: list[int] = []
    answers: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def on_answer(topic: str, payload: bytes) -> None:
        await answers.put((topic, json.loads(payload)))

    base = f"{topics.prefix}/sites"
    for result in ("accepted", "rejected"):
        await client.subscribe_acked(f"{base}/+/energy/+/{result}", on_answer)
    requests = SiteRequests(sites, audit, server, topics, lambda: wakes.append(1))
    try:
        async with requests.running():
            yield Requester(client, base, answers, wakes, audit)
    finally:
        await client.disconnect()
        await server.disconnect()


async def test_site_energy_over_mqtt(requester: Requester) -> None:
    result, answer = await requester.ask("depot", "get", b'{"clientToken": "g1"}')
    assert (result, answer) == (
        "accepted",
        {"site": "depot", "desired": {}, "version": 0, "reported": None, "clientToken": "g1"},
    )
    update = {"desired": {"limitA": 63, "strategy": "equal"}, "clientToken": "u1"}
    result, answer = await requester.ask("depot", "update", json.dumps(update).encode())
    assert result == "accepted" and answer["version"] == 1 and answer["clientToken"] == "u1"
    assert requester.wakes == [1]
    stale = {"desired": {"limitA": 40}, "version": 0, "clientToken": "u2"}
    result, answer = await requester.ask("depot", "update", json.dumps(stale).encode())
    assert (result, answer["code"], answer["clientToken"]) == ("rejected", 409, "u2")
    fresh = {"desired": {"limitA": 40}, "version": 1}
    result, answer = await requester.ask("depot", "update", json.dumps(fresh).encode())
    assert result == "accepted" and answer["desired"] == {"limitA": 40, "strategy": "equal"}

    invalid = {"desired": {"limitA": -5, "minimumA": "six"}}
    result, answer = await requester.ask("depot", "update", json.dumps(invalid).encode())
    assert (result, answer["code"]) == ("rejected", 422)
    assert {e["pointer"] for e in answer["errors"]} == {"/limitA", "/minimumA"}
    for payload in (b"{", b"[1]", b'{"desired": 3}', b'{"desired": {"limitA": NaN}}',
                    b'{"desired": {}, "version": "1"}'):  # fmt: skip
        result, answer = await requester.ask("depot", "update", payload)
        assert (result, answer["code"]) == ("rejected", 400), payload
    result, answer = await requester.ask("nowhere", "get", b"")
    assert (result, answer["code"]) == ("rejected", 404)
    result, answer = await requester.ask("nowhere", "update", b'{"desired": {"limitA": 1}}')
    assert (result, answer["code"]) == ("rejected", 404)

    result, answer = await requester.ask("depot", "get", b"")
    assert answer["version"] == 2 and answer["desired"]["limitA"] == 40
    entries = await requester.audit.list(charger_id="site:depot")
    assert sorted(e.outcome.value for e in entries) == sorted(
        ["accepted", "accepted", "precondition-failed", "invalid", *["invalid"] * 5]
    )
    assert requester.wakes == [1, 1]
