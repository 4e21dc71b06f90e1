"""No acknowledged telemetry is lost while the broker restarts (a private Mosquitto, stopped
mid-stream), because a charger is answered only once the broker has its message."""

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


def _meter_values(i: int) -> dict[str, object]:
    return {
        "connectorId": 1,
        "meterValue": [
            {
                "timestamp": f"2025-03-01T10:{i // 60:02d}:{i % 60:02d}Z",
                "sampledValue": [{"value": str(i)}],
            }
        ],
    }


async def _start_later(mosquitto: Mosquitto, delay: float) -> None:
    await asyncio.sleep(delay)
    await asyncio.to_thread(mosquitto.start)


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
    restart: asyncio.Task[None] | None = None
    try:
        charger = await open_charger(target=bridge)
        total = 120
        for i in range(total):
            if i == 40:
                mosquitto.stop()
                restart = asyncio.create_task(_start_later(mosquitto, 0.5))
            # Answered once the broker has it: the one sent during the outage waits.
            answer = await charger.call("MeterValues", _meter_values(i), timeout=15)
            assert answer[0] == 3, answer
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
        if restart is not None:
            await restart
        if mosquitto.process is None:
            mosquitto.start()
        await bridge.stop()  # while its broker is up (else gmqtt leaves a reconnect task)
        subscriber.stop()


async def test_a_call_is_answered_only_once_the_broker_acknowledged_what_it_published(
    make_bridge: MakeBridge,
    open_charger: OpenCharger,
    mosquitto: Mosquitto,
    prefix: str,
) -> None:
    """A CALLRESULT is the charger's licence to forget its message (OCPP 1.6 section 4.7):
    it must not go out while the message is still only in the bridge's memory."""
    subscriber = MqttWatcher(
        mosquitto.url, [f"{prefix}/chargers/+/telemetry/#"], client_id=f"sub-{prefix}", clean=False
    )
    subscriber.start()
    bridge = await make_bridge(mqtt_url=mosquitto.url)
    try:
        charger = await open_charger(target=bridge)
        await charger.result("MeterValues", _meter_values(0))
        mosquitto.stop()
        assert bridge.mqtt is not None
        await eventually(lambda: not bridge.mqtt.is_connected, timeout=5, what="disconnection")
        pending = asyncio.create_task(charger.call("MeterValues", _meter_values(1), timeout=15))
        done, _ = await asyncio.wait([pending], timeout=1.0)
        assert not done, "answered while the broker was away"
        await asyncio.to_thread(mosquitto.start)
        answer = await pending
        assert answer[0] == 3, answer
        topic = bridge.topics.telemetry(charger.charger_id, "meterValues")
        await eventually(lambda: len(subscriber.on(topic)) == 2, timeout=10, what="both messages")
    finally:
        if mosquitto.process is None:
            mosquitto.start()
        await bridge.stop()
        subscriber.stop()


async def test_a_call_the_broker_does_not_take_in_time_gets_an_internal_error(
    make_bridge: MakeBridge,
    open_charger: OpenCharger,
    mosquitto: Mosquitto,
) -> None:
    """The charger sends it again rather than believing it stored (OCPP 1.6 section 4.7)."""
    bridge = await make_bridge(mqtt_url=mosquitto.url)
    assert bridge.mqtt is not None
    bridge.mqtt.outbox.confirm_timeout = 0.5
    try:
        charger = await open_charger(target=bridge)
        mosquitto.stop()
        assert bridge.mqtt is not None
        await eventually(lambda: not bridge.mqtt.is_connected, timeout=5, what="disconnection")
        answer = await charger.call("MeterValues", _meter_values(1), timeout=5)
        assert answer[0] == 4 and answer[2] == "InternalError", answer
        stop = await charger.call(
            "StopTransaction",
            {"transactionId": 1, "meterStop": 10, "timestamp": "2025-03-01T10:00:00Z"},
            timeout=5,
        )
        assert stop[0] == 4 and stop[2] == "InternalError", stop
    finally:
        mosquitto.start()
        await bridge.stop()
