"""A poisoned point costs nothing but itself: isolated, kept in the dead letter, counted.

MQTT is an open contract, so anything may arrive on the telemetry topics: a time beyond
64-bit nanoseconds (which failed the whole SQLite batch with ``OverflowError``), NaN, an
integer beyond any float, a lone surrogate, a newline in a tag, a payload that is not
JSON. Each must be refused alone, with its reason, on both stores, live and on replay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from influx_servers import InfluxServer
from probes import MqttProbe
from test_rules_files import GOOD

from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from rules import cli
from rules.dead_letters import DeadLetters
from rules.influx import InfluxStore
from rules.measurements import convert
from rules.points import NS, Point, Rejection, Selection
from rules.recorders import Recorder
from rules.series import SeriesStore, StoreUnavailable
from rules.spools import Spool
from rules.sqlite_series import SQLiteSeriesStore

T0 = 1_700_000_000.0
EVERYTHING = (-(2**62), 2**62)


async def count(store: SeriesStore, measurement: str, field: str = "value") -> int:
    samples = await store.aggregate(Selection(measurement, field), "count", *EVERYTHING)
    return int(samples[0].value) if samples else 0


async def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def meter(i: int, *, timestamp: Any = None, value: Any = None) -> dict[str, Any]:
    return {
        "connectorId": 1,
        "transactionId": 7,
        "timestamp": T0 + i if timestamp is None else timestamp,
        "values": [
            {"measurand": "Energy.Active.Import.Register", "unit": "Wh",
             "value": 1000.0 + i if value is None else value},
        ],
    }  # fmt: skip


def entries(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("dead-letter-*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("dead-letter-*.jsonl"))


async def test_rules_recorder_a_poisoned_point_among_ten_chargers_loses_nothing(
    series_store: SeriesStore, mqtt: MqttClient, probe: MqttProbe, prefix: str, tmp_path: Path
) -> None:
    """Ten chargers' MeterValues in one batch, one of them dated 9999-12-31: every good
    point is recorded, the bad one is in the dead letter with its reason, counted once."""
    recorder = Recorder(
        series_store,
        Spool(tmp_path / "spool", max_bytes=1 << 20),
        Topics(prefix),
        linger=0.5,  # every message below lands in one batch, as under load
        max_delay=5.0,
    )
    await recorder.start(mqtt)
    poison_topic = f"{prefix}/chargers/CP-4/telemetry/meterValues"
    try:
        sends = []
        for i in range(5):
            for charger in range(10):
                sends.append(
                    probe.publish(f"{prefix}/chargers/CP-{charger}/telemetry/meterValues", meter(i))
                )
        sends.insert(23, probe.publish(poison_topic, meter(9, timestamp="9999-12-31T23:59:59Z")))
        await asyncio.gather(*sends)

        async def settled() -> bool:
            return recorder.dead_lettered >= 1 and await count(series_store, "meter_values") >= 50

        await wait_until(settled)
        await asyncio.sleep(0.3)  # nothing more arrives
        assert await count(series_store, "meter_values") == 50  # 0 lost, 0 extra
        by_charger = await series_store.aggregate(
            Selection("meter_values", "value", group_by=("charger",)), "count", *EVERYTHING
        )
        assert {dict(s.labels)["charger"]: s.value for s in by_charger} == {
            f"CP-{c}": 5.0 for c in range(10)
        }
        assert recorder.dead_lettered == 1
        [entry] = entries(tmp_path / "dead-letter")
        assert entry["topic"] == poison_topic
        assert json.loads(entry["payload"])["timestamp"] == "9999-12-31T23:59:59Z"
        assert "outside what the stores hold" in entry["reason"]
        assert entry["point"][0] == "meter_values" and entry["point"][1]["charger"] == "CP-4"
        assert entry["time"]
    finally:
        await recorder.stop()


STOPPED_HUGE = {"event": "stopped", "meterStart": 0, "meterStop": 10**400}
POISONS: list[tuple[str, bytes, str]] = [
    ("telemetry/meterValues", json.dumps(meter(0, timestamp=1e300)).encode(), "not a time"),
    ("telemetry/meterValues", json.dumps(meter(0, timestamp=10**30)).encode(), "outside"),
    ("telemetry/meterValues", json.dumps(meter(0, timestamp=10**400)).encode(), "not a time"),
    ("telemetry/meterValues", json.dumps(meter(0, value=math.nan)).encode(), "finite"),
    ("telemetry/meterValues", json.dumps(meter(0, value=-math.inf)).encode(), "finite"),
    ("telemetry/meterValues", json.dumps(meter(0, value=10**400)).encode(), "beyond any float"),
    ("telemetry/meterValues", b'{"timestamp": 1e999, "values": []}', "not a time"),
    ("events/status", b'{"connectorId": 1, "status": "Faulted\\ud800"}', "surrogate"),
    ("events/status", b'{"connectorId": "1\\n2", "status": "Faulted"}', "control character"),
    ("events/status", json.dumps({"status": "x" * 70_000}).encode(), "bytes long"),
    ("events/transaction", json.dumps(STOPPED_HUGE).encode(), "beyond any float"),
    (
        "events/deviceEvent",
        b'{"key": "Connector@1/Problem\\n", "actualValue": "true"}',
        "control character",
    ),
    (
        "events/deviceEvent",
        json.dumps({"key": "A/B", "techInfo": "x" * 70_000}).encode(),
        "bytes long",
    ),
    ("events/deviceEvent", b'{"key": "A/B", "actualValue": "on\\ud800"}', "surrogate"),
    ("events/boot", b"not json", "not JSON"),
    ("events/boot", b"[1, 2]", "not an object"),
    ("events/boot", b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ("events/boot", b"\xff\xfe", "not JSON"),
]


@pytest.mark.parametrize(("tail", "payload", "reason"), POISONS)
def test_rules_measurements_refuse_a_poisoned_message_with_its_reason(
    tail: str, payload: bytes, reason: str
) -> None:
    points, rejections = convert("p", f"p/chargers/CP-1/{tail}", payload, T0)
    assert points == []
    [rejection] = rejections
    assert reason in rejection.reason


def test_rules_measurements_keep_the_good_values_of_a_message_with_a_bad_one() -> None:
    body = meter(0)
    body["values"] += [
        {"measurand": "Current.Import", "value": math.nan},
        {"measurand": "Voltage", "unit": "V\ud800", "value": 230.0},
        {"measurand": "Power.Active.Import", "phase": "L1\nL2", "value": 7000.0},
        {"measurand": "Temperature", "value": 31.5},
    ]
    points, rejections = convert("p", "p/chargers/CP-1/telemetry/meterValues",
                                 json.dumps(body).encode(), T0)  # fmt: skip
    assert [p.tags["measurand"] for p in points] == ["Energy.Active.Import.Register", "Temperature"]
    assert [r.point.tags["measurand"] for r in rejections if r.point] == [
        "Current.Import",
        "Voltage",
        "Power.Active.Import",
    ]
    # A charger id that cannot be a tag (MQTT topics may hold a newline) refuses the points.
    points, rejections = convert("p", "p/chargers/CP\n1/events/boot", b"{}", T0)
    assert not points and "control character" in rejections[0].reason


def test_rules_measurements_keep_device_event_fields_of_one_type() -> None:
    """A device event's fields are strings (but ``cleared``) whatever JSON type a publisher
    gave them, so InfluxDB never meets one field with two types."""
    body = {"key": "Fan/Speed", "component": "Fan", "variable": "Speed", "actualValue": 1200,
            "eventId": 7, "techCode": 17, "cleared": "yes", "timestamp": T0}  # fmt: skip
    [point], rejections = convert(
        "p", "p/chargers/CS-1/events/deviceEvent", json.dumps(body).encode(), T0
    )
    assert rejections == []
    assert point.fields == {
        "state": "1200", "actual_value": "1200", "cleared": 0.0, "tech_code": "17",
        "event_id": "7",
    }  # fmt: skip
    assert point.tags == {"charger": "CS-1", "key": "Fan/Speed", "component": "Fan",
                          "variable": "Speed"}  # fmt: skip


def bad_points() -> list[Point]:
    """Points that bypass the conversion (a spool file, a bug): each one poisoned."""
    return [
        Point("m", {"c": "late"}, {"value": 1.0}, 2**64),
        Point("m", {"c": "nan"}, {"value": math.nan}, NS),
        Point("m", {"c": "huge"}, {"value": 10**400}, NS),  # type: ignore[dict-item]
        Point("m", {"c": "\ud800"}, {"value": 1.0}, NS),
        Point("m", {"c": "a\nb"}, {"value": 1.0}, NS),
        Point("m", {"c": "ok"}, {"time": 1.0}, NS),
        Point("m", {"c": "ok"}, {"s": "\udfff"}, NS),
        Point("m", {1: "x"}, {"value": 1.0}, NS),  # type: ignore[dict-item]
        Point("m", {"c": ["x"]}, {"value": 1.0}, NS),  # type: ignore[dict-item]
        Point("m", {"c": "ok"}, {"value": {"nested": 1}}, NS),  # type: ignore[dict-item]
        Point("m", {"c": "ok"}, {}, NS),
        Point("m", {"c": "x" * 5000}, {"value": 1.0}, NS),
    ]


async def test_rules_stores_refuse_bad_points_alone(series_store: SeriesStore) -> None:
    good = [Point("m", {"c": f"g{i}"}, {"value": float(i)}, (i + 1) * NS) for i in range(10)]
    bad = bad_points()
    mixed = [*good[:5], *bad, *good[5:]]
    rejections = await series_store.write(mixed)
    assert [r.point for r in rejections] == bad
    assert all(r.reason for r in rejections)
    assert await count(series_store, "m") == 10
    # A batch of only bad points writes nothing and raises nothing.
    assert len(await series_store.write(bad)) == len(bad)
    assert await count(series_store, "m") == 10


async def test_rules_sqlite_store_isolates_a_point_its_checks_missed(tmp_path: Path) -> None:
    """Beyond the checks, a point that makes SQLite raise is refused alone (savepoints)."""
    store = SQLiteSeriesStore(tmp_path / "series.db")
    await store.open()
    try:
        points = [Point("m", {"c": str(i)}, {"value": float(i)}, NS) for i in range(6)]
        points.insert(3, Point("m", {"c": "x"}, {"value": 1.0}, 2**64))
        rejections = await asyncio.get_running_loop().run_in_executor(
            store._writer, store._write_sync, points
        )
        assert [r.point for r in rejections] == [points[3]]
        assert "OverflowError" in rejections[0].reason
        assert await count(store, "m") == 6
        assert len(await store.aggregate(Selection("m", "value", group_by=("c",)), "count",
                                         *EVERYTHING)) == 6  # fmt: skip
    finally:
        await store.close()


async def test_rules_influx_store_bisects_a_batch_the_server_refuses_in_part(
    influx: InfluxServer, influx_database: str
) -> None:
    """A field type conflict only influxd can see: it writes the other lines and answers
    400 partial write; the refused point is found and returned, the others are stored."""
    store = InfluxStore(influx.url, influx_database)
    await store.open()
    try:
        assert await store.write([Point("m", {"c": "first"}, {"value": 1.0}, NS)]) == []
        batch = [Point("m", {"c": f"g{i}"}, {"value": float(i)}, (i + 2) * NS) for i in range(9)]
        conflict = Point("m", {"c": "text"}, {"value": "not a number"}, 50 * NS)
        batch.insert(6, conflict)
        [rejection] = await store.write(batch)
        assert rejection.point == conflict
        assert "field type conflict" in rejection.reason
        assert await count(store, "m") == 10
        assert await store.write([conflict]) == [Rejection(rejection.reason, conflict)]
    finally:
        await store.close()


async def test_rules_recorder_replays_a_spool_with_a_poisoned_point(
    series_store: SeriesStore, prefix: str, tmp_path: Path
) -> None:
    """A spooled segment holding poisoned points is replayed all the same: the good points
    are written, the bad ones kept in the dead letter, and the segment goes."""
    folder = tmp_path / "spool"
    left = Spool(folder, max_bytes=1 << 20)
    points = [Point("m", {"charger": "A"}, {"value": float(i)}, i * NS) for i in range(1, 11)]
    points.insert(4, Point("m", {"charger": "B"}, {"value": 1.0}, 2**64))
    points.insert(8, Point("m", {"charger": "C"}, {"value": math.inf}, NS))
    await left.append(points)
    recorder = Recorder(series_store, Spool(folder, max_bytes=1 << 20), Topics(prefix))
    await recorder.start()
    try:

        async def replayed() -> bool:
            return not list(folder.glob("segment-*"))

        await wait_until(replayed)
        assert await count(series_store, "m") == 10
        assert recorder.dead_lettered == 2 and recorder.written == 10
        kept = entries(tmp_path / "dead-letter")
        assert [e["topic"] for e in kept] == [None, None]
        assert kept[0]["point"][1] == {"charger": "B"} and "outside" in kept[0]["reason"]
        assert "finite" in kept[1]["reason"]
    finally:
        await recorder.stop()


class _TouchyStore(SQLiteSeriesStore):
    """The real SQLite store, raising an error it does not translate for any batch with a
    point tagged ``bad``: the recorder's last line of defence must isolate it."""

    async def write(self, points: Sequence[Point]) -> list[Rejection]:
        if any(p.tags.get("c") == "bad" for p in points):
            raise KeyError("something no store foresaw")
        return await super().write(points)


async def test_rules_recorder_splits_a_batch_a_store_fails_down_to_the_point(
    prefix: str, tmp_path: Path
) -> None:
    store = _TouchyStore(tmp_path / "series.db")
    await store.open()
    recorder = Recorder(store, Spool(tmp_path / "spool", max_bytes=1 << 20), Topics(prefix),
                        linger=0.2)  # fmt: skip
    await recorder.start()
    try:
        points = [Point("m", {"c": str(i)}, {"value": 1.0}, NS) for i in range(20)]
        points.insert(13, Point("m", {"c": "bad"}, {"value": 1.0}, NS))
        await asyncio.gather(*(recorder.accept([p]) for p in points))
        assert await count(store, "m") == 20
        assert recorder.dead_lettered == 1 and recorder.spooled == 0
        [entry] = entries(tmp_path / "dead-letter")
        assert "KeyError" in entry["reason"] and entry["point"][1] == {"c": "bad"}
    finally:
        await recorder.stop()
        await store.close()


async def test_rules_recorder_logs_refusals_at_a_bounded_rate(
    prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile publisher: 200 bad messages give one log line and a count of 200."""
    store = SQLiteSeriesStore(tmp_path / "series.db")
    await store.open()
    recorder = Recorder(store, Spool(tmp_path / "spool", max_bytes=1 << 20), Topics(prefix))
    await recorder.start()
    try:
        topic = f"{prefix}/chargers/CP-1/telemetry/meterValues"
        with caplog.at_level(logging.WARNING, logger="rules.recorders"):
            await asyncio.gather(*(recorder.handle(topic, b"\x00 bad") for _ in range(200)))
            await recorder.handle(topic, json.dumps(meter(1)).encode())
        assert recorder.dead_lettered == 200
        lines = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(lines) == 1 and "not JSON" in lines[0].getMessage()
        assert len(entries(tmp_path / "dead-letter")) == 200
        assert await count(store, "meter_values") == 1
    finally:
        await recorder.stop()
        await store.close()


async def test_rules_dead_letter_is_bounded(tmp_path: Path) -> None:
    """Rotated at ``file_bytes``, oldest files deleted past ``max_bytes``: the newest kept."""
    dead = DeadLetters(tmp_path, max_bytes=20_000, file_bytes=4_000, max_payload=100)
    for i in range(300):
        await dead.add([dead.entry(f"reason {i}", topic="t", payload=b"x" * 1000)])
    total = size_of(tmp_path)
    assert total <= 20_000 + 4_000 and total == dead.bytes
    kept = entries(tmp_path)
    assert kept[-1]["reason"] == "reason 299" and kept[0]["reason"] != "reason 0"
    assert kept[-1]["payload"] == "x" * 100 and kept[-1]["payload_bytes"] == 1000
    # Reopened (a restart): it goes on after the files it finds.
    again = DeadLetters(tmp_path, max_bytes=20_000, file_bytes=4_000)
    assert again.bytes == total
    await again.add([again.entry("after restart")])
    assert entries(tmp_path)[-1]["reason"] == "after restart"


def test_rules_measurements_check_meter_values_when_every_tag_is_known() -> None:
    """The hot path trusts tag values seen before, never the values and times: a poisoned
    message whose tags are all known is refused like any other."""
    topic = "p/chargers/CP-1/telemetry/meterValues"
    warm = convert("p", topic, json.dumps(meter(0)).encode(), T0)
    assert len(warm.points) == 1 and not warm.rejections
    for body, reason in (
        (meter(1, value=math.nan), "finite"),
        (meter(1, value=10**400), "beyond any float"),
        (meter(1, timestamp="9999-12-31T23:59:59Z"), "outside"),
    ):
        points, rejections = convert("p", topic, json.dumps(body).encode(), T0)
        assert not points and reason in rejections[0].reason


class _AnsweringServer:
    """A real HTTP server on a free port that answers every ``/write`` with one status
    (``/query`` with an empty result), to see how the InfluxDB store reads each answer."""

    def __init__(self) -> None:
        self.status = 204
        self.writes = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                length = next(
                    (int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length")),
                    0,
                )
                await reader.readexactly(length)
                if lines[0].startswith("POST /write"):
                    self.writes += 1
                    status, body = self.status, b'{"error":"as configured"}'
                else:
                    status, body = 200, b'{"results":[{"statement_id":0}]}'
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_rules_influx_store_tells_an_outage_from_a_refusal() -> None:
    """5xx, 401/403 and 404 are outages (the recorder spools and retries: none is the
    points' fault); only 400 and 413 refuse points, found by halving the batch."""
    points = [Point("m", {"c": str(i)}, {"value": 1.0}, NS) for i in range(4)]
    server = _AnsweringServer()
    async with server as url:
        store = InfluxStore(url, "d", timeout=2.0)
        await store.open()
        try:
            for status in (500, 503, 401, 403, 404):
                server.status = status
                with pytest.raises(StoreUnavailable):
                    await store.write(points)
            server.status, server.writes = 400, 0
            rejections = await store.write(points)
            assert [r.point for r in rejections] == points  # every point refused alone
            assert server.writes == 7  # the batch, two halves, four points
            server.status = 204
            assert await store.write(points) == []
        finally:
            await store.close()


async def test_rules_recorder_replay_outlives_an_unreadable_segment(
    prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A segment the disk cannot read (here: a folder in its place) is tried again, with
    backoff, instead of ending the replay for good."""
    folder = tmp_path / "spool"
    segment = folder / "segment-000000000001.jsonl"
    segment.mkdir(parents=True)
    store = SQLiteSeriesStore(tmp_path / "series.db")
    await store.open()
    recorder = Recorder(store, Spool(folder, max_bytes=1 << 20), Topics(prefix), retry_delay=0.05)
    await recorder.start()
    try:

        async def complained() -> bool:
            return "cannot read the spool" in caplog.text

        await wait_until(complained)
        segment.rmdir()
        segment.write_text(json.dumps(["m", {"charger": "A"}, {"value": 1.0}, NS]) + "\n")

        async def replayed() -> bool:
            return await count(store, "m") == 1 and not segment.exists()

        await wait_until(replayed)
    finally:
        await recorder.stop()
        await store.close()


def test_rules_test_files_name_an_input_point_no_store_can_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rule test's input point that a store would refuse is reported with its line,
    not dropped unseen (the rule would then fail for a reason nobody could see)."""
    (tmp_path / "hot.yaml").write_text(GOOD)
    test = tmp_path / "hot_test.yaml"
    test.write_text(
        """rule_files: [hot.yaml]
tests:
  - name: hot
    input_series:
      - measurement: meter_values
        tags: {charger: "CP\\n1"}
        values: "80 80"
    alert_rule_test: []
"""
    )
    assert cli.test_files([test]) == 1
    assert f"{test}:5: input point at 0 s: tag 'charger'" in capsys.readouterr().err
