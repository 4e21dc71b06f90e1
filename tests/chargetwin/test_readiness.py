"""A publisher holds its messages after a reconnect until its subscribers are back, and
sends again what a broker without persistence lost with their sessions (real Mosquitto)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import Mosquitto

from chargetwin.mqtt import MqttClient
from chargetwin.readiness import ServiceAnnouncer, SubscriberGate
from chargetwin.topics import Topics


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path, persistence=False)  # a restart forgets every session
    mosquitto.start()
    yield mosquitto
    if mosquitto.process is None:
        mosquitto.start()
    mosquitto.stop()


class Subscriber:
    """A recorder-like component: persistent session, announced subscriptions."""

    def __init__(self, url: str, topics: Topics, *, reconnect_delay: float = 0.2) -> None:
        self.topics = topics
        self.announcer = ServiceAnnouncer(topics, "rules", "recorder-1")
        self.mqtt = MqttClient(
            url,
            "recorder-1",
            clean_session=False,
            will=self.announcer.will,
            reconnect_delay=reconnect_delay,
        )
        self.got: set[int] = set()

    async def _on_data(self, topic: str, payload: bytes) -> None:
        self.got.add(json.loads(payload)["n"])

    async def start(self) -> None:
        self.mqtt.subscribe(f"{self.topics.prefix}/data/#", self._on_data)
        await self.mqtt.connect()
        await self.announcer.start(self.mqtt)


async def _until(check: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in time")
        await asyncio.sleep(0.05)


def _topics() -> Topics:
    return Topics(f"test-{uuid.uuid4().hex[:12]}")


async def test_held_messages_wait_for_the_subscribers_after_a_broker_restart(
    broker: Mosquitto,
) -> None:
    """The bridge used to replay its held messages before the recorder had subscribed
    again to a restarted broker without persistence: acknowledged, then dropped."""
    topics = _topics()
    subscriber = Subscriber(broker.url, topics, reconnect_delay=1.5)  # comes back late
    await subscriber.start()
    gate = SubscriberGate(topics, ["rules"])
    publisher = MqttClient(broker.url, "bridge-1", gate=gate, reconnect_delay=0.1)
    await publisher.connect()
    try:
        await _until(lambda: gate.is_open, "the recorder's announcement")
        deliveries = [publisher.publish(f"{topics.prefix}/data/x", {"n": n}) for n in range(50)]
        assert all(await asyncio.gather(*[d for d in deliveries if d is not None]))
        await _until(lambda: len(subscriber.got) == 50, "the first 50")
        broker.stop()
        await _until(lambda: not publisher.is_connected, "disconnection")
        for n in range(50, 100):
            publisher.publish(f"{topics.prefix}/data/x", {"n": n})
        broker.start()
        await _until(lambda: publisher.is_connected, "the publisher's reconnection")
        assert not gate.is_open and publisher.waiting >= 50, "sent before the recorder is back"
        await _until(
            lambda: len(subscriber.got) == 100,
            f"all 100 ({len(subscriber.got)}, {gate.is_open}, {publisher.waiting})",
        )
    finally:
        await publisher.disconnect()
        await subscriber.mqtt.disconnect()


async def test_what_the_broker_lost_with_its_sessions_is_sent_again(broker: Mosquitto) -> None:
    """Messages the broker acknowledged and still held for an absent subscriber are gone
    when it restarts without persistence; the subscriber's announcement says so."""
    topics = _topics()
    subscriber = Subscriber(broker.url, topics)
    await subscriber.start()
    gate = SubscriberGate(topics, ["rules"])
    publisher = MqttClient(broker.url, "bridge-1", gate=gate, reconnect_delay=0.1, replay_window=10)
    await publisher.connect()
    try:
        await _until(lambda: gate.is_open, "the recorder's announcement")
        await subscriber.mqtt.disconnect()  # its session keeps what is published next
        deliveries = [publisher.publish(f"{topics.prefix}/data/x", {"n": n}) for n in range(50)]
        assert all(await asyncio.gather(*[d for d in deliveries if d is not None]))
        broker.stop()  # and with it the queued 50
        broker.start()
        subscriber = Subscriber(broker.url, topics)
        await subscriber.start()
        await _until(lambda: len(subscriber.got) == 50, f"all 50 again ({len(subscriber.got)})")
        assert publisher.outbox.replayed >= 50
    finally:
        await publisher.disconnect()
        await subscriber.mqtt.disconnect()


async def test_no_gate_without_components(broker: Mosquitto) -> None:
    gate = SubscriberGate(_topics(), [""])
    assert gate.is_open
    publisher = MqttClient(broker.url, "bridge-2", gate=gate)
    await publisher.connect()
    try:
        delivery = publisher.publish("x/y", {"n": 1})
        assert delivery is not None and await asyncio.wait_for(delivery, 5)
    finally:
        await publisher.disconnect()


async def test_a_replay_never_sends_retained_state_that_was_replaced(broker: Mosquitto) -> None:
    """A bridge's status of its previous connection, replayed after a broker lost its
    sessions, used to arrive after the status of the new connection and stay retained."""
    topics = _topics()
    subscriber = Subscriber(broker.url, topics)
    await subscriber.start()
    gate = SubscriberGate(topics, ["rules"])
    publisher = MqttClient(broker.url, "bridge-1", gate=gate, reconnect_delay=0.1, replay_window=10)
    state = f"{topics.prefix}/data/state"
    seen: list[int] = []

    async def on_state(topic: str, payload: bytes) -> None:
        seen.append(json.loads(payload)["n"])

    publisher.on_connect(lambda: _publish_state(publisher, state, 2))
    await publisher.connect()
    try:
        await _until(lambda: gate.is_open, "the recorder's announcement")
        assert await publisher.publish(state, {"n": 1}, retain=True)
        await subscriber.mqtt.disconnect()
        broker.stop()
        broker.start()
        subscriber = Subscriber(broker.url, topics)
        await subscriber.start()
        await _until(lambda: publisher.outbox.waiting == 0 and gate.is_open, "the replay")
        watcher = MqttClient(broker.url, f"watch-{uuid.uuid4().hex[:6]}")
        watcher.subscribe(state, on_state)
        await watcher.connect()
        try:
            await _until(lambda: bool(seen), "the retained state")
            assert seen == [2], "the replaced state was replayed over the new one"
        finally:
            await watcher.disconnect()
    finally:
        await publisher.disconnect()
        await subscriber.mqtt.disconnect()


async def _publish_state(publisher: MqttClient, topic: str, n: int) -> None:
    publisher.publish(topic, {"n": n}, retain=True)


async def test_a_missed_announcement_does_not_hold_the_publisher_for_ever(
    broker: Mosquitto,
) -> None:
    """A status the gate did not see (its delivery lost for whatever reason) used to keep
    the gate shut until the next reconnect: every call the bridge answered failed after
    its confirm timeout, which looked like a hang. The gate asks for the retained
    statuses again while it waits."""
    topics = _topics()
    gate = SubscriberGate(topics, ["rules"])
    publisher = MqttClient(broker.url, "bridge-missed", gate=gate, reconnect_delay=0.1)
    await publisher.connect()
    subscriber = Subscriber(broker.url, topics)
    try:
        assert not gate.is_open
        seen: list[str] = []

        async def lost(topic: str, payload: bytes) -> None:
            seen.append(topic)  # delivered, then lost on our side

        publisher._handlers[gate.topic_filter] = (1, lost)
        await subscriber.start()  # announces "rules" online, retained
        await _until(lambda: seen, "the announcement's (lost) delivery")
        publisher._handlers[gate.topic_filter] = (1, gate.on_status)
        assert not gate.is_open
        await _until(lambda: gate.is_open, "the announcement, asked for again", timeout=15)
    finally:
        await publisher.disconnect()
        await subscriber.mqtt.disconnect()


async def test_an_announcer_without_subacks_reconnects_instead_of_giving_up(
    broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SUBACKs that never come on a live connection used to mean "not announced" until
    some later reconnect; the announcer reconnects at once (and announces then)."""
    monkeypatch.setattr("chargetwin.readiness._SUBACK_TIMEOUT", 0.5)
    topics = _topics()
    subscriber = Subscriber(broker.url, topics)
    await subscriber.start()
    gate = SubscriberGate(topics, ["rules"])
    publisher = MqttClient(broker.url, "bridge-subacks", gate=gate, reconnect_delay=0.1)
    try:
        mqtt = subscriber.mqtt
        before = mqtt.connections
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        mqtt._resubscribed = [never]  # as if the broker never answered the SUBSCRIBE
        await subscriber.announcer._announce(mqtt)
        await _until(lambda: mqtt.connections > before, "a new connection")
        await publisher.connect()
        await _until(lambda: gate.is_open, "the announcement on the new connection")
    finally:
        await publisher.disconnect()
        await subscriber.mqtt.disconnect()
