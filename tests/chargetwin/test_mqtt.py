"""The shared MQTT client: topic matching, reconnect and resubscribe, nothing lost."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import Mosquitto
from probes import MqttProbe

from chargetwin.mqtt import BrokerAddress, MqttClient, MqttError, topic_matches


@pytest.mark.parametrize(
    ("topic_filter", "topic", "hit"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),  # MQTT 3.1.1 section 4.7.1.2: "#" also matches the parent
        ("a/+", "a/b/c", False),
        ("$share/g/a/+/c", "a/b/c", True),
        ("a/b", "a/b/c", False),
    ],
)
def test_topic_matching(topic_filter: str, topic: str, hit: bool) -> None:
    assert topic_matches(topic_filter, topic) is hit


def test_broker_urls() -> None:
    assert BrokerAddress.parse("mqtt://u:p%40ss@h:1884") == BrokerAddress(
        "h", 1884, "u", "p@ss", False
    )
    assert BrokerAddress.parse("mqtts://h").port == 8883
    with pytest.raises(MqttError):
        BrokerAddress.parse("http://h")


async def test_unreachable_broker_is_a_clear_error() -> None:
    client = MqttClient("mqtt://127.0.0.1:1", "nobody")
    with pytest.raises(MqttError, match=r"cannot reach MQTT broker 127\.0\.0\.1:1\b"):
        await client.connect(timeout=0.5)
    await client.disconnect()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    # No persistence: a restart forgets every session and subscription.
    mosquitto = Mosquitto(tmp_path, persistence=False)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


async def test_subscriptions_come_back_after_the_broker_forgot_them(broker: Mosquitto) -> None:
    got: list[bytes] = []

    async def handler(topic: str, payload: bytes) -> None:
        got.append(payload)

    client = MqttClient(broker.url, "resubscriber", reconnect_delay=0.2)
    client.subscribe("t/+/x", handler)
    await client.connect()
    try:
        probe = MqttProbe(broker.url)
        await probe.publish("t/1/x", b"before")
        await _until(lambda: got == [b"before"])
        probe.close()

        broker.stop()
        await _until(lambda: not client.is_connected)
        broker.start()
        await asyncio.wait_for(client.wait_connected(), 15)
        probe = MqttProbe(broker.url)
        await _until_published(probe, "t/2/x", b"after", got)
        probe.close()
    finally:
        await client.disconnect()


async def test_messages_published_while_the_broker_is_away_arrive(
    tmp_path: Path,
) -> None:
    broker = Mosquitto(tmp_path, persistence=True)
    broker.start()
    client = MqttClient(broker.url, "publisher", reconnect_delay=0.2)
    await client.connect()
    # A persistent subscriber: the broker keeps what it missed while restarting.
    probe = MqttProbe(broker.url, client_id="collector", clean_session=False)
    try:
        await probe.subscribe("out/#")
        broker.stop()
        await _until(lambda: not client.is_connected)
        for i in range(50):
            client.publish(f"out/{i}", {"n": i})  # held by the outbox
        assert client.waiting >= 50
        broker.start()
        messages = await probe.collect("out/", 50, timeout=15)
        assert {json.loads(p)["n"] for _, p in messages} == set(range(50))
        assert await client.drain(5)
    finally:
        probe.close()
        await client.disconnect()
        broker.stop()


async def _until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _until_published(probe: MqttProbe, topic: str, payload: bytes, got: list[bytes]) -> None:
    """Publish until the handler sees it: the resubscription lands shortly after CONNACK."""
    deadline = time.monotonic() + 10
    while payload not in got:
        if time.monotonic() > deadline:
            raise AssertionError("the handler never saw the message after the restart")
        await probe.publish(topic, payload)
        await asyncio.sleep(0.2)


async def test_kept_messages_wait_for_a_handler_registered_after_connecting(
    broker: Mosquitto,
) -> None:
    """A persistent session gets what the broker kept right after CONNACK; the recorder
    subscribes only once connected, and acknowledged those unhandled (lost after kill -9)."""
    first = MqttClient(broker.url, "late-subscriber", clean_session=False)

    async def ignore(topic: str, payload: bytes) -> None:
        pass

    first.subscribe("late/#", ignore)
    await first.connect()
    await first.disconnect()  # the session keeps the subscription
    probe = MqttProbe(broker.url)
    got: list[int] = []

    async def record(topic: str, payload: bytes) -> None:
        got.append(json.loads(payload)["n"])

    again = MqttClient(broker.url, "late-subscriber", clean_session=False)
    try:
        for n in range(20):
            await probe.publish("late/x", json.dumps({"n": n}).encode())
        await again.connect()  # the 20 kept messages arrive now, before any handler
        await asyncio.sleep(0.3)
        again.subscribe("late/#", record)
        await _until(lambda: len(got) == 20)
        assert sorted(got) == list(range(20))
    finally:
        probe.close()
        await again.disconnect()


# A subscriber whose handler never returns: it is killed with SIGKILL while it holds a
# message, as a recorder killed between receiving a point and making it durable.
_STUCK_SUBSCRIBER = """
import asyncio, sys
from chargetwin.mqtt import MqttClient

async def main() -> None:
    client = MqttClient(sys.argv[1], sys.argv[2], clean_session=False)

    async def hold(topic: str, payload: bytes) -> None:
        print("holding", payload.decode(), flush=True)
        await asyncio.Event().wait()

    client.subscribe("held/#", hold)
    await client.connect()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_message_whose_handler_did_not_return_comes_again_after_a_kill(
    broker: Mosquitto,
) -> None:
    """The broker gets its PUBACK only when the handler returned: gmqtt acknowledges on
    receipt unless told not to, and a recorder killed with -9 lost what it held."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _STUCK_SUBSCRIBER,
        broker.url,
        "held-subscriber",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    probe = MqttProbe(broker.url)
    try:
        async with asyncio.timeout(30):
            assert await process.stdout.readline() == b"ready\n"
            await probe.publish("held/x", b"kept")
            assert await process.stdout.readline() == b"holding kept\n"
        await asyncio.sleep(0.2)  # a PUBACK sent on receipt would reach the broker by now
    finally:
        probe.close()
        if process.returncode is None:
            process.kill()
        await process.wait()

    got: list[bytes] = []

    async def record(topic: str, payload: bytes) -> None:
        got.append(payload)

    again = MqttClient(broker.url, "held-subscriber", clean_session=False)
    again.subscribe("held/#", record)
    try:
        await again.connect()
        await _until(lambda: got == [b"kept"])
    finally:
        await again.disconnect()
