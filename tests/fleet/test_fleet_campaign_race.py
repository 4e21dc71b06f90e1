"""Two campaign engines on one database never take a step twice.

Leadership makes two engines at once rare (a leader cut off from the database finishing
its tick while a standby takes over), so the engine's every write is a compare-and-set on
what it read. These tests run two engines on their own database connections and MQTT
clients (as in two processes) against the real twin and the real database, and count
what matters at the twin: the requests that set ``desired.firmware.version``, each of
which makes the bridge send an UpdateFirmware. A stale engine is made deterministic by
holding its writes (``HeldStore``) until the other engine moved on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from retained import noted

from chargetwin.database import Database, connect
from chargetwin.mqtt import MqttClient
from chargetwin.shadow_client import ShadowClient
from chargetwin.topics import Topics
from fleet.campaigns import (
    Assignment,
    Campaign,
    CampaignStore,
    Policy,
    Transition,
    new_campaign_id,
    phase_sizes,
)
from fleet.rollouts import CampaignEngine
from twin.registry import ChargerRegistry
from twin.service import ShadowService
from twin.stores import ShadowStore

VENDOR, MODEL, OLD, NEW = "ChargeTwin", "CT-AC22", "1.4.2", "1.5.0"


class HeldStore(CampaignStore):
    """A campaign store whose writes matching ``when`` wait until ``go`` is set:
    the engine using it read the database, then stalls (as a partitioned leader would)."""

    def __init__(self, db: Database, when: Callable[[Sequence[Transition]], bool]) -> None:
        super().__init__(db)
        self.when = when
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def apply(
        self, campaign_id: str, transitions: Sequence[Transition], **kwargs: Any
    ) -> list[bool]:
        if transitions and self.when(transitions) and not self.go.is_set():
            self.reached.set()
            await self.go.wait()
        return await super().apply(campaign_id, transitions, **kwargs)


@dataclass
class Rig:
    db: Database
    other_db: Database
    topics: Topics
    mosquitto_url: str
    reporter: ShadowClient  # plays the bridge: reports what the chargers do
    registry: ChargerRegistry
    desired_writes: Counter[str]
    clients: list[MqttClient]

    async def client(self) -> ShadowClient:
        mqtt = MqttClient(self.mosquitto_url, f"test-engine-{uuid.uuid4().hex[:8]}")
        await mqtt.connect()
        self.clients.append(mqtt)
        return ShadowClient(mqtt, self.topics)

    async def engine(self, store: CampaignStore | None = None, **kw: Any) -> CampaignEngine:
        """An engine as in a process of its own: own MQTT client; ``store`` on any db."""
        store = store or CampaignStore(self.other_db)
        return CampaignEngine(store, ShadowStore(store.db), await self.client(), **kw)

    async def report(self, charger_id: str, reported: dict[str, Any]) -> None:
        await self.reporter.update(charger_id, {"reported": reported})

    async def seed(self, count: int) -> list[str]:
        ids = [f"CP-{i:03d}" for i in range(count)]
        for charger_id in ids:
            await self.registry.register(charger_id, None)
            await self.report(
                charger_id,
                {
                    "connection": {"online": True},
                    "connectors": {"1": {"status": "Available", "errorCode": "NoError"}},
                    "chargePoint": {"vendor": VENDOR, "model": MODEL},
                    "firmware": {"version": OLD},
                },
            )
        return ids

    async def campaign(
        self, ids: list[str], canary: int, waves: list[int | str], **policy: Any
    ) -> Campaign:
        sizes = phase_sizes(len(ids), canary, waves)
        assignments, start = [], 0
        for index, size in enumerate(sizes):
            assignments += [Assignment(c, index) for c in ids[start : start + size]]
            start += size
        campaign = Campaign(
            new_campaign_id(), "race", "img", VENDOR, MODEL, NEW, {},
            Policy(only_idle=False, **policy), sizes, "running", 0, None, time.time(), time.time(),
        )  # fmt: skip
        await CampaignStore(self.db).create(campaign, assignments)
        return campaign

    async def rows(self, campaign: Campaign) -> dict[str, Any]:
        rows = await CampaignStore(self.db).chargers(campaign.campaign_id, limit=10_000)
        return {r.charger_id: r for r in rows}

    async def fail(self, charger_id: str) -> None:
        now = time.time()
        await self.report(
            charger_id,
            {
                "firmware": {"status": "InstallationFailed", "updatedAt": now},
                "refused": {"firmware": {"value": NEW, "status": "InstallationFailed", "at": now}},
            },
        )

    async def install(self, charger_id: str) -> None:
        now = time.time()
        await self.report(
            charger_id,
            {"firmware": {"requested": {"version": NEW, "via": "UpdateFirmware", "at": now}}},
        )
        await self.report(
            charger_id, {"firmware": {"version": NEW, "status": "Installed", "updatedAt": now}}
        )


@pytest.fixture
async def rig(db: Database, database_url: str, mosquitto_url: str) -> AsyncIterator[Rig]:
    topics = Topics(noted(f"test-{uuid.uuid4().hex[:12]}"))
    other_db = connect(database_url)
    await other_db.open()
    shadows, registry = ShadowStore(db), ChargerRegistry(db)
    await shadows.create_schema()
    await registry.create_schema()
    await CampaignStore(db).create_schema()
    await CampaignStore(other_db).create_schema()  # a second process starting: no harm
    desired_writes: Counter[str] = Counter()

    async def count(topic: str, payload: bytes) -> None:
        state = json.loads(payload).get("state") or {}
        firmware = (state.get("desired") or {}).get("firmware") or {}
        if firmware.get("version") == NEW:
            desired_writes[topics.charger_id_of(topic)] += 1

    clients: list[MqttClient] = []
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(other_db.close)
        twin_mqtt = MqttClient(mosquitto_url, f"test-twin-{topics.prefix}")
        await twin_mqtt.connect()
        stack.push_async_callback(twin_mqtt.disconnect)
        twin = ShadowService(twin_mqtt, shadows, registry, topics)
        await twin.start()
        stack.push_async_callback(twin.stop)
        # Its subscriptions must be in place before the first request is published.
        await twin_mqtt.subscribe_acked(f"{topics.prefix}/twin-ready", _ignore)
        counter = MqttClient(mosquitto_url, f"test-count-{topics.prefix}")
        await counter.connect()
        stack.push_async_callback(counter.disconnect)
        await counter.subscribe_acked(topics.all_shadow_requests("update"), count)

        async def disconnect_all() -> None:
            for client in clients:
                await client.disconnect()

        stack.push_async_callback(disconnect_all)
        r = Rig(db, other_db, topics, mosquitto_url, None, registry, desired_writes, clients)  # type: ignore[arg-type]
        r.reporter = await r.client()
        yield r


async def _ignore(topic: str, payload: bytes) -> None:
    return None


async def test_a_stale_retry_does_not_undo_the_next_attempt(rig: Rig) -> None:
    """B reads a failed attempt 1 and stalls; A retries it (attempt 2); B's late
    "attempt failed, back to the queue" must not apply to attempt 2 (same state, other
    revision), or B would start an attempt 3 and the charger get a third UpdateFirmware."""
    [charger] = await rig.seed(1)
    campaign = await rig.campaign([charger], 1, [], retries=3, failure_threshold=100.0)
    a = await rig.engine(CampaignStore(rig.db))
    await a.tick()
    assert rig.desired_writes[charger] == 1
    await rig.fail(charger)

    held = HeldStore(rig.other_db, lambda ts: any(t.new == "queued" for t in ts))
    b = await rig.engine(held)
    stale = asyncio.create_task(b.tick())
    await asyncio.wait_for(held.reached.wait(), 10)  # B read attempt 1 failed
    await a.tick()  # A: back to the queue and started again: attempt 2
    row = (await rig.rows(campaign))[charger]
    assert (row.state, row.attempts) == ("scheduled", 2)
    assert rig.desired_writes[charger] == 2
    held.go.set()
    await asyncio.wait_for(stale, 10)
    row = (await rig.rows(campaign))[charger]
    assert (row.state, row.attempts) == ("scheduled", 2), row
    await asyncio.sleep(0.3)  # any publish of B would have reached the twin by now
    assert rig.desired_writes[charger] == 2


async def test_a_stale_engine_starts_nothing_in_a_campaign_paused_since_it_read(rig: Rig) -> None:
    ids = await rig.seed(3)
    campaign = await rig.campaign(ids, 3, [])
    held = HeldStore(rig.other_db, lambda ts: any(t.start for t in ts))
    b = await rig.engine(held)
    stale = asyncio.create_task(b.tick())
    await asyncio.wait_for(held.reached.wait(), 10)  # B read "running" and chose chargers
    assert await CampaignStore(rig.db).set_state(campaign.campaign_id, "paused", old=("running",))
    held.go.set()
    await asyncio.wait_for(stale, 10)
    assert {r.state for r in (await rig.rows(campaign)).values()} == {"queued"}
    await asyncio.sleep(0.3)
    assert sum(rig.desired_writes.values()) == 0


async def test_two_engines_set_a_lost_desired_firmware_again_only_once(rig: Rig) -> None:
    [charger] = await rig.seed(1)
    campaign = await rig.campaign([charger], 1, [])
    a = await rig.engine(CampaignStore(rig.db))
    await a.tick()
    assert rig.desired_writes[charger] == 1
    # The desired firmware is gone (as if the request never reached the twin).
    await rig.reporter.update(charger, {"desired": {"firmware": None}})

    def claim(ts: Sequence[Transition]) -> bool:
        return any(t.old == t.new == "scheduled" for t in ts)

    one = HeldStore(rig.db, claim)
    two = HeldStore(rig.other_db, claim)
    first = await rig.engine(one, republish_after=0.0)
    second = await rig.engine(two, republish_after=0.0)
    ticks = [asyncio.create_task(first.tick()), asyncio.create_task(second.tick())]
    await asyncio.wait_for(asyncio.gather(one.reached.wait(), two.reached.wait()), 10)
    one.go.set()
    two.go.set()  # both read "desired missing": both try to claim at once
    await asyncio.wait_for(asyncio.gather(*ticks), 10)
    await asyncio.sleep(0.3)
    assert rig.desired_writes[charger] == 2  # the first attempt and one republish
    row = (await rig.rows(campaign))[charger]
    assert (row.state, row.attempts) == ("scheduled", 1)


async def test_a_fresh_start_is_not_set_again_before_republish_after(rig: Rig) -> None:
    [charger] = await rig.seed(1)
    await rig.campaign([charger], 1, [])
    a = await rig.engine(CampaignStore(rig.db), republish_after=30.0)
    await a.tick()
    await rig.reporter.update(charger, {"desired": {"firmware": None}})
    await a.tick()
    await asyncio.sleep(0.3)
    assert rig.desired_writes[charger] == 1  # maybe still on its way: not doubled


async def test_two_engines_ticking_concurrently_complete_a_campaign_without_a_double_step(
    rig: Rig,
) -> None:
    """Both engines run flat out on their own connections while the chargers install;
    some fail their first attempt. Exactly one desired write per charger per attempt."""
    ids = await rig.seed(24)
    failing = set(ids[5:10])
    campaign = await rig.campaign(
        ids, 4, ["50%"], max_concurrent=6, retries=1, failure_threshold=100.0
    )
    seen: Counter[str] = Counter()
    stop = asyncio.Event()

    async def chargers() -> None:
        """Install (or fail once) whatever was asked since the last look."""
        while not stop.is_set():
            for charger_id, n in list(rig.desired_writes.items()):
                if seen[charger_id] == n:
                    continue
                seen[charger_id] = n
                if charger_id in failing and n == 1:
                    await rig.fail(charger_id)
                else:
                    await rig.install(charger_id)
            await asyncio.sleep(0.02)

    a = await rig.engine(CampaignStore(rig.db), interval=0.01)
    b = await rig.engine(CampaignStore(rig.other_db), interval=0.01)
    store = CampaignStore(rig.db)
    worker = asyncio.create_task(chargers())
    try:
        async with a.running(), b.running():
            deadline = time.monotonic() + 60
            while (await store.get(campaign.campaign_id)).state == "running":
                assert time.monotonic() < deadline, await rig.rows(campaign)
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await worker
    assert (await store.get(campaign.campaign_id)).state == "completed"
    rows = await rig.rows(campaign)
    assert {r.state for r in rows.values()} == {"installed"}
    for charger_id, row in rows.items():
        expected = 2 if charger_id in failing else 1
        assert row.attempts == expected, row
        assert rig.desired_writes[charger_id] == expected, charger_id
