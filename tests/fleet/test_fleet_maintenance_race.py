"""Two maintenance schedulers on one database take each step once.

As for campaigns (test_fleet_campaign_race.py): two leaders at once are rare and short,
so each scheduler step is conditional on what it read. Two schedulers with their own
database connections and MQTT clients tick at the same moment against the real twin;
the test counts the desired-availability requests at the twin (each one makes the bridge
send ChangeAvailability) and the work orders in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from retained import noted

from chargetwin.database import Database, connect
from chargetwin.mqtt import MqttClient
from chargetwin.shadow_client import ShadowClient
from chargetwin.topics import Topics
from fleet.maintenance import CLAIM_STALE_S, Maintenance
from fleet.uptime import Interval
from twin.registry import ChargerRegistry
from twin.service import ShadowService
from twin.stores import ShadowStore

T0 = time.time() + 86_400  # in the future: nothing here happens by the real clock
SITE = "depot"


@dataclass
class Pair:
    one: Maintenance
    two: Maintenance
    client: ShadowClient
    availability_writes: Counter[str]
    chargers: list[str]


async def _ignore(topic: str, payload: bytes) -> None:
    return None


@pytest.fixture
async def pair(db: Database, database_url: str, mosquitto_url: str) -> AsyncIterator[Pair]:
    topics = Topics(noted(f"test-{uuid.uuid4().hex[:12]}"))
    writes: Counter[str] = Counter()

    async def count(topic: str, payload: bytes) -> None:
        state = json.loads(payload).get("state") or {}
        if "0" in ((state.get("desired") or {}).get("availability") or {}):
            writes[topics.charger_id_of(topic)] += 1

    async with contextlib.AsyncExitStack() as stack:
        other = connect(database_url)
        await other.open()
        stack.push_async_callback(other.close)
        clients = []
        for name in ("twin", "count", "one", "two"):
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
        await clients[1].subscribe_acked(topics.all_shadow_requests("update"), count)
        one = Maintenance.build(db, registry, ShadowClient(clients[2], topics))
        two = Maintenance.build(other, ChargerRegistry(other), ShadowClient(clients[3], topics))
        await one.create_schema()
        await two.create_schema()
        chargers = [f"CP-{i}" for i in range(6)]
        client = ShadowClient(clients[2], topics)
        for charger_id in chargers:
            await registry.register(charger_id, None, site=SITE)
            await client.update(charger_id, {"reported": {"availability": {"0": "Operative"}}})
        yield Pair(one, two, client, writes, chargers)


async def both(pair: Pair, now: float) -> None:
    await asyncio.gather(pair.one.scheduler.tick(now), pair.two.scheduler.tick(now))


async def desired0(pair: Pair, charger_id: str) -> object:
    document = await pair.client.get(charger_id)
    return ((document["state"].get("desired") or {}).get("availability") or {}).get("0")


async def test_two_schedulers_start_and_end_a_window_once_per_charger(pair: Pair) -> None:
    await pair.one.windows.create(
        title="site works", created_by="test", site=SITE, starts_at=T0 + 100, ends_at=T0 + 200
    )
    await both(pair, T0 + 50)
    assert sum(pair.availability_writes.values()) == 0
    await both(pair, T0 + 100)
    await asyncio.sleep(0.3)  # every request has reached the twin
    assert pair.availability_writes == Counter(dict.fromkeys(pair.chargers, 1))
    runs = await pair.one.windows.runs(state="active")
    assert sorted(r.charger_id for r in runs) == pair.chargers
    holds = await pair.one.windows.holds()
    assert all(h == {"desired": None, "reported": "Operative"} for h in holds.values())
    assert sorted(holds) == pair.chargers
    for charger_id in pair.chargers:
        assert await desired0(pair, charger_id) == "Inoperative"

    await both(pair, T0 + 200)
    await asyncio.sleep(0.3)
    for charger_id in pair.chargers:
        assert await desired0(pair, charger_id) == "Operative"
    assert await pair.one.windows.holds() == {}
    assert await pair.one.windows.runs(state="active") == []


async def test_two_schedulers_open_an_inspection_s_work_orders_once(pair: Pair) -> None:
    inspection = await pair.one.inspections.create(
        title="yearly check", cron="0 * * * *", timezone="UTC", created_by="test", site=SITE,
        now=T0,
    )  # fmt: skip
    due = inspection.next_due()
    assert due is not None
    for _ in range(2):  # a second round: the run is recorded, nothing is due any more
        await both(pair, due + 1)
    orders, total = await pair.one.work_orders.list(source="inspection", limit=100)
    assert total == len(pair.chargers)
    assert sorted(str(o.charger_id) for o in orders) == pair.chargers
    assert (await pair.one.inspections.get(inspection.id)).last_run_at == due + 1


async def test_a_start_claimed_by_a_scheduler_that_died_is_taken_over(pair: Pair) -> None:
    window = await pair.one.windows.create(
        title="one charger", created_by="test", charger_id="CP-0",
        starts_at=T0 + 100, ends_at=T0 + 1000,
    )  # fmt: skip
    occurrence = Interval(T0 + 100, T0 + 1000)
    # A scheduler claimed the start and died before it took the charger out.
    assert await pair.two.windows.claim_run(window.id, "CP-0", occurrence, T0 + 100, CLAIM_STALE_S)
    await pair.one.scheduler.tick(T0 + 101)  # the claim is fresh: not taken over yet
    await asyncio.sleep(0.3)
    assert pair.availability_writes["CP-0"] == 0
    await pair.one.scheduler.tick(T0 + 101 + CLAIM_STALE_S)
    await asyncio.sleep(0.3)
    assert pair.availability_writes["CP-0"] == 1
    assert await desired0(pair, "CP-0") == "Inoperative"
    [run] = await pair.one.windows.runs(state="active")
    assert run.charger_id == "CP-0"


async def test_a_charger_is_not_returned_while_a_window_started_since_the_holds_were_read(
    pair: Pair,
) -> None:
    """The restore re-checks the runs just before it writes: a stale look at the holds
    must not put a charger back in service in the middle of a new window."""
    await pair.client.update("CP-1", {"desired": {"availability": {"0": "Inoperative"}}})
    await pair.one.windows.put_hold("CP-1", {"desired": None, "reported": "Operative"}, T0)
    window = await pair.one.windows.create(
        title="w", created_by="test", charger_id="CP-1", starts_at=T0, ends_at=T0 + 500
    )
    occurrence = Interval(T0, T0 + 500)
    assert await pair.one.windows.claim_run(window.id, "CP-1", occurrence, T0 + 1, CLAIM_STALE_S)
    assert await pair.one.windows.activate_run(window.id, "CP-1", T0, T0 + 1)
    # What a scheduler that read the holds before that run started would do now:
    await pair.two.scheduler._restore("CP-1", {"desired": None, "reported": "Operative"})
    assert await desired0(pair, "CP-1") == "Inoperative"
    assert "CP-1" in await pair.one.windows.holds()
    assert not await pair.one.windows.release_hold("CP-1")
