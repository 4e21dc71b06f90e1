"""No telemetry is lost while the broker restarts (a private Mosquitto, stopped mid-stream)."""

from __future__ import annotations

import asyncio
import getpass
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeBridge, MqttWatcher, OpenCharger, eventually


class Mosquitto:
    """A Mosquitto of our own, with persistence so a subscriber's session survives."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nlog_dest none\n"
            # Stay the current user: Mosquitto started as root drops to "mosquitto", which
            # cannot write the persistence file into pytest's private tmp folder.
            f"user {getpass.getuser()}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)])
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(5)
            self.process = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


async def test_meter_values_survive_a_broker_restart(
    make_bridge: MakeBridge,
    open_charger: OpenCharger,
    mosquitto: Mosquitto,
    prefix: str,
    watcher: MqttWatcher,
) -> None:
    subscriber = MqttWatcher(
        mosquitto.url, [f"{prefix}/chargers/+/telemetry/#"], client_id=f"sub-{prefix}", clean=False
    )
    subscriber.start()
    bridge = await make_bridge(mqtt_url=mosquitto.url)
    try:
        charger = await open_charger(target=bridge)
        total = 120
        for i in range(total):
            if i == 40:
                mosquitto.stop()
            if i == 80:
                mosquitto.start()
            await charger.result(
                "MeterValues",
                {
                    "connectorId": 1,
                    "meterValue": [
                        {
                            "timestamp": f"2025-03-01T10:00:{i % 60:02d}Z",
                            "sampledValue": [{"value": str(i)}],
                        }
                    ],
                },
            )
            await asyncio.sleep(0.01)
        topic = bridge.topics.telemetry(charger.charger_id, "meterValues")

        def received() -> set[int]:
            return {int(m["values"][0]["value"]) for m in subscriber.on(topic)}

        await eventually(
            lambda: received() == set(range(total)),
            timeout=15,
            what=f"every MeterValues message {sorted(set(range(total)) - received())}",
        )
        assert bridge.mqtt is not None and bridge.mqtt.outbox.dropped == 0
    finally:
        if mosquitto.process is None:
            mosquitto.start()
        await bridge.stop()  # while its broker is up (else gmqtt leaves a reconnect task)
        subscriber.stop()
