"""No telemetry is lost while the broker restarts (a private Mosquitto, stopped mid-stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import Mosquitto
from conftest import MakeBridge, MqttWatcher, OpenCharger, eventually


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
