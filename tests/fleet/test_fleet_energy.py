"""The energy engine against the real twin, broker and database: the desired
``chargingLimit`` it writes as sessions run, the limit changes, a charger goes offline, a
charger refuses, meter values come in, and another engine takes over.

The test plays the bridge's part of the contract (docs/shadow.md, "Charging limits"): it
reports connection, connector status, confirmed and refused limits into the shadows, and
publishes meter values, as the bridge does after the charger answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from retained import noted

from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.settings import Settings
from chargetwin.shadow_client import ShadowClient
from chargetwin.topics import Topics
from fleet.app import run_fleet
from fleet.energy import EnergyEngine
from fleet.sites import SiteStore
from twin.registry import ChargerRegistry
from twin.service import ShadowService
from twin.stores import ShadowStore

SITE = "depot"
CHARGERS = ("CP-0", "CP-1", "CP-2")


async def _ignore(topic: str, payload: bytes) -> None:
    return None


@dataclass
class Depot:
    db: Database
    topics: Topics
    mqtt: MqttClient  # the engine's
    bridge: MqttClient  # the test, as the bridge
    client: ShadowClient
    shadows: ShadowStore
    sites: SiteStore

    def engine(self, mqtt: MqttClient | None = None) -> EnergyEngine:
        mqtt = mqtt or self.mqtt
        return EnergyEngine(
            self.sites, ShadowClient(mqtt, self.topics), mqtt, self.topics,
            interval=30.0, debounce=0.05,
        )  # fmt: skip

    async def report(self, charger_id: str, reported: dict[str, Any]) -> None:
        await self.client.update(charger_id, {"reported": reported})

    async def limits(self, charger_id: str) -> dict[str, Any]:
        document = await self.shadows.get_document(charger_id) or {}
        return dict((document.get("state", {}).get("desired") or {}).get("chargingLimit") or {})

    async def port_limit(self, charger_id: str) -> float | None:
        port = ((await self.limits(charger_id)).get("connectors") or {}).get("1") or {}
        return port.get("limit")

    async def confirm(self, *charger_ids: str) -> None:
        """What the bridge reports once the charger accepted its profiles."""
        for charger_id in charger_ids:
            wanted = await self.limits(charger_id)
            await self.report(
                charger_id,
                {"chargingLimit": {"unit": "A", "failsafe": wanted.get("failsafe"),
                                   "connectors": wanted.get("connectors")}},
            )  # fmt: skip

    async def energy(self, patch: dict[str, Any]) -> None:
        _, errors = await self.sites.patch_energy(SITE, patch, actor="test")
        assert errors == []


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        for _ in range(100_000):
            if await check():
                return
            await asyncio.sleep(0.05)


async def limits_are(depot: Depot, expected: dict[str, float | None]) -> None:
    async def check() -> bool:
        return {c: await depot.port_limit(c) for c in expected} == expected

    try:
        await eventually(check)
    except TimeoutError:
        seen = {c: await depot.port_limit(c) for c in expected}
        raise AssertionError(f"limits {seen}, expected {expected}") from None


@pytest.fixture
async def depot(db: Database, mosquitto_url: str) -> AsyncIterator[Depot]:
    topics = Topics(noted(f"test-{uuid.uuid4().hex[:12]}"))
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for name in ("twin", "engine", "bridge"):
            mqtt = MqttClient(mosquitto_url, f"test-{name}-{topics.prefix}")
            await mqtt.connect()
            stack.push_async_callback(mqtt.disconnect)
            clients.append(mqtt)
        shadows, registry = ShadowStore(db), ChargerRegistry(db)
        await shadows.create_schema()
        await registry.create_schema()
        twin = ShadowService(clients[0], shadows, registry, topics)
        await twin.start()
        stack.push_async_callback(twin.stop)
        await clients[0].subscribe_acked(f"{topics.prefix}/twin-ready", _ignore)
        sites = SiteStore(db)
        await sites.create_schema()
        depot = Depot(db, topics, clients[1], clients[2], ShadowClient(clients[2], topics),
                      shadows, sites)  # fmt: skip
        for charger_id in CHARGERS:
            await registry.register(charger_id, None, site=SITE)
            await depot.report(
                charger_id,
                {"connection": {"online": True}, "connectors": {"1": {"status": "Charging"}}},
            )
        await depot.energy({"limitA": 48, "failsafeA": 16, "ratedA": 32})
        yield depot


async def test_energy_engine_keeps_the_site_within_its_limit(depot: Depot) -> None:
    engine = depot.engine()
    async with engine.running():
        # nothing confirmed yet: each counted at 32 A; 16 A each is a decrease, written
        await limits_are(depot, {"CP-0": 16.0, "CP-1": 16.0, "CP-2": 16.0})
        wanted = await depot.limits("CP-0")
        assert wanted == {
            "site": SITE, "unit": "A", "failsafe": {"limit": 16.0, "phases": 3},
            "connectors": {"1": {"limit": 16.0, "phases": 3}},
        }  # fmt: skip
        await depot.confirm(*CHARGERS)
        await eventually(lambda: _report_says(depot, lambda r: r["countedA"] == 48.0))

        # the limit lowered mid-session: written at once (decreases are safe)
        await depot.energy({"limitA": 36})
        engine.wake()
        await limits_are(depot, {"CP-0": 12.0, "CP-1": 12.0, "CP-2": 12.0})
        await depot.confirm(*CHARGERS)

        # CP-2 goes offline: counted at its confirmed failsafe (16 A), the others share 20
        await depot.report("CP-2", {"connection": {"online": False}})
        await limits_are(depot, {"CP-0": 10.0, "CP-1": 10.0, "CP-2": 12.0})
        await depot.confirm("CP-0", "CP-1")
        await eventually(lambda: _report_says(depot, lambda r: r["countedA"] == 36.0))
        report = await _report(depot)
        assert report["connectors"]["CP-2/1"]["state"] == "offline"
        assert report["fixedA"] == 16.0 and report["headroomA"] == 0.0

        # CP-1 refuses its limit: counted at its full 32 A; 16 + 32 > 36 leaves CP-0 nothing
        refusal = {"value": 10.0, "status": "Rejected", "at": 1.0}
        await depot.report("CP-1", {"refused": {"chargingLimit": {"1": refusal}}})
        await limits_are(depot, {"CP-0": 0.0, "CP-1": 10.0})
        await eventually(lambda: _report_says(depot, lambda r: r["paused"] == ["CP-0/1"]))
        report = await _report(depot)
        assert report["fixedA"] == 48.0
        assert report["connectors"]["CP-1/1"]["state"] == "refused"

        # back online, refusal gone: everyone shares the 36 A again
        await depot.report("CP-1", {"refused": None})
        await depot.report("CP-2", {"connection": {"online": True}})
        await depot.confirm("CP-0")
        await limits_are(depot, {"CP-0": 12.0, "CP-1": 12.0, "CP-2": 12.0})

        # no limit any more: the limits the engine wrote are cleared
        await depot.energy({"limitA": None})
        engine.wake()

        async def cleared() -> bool:
            return all([await depot.limits(c) == {} for c in CHARGERS])

        await eventually(cleared)


async def test_a_starting_session_is_offered_the_minimum_at_once(depot: Depot) -> None:
    # CP-2 is idle: the minimum for the next session is kept free (docs/sites.md, "Reaction
    # time: the reserve"; a tenth of 60 A holds one). No failsafe: shares up to 32 A.
    await depot.energy({"failsafeA": None, "limitA": 60})
    await depot.report("CP-2", {"connectors": {"1": {"status": "Available"}}})
    engine = depot.engine()
    async with engine.running():
        await limits_are(depot, {"CP-0": 27.0, "CP-1": 27.0, "CP-2": 0.0})
        await depot.confirm(*CHARGERS)
        await eventually(lambda: _report_says(depot, lambda r: r["countedA"] == 54.0))
        # CP-2's session starts: the others go down to 20 A and CP-2 gets the minimum at
        # once (27 + 27 + 6 = 60 A), without waiting for their confirmation
        await depot.report("CP-2", {"connectors": {"1": {"status": "Charging"}}})
        await limits_are(depot, {"CP-0": 20.0, "CP-1": 20.0, "CP-2": 6.0})
        # the rest of its share once the others confirmed their decrease
        await depot.confirm("CP-0", "CP-1")
        await limits_are(depot, {"CP-0": 20.0, "CP-1": 20.0, "CP-2": 20.0})


async def test_energy_engine_measures_load_and_records_a_breach(depot: Depot) -> None:
    engine = depot.engine()
    async with engine.running():
        await limits_are(depot, {"CP-0": 16.0, "CP-1": 16.0, "CP-2": 16.0})
        await depot.confirm(*CHARGERS)
        for charger_id, amps in (("CP-0", 15.0), ("CP-1", 16.5), ("CP-2", 20.0)):
            values = [
                {"measurand": "Current.Import", "phase": f"L{n}", "unit": "A", "value": amps - n}
                for n in (0, 1, 2)
            ] + [{"measurand": "Power.Active.Import", "phase": None, "unit": "W", "value": 3000.0}]
            message = {"connectorId": 1, "transactionId": 1, "timestamp": "x", "values": values}
            depot.bridge.publish(
                depot.topics.telemetry(charger_id, "meterValues"), json.dumps(message), qos=1
            )

        def over(report: dict[str, Any]) -> bool:
            return report["loadA"] == 51.5 and report["lastBreach"] is not None

        await eventually(lambda: _report_says(depot, over))
        report = await _report(depot)
        assert report["lastBreach"]["amountA"] == 3.5 and report["loadKW"] == 9.0
        assert report["connectors"]["CP-2/1"]["measuredA"] == 20.0
        assert report["unknownLoad"] == 0


async def test_a_new_engine_takes_over_where_the_last_one_left(
    depot: Depot, database_url: str, mosquitto_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        mqtt_url=mosquitto_url, mqtt_prefix=depot.topics.prefix, database_url=database_url,
        data_dir=tmp_path, energy_interval=30.0,
    )  # fmt: skip
    stops = [asyncio.Event(), asyncio.Event()]

    def fleet(i: int) -> asyncio.Task[None]:
        named = settings.model_copy(update={"mqtt_client_id": f"fleet-{i}-{depot.topics.prefix}"})
        return asyncio.create_task(run_fleet(named, stops[i]), name=f"fleet-{i}")

    leaders = [fleet(0)]
    try:
        await limits_are(depot, {"CP-0": 16.0, "CP-1": 16.0, "CP-2": 16.0})  # 0 leads
        leaders.append(fleet(1))  # a standby
        await depot.confirm(*CHARGERS)
        await asyncio.sleep(0.5)
        # the leader goes; the standby takes over and keeps the site within a new limit,
        # woken as the API wakes it (a wake-up before it leads is lost: sent again)
        stops[0].set()
        await leaders[0]
        await depot.energy({"limitA": 30})

        async def lowered() -> bool:
            depot.bridge.publish(depot.topics.fleet_wake(), b'{"engine": "energy"}', qos=0)
            return all([await depot.port_limit(c) == 10.0 for c in CHARGERS])

        await eventually(lowered, timeout=15.0)
        await eventually(lambda: _report_says(depot, lambda r: r["limitA"] == 30.0))
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*leaders, return_exceptions=True)


async def _report(depot: Depot) -> dict[str, Any]:
    return await depot.sites.report(SITE) or {}


async def _report_says(depot: Depot, check: Callable[[dict[str, Any]], bool]) -> bool:
    report = await _report(depot)
    return bool(report) and check(report)


async def test_hostile_messages_cost_the_engine_nothing(depot: Depot) -> None:
    engine = depot.engine()
    async with engine.running():
        await limits_are(depot, {"CP-0": 16.0, "CP-1": 16.0, "CP-2": 16.0})
        hostile = [
            b"", b"not json", b"[]", b"null", b'{"connectorId": "x"}', b'{"values": 3}',
            b'{"connectorId": 1, "values": [3, {"measurand": "Current.Import", "value": "1e999"}]}',
            b'{"connectorId": 1, "values": [{"measurand": "Current.Import", "value": NaN}]}',
            b'{"previous": [], "current": 1}', b'{"event": "stopped", "connectorId": []}',
        ]  # fmt: skip
        for payload in hostile:
            for kind in ("telemetry/meterValues", "events/transaction", "shadow/update/documents"):
                depot.bridge.publish(f"{depot.topics.charger('CP-0')}/{kind}", payload, qos=1)
        await depot.energy({"limitA": 30})
        engine.wake()
        await limits_are(depot, {"CP-0": 10.0, "CP-1": 10.0, "CP-2": 10.0})
        await eventually(lambda: _report_says(depot, lambda r: r["unknownLoad"] == 3))


async def test_a_charger_that_ignores_its_limit_is_counted_at_rated(depot: Depot) -> None:
    offset = [0.0]
    engine = depot.engine()
    engine.clock = lambda: time.time() + offset[0]

    def draw(charger_id: str, amps: float) -> None:
        values = [{"measurand": "Current.Import", "phase": "L1", "unit": "A", "value": amps}]
        message = {"connectorId": 1, "transactionId": 1, "timestamp": "x", "values": values}
        depot.bridge.publish(
            depot.topics.telemetry(charger_id, "meterValues"), json.dumps(message), qos=1
        )

    async with engine.running():
        await limits_are(depot, {"CP-0": 16.0, "CP-1": 16.0, "CP-2": 16.0})
        await depot.confirm(*CHARGERS)
        draw("CP-0", 24.0)  # 8 A over its confirmed 16 A
        await eventually(
            lambda: _report_says(
                depot, lambda r: r["connectors"]["CP-0/1"]["overSince"] is not None
            )
        )
        assert (await _report(depot))["ignoring"] == []  # not for a minute yet
        offset[0] = 61.0
        draw("CP-0", 24.0)
        # counted at its rated 32 A: the others share the 16 A left
        await limits_are(depot, {"CP-0": 16.0, "CP-1": 8.0, "CP-2": 8.0})
        await eventually(lambda: _report_says(depot, lambda r: r["ignoring"] == ["CP-0/1"]))
        assert (await _report(depot))["connectors"]["CP-0/1"]["state"] == "refused"
        # it obeys again: steered as before
        await depot.confirm("CP-1", "CP-2")
        draw("CP-0", 15.0)
        await limits_are(depot, {"CP-0": 16.0, "CP-1": 16.0, "CP-2": 16.0})


async def test_the_site_report_is_published_at_most_every_report_interval(depot: Depot) -> None:
    """Every pass stores the report; it goes out on MQTT at most every ``report_every``
    seconds, and at once when the site goes over its limit or back."""
    published: list[dict[str, Any]] = []

    async def collect(topic: str, payload: bytes) -> None:
        published.append(json.loads(payload))

    await depot.bridge.subscribe_acked(depot.topics.all_site_energy_reports(), collect)
    engine = depot.engine()
    engine.report_every = 3600.0

    def draw(amps: float) -> None:
        values = [{"measurand": "Current.Import", "phase": "L1", "unit": "A", "value": amps}]
        message = {"connectorId": 1, "values": values}
        for charger_id in CHARGERS:
            depot.bridge.publish(
                depot.topics.telemetry(charger_id, "meterValues"), json.dumps(message), qos=1
            )

    async with engine.running():
        await limits_are(depot, {"CP-0": 16.0, "CP-1": 16.0, "CP-2": 16.0})
        await depot.confirm(*CHARGERS)
        await eventually(lambda: _report_says(depot, lambda r: r["countedA"] == 48.0))
        for amps in (10.0, 11.0, 12.0):  # passes within the site's limit: stored only
            draw(amps)
            await eventually(lambda: _report_says(depot, lambda r: r["loadA"] == 3 * amps))  # noqa: B023
        assert engine.reports == 1 and engine.passes >= 4
        draw(17.0)  # 51 A on a 48 A limit: out at once
        await eventually(lambda: _report_says(depot, lambda r: r["over"]))
        draw(15.0)  # and back
        await eventually(lambda: _report_says(depot, lambda r: r["loadA"] == 45.0))

        async def three() -> bool:
            return len(published) == 3

        await eventually(three)
    assert [(m["site"], m["reported"]["over"]) for m in published] == [
        (SITE, False), (SITE, True), (SITE, False),
    ]  # fmt: skip
    assert (published[1]["reported"]["loadA"], published[1]["reported"]["limitA"]) == (51.0, 48.0)
    assert engine.reports == 3


async def test_a_site_that_is_no_topic_level_is_steered_but_not_announced(depot: Depot) -> None:
    """Site names are free text in the registry; one with "/" (or "+", "#") cannot be a
    topic level: its chargers keep their limit, its report is stored, not published."""
    topics: list[str] = []

    async def collect(topic: str, payload: bytes) -> None:
        topics.append(topic)

    await depot.bridge.subscribe_acked(f"{depot.topics.prefix}/sites/#", collect)
    await ChargerRegistry(depot.db).register("CP-9", None, site="north/2")
    await depot.report(
        "CP-9", {"connection": {"online": True}, "connectors": {"1": {"status": "Charging"}}}
    )
    _, errors = await depot.sites.patch_energy("north/2", {"limitA": 10}, actor="test")
    assert errors == []
    engine = depot.engine()
    engine.report_every = 0.0  # every pass publishes
    async with engine.running():
        await limits_are(depot, {"CP-9": 10.0, "CP-0": 16.0})
        await eventually(lambda: _report_of(depot, "north/2"))
        # "depot" goes first in a pass: a later pass's depot report arrives after anything
        # the pass that stored north/2's report published (one client's QoS 1 is in order)
        seen = len(topics)
        engine.wake()

        async def next_pass_arrived() -> bool:
            return len(topics) > seen

        await eventually(next_pass_arrived)
    assert set(topics) == {depot.topics.site_energy_reported(SITE)}


async def _report_of(depot: Depot, site: str) -> bool:
    return bool(await depot.sites.report(site))


async def test_a_schedule_window_lowers_the_limit_at_its_edge(depot: Depot) -> None:
    # The engine's clock runs 1.5 s before a minute's start, when a window with its own
    # lower limit opens (cron has minute steps; the engine sleeps until the next edge).
    edge = (math.floor(time.time() / 60) + 2) * 60.0
    offset = edge - 1.5 - time.time()
    opens = time.gmtime(edge)
    window = {
        "name": "peak", "cron": f"{opens.tm_min} {opens.tm_hour} * * *",
        "durationMinutes": 5, "timezone": "UTC", "limitA": 24,
    }  # fmt: skip
    await depot.energy({"schedule": [window]})
    engine = EnergyEngine(
        depot.sites, ShadowClient(depot.mqtt, depot.topics), depot.mqtt, depot.topics,
        interval=30.0, debounce=0.05, clock=lambda: time.time() + offset,
    )  # fmt: skip
    async with engine.running():
        await limits_are(depot, {"CP-0": 16.0, "CP-1": 16.0, "CP-2": 16.0})  # base: 48 A
        await depot.confirm(*CHARGERS)
        assert time.time() + offset < edge, "the pass came after the edge: machine too slow"
        # no message, no wake-up: the edge itself lowers every share (24 A / 3)
        await limits_are(depot, {"CP-0": 8.0, "CP-1": 8.0, "CP-2": 8.0})
        assert time.time() + offset >= edge
        await eventually(
            lambda: _report_says(depot, lambda r: r["limitA"] == 24.0 and r["window"] == "peak")
        )


async def test_an_engine_hears_the_chargers_only_while_a_site_has_chargers(depot: Depot) -> None:
    await depot.db.execute("UPDATE chargers SET site = NULL")
    engine = depot.engine()
    async with engine.running():
        # A fleet without sites: no shadow document or meter value reaches the leader.
        assert not engine.listening
        await depot.db.execute("UPDATE chargers SET site = ?", (SITE,))
        engine.wake()
        await limits_are(depot, {"CP-0": 16.0, "CP-1": 16.0, "CP-2": 16.0})
        assert engine.listening
        await depot.db.execute("UPDATE chargers SET site = NULL")
        engine.wake()
        await eventually(lambda: _not_listening(engine))


async def _not_listening(engine: EnergyEngine) -> bool:
    return not engine.listening
