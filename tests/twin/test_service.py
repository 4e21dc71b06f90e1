"""The MQTT shadow service end to end: a real broker (Mosquitto and the embedded one), a
real database (SQLite and PostgreSQL), and an independent paho client on the other side."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from probes import MqttProbe

from chargetwin.database import Database, connect
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from twin.registry import ChargerRegistry
from twin.requests import Limits
from twin.service import ShadowService
from twin.stores import ShadowStore


@dataclass
class Twin:
    service: ShadowService
    probe: MqttProbe
    topics: Topics
    registry: ChargerRegistry
    db: Database
    mqtt: MqttClient

    def shadow(self, charger_id: str, op: str = "update") -> str:
        return self.topics.shadow(charger_id, op)


async def start_twin(
    broker: str, database: str, prefix: str, name: str = "twin", **kw: object
) -> Twin:
    db = connect(database)
    await db.open()
    store, registry = ShadowStore(db), ChargerRegistry(db)
    await store.create_schema()
    await registry.create_schema()
    mqtt = MqttClient(broker, f"{prefix}-{name}")
    topics = Topics(prefix)
    # Presence published here names bridges that never announce themselves: the check of
    # silent bridges after connecting waits long unless a test is about it.
    kw.setdefault("presence_grace", 30.0)
    service = ShadowService(mqtt, store, registry, topics, **kw)  # type: ignore[arg-type]
    await service.start()
    await mqtt.connect()
    probe = MqttProbe(broker)
    await probe.subscribe(f"{prefix}/#")
    return Twin(service, probe, topics, registry, db, mqtt)


async def stop_twin(twin: Twin) -> None:
    twin.probe.close()
    await twin.service.stop()
    await twin.mqtt.disconnect()
    await twin.db.close()


@pytest.fixture
async def twin(broker_url: str, database_url: str, prefix: str) -> AsyncIterator[Twin]:
    t = await start_twin(broker_url, database_url, prefix)
    await t.registry.register("CP-1", "secret-password-1")
    yield t
    await stop_twin(t)


@pytest.fixture
async def small_twin(broker_url: str, tmp_path: object, prefix: str) -> AsyncIterator[Twin]:
    """SQLite only, tight limits: for bad-input tests."""
    t = await start_twin(
        broker_url,
        f"sqlite:///{tmp_path}/t.db",
        prefix,
        limits=Limits(max_request_bytes=4096, max_document_bytes=2048, max_depth=4),
    )
    await t.registry.register("CP-1", None)
    yield t
    await stop_twin(t)


async def test_reported_update_is_accepted_announced_and_readable(twin: Twin) -> None:
    result, answer = await twin.probe.request(
        twin.shadow("CP-1"), {"state": {"reported": {"firmware": {"version": "1.0"}}}}
    )
    assert result == "accepted", answer
    assert answer["version"] == 1
    assert answer["state"] == {"reported": {"firmware": {"version": "1.0"}}}
    assert answer["metadata"]["reported"]["firmware"]["version"]["timestamp"] > 0
    docs = await twin.probe.expect(twin.shadow("CP-1") + "/documents")
    assert docs["previous"] is None
    assert docs["current"]["version"] == 1
    assert docs["current"]["state"]["reported"]["firmware"] == {"version": "1.0"}

    result, doc = await twin.probe.request(twin.shadow("CP-1", "get"), {})
    assert result == "accepted"
    assert doc["version"] == 1
    assert doc["state"]["reported"] == {"firmware": {"version": "1.0"}}
    assert "delta" not in doc["state"]


async def test_desired_change_publishes_delta_until_reported_matches(twin: Twin) -> None:
    topic = twin.shadow("CP-1")
    await twin.probe.request(
        topic, {"state": {"reported": {"config": {"HeartbeatInterval": "300"}}}}
    )
    result, _ = await twin.probe.request(
        topic, {"state": {"desired": {"config": {"HeartbeatInterval": "60"}}}}
    )
    assert result == "accepted"
    delta = await twin.probe.expect(topic + "/delta")
    assert delta["state"] == {"config": {"HeartbeatInterval": "60"}}
    assert delta["version"] == 2
    assert delta["metadata"]["config"]["HeartbeatInterval"]["timestamp"] > 0

    await twin.probe.request(
        topic, {"state": {"reported": {"config": {"HeartbeatInterval": "60"}}}}
    )
    await twin.probe.silent(topic + "/delta")
    _, doc = await twin.probe.request(twin.shadow("CP-1", "get"), {})
    assert "delta" not in doc["state"]
    assert doc["version"] == 3


async def test_stale_version_is_rejected_with_409(twin: Twin) -> None:
    topic = twin.shadow("CP-1")
    await twin.probe.request(topic, {"state": {"reported": {"a": 1}}})
    result, answer = await twin.probe.request(topic, {"state": {"desired": {}}, "version": 0})
    assert (result, answer["code"]) == ("rejected", 409)
    result, answer = await twin.probe.request(
        topic, {"state": {"desired": {"config": {"A": "1"}}}, "version": 1}
    )
    assert (result, answer["version"]) == ("accepted", 2)


async def test_older_reported_value_does_not_overwrite_newer(twin: Twin) -> None:
    topic = twin.shadow("CP-1")
    now = time.time()
    await twin.probe.request(
        topic,
        {"state": {"reported": {"connectors": {"1": {"status": "Charging"}}}}, "timestamp": now},
    )
    result, _ = await twin.probe.request(
        topic,
        {
            "state": {"reported": {"connectors": {"1": {"status": "Available"}}}},
            "timestamp": now - 5,
        },
    )
    assert result == "accepted"
    _, doc = await twin.probe.request(twin.shadow("CP-1", "get"), {})
    assert doc["state"]["reported"]["connectors"]["1"]["status"] == "Charging"
    assert doc["metadata"]["reported"]["connectors"]["1"]["status"]["timestamp"] == now


async def test_documents_and_versions_survive_a_restart(
    broker_url: str, database_url: str, prefix: str
) -> None:
    first = await start_twin(broker_url, database_url, prefix)
    await first.registry.register("CP-9", None)
    for i in range(5):
        await first.probe.request(first.shadow("CP-9"), {"state": {"reported": {"n": i}}})
    await first.probe.request(first.shadow("CP-9"), {"state": {"desired": {"config": {"K": "v"}}}})
    _, before = await first.probe.request(first.shadow("CP-9", "get"), {})
    await stop_twin(first)

    second = await start_twin(broker_url, database_url, prefix)
    try:
        _, after = await second.probe.request(second.shadow("CP-9", "get"), {})
        after.pop("clientToken"), before.pop("clientToken")
        assert after == before
        assert after["version"] == 6
        result, answer = await second.probe.request(
            second.shadow("CP-9"), {"state": {"reported": {"n": 99}}, "version": 6}
        )
        assert (result, answer["version"]) == ("accepted", 7)
    finally:
        await stop_twin(second)


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"state": "x"}).encode(), 400, "'state'"),
        (json.dumps({"state": {"reported": 5}}).encode(), 400, "object or null"),
        (json.dumps({"state": {"other": {}}}).encode(), 400, "only hold"),
        (json.dumps({"state": {}, "version": "1"}).encode(), 400, "version"),
        (json.dumps({"state": {}, "bogus": 1}).encode(), 400, "unknown field"),
        (json.dumps({"state": {}, "timestamp": time.time() + 3600}).encode(), 400, "future"),
        (
            json.dumps({"state": {"reported": {"a": {"b": {"c": {"d": {"e": 1}}}}}}}).encode(),
            400,
            "deeper",
        ),
        (json.dumps({"state": {"reported": {"blob": "x" * 5000}}}).encode(), 413, "exceeds"),
        (json.dumps({"state": {"reported": {"blob": "x" * 3000}}}).encode(), 413, "exceed"),
        (
            json.dumps({"state": {"desired": {"availability": {"1": "Off"}}}}).encode(),
            422,
            "/desired/availability/1",
        ),
        (json.dumps({"state": {"desired": {"colour": "red"}}}).encode(), 422, "colour"),
        # Hostile JSON: each of these once left the request unanswered (an exception in
        # the handler) or failed the whole batch, and stalled the service.
        (b'{"state": {"reported": {"a": "\\ud800"}}}', 400, "lone surrogate"),
        (b'{"state": {"reported": {"\\udfff": 1}}, "clientToken": "t"}', 400, "surrogate"),
        (b'{"state": {}, "clientToken": "\\ud800"}', 400, "surrogate"),
        (b'{"state": {"reported": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}", 413, "exceeds"),
        (b"[" * 1_500 + b"]" * 1_500, 400, "nested too deep"),
        (b'{"state": {"reported": {"a": NaN}}}', 400, "NaN"),
        (b'{"state": {"reported": {"a": 1}}, "timestamp": Infinity}', 400, "Infinity"),
        (b'{"state": {"reported": {"a": 1e999}}}', 400, "out of range"),
        (b'{"state": {"reported": {"a": 1}}, "timestamp": 1' + b"0" * 400 + b"}", 400, "64 bits"),
        (b'{"state": {"reported": {"a": 1}}, "version": 18446744073709551616}', 400, "64 bits"),
        (b'{"state": {"reported": {"a": "\xff"}}}', 400, "UTF-8"),
    ],
)
async def test_bad_requests_are_rejected_and_the_service_keeps_serving(
    small_twin: Twin, payload: bytes, code: int, words: str
) -> None:
    topic = small_twin.shadow("CP-1")
    await small_twin.probe.publish(topic, payload)
    answer = await small_twin.probe.expect(topic + "/rejected")
    assert answer["code"] == code, answer
    assert words in answer["message"]
    result, ok = await small_twin.probe.request(topic, {"state": {"reported": {"fine": True}}})
    assert result == "accepted", ok


async def test_unknown_and_invalid_chargers_are_rejected(small_twin: Twin) -> None:
    result, answer = await small_twin.probe.request(
        small_twin.shadow("NOPE"), {"state": {"reported": {"a": 1}}}
    )
    assert (result, answer["code"]) == ("rejected", 404)
    result, answer = await small_twin.probe.request(small_twin.shadow("NOPE", "get"), {})
    assert (result, answer["code"]) == ("rejected", 404)
    result, answer = await small_twin.probe.request(
        small_twin.shadow("bad id!"), {"state": {"reported": {"a": 1}}}
    )
    assert (result, answer["code"]) == ("rejected", 400)
    assert "invalid charger id" in answer["message"]


async def test_reconnecting_charger_gets_its_pending_delta_again(twin: Twin) -> None:
    topic = twin.shadow("CP-1")
    await twin.probe.request(topic, {"state": {"desired": {"availability": {"1": "Inoperative"}}}})
    await twin.probe.expect(topic + "/delta")
    presence = twin.topics.presence("CP-1")
    await twin.probe.publish(
        presence, {"online": True, "since": time.time(), "ocppVersion": "1.6", "bridge": "b1"}
    )
    delta = await twin.probe.expect(topic + "/delta")
    assert delta["state"] == {"availability": {"1": "Inoperative"}}
    _, doc = await twin.probe.request(twin.shadow("CP-1", "get"), {})
    assert doc["state"]["reported"]["connection"]["online"] is True
    assert doc["state"]["reported"]["connection"]["bridge"] == "b1"


async def test_chargers_of_a_dead_bridge_go_offline(twin: Twin) -> None:
    await twin.probe.publish(
        twin.topics.presence("CP-1"), {"online": True, "since": time.time(), "bridge": "b-dead"}
    )
    await twin.probe.expect(twin.shadow("CP-1") + "/documents")
    await twin.probe.publish(twin.topics.bridge_status("b-dead"), {"online": False})
    docs = await twin.probe.expect(twin.shadow("CP-1") + "/documents")
    assert docs["current"]["state"]["reported"]["connection"]["online"] is False


async def test_delete_removes_the_shadow(twin: Twin) -> None:
    topic = twin.shadow("CP-1")
    await twin.probe.request(topic, {"state": {"reported": {"a": 1}}})
    await twin.probe.request(topic, {"state": {"reported": {"a": 2}}})
    result, answer = await twin.probe.request(twin.shadow("CP-1", "delete"), {})
    assert (result, answer["version"]) == ("accepted", 2)
    result, answer = await twin.probe.request(twin.shadow("CP-1", "get"), {})
    assert (result, answer["code"]) == ("rejected", 404)
    result, answer = await twin.probe.request(twin.shadow("CP-1", "delete"), {})
    assert (result, answer["code"]) == ("rejected", 404)
    # A registered charger starts a fresh document afterwards.
    result, answer = await twin.probe.request(topic, {"state": {"reported": {"b": 1}}})
    assert (result, answer["version"]) == ("accepted", 1)


async def test_a_refused_update_leaves_the_document_as_it_was(small_twin: Twin) -> None:
    topic = small_twin.shadow("CP-1")
    await small_twin.probe.request(topic, {"state": {"desired": {"config": {"A": "1"}}}})
    _, before = await small_twin.probe.request(small_twin.shadow("CP-1", "get"), {})
    for bad in (
        {"state": {"desired": {"config": {"A": None, "B": 5}}}},  # 422
        {"state": {"reported": {"blob": "x" * 3000}, "desired": {"config": {"A": "2"}}}},  # 413
    ):
        result, answer = await small_twin.probe.request(topic, bad)
        assert result == "rejected", answer
    _, after = await small_twin.probe.request(small_twin.shadow("CP-1", "get"), {})
    before.pop("clientToken"), after.pop("clientToken")
    assert after == before


async def test_a_late_offline_of_an_old_connection_does_not_beat_the_new_online(
    twin: Twin,
) -> None:
    """A charger reboots: the bridge's "offline" for the old socket may arrive after the
    "online" of the new one; presence is ordered by the bridge's times, not by arrival."""
    presence, t = twin.topics.presence("CP-1"), time.time()
    await twin.probe.publish(presence, {"online": True, "since": t, "bridge": "b1"})
    await twin.probe.expect(twin.shadow("CP-1") + "/documents")
    await twin.probe.publish(presence, {"online": False, "since": t - 1, "bridge": "b1"})
    # An update published after it is answered after it: the stale offline was processed.
    await twin.probe.request(twin.shadow("CP-1"), {"state": {"reported": {"x": 1}}})
    _, doc = await twin.probe.request(twin.shadow("CP-1", "get"), {})
    assert doc["state"]["reported"]["connection"]["online"] is True
    assert doc["state"]["reported"]["connection"]["since"] == t


async def _connection(twin: Twin, charger_id: str = "CP-1") -> dict[str, object]:
    _, doc = await twin.probe.request(twin.shadow(charger_id, "get"), {})
    connection: dict[str, object] = doc["state"]["reported"]["connection"]
    return connection


async def test_a_bridge_back_under_a_newer_epoch_wins_over_the_offline_its_will_caused(
    twin: Twin,
) -> None:
    """A broker restart publishes the bridge's will although the bridge kept its sockets;
    its re-announcement under the next epoch must win over the twin's later "offline"."""
    t, presence = time.time(), twin.topics.presence("CP-1")
    status = twin.topics.bridge_status("b1")
    await twin.probe.publish(status, {"online": True, "since": t - 10, "epoch": t - 10})
    online = {"online": True, "since": t - 5, "bridge": "b1", "epoch": t - 10}
    await twin.probe.publish(presence, online)
    await twin.probe.expect(f"{presence}/shadow", online=True)
    await twin.probe.publish(status, {"online": False, "epoch": t - 10})
    offline = await twin.probe.expect(f"{presence}/shadow", online=False)
    assert offline["source"] == "twin" and offline["since"] >= t
    # The dead connection's own retained "online" (delivered again) changes nothing.
    await twin.probe.publish(presence, online)
    await twin.probe.request(twin.shadow("CP-1"), {"state": {"reported": {"x": 1}}})
    assert (await _connection(twin))["online"] is False
    # The bridge is back under a newer epoch and still holds the socket opened at t - 5.
    await twin.probe.publish(status, {"online": True, "since": t + 1, "epoch": t + 1})
    await twin.probe.publish(presence, {**online, "epoch": t + 1})
    back = await twin.probe.expect(f"{presence}/shadow", online=True)
    assert back["since"] > offline["since"] and back["epoch"] == t + 1
    assert (await _connection(twin))["online"] is True


async def test_a_presence_under_the_dead_epoch_does_not_revive_a_charger(twin: Twin) -> None:
    """A stale "online" of the connection the will ended, arriving after the bridge came
    back (a late delivery), changes nothing; the newer epoch's presence does."""
    t, presence = time.time(), twin.topics.presence("CP-1")
    status = twin.topics.bridge_status("b1")
    await twin.probe.publish(status, {"online": True, "since": t - 10, "epoch": t - 10})
    stale = {"online": True, "since": t - 5, "bridge": "b1", "epoch": t - 10}
    await twin.probe.publish(presence, stale)
    await twin.probe.expect(twin.shadow("CP-1") + "/documents")
    await twin.probe.publish(status, {"online": False, "epoch": t - 10})
    await twin.probe.expect(f"{presence}/shadow", online=False)
    await twin.probe.publish(status, {"online": True, "since": t + 1, "epoch": t + 1})
    await twin.probe.publish(presence, stale)
    await twin.probe.request(twin.shadow("CP-1"), {"state": {"reported": {"x": 1}}})
    assert (await _connection(twin))["online"] is False


async def test_chargers_of_a_bridge_that_never_announces_itself_go_offline(
    broker_url: str, tmp_path: object, prefix: str
) -> None:
    """After a kill -9 of everything the broker has no retained status and publishes no
    will: the twin's check after it connects finds the silent bridge."""
    t = await start_twin(broker_url, f"sqlite:///{tmp_path}/t.db", prefix, presence_grace=0.5)
    try:
        for charger_id in ("CP-1", "CP-2"):
            await t.registry.register(charger_id, None)
        status = t.topics.bridge_status("b-alive")
        await t.probe.publish(status, {"online": True, "since": time.time(), "epoch": 1.0})
        for charger_id, bridge_id in (("CP-1", "b-silent"), ("CP-2", "b-alive")):
            await t.probe.publish(
                t.topics.presence(charger_id),
                {"online": True, "since": time.time(), "bridge": bridge_id, "epoch": 1.0},
            )
        offline = await t.probe.expect(f"{t.topics.presence('CP-1')}/shadow", online=False)
        assert offline["source"] == "twin" and offline["bridge"] == "b-silent"
        await t.probe.request(t.shadow("CP-2"), {"state": {"reported": {"x": 1}}})
        assert (await _connection(t, "CP-2"))["online"] is True
    finally:
        await stop_twin(t)


async def test_several_workers_take_a_dead_bridges_charger_offline_once(
    database_url: str, prefix: str
) -> None:
    """Every worker follows bridge status; the conditional write lands once."""
    broker = "mqtt://127.0.0.1:1883"  # Mosquitto: shared subscriptions
    workers = [
        await start_twin(broker, database_url, prefix, f"twin-{i}", share_group=f"{prefix}-g")
        for i in range(2)
    ]
    first = workers[0]
    try:
        await first.registry.register("CP-1", None)
        t, presence = time.time(), first.topics.presence("CP-1")
        await first.probe.publish(
            first.topics.bridge_status("b1"), {"online": True, "since": t, "epoch": t}
        )
        await first.probe.publish(
            presence, {"online": True, "since": t, "bridge": "b1", "epoch": t}
        )
        await first.probe.expect(f"{presence}/shadow", online=True)
        await first.probe.publish(first.topics.bridge_status("b1"), {"online": False, "epoch": t})
        await first.probe.expect(f"{presence}/shadow", online=False)
        await first.probe.silent(f"{presence}/shadow", wait=1.0)
    finally:
        for worker in workers:
            await stop_twin(worker)


async def test_presence_of_an_unregistered_charger_is_refused_as_an_update(twin: Twin) -> None:
    await twin.probe.publish(
        twin.topics.presence("CP-unknown"), {"online": True, "since": time.time(), "bridge": "b"}
    )
    answer = await twin.probe.expect(twin.shadow("CP-unknown") + "/rejected")
    assert answer["code"] == 404


async def test_a_charger_that_moved_to_another_bridge_survives_the_old_bridges_will(
    twin: Twin,
) -> None:
    t, presence = time.time(), twin.topics.presence("CP-1")
    old = {"online": True, "since": t - 5, "bridge": "b1", "epoch": t - 10}
    await twin.probe.publish(presence, old)
    await twin.probe.expect(f"{presence}/shadow", online=True, bridge="b1")
    await twin.probe.publish(presence, {"online": True, "since": t, "bridge": "b2", "epoch": t})
    await twin.probe.expect(f"{presence}/shadow", online=True, bridge="b2")
    await twin.probe.publish(twin.topics.bridge_status("b1"), {"online": False, "epoch": t - 10})
    await twin.probe.publish(presence, old)  # b1's retained "online", delivered again
    await twin.probe.request(twin.shadow("CP-1"), {"state": {"reported": {"x": 1}}})
    connection = await _connection(twin)
    assert (connection["online"], connection["bridge"]) == (True, "b2")
    await twin.probe.silent(f"{presence}/shadow", wait=0.2)


async def test_a_bridge_presumed_gone_is_asked_to_announce_and_its_chargers_come_back(
    broker_url: str, tmp_path: object, prefix: str
) -> None:
    """Its status reached the twin only after the grace: the chargers it holds went offline
    for want of news; once the status arrives the twin asks it to announce them again."""
    t = await start_twin(broker_url, f"sqlite:///{tmp_path}/t.db", prefix, presence_grace=0.3)
    try:
        await t.registry.register("CP-1", None)
        presence = t.topics.presence("CP-1")
        online = {"online": True, "since": time.time(), "bridge": "b-late", "epoch": 7.0}
        await t.probe.publish(presence, online)
        await t.probe.expect(f"{presence}/shadow", online=True)
        presumed = await t.probe.expect(f"{presence}/shadow", online=False)
        assert presumed["source"] == "twin" and "epoch" not in presumed
        status = {"online": True, "since": time.time(), "epoch": 7.0}
        await t.probe.publish(t.topics.bridge_status("b-late"), status)
        await t.probe.expect(t.topics.bridge_announce("b-late"))
        await t.probe.publish(presence, online)  # what the bridge answers: same epoch
        back = await t.probe.expect(f"{presence}/shadow", online=True)
        assert back["since"] > presumed["since"]
    finally:
        await stop_twin(t)
