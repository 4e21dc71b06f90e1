"""The embedded broker: which one runs, Mosquitto as a child that keeps every QoS 1 message.

Real Mosquitto child processes and real paho-mqtt clients.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from brokers import free_port
from paho.mqtt.client import CallbackAPIVersion, Client

from chargetwin.broker import (
    AmqttBroker,
    BrokerStartError,
    MosquittoBroker,
    embedded_broker,
    find_mosquitto,
)

MOSQUITTO = find_mosquitto()
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


def test_auto_takes_mosquitto_when_it_is_installed(tmp_path: Path) -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    broker = embedded_broker("auto", 1883, tmp_path)
    assert isinstance(broker, MosquittoBroker)
    assert broker.folder == tmp_path / "mosquitto"


def test_amqtt_is_taken_with_a_warning_about_its_capacity(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "chargetwin.broker"):
        broker = embedded_broker("amqtt", 1883, tmp_path)
    assert isinstance(broker, AmqttBroker)
    assert "drops a QoS 1 delivery" in caplog.text and "Install Mosquitto" in caplog.text


def test_auto_falls_back_to_amqtt_without_a_mosquitto_binary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-mosquitto"
    with caplog.at_level(logging.WARNING, "chargetwin.broker"):
        assert isinstance(embedded_broker("auto", 1883, tmp_path, missing), AmqttBroker)
    with pytest.raises(BrokerStartError, match="--embedded-broker amqtt"):
        embedded_broker("mosquitto", 1883, tmp_path, missing)


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto", binary=MOSQUITTO)
    await broker.start()
    yield broker
    await broker.stop()


class Counter:
    """A paho QoS 1 subscriber that records the sequence numbers it receives."""

    def __init__(self, port: int, client_id: str, *, clean: bool = True) -> None:
        self.seen: list[int] = []
        self.subscribed = threading.Event()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.client.on_message = lambda c, u, m: self.seen.append(int(m.payload))
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_connect = lambda c, *args: c.subscribe("load/#", qos=1)
        self.client.connect("127.0.0.1", port)

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(set(self.seen)) < count and time.monotonic() < deadline:
            self.client.loop(0.05)
        return len(set(self.seen)) >= count


def _publish(port: int, count: int) -> int:
    """Publish ``count`` QoS 1 messages; return how many the broker acknowledged."""
    acked: list[Any] = []
    publisher = Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}")
    publisher.on_publish = lambda *args: acked.append(1)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    try:
        for seq in range(count):
            publisher.publish("load/meterValues", str(seq), qos=1)
        deadline = time.monotonic() + 30
        while len(acked) < count and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    return len(acked)


async def test_a_subscriber_that_lags_behind_a_burst_loses_nothing(
    mosquitto: MosquittoBroker,
) -> None:
    """Mosquitto's default queue (1,000 messages per client) would drop most of this burst."""
    lagging = Counter(mosquitto.port, "lagging")
    assert await asyncio.to_thread(lagging.wait_for, 0, 5)
    while not lagging.subscribed.is_set():
        await asyncio.to_thread(lagging.client.loop, 0.05)
    total = 5_000
    # The subscriber reads nothing while the burst is acknowledged and for 6 s after.
    assert await asyncio.to_thread(_publish, mosquitto.port, total) == total
    await asyncio.sleep(6)
    assert await asyncio.to_thread(lagging.wait_for, total, 60)
    assert sorted(set(lagging.seen)) == list(range(total))
    lagging.client.disconnect()


async def test_a_durable_session_survives_a_restart_of_the_broker(
    mosquitto: MosquittoBroker,
) -> None:
    durable = Counter(mosquitto.port, "durable-recorder", clean=False)
    while not durable.subscribed.is_set():
        await asyncio.to_thread(durable.client.loop, 0.05)
    durable.client.disconnect()
    assert await asyncio.to_thread(_publish, mosquitto.port, 100) == 100

    await mosquitto.stop()  # SIGTERM: Mosquitto writes its persistence file in the data dir
    assert (mosquitto.folder / "mosquitto.db").exists()
    await mosquitto.start()

    back = Counter(mosquitto.port, "durable-recorder", clean=False)
    assert await asyncio.to_thread(back.wait_for, 100, 20)
    assert sorted(set(back.seen)) == list(range(100))
    back.client.disconnect()


async def _listening(port: int) -> bool:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())  # a zombie has none
    except OSError:
        return False


@needs_mosquitto
async def test_a_broker_left_by_a_killed_run_is_ended_and_its_port_reused(
    tmp_path: Path,
) -> None:
    """A broker adopted by init without its parent-death signal does not hold the port."""
    assert MOSQUITTO is not None
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto", binary=MOSQUITTO)
    broker.folder.mkdir()
    broker.config.write_text(f"listener {broker.port} 127.0.0.1\nallow_anonymous true\n")
    # Detached (its shell exits at once): what a broker outliving its parent looks like.
    shell = await asyncio.create_subprocess_exec(
        *("sh", "-c", 'setsid "$0" -c "$1" >/dev/null 2>&1 & echo $!', MOSQUITTO, broker.config),
        stdout=subprocess.PIPE,
    )
    orphan = int((await shell.communicate())[0])
    broker.pid_file.write_text(f"{orphan}\n")
    try:
        assert await _listening(broker.port)
        await broker.start()
        try:
            assert not _alive(orphan)
            assert await asyncio.to_thread(_publish, broker.port, 1) == 1
        finally:
            await broker.stop()
    finally:
        if _alive(orphan):
            os.kill(orphan, 9)


PARENT = """
import asyncio, sys
from pathlib import Path
from paho.mqtt.client import CallbackAPIVersion, Client
from chargetwin.broker import MosquittoBroker

async def main():
    broker = MosquittoBroker(int(sys.argv[1]), Path(sys.argv[2]), binary=sys.argv[3])
    await broker.start()
    bridge = Client(CallbackAPIVersion.VERSION2, client_id="bridge")
    bridge.will_set("presence/bridge", "offline", qos=1, retain=True)
    bridge.connect("127.0.0.1", broker.port)
    bridge.loop_start()
    bridge.publish("presence/bridge", "online", qos=1, retain=True).wait_for_publish()
    print("ready", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@needs_mosquitto
async def test_kill_9_of_the_platform_ends_its_broker_after_it_published_the_wills(
    tmp_path: Path,
) -> None:
    """The presence of a killed platform reads offline after the restart, not online."""
    assert MOSQUITTO is not None
    port, folder = free_port(), tmp_path / "mosquitto"
    parent = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", PARENT, str(port), str(folder), MOSQUITTO),
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    assert await asyncio.wait_for(parent.stdout.readline(), 60) == b"ready\n"
    orphan = int((folder / "mosquitto.pid").read_text())
    parent.kill()
    await parent.wait()
    for _ in range(200):
        if not _alive(orphan):
            break
        await asyncio.sleep(0.05)
    assert not _alive(orphan)

    restarted = MosquittoBroker(port, folder, binary=MOSQUITTO)
    await restarted.start()
    try:
        presence: list[bytes] = []
        reader = Client(CallbackAPIVersion.VERSION2, client_id="reader")
        reader.on_message = lambda c, u, m: presence.append(m.payload)
        reader.on_connect = lambda c, *args: c.subscribe("presence/#", qos=1)
        reader.connect("127.0.0.1", port)
        deadline = time.monotonic() + 10
        while not presence and time.monotonic() < deadline:
            await asyncio.to_thread(reader.loop, 0.05)
        reader.disconnect()
        assert presence == [b"offline"]
    finally:
        await restarted.stop()
