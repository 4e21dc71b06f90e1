"""The recorder: MQTT → points in the store, batched, spooled while the store is down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from influx_servers import InfluxServer
from probes import MqttProbe

from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from rules.influx import InfluxStore
from rules.points import NS, Point, Selection
from rules.recorders import Recorder
from rules.series import SeriesStore, StoreUnavailable
from rules.spools import Spool
from rules.sqlite_series import SQLiteSeriesStore

T0 = 1_700_000_000.0


async def count(store: SeriesStore, measurement: str, field: str = "value") -> int:
    samples = await store.aggregate(Selection(measurement, field), "count", 0, 2**62)
    return int(samples[0].value) if samples else 0


async def wait_for_count(
    store: SeriesStore, measurement: str, expected: int, field: str = "value"
) -> None:
    for _ in range(300):
        if await count(store, measurement, field) >= expected:
            break
        await asyncio.sleep(0.05)
    assert await count(store, measurement, field) == expected


def meter_message(i: int, connector: int = 1) -> dict[str, object]:
    return {
        "connectorId": connector,
        "transactionId": 7,
        "timestamp": T0 + i,
        "values": [
            {
                "measurand": "Energy.Active.Import.Register",
                "phase": None,
                "unit": "Wh",
                "value": 1000.0 + i,
                "context": "Sample.Periodic",
                "location": "Outlet",
            },
            {
                "measurand": "Current.Import",
                "phase": "L1",
                "unit": None,
                "value": 16.0,
                "context": "Sample.Periodic",
                "location": "Outlet",
            },
        ],
    }


async def test_rules_recorder_writes_every_kind_of_message(
    series_store: SeriesStore, mqtt: MqttClient, probe: MqttProbe, prefix: str, tmp_path: Path
) -> None:
    topics = Topics(prefix)
    recorder = Recorder(series_store, Spool(tmp_path / "spool", max_bytes=1 << 20), topics)
    await recorder.start(mqtt)
    try:
        base = f"{prefix}/chargers/CP-1"
        await probe.publish(f"{base}/telemetry/meterValues", meter_message(0))
        await probe.publish(
            f"{base}/events/status",
            {
                "connectorId": 1,
                "previous": "Available",
                "status": "Faulted",
                "errorCode": "GroundFailure",
                "info": None,
                "vendorId": None,
                "vendorErrorCode": None,
                "timestamp": T0 + 1,
            },
        )
        await probe.publish(
            f"{base}/presence", {"online": False, "since": T0 + 2, "ocppVersion": "1.6"}
        )
        stopped = {
            "event": "stopped",
            "transactionId": 7,
            "connectorId": 1,
            "idTag": "T",
            "meterStart": 1000,
            "meterStop": 1000,
            "reason": "EVDisconnected",
            "startedAt": T0,
            "timestamp": T0 + 60,
            "known": True,
        }
        await probe.publish(f"{base}/events/transaction", stopped)
        await probe.publish(f"{base}/events/transaction", stopped)  # a retry: deduped
        await probe.publish(
            f"{base}/events/firmware", {"status": "InstallationFailed", "timestamp": T0 + 3}
        )
        await probe.publish(
            f"{base}/events/boot", {"vendor": "V", "model": "M", "timestamp": T0 + 4}
        )
        await probe.publish(
            f"{base}/events/diagnostics", {"kind": "log", "status": "Uploaded", "timestamp": T0 + 5}
        )
        await probe.publish(
            f"{base}/events/clockSkew",
            {"status": "behind", "seconds": -86400.0, "action": "StatusNotification",
             "value": "2000-01-01T00:00:00Z", "timestamp": T0 + 6},
        )  # fmt: skip
        await probe.publish(f"{base}/telemetry/meterValues", b"not json")  # ignored, not fatal
        await wait_for_count(series_store, "diagnostics_status", 1, "status")
        await wait_for_count(series_store, "clock_skew", 1, "status")
        [skew] = await series_store.last(Selection("clock_skew", "seconds"), None, 2**62)
        assert skew.value == -86400.0

        current = Selection(
            "meter_values",
            "value",
            {"measurand": ("Current.Import",)},
            ("charger", "connector", "phase", "unit", "location", "context"),
        )
        [sample] = await series_store.last(current, None, 2**62)
        assert dict(sample.labels) == {
            "charger": "CP-1",
            "connector": "1",
            "phase": "L1",
            "unit": "",
            "location": "Outlet",
            "context": "Sample.Periodic",
        }
        assert sample.value == 16.0 and sample.time == int(T0 * NS)
        [status] = await series_store.last(Selection("connector_status", "status"), None, 2**62)
        assert status.value == "Faulted"
        [error] = await series_store.last(Selection("connector_status", "error_code"), None, 2**62)
        assert error.value == "GroundFailure"
        [presence] = await series_store.last(Selection("presence", "state"), None, 2**62)
        assert presence.value == "offline" and presence.time == int((T0 + 2) * NS)
        assert await count(series_store, "sessions", "zero_energy") == 1
        [zero] = await series_store.last(Selection("sessions", "zero_energy"), None, 2**62)
        [ok] = await series_store.last(Selection("sessions", "successful"), None, 2**62)
        assert (zero.value, ok.value) == (1.0, 0.0)
        [fw] = await series_store.last(Selection("firmware_status", "status"), None, 2**62)
        assert fw.value == "InstallationFailed"
        assert await count(series_store, "boots", "count") == 1
    finally:
        await recorder.stop()


async def test_rules_recorder_writes_2_0_1_meter_values_and_device_events(
    series_store: SeriesStore, mqtt: MqttClient, probe: MqttProbe, prefix: str, tmp_path: Path
) -> None:
    """A 2.0.1 station's meter values carry the ``evse`` tag beside ``connector`` (1.6 ones
    do not); its NotifyEvent data become ``device_events`` whose ``state`` is ``cleared``
    on a return to normal."""
    recorder = Recorder(series_store, Spool(tmp_path / "spool", max_bytes=1 << 20), Topics(prefix))
    await recorder.start(mqtt)
    try:
        base = f"{prefix}/chargers/CS-2"
        await probe.publish(f"{base}/telemetry/meterValues", {**meter_message(0, 2), "evseId": 2})
        await probe.publish(f"{prefix}/chargers/CP-1/telemetry/meterValues", meter_message(1))
        event = {
            "key": "Connector@2.1/Problem",
            "component": "Connector",
            "variable": "Problem",
            "evseId": 2,
            "evseConnectorId": 1,
            "eventId": 17,
            "trigger": "Alerting",
            "actualValue": "true",
            "techCode": "E-42",
            "techInfo": "latch stuck",
            "cleared": False,
            "notificationType": "HardWiredNotification",
            "transactionId": None,
            "timestamp": T0 + 10,
        }
        await probe.publish(f"{base}/events/deviceEvent", event)
        cleared = {**event, "eventId": 18, "actualValue": "false", "cleared": True,
                   "techCode": None, "techInfo": None, "timestamp": T0 + 20}  # fmt: skip
        await probe.publish(f"{base}/events/deviceEvent", cleared)
        station = {"key": "ChargingStation/Tampered", "component": "ChargingStation",
                   "variable": "Tampered", "evseId": None, "evseConnectorId": None,
                   "eventId": 3, "trigger": "Delta", "actualValue": "true",
                   "timestamp": T0 + 30}  # fmt: skip
        await probe.publish(f"{base}/events/deviceEvent", station)
        await wait_for_count(series_store, "device_events", 3, "event_id")
        await wait_for_count(series_store, "meter_values", 4)

        by_evse = Selection(
            "meter_values",
            "value",
            {"measurand": ("Current.Import",)},
            ("charger", "connector", "evse"),
        )
        samples = await series_store.last(by_evse, None, 2**62)
        assert sorted((dict(s.labels) for s in samples), key=lambda labels: labels["charger"]) == [
            {"charger": "CP-1", "connector": "1", "evse": ""},
            {"charger": "CS-2", "connector": "2", "evse": "2"},
        ]

        tags = ("charger", "key", "component", "variable", "connector", "evse", "evse_connector")
        problem = {"variable": ("Problem",)}
        groups = await series_store.points(
            Selection("device_events", "state", problem, tags), 0, 2**62
        )
        [(labels, points)] = groups.items()
        assert points == [(int((T0 + 10) * NS), "true"), (int((T0 + 20) * NS), "cleared")]
        assert dict(labels) == {
            "charger": "CS-2",
            "key": "Connector@2.1/Problem",
            "component": "Connector",
            "variable": "Problem",
            "connector": "2",
            "evse": "2",
            "evse_connector": "1",
        }
        [actual] = await series_store.last(
            Selection("device_events", "actual_value", problem), None, 2**62
        )
        assert actual.value == "false"
        [flag] = await series_store.last(
            Selection("device_events", "cleared", problem), None, 2**62
        )
        assert flag.value == 1.0
        [code] = await series_store.last(
            Selection("device_events", "tech_code", problem), None, 2**62
        )
        assert code.value == "E-42" and code.time == int((T0 + 10) * NS)
        [tamper] = await series_store.last(
            Selection("device_events", "state", {"variable": ("Tampered",)}, tags), None, 2**62
        )
        assert tamper.value == "true" and dict(tamper.labels)["connector"] == ""
    finally:
        await recorder.stop()


async def test_rules_recorder_survives_an_influxdb_outage(
    mqtt: MqttClient, probe: MqttProbe, prefix: str, tmp_path: Path
) -> None:
    """Stop influxd mid-stream, keep publishing, restart it: every point is there."""
    server = InfluxServer(tmp_path / "influxd")
    server.start()
    store = InfluxStore(server.url, "outage", timeout=2.0)
    await store.open()
    spool = Spool(tmp_path / "spool", max_bytes=64 << 20)
    recorder = Recorder(store, spool, Topics(prefix), retry_delay=0.1, max_retry_delay=0.5)
    await recorder.start(mqtt)
    topic = f"{prefix}/chargers/CP-9/telemetry/meterValues"
    try:
        for i in range(100):
            await probe.publish(topic, meter_message(i))
        server.stop()
        for i in range(100, 300):
            await probe.publish(topic, meter_message(i))
        for _ in range(100):
            if recorder.spooled:
                break
            await asyncio.sleep(0.05)
        assert recorder.spooled > 0 and spool.has_data
        server.start()
        for i in range(300, 400):
            await probe.publish(topic, meter_message(i))
        await wait_for_count(store, "meter_values", 800)
        assert not spool.has_data
        energy = Selection(
            "meter_values", "value", {"measurand": ("Energy.Active.Import.Register",)}
        )
        [last] = await store.last(energy, None, 2**62)
        assert last.value == 1399.0
    finally:
        await recorder.stop()
        await store.close()
        server.stop()


async def test_rules_recorder_replays_a_spool_left_by_a_previous_run(
    series_store: SeriesStore, prefix: str, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    left = Spool(folder, max_bytes=1 << 20)
    await left.append(
        [Point("m", {"charger": "A"}, {"value": float(i)}, i * NS) for i in range(1, 11)]
    )
    recorder = Recorder(series_store, Spool(folder, max_bytes=1 << 20), Topics(prefix))
    await recorder.start()
    try:
        await wait_for_count(series_store, "m", 10)
        # The segment goes once the store has taken all of it: just after the points land.
        for _ in range(100):
            if not list(folder.glob("segment-*")):
                break
            await asyncio.sleep(0.02)
        assert list(folder.glob("segment-*")) == []
    finally:
        await recorder.stop()


async def test_rules_recorder_holds_back_when_the_spool_is_full(
    prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full spool blocks the handler (no PUBACK) instead of dropping points."""
    dead = InfluxStore("http://127.0.0.1:9", "nowhere", timeout=0.5)
    spool = Spool(tmp_path / "spool", max_bytes=200)
    recorder = Recorder(dead, spool, Topics(prefix), retry_delay=5, linger=0.001)
    await recorder.start()
    try:
        await asyncio.wait_for(
            recorder.accept([Point("m", {}, {"value": 1.0}, i * NS) for i in range(1, 10)]), 5
        )
        assert spool.full
        blocked = asyncio.ensure_future(recorder.accept([Point("m", {}, {"value": 2.0}, 99 * NS)]))
        await asyncio.sleep(0.3)
        assert not blocked.done()
        assert "spool full" in caplog.text
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
    finally:
        await recorder.stop()
        await dead.close()
    assert (
        json.loads((sorted(spool.folder.glob("segment-*"))[0]).read_text().splitlines()[0])[0]
        == "m"
    )


class _WatchedStore(SQLiteSeriesStore):
    """The real SQLite store, with its writes watched (sizes, overlap) and slowed down,
    optionally one outage and one write held until released, so the recorder's pipelining
    can be observed without depending on how fast the machine is."""

    def __init__(
        self, path: Path, *, fail_write: int | None = None, hold_write: int | None = None
    ) -> None:
        super().__init__(path)
        self.sizes: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_write = fail_write
        self.hold_write = hold_write
        self.release = asyncio.Event()

    async def write(self, points: Sequence[Point]) -> None:
        self.sizes.append(len(points))
        number = len(self.sizes)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            if number == self.hold_write:
                await self.release.wait()
            if number == self.fail_write:
                raise StoreUnavailable("outage for the test")
            await super().write(points)
        finally:
            self.in_flight -= 1


def numbered(i: int) -> Point:
    # The same series and time for every point: the stored value shows which write was last.
    return Point("m", {"charger": "A"}, {"value": float(i)}, NS)


async def test_rules_recorder_pipelines_two_writes_and_splits_a_burst(
    prefix: str, tmp_path: Path
) -> None:
    store = _WatchedStore(tmp_path / "series.db", hold_write=2)
    await store.open()
    recorder = Recorder(
        store, Spool(tmp_path / "spool", max_bytes=1 << 20), Topics(prefix), min_split=10
    )
    await recorder.start()
    try:
        handlers = [
            asyncio.ensure_future(recorder.accept([Point("m", {"c": str(i)}, {"value": 1.0}, NS)]))
            for i in range(100)
        ]
        await asyncio.sleep(0)
        done, _ = await asyncio.wait(handlers, timeout=0.04)
        assert not done  # nothing is acknowledged before it is written
        await asyncio.wait(handlers, return_when=asyncio.FIRST_COMPLETED)
        assert store.sizes[:2] == [50, 50] and store.most_in_flight == 2
        await asyncio.sleep(0.05)  # the second write is held: only the first half settles
        assert sum(h.done() for h in handlers) == 50  # the first half's messages first
        store.release.set()
        await asyncio.gather(*handlers)
        assert await count(store, "m") == 100
    finally:
        await recorder.stop()
        await store.close()


async def test_rules_recorder_outage_of_one_write_keeps_the_order(
    prefix: str, tmp_path: Path
) -> None:
    """The first write fails while the second is in flight: both go to the spool, in order,
    so the later value is the one the store ends up with."""
    store = _WatchedStore(tmp_path / "series.db", fail_write=1)
    await store.open()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    recorder = Recorder(store, spool, Topics(prefix), min_split=1, retry_delay=0.05)
    await recorder.start()
    try:
        await asyncio.gather(recorder.accept([numbered(1)]), recorder.accept([numbered(2)]))
        assert store.most_in_flight == 2 and recorder.spooled == 2
        for _ in range(100):
            if not spool.has_data:
                break
            await asyncio.sleep(0.02)
        [last] = await store.last(Selection("m", "value"), None, 2**62)
        assert last.value == 2.0
    finally:
        await recorder.stop()
        await store.close()
