"""Several twin workers on one broker and one database, and a twin that restarts alone.

Real Mosquitto, real PostgreSQL (and SQLite where it applies), an independent paho client.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from probes import MqttProbe

from chargetwin.database import Database, DatabaseError, connect
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from twin.adoption import SessionAdopter
from twin.documents import ShadowDocument
from twin.registry import ChargerRegistry
from twin.service import ShadowService
from twin.stores import ShadowStore, is_transient


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if database_url.startswith("sqlite"):
        pytest.skip("about PostgreSQL row locks")
    return database_url


class Worker:
    """One twin worker: its own database pool, MQTT connection and service."""

    def __init__(self, db: Database, mqtt: MqttClient, service: ShadowService) -> None:
        self.db, self.mqtt, self.service = db, mqtt, service

    @classmethod
    async def start(
        cls,
        broker: str,
        database: str,
        prefix: str,
        name: str,
        *,
        group: str | None = None,
        persistent: bool = False,
    ) -> Worker:
        db = connect(database)
        await db.open()
        store, registry = ShadowStore(db), ChargerRegistry(db)
        await store.create_schema()
        await registry.create_schema()
        mqtt = MqttClient(broker, f"{prefix}-{name}", clean_session=not persistent)
        service = ShadowService(
            mqtt, store, registry, Topics(prefix), share_group=group, presence_grace=30.0
        )
        await service.start()
        await mqtt.connect()
        return cls(db, mqtt, service)

    async def stop(self) -> None:
        await self.service.stop()
        await self.mqtt.disconnect()
        await self.db.close()


@pytest.fixture
async def registry(database_url: str) -> AsyncIterator[ChargerRegistry]:
    db = connect(database_url)
    await db.open()
    registry = ChargerRegistry(db)
    await registry.create_schema()
    await ShadowStore(db).create_schema()
    yield registry
    await db.close()


# --- 1. no deadlock, and none that loses a report ----------------------------------------
@pytest.mark.postgres
async def test_batches_sharing_chargers_in_opposite_orders_never_deadlock(
    postgres_url: str,
) -> None:
    """Two workers' batches touch the same 60 shadows, one in the reverse order of the
    other: each locked its rows in arrival order and PostgreSQL aborted one of the two
    with 'deadlock detected'."""
    dbs = [connect(postgres_url), connect(postgres_url)]
    for db in dbs:
        await db.open()
    try:
        stores = [ShadowStore(db) for db in dbs]
        await stores[0].create_schema()
        ids = [f"CP-{i:03d}" for i in range(60)]
        first = [ShadowDocument(cid, 1) for cid in ids]
        for doc in first:
            doc.apply({"reported": {"n": 0}}, time.time())
        assert all((await stores[0].save_many([(doc, 0) for doc in first]))[0])
        for round_ in range(1, 16):
            batches = []
            for store in stores:
                docs = []
                for cid in ids:
                    doc = await store.load(cid)
                    assert doc is not None
                    doc.apply({"reported": {"n": round_}}, time.time())
                    read = doc.version
                    doc.version += 1
                    docs.append((doc, read))
                batches.append(docs)
            batches[1].reverse()
            results = await asyncio.gather(
                *(store.save_many(batch) for store, batch in zip(stores, batches, strict=True))
            )
            # Every row is written by exactly one of the two (the other lost the race).
            by_charger: dict[str, int] = {}
            for (saved, _), batch in zip(results, batches, strict=True):
                for ok, (doc, _) in zip(saved, batch, strict=True):
                    by_charger[doc.charger_id] = by_charger.get(doc.charger_id, 0) + ok
            assert set(by_charger.values()) == {1}
    finally:
        for db in dbs:
            await db.close()


@pytest.mark.postgres
async def test_a_real_deadlock_counts_as_transient(postgres_url: str) -> None:
    dsn = postgres_url
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE locks (k TEXT PRIMARY KEY)")
        setup.execute("INSERT INTO locks VALUES ('a'), ('b')")
    one = await psycopg.AsyncConnection.connect(dsn)
    two = await psycopg.AsyncConnection.connect(dsn)
    try:
        await one.execute("SELECT * FROM locks WHERE k = 'a' FOR UPDATE")
        await two.execute("SELECT * FROM locks WHERE k = 'b' FOR UPDATE")

        async def lock(conn: psycopg.AsyncConnection[object], key: str) -> None:
            await conn.execute("SELECT * FROM locks WHERE k = %s FOR UPDATE", (key,))

        results = await asyncio.gather(lock(one, "b"), lock(two, "a"), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert len(failures) == 1
        error = DatabaseError(str(failures[0]))
        error.__cause__ = failures[0]
        assert is_transient(error)
        assert not is_transient(DatabaseError("relation does not exist"))
    finally:
        await one.close()
        await two.close()


@pytest.mark.postgres
async def test_a_batch_the_database_aborts_is_applied_again_not_answered_500(
    broker_url: str, postgres_url: str, prefix: str, registry: ChargerRegistry
) -> None:
    """The twin's statements give up on a locked row after 300 ms (lock_timeout): the
    batch is aborted as a deadlock aborts it, and must be applied once the row is free."""
    await registry.register("CP-1", None)
    impatient = postgres_url + "%20-clock_timeout%3D300"
    worker = await Worker.start(broker_url, impatient, prefix, "twin")
    probe = MqttProbe(broker_url)
    await probe.subscribe(f"{prefix}/#")
    topic = Topics(prefix).shadow("CP-1", "update")
    try:
        result, _ = await probe.request(topic, {"state": {"reported": {"firmware": "1.7.0"}}})
        assert result == "accepted"
        async with await psycopg.AsyncConnection.connect(postgres_url) as holder:
            await holder.execute("SELECT * FROM shadows WHERE charger_id = 'CP-1' FOR UPDATE")
            token = uuid.uuid4().hex
            await probe.publish(
                topic, {"state": {"reported": {"firmware": "1.8.0"}}, "clientToken": token}
            )
            await asyncio.sleep(1.5)  # several aborted attempts meanwhile
            assert worker.service.batches_retried >= 1
        answer = await probe.expect(topic + "/accepted", timeout=10, clientToken=token)
        assert answer["version"] == 2
        _, doc = await probe.request(Topics(prefix).shadow("CP-1", "get"), {})
        assert doc["state"]["reported"]["firmware"] == "1.8.0"
        assert not [t for t, _ in probe.seen if t.endswith("/rejected")]
    finally:
        probe.close()
        await worker.stop()


# --- 1b. one charger's reports split across two workers ----------------------------------
async def test_two_workers_on_one_charger_keep_every_report_and_one_version_chain(
    mosquitto_url: str, database_url: str, prefix: str, registry: ChargerRegistry
) -> None:
    """The share group hands one charger's reports to both workers in turn. Every report
    is accepted, the versions form one chain (never two writes announcing the same
    version, never one going back), and each key ends with its newest reported value."""
    await registry.register("CP-1", None)
    workers = [
        await Worker.start(mosquitto_url, database_url, prefix, f"w{i}", group=prefix)
        for i in range(2)
    ]
    probe = MqttProbe(mosquitto_url)
    await probe.subscribe(f"{prefix}/#")
    topic = Topics(prefix).shadow("CP-1", "update")
    rng = random.Random(7)
    now = time.time()
    reports = []
    newest: dict[str, tuple[float, str]] = {}
    for i in range(120):
        key = f"k{i % 6}"
        at = now - rng.uniform(0, 60)  # out of order by up to a minute
        value = f"v{i}"
        reports.append({"state": {"reported": {key: value}}, "timestamp": at})
        if key not in newest or at > newest[key][0]:
            newest[key] = (at, value)
    try:
        for report in reports:
            await probe.publish(topic, report)
        accepted = await probe.collect(topic + "/accepted", len(reports), timeout=60)
        assert len(accepted) == len(reports)
        assert not [t for t, _ in probe.seen if t.endswith("/rejected")]
        assert all(w.service.updates_accepted > 0 for w in workers), "one worker did it all"
        documents = [json.loads(p) for t, p in probe.seen if t == topic + "/documents"]
        chain = sorted((d["previous"] or {}).get("version", 0) for d in documents)
        currents = sorted(d["current"]["version"] for d in documents)
        assert currents == list(range(1, len(documents) + 1))
        assert chain == list(range(len(documents)))
        _, doc = await probe.request(Topics(prefix).shadow("CP-1", "get"), {})
        assert doc["version"] == len(documents)
        assert doc["state"]["reported"] == {k: v for k, (_, v) in newest.items()}
    finally:
        probe.close()
        for worker in workers:
            await worker.stop()


async def test_a_worker_answers_get_and_version_checks_from_the_store_not_a_stale_copy(
    mosquitto_url: str, database_url: str, prefix: str, registry: ChargerRegistry
) -> None:
    """Worker A caches the shadow; worker B changes it. A's next answer must show B's
    change, and a request naming the current version must not be refused as stale."""
    await registry.register("CP-1", None)
    topics = Topics(prefix)
    a = await Worker.start(mosquitto_url, database_url, prefix, "a", group=prefix)
    b = await Worker.start(mosquitto_url, database_url, f"{prefix}-b", "b", group=prefix)
    probe = MqttProbe(mosquitto_url)
    await probe.subscribe(f"{prefix}/#")
    await probe.subscribe(f"{prefix}-b/#")
    # b serves another prefix on the same database: requests reach the worker we choose.
    b_topics = Topics(f"{prefix}-b")
    try:
        result, _ = await probe.request(
            topics.shadow("CP-1", "update"), {"state": {"reported": {"a": 1}}}
        )
        assert result == "accepted"
        result, answer = await probe.request(
            b_topics.shadow("CP-1", "update"), {"state": {"reported": {"b": 2}}}
        )
        assert (result, answer["version"]) == ("accepted", 2)
        _, doc = await probe.request(topics.shadow("CP-1", "get"), {})
        assert (doc["version"], doc["state"]["reported"]) == (2, {"a": 1, "b": 2})
        result, answer = await probe.request(
            topics.shadow("CP-1", "update"), {"state": {"desired": {}}, "version": 2}
        )
        assert result == "accepted", answer
    finally:
        probe.close()
        await a.stop()
        await b.stop()


async def test_a_request_delivered_again_after_it_was_applied_is_answered_not_reapplied(
    mosquitto_url: str, database_url: str, prefix: str, registry: ChargerRegistry
) -> None:
    """A worker killed between its commit and its acknowledgement: the broker gives the
    request to a peer (here: a fresh worker on the same store), which must answer it as
    applied, not refuse it as stale (the API would audit "precondition failed") nor apply
    it twice."""
    await registry.register("CP-1", None)
    topics = Topics(prefix)
    topic = topics.shadow("CP-1", "update")
    probe = MqttProbe(mosquitto_url)
    await probe.subscribe(f"{prefix}/#")
    request = json.dumps(
        {"state": {"desired": {"config": {"A": "1"}}}, "version": 1, "clientToken": "t-1"}
    ).encode()
    first = await Worker.start(mosquitto_url, database_url, prefix, "first")
    try:
        await probe.request(topic, {"state": {"reported": {"x": 1}}})
        await probe.publish(topic, request)
        answer = await probe.expect(topic + "/accepted", clientToken="t-1")
        assert answer["version"] == 2
    finally:
        await first.stop()
    second = await Worker.start(mosquitto_url, database_url, prefix, "second")
    try:
        await probe.publish(topic, request)
        answer = await probe.expect(topic + "/accepted", clientToken="t-1")
        assert answer["version"] == 2
        _, doc = await probe.request(topics.shadow("CP-1", "get"), {})
        assert doc["version"] == 2
        # The same token on another request is another request.
        await probe.publish(
            topic, {"state": {"desired": {"config": {"A": "2"}}}, "clientToken": "t-1"}
        )
        answer = await probe.expect(topic + "/accepted", clientToken="t-1")
        assert answer["version"] == 3
        assert not [t for t, _ in probe.seen if t.endswith("/rejected")]
    finally:
        probe.close()
        await second.stop()


# --- 2. a deadline the twin honours -----------------------------------------------------
async def test_a_request_past_its_deadline_is_refused_408_and_not_applied(
    mosquitto_url: str, database_url: str, prefix: str, registry: ChargerRegistry
) -> None:
    await registry.register("CP-1", None)
    worker = await Worker.start(mosquitto_url, database_url, prefix, "twin")
    probe = MqttProbe(mosquitto_url)
    await probe.subscribe(f"{prefix}/#")
    topic = Topics(prefix).shadow("CP-1", "update")
    try:
        result, answer = await probe.request(
            topic, {"state": {"desired": {"config": {"A": "1"}}}, "deadline": time.time() - 1}
        )
        assert (result, answer["code"]) == ("rejected", 408)
        result, answer = await probe.request(
            topic, {"state": {"desired": {"config": {"A": "2"}}}, "deadline": time.time() + 30}
        )
        assert (result, answer["version"]) == ("accepted", 1)
        _, doc = await probe.request(Topics(prefix).shadow("CP-1", "get"), {})
        assert doc["state"]["desired"] == {"config": {"A": "2"}}
        result, answer = await probe.request(topic, {"state": {}, "deadline": "soon"})
        assert (result, answer["code"]) == ("rejected", 400)
    finally:
        probe.close()
        await worker.stop()


# --- 3. a persistent twin keeps its subscriptions over a restart ---------------------------
async def test_reports_published_while_the_twin_is_stopped_are_applied_when_it_starts(
    mosquitto_url: str, database_url: str, prefix: str, registry: ChargerRegistry
) -> None:
    """Stopping unsubscribed the persistent session: what came meanwhile was lost."""
    for i in range(5):
        await registry.register(f"CP-{i}", None)
    topics = Topics(prefix)
    worker = await Worker.start(mosquitto_url, database_url, prefix, "twin", persistent=True)
    await worker.stop()
    probe = MqttProbe(mosquitto_url)
    await probe.subscribe(f"{prefix}/#")
    now = time.time()
    try:
        for n in range(40):
            await probe.publish(
                topics.shadow(f"CP-{n % 5}", "update"),
                {"state": {"reported": {f"r{n}": n}}, "timestamp": now},
            )
        worker = await Worker.start(mosquitto_url, database_url, prefix, "twin", persistent=True)
        # Our own 40 requests come back to the probe too, then 40 answers and 40 documents.
        seen = await probe.collect(f"{prefix}/chargers/", 3 * 40, timeout=30)
        assert len([t for t, _ in seen if t.endswith("/update/accepted")]) == 40
        for i in range(5):
            _, doc = await probe.request(topics.shadow(f"CP-{i}", "get"), {})
            assert doc["state"]["reported"] == {f"r{n}": n for n in range(i, 40, 5)}
    finally:
        probe.close()
        await worker.stop()
        # Leave no session behind on the shared broker.
        MqttProbe(mosquitto_url, client_id=f"{prefix}-twin", clean_session=True).close()


# --- 2b. a gone worker's session is taken over ----------------------------------------------
async def test_a_worker_takes_over_a_gone_peers_session_and_serves_what_it_held(
    mosquitto_url: str, database_url: str, prefix: str, registry: ChargerRegistry
) -> None:
    """Mosquitto keeps giving a disconnected persistent member of the group its turn: the
    peer's session (made here by a paho client that subscribed and left) holds about half
    of the requests until a live worker takes it over."""
    await registry.register("CP-1", None)
    topics = Topics(prefix)
    group = prefix
    peer = f"{prefix}-peer-twin"
    gone = MqttProbe(mosquitto_url, client_id=peer, clean_session=False)
    await gone.subscribe(f"$share/{group}-twin/{topics.all_shadow_requests('update')}")
    gone.close()
    worker = await Worker.start(mosquitto_url, database_url, prefix, "a", group=group)
    adopter = SessionAdopter(
        worker.mqtt,
        topics,
        f"{prefix}-a",
        group,
        worker.service.subscriptions,
        lambda: [f for f, _ in worker.service.shared_subscriptions()],
        settle=0.2,
    )
    adopter.start()
    await worker.mqtt.wait_subscribed()
    probe = MqttProbe(mosquitto_url)
    await probe.subscribe(f"{prefix}/#")
    topic = topics.shadow("CP-1", "update")
    status = topics.service_status("twin", peer)
    try:
        for n in range(10):
            await probe.publish(topic, {"state": {"reported": {f"r{n}": n}}})
        await asyncio.sleep(0.5)
        waiting = 10 - worker.service.updates_accepted
        assert waiting > 0, "the broker gave the gone member nothing: nothing to take over"
        await probe.publish(
            status, {"online": False, "clientId": peer, "shareGroup": group}, retain=True
        )
        started = time.monotonic()
        accepted = await probe.collect(topic + "/accepted", 10, timeout=10)
        assert len(accepted) == 10
        assert time.monotonic() - started < 5
        assert adopter.adopted_sessions == 1 and adopter.adopted_messages >= waiting
        # The session no longer takes a turn: every new request goes to the live worker.
        probe.seen.clear()
        for n in range(10, 20):
            await probe.publish(topic, {"state": {"reported": {f"r{n}": n}}})
        assert len(await probe.collect(topic + "/accepted", 10, timeout=5)) == 10
        _, doc = await probe.request(topics.shadow("CP-1", "get"), {})
        assert doc["state"]["reported"] == {f"r{n}": n for n in range(20)}
    finally:
        await probe.publish(status, b"", retain=True)
        probe.close()
        await adopter.stop()
        await worker.stop()
        MqttProbe(mosquitto_url, client_id=peer, clean_session=True).close()


async def test_a_peer_back_during_a_takeover_is_taken_over_again_at_once_when_it_stops(
    mosquitto_url: str, database_url: str, prefix: str, registry: ChargerRegistry
) -> None:
    """The owner came back during the takeover (the broker gave it its session back), then
    stopped again: its session was left for 5 s, and requests waited past their deadline."""
    topics = Topics(prefix)
    group, peer = prefix, f"{prefix}-peer-twin"
    status = topics.service_status("twin", peer)
    shared_filter = f"$share/{group}-twin/{topics.all_shadow_requests('update')}"
    owner = MqttProbe(mosquitto_url, client_id=peer, clean_session=False)
    await owner.subscribe(shared_filter)
    owner.close()
    worker = await Worker.start(mosquitto_url, database_url, prefix, "a", group=group)
    adopter = SessionAdopter(
        worker.mqtt,
        topics,
        f"{prefix}-a",
        group,
        worker.service.subscriptions,
        lambda: [f for f, _ in worker.service.shared_subscriptions()],
        settle=0.2,
        idle=3.0,  # long enough for the owner to come back in the middle
    )
    adopter.start()
    await worker.mqtt.wait_subscribed()
    probe = MqttProbe(mosquitto_url)
    offline = {"online": False, "clientId": peer, "shareGroup": group}
    try:
        await probe.publish(status, offline, retain=True)
        deadline = time.monotonic() + 5
        while adopter.adopted_sessions < 1:
            assert time.monotonic() < deadline, "the gone peer's session was not taken over"
            await asyncio.sleep(0.05)
        owner = MqttProbe(mosquitto_url, client_id=peer, clean_session=False)
        await owner.subscribe(shared_filter)
        await probe.publish(
            status, {"online": True, "clientId": peer, "shareGroup": group}, retain=True
        )
        await asyncio.sleep(0.5)
        owner.close()
        await probe.publish(status, offline, retain=True)
        stopped = time.monotonic()
        while adopter.adopted_sessions < 2:
            assert time.monotonic() - stopped < 3, "the stopped owner's session was left"
            await asyncio.sleep(0.05)
    finally:
        await probe.publish(status, b"", retain=True)
        probe.close()
        await adopter.stop()
        await worker.stop()
        MqttProbe(mosquitto_url, client_id=peer, clean_session=True).close()
