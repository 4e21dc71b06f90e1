"""Hostile OCPP-J frames: each gets its OCPP-J answer, the connection stays, and nothing
unstorable reaches MQTT. Every frame here closed the connection with 1011, or was answered
InternalError, before the bridge read frames itself (bridge.frames)."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import MqttWatcher, OpenCharger, RawCharger

from bridge import Bridge

START = '"connectorId": 1, "idTag": "t", "timestamp": "2024-01-01T00:00:00Z"'
DEEP = "[" * 1200 + "]" * 1200
SHALLOW_BUT_TOO_DEEP = "[" * 40 + "]" * 40


async def still_usable(charger: RawCharger) -> None:
    assert "currentTime" in await charger.result("Heartbeat", {})


@pytest.mark.parametrize(
    ("frame", "answer_id", "code"),
    [
        # A non-string action was a TypeError (unhashable) at the fast-handler lookup.
        ('[2, "a2", ["x"], {}]', "a2", "FormationViolation"),
        ('[2, "a3", {"k": 1}, {}]', "a3", "FormationViolation"),
        ('[2, "a4", 7, {}]', "a4", "FormationViolation"),
        # OCPP-J 1.6 section 4.1.3: the unique id is a string of at most 36 characters.
        ('[2, ["x"], "Heartbeat", {}]', "-1", "FormationViolation"),
        ('[2, 17, "Heartbeat", {}]', "-1", "FormationViolation"),
        (f'[2, "{"i" * 37}", "Heartbeat", {{}}]', "i" * 37, "FormationViolation"),
        ('[true, "t1", "Heartbeat", {}]', "t1", "PropertyConstraintViolation"),
        # Deeper than the interpreter's recursion: a RecursionError in unpack.
        (
            f'[2, "d1", "DataTransfer", {{"vendorId": "v", "data": {DEEP}}}]',
            "d1",
            "FormationViolation",
        ),
        (
            f'[2, "d2", "DataTransfer", {{"vendorId": "v", "data": {SHALLOW_BUT_TOO_DEEP}}}]',
            "d2",
            "FormationViolation",
        ),
        # Integers beyond 64 bits (OverflowError in the store -> InternalError), and beyond
        # what int() parses at all (ValueError in unpack -> 1011).
        (
            f'[2, "n1", "StartTransaction", {{{START}, "meterStart": 99999999999999999999999}}]',
            "n1",
            "TypeConstraintViolation",
        ),
        (
            f'[2, "n2", "StartTransaction", {{{START}, "meterStart": {"9" * 5000}}}]',
            "n2",
            "TypeConstraintViolation",
        ),
        (
            f'[2, "n3", "StartTransaction", {{{START}, "meterStart": -9223372036854775809}}]',
            "n3",
            "TypeConstraintViolation",
        ),
        ('[2, "n4", "Heartbeat", {"x": 1e400}]', "n4", "TypeConstraintViolation"),
        # Not JSON numbers (RFC 8259 section 6), though json.loads takes them.
        (
            f'[2, "c1", "StartTransaction", {{{START}, "meterStart": NaN}}]',
            "c1",
            "FormationViolation",
        ),
        (
            f'[2, "c2", "StartTransaction", {{{START}, "meterStart": Infinity}}]',
            "c2",
            "FormationViolation",
        ),
        (
            f'[2, "c3", "StartTransaction", {{{START}, "meterStart": -Infinity}}]',
            "c3",
            "FormationViolation",
        ),
        # Strings no store can hold: a lone surrogate (not UTF-8), U+0000 (PostgreSQL).
        (
            '[2, "s1", "Authorize", {"idTag": "\\ud800"}]',
            "s1",
            "PropertyConstraintViolation",
        ),
        (
            '[2, "s2", "Authorize", {"idTag": "a\\udfffb"}]',
            "s2",
            "PropertyConstraintViolation",
        ),
        (
            '[2, "s3", "DataTransfer", {"vendorId": "v", "data": "a\\u0000b"}]',
            "s3",
            "PropertyConstraintViolation",
        ),
        (
            '[2, "s4", "DataTransfer", {"vendorId": "v", "\\ud800": "x"}]',
            "s4",
            "PropertyConstraintViolation",
        ),
        ('[2, "s5", "Heartbeat", {}, "extra"]', "s5", "ProtocolError"),
        # A long unknown action is answered without echoing it whole.
        (f'[2, "l1", "{"A" * 5000}", {{}}]', "l1", "NotSupported"),
    ],
)
async def test_hostile_frame_gets_its_callerror_and_one_log_line(
    open_charger: OpenCharger,
    caplog: pytest.LogCaptureFixture,
    frame: str,
    answer_id: str,
    code: str,
) -> None:
    charger = await open_charger()
    caplog.clear()
    answer = await charger.send_raw(frame, answer_id)
    assert answer[:3] == [4, answer_id, code], answer
    assert len(json.dumps(answer)) < 1000
    await still_usable(charger)
    lines = [r for r in caplog.records if charger.charger_id in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None and lines[0].levelno == logging.WARNING


async def test_surrogate_pairs_and_escaped_backslashes_are_fine(open_charger: OpenCharger) -> None:
    charger = await open_charger()
    payload = '{"chargePointVendor": "\\ud83d\\ude00", "chargePointModel": "\\\\u0000"}'
    answer = await charger.send_raw(f'[2, "ok1", "BootNotification", {payload}]', "ok1")
    assert answer[0] == 3, answer


async def test_a_binary_frame_that_is_not_utf8_is_refused(open_charger: OpenCharger) -> None:
    charger = await open_charger()
    answer = await charger.send_raw(b'[2, "b1", "Heartbeat", {"x": "\xff"}]', "-1")
    assert answer[:3] == [4, "-1", "FormationViolation"]
    # Encoded surrogates (CESU-8) are not UTF-8 either.
    answer = await charger.send_raw(b'[2, "b2", "Heartbeat", {"x": "\xed\xa0\x80"}]', "-1")
    assert answer[:3] == [4, "-1", "FormationViolation"]
    await still_usable(charger)


@pytest.mark.parametrize(
    "frame",
    [
        '[3, ["x"], {}]',
        '[3, {"k": 1}, {}]',
        '[4, ["x"], "GenericError", "", {}]',
        '[4, "zz", 5, "", {}]',
        '[3, "zz"]',
        '[3, "zz", {"v": NaN}]',
        '[4, "zz", "GenericError", "\\ud800", {}]',
        # Unusable ids and an unusable body: still an answer, still not answered.
        '[4, ["x"], "GenericError", "\\ud800", {}]',
        '[3, 7, {"v": NaN}]',
        '[3, {"k": 1}, {"v": 1e999}]',
    ],
)
async def test_unusable_answers_are_logged_not_answered(
    open_charger: OpenCharger, frame: str
) -> None:
    charger = await open_charger()
    # Whatever id an answer would carry: the frame's own, or "-1" for an unreadable one.
    stray = [charger._expect("-1"), charger._expect("zz")]
    await charger.ws.send(frame)
    await still_usable(charger)  # answered after the frame: any answer to it came first
    assert not any(future.done() for future in stray), [f.result() for f in stray if f.done()]


async def test_an_unusable_answer_fails_the_waiting_call_at_once(
    open_charger: OpenCharger, watcher: MqttWatcher, prefix: str
) -> None:
    charger = await open_charger()
    await charger.boot()
    topic = f"{prefix}/chargers/{charger.charger_id}/commands"
    watcher.publish(topic, {"name": "reset", "payload": {"type": "Soft"}, "clientToken": "r1"})
    call = await charger.next_call()
    assert call[2] == "Reset"
    await charger.ws.send(f'[3, "{call[1]}", {{"status": "Accepted", "n": {"1" * 30}}}]')
    result = await watcher.wait_for(f"{topic}/result", lambda m: m["clientToken"] == "r1")
    assert result["code"] == 502, result
    await still_usable(charger)


async def test_unstorable_values_never_reach_mqtt(
    open_charger: OpenCharger, watcher: MqttWatcher, prefix: str
) -> None:
    charger = await open_charger()
    await charger.ws.send('[2, "x1", "DataTransfer", {"vendorId": "v", "data": "\\ud800"}]')
    await charger.ws.send(
        f'[2, "x2", "StartTransaction", {{{START}, "meterStart": 99999999999999999999999}}]'
    )
    await still_usable(charger)
    await charger.result("DataTransfer", {"vendorId": "v", "data": "fine"})
    events = f"{prefix}/chargers/{charger.charger_id}/events/"
    await watcher.wait_for(events + "dataTransfer", lambda m: m["data"] == "fine")
    assert [m["data"] for m in watcher.on(events + "dataTransfer")] == ["fine"]
    assert watcher.on(events + "transaction") == []


async def test_signed_firmware_status_without_its_optional_request_id_is_answered(
    open_charger: OpenCharger,
) -> None:
    # Found by bench.ocpp_fuzz: the handler required requestId, which the security
    # extension's schema makes optional (absent when a TriggerMessage asked for it).
    charger = await open_charger()
    assert await charger.result("SignedFirmwareStatusNotification", {"status": "Idle"}) == {}


STATUS = '"errorCode": "NoError", "status": "Available"'


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (f'[2, "k1", "StatusNotification", {{"connectorId": -1, {STATUS}}}]', "Property"),
        (f'[2, "k1", "StatusNotification", {{"connectorId": 256, {STATUS}}}]', "Property"),
        (f'[2, "k1", "StatusNotification", {{"connectorId": 0, {STATUS}}}]', None),
        (f'[2, "k1", "StatusNotification", {{"connectorId": 255, {STATUS}}}]', None),
        (
            f'[2, "k1", "StartTransaction", {{{START.replace("1", "0", 1)}, "meterStart": 0}}]',
            "Property",
        ),
        (
            '[2, "k1", "MeterValues", {"connectorId": 9223372036854775807, "meterValue": []}]',
            "Property",
        ),
    ],
)
async def test_connector_ids_outside_what_ocpp_allows_are_refused(
    open_charger: OpenCharger, watcher: MqttWatcher, prefix: str, frame: str, code: str | None
) -> None:
    # OCPP 1.6 sections 6.31, 6.45, 6.47; bounded above so that a charger cannot make the
    # bridge (and its shadow) hold a new connector per frame.
    charger = await open_charger()
    answer = await charger.send_raw(frame, "k1")
    if code is None:
        assert answer[0] == 3, answer
    else:
        assert answer[:3] == [4, "k1", "PropertyConstraintViolation"], answer
        await still_usable(charger)
        status = f"{prefix}/chargers/{charger.charger_id}/events/status"
        assert watcher.on(status) == []


async def test_a_connection_buffers_at_most_four_frames(
    bridge: Bridge, open_charger: OpenCharger
) -> None:
    # websockets buffers 16 frames per connection by default: 1 MiB of 64 KiB frames that
    # a charger pipelining hostile frames makes the bridge hold, per connection.
    charger = await open_charger()
    await still_usable(charger)
    assert bridge.server is not None
    websocket = bridge.server.connections[charger.charger_id].websocket
    assert websocket.recv_messages.high is not None and websocket.recv_messages.high <= 4


async def test_meter_values_that_are_no_finite_number_are_published_raw(
    open_charger: OpenCharger, watcher: MqttWatcher, prefix: str
) -> None:
    # float() takes "NaN", "inf" and "1e999": published as NaN / Infinity, which is not
    # JSON, and which no time-series store holds.
    charger = await open_charger()
    values = ["NaN", "inf", "-Infinity", "1e999", "12.5"]
    sampled = [{"value": value} for value in values]
    payload = {
        "connectorId": 1,
        "meterValue": [{"timestamp": "2025-01-01T00:00:00Z", "sampledValue": sampled}],
    }
    assert (await charger.call("MeterValues", payload))[0] == 3
    topic = f"{prefix}/chargers/{charger.charger_id}/telemetry/meterValues"
    message = await watcher.wait_for(topic)
    published = message["values"]
    assert [v["value"] for v in published] == [None, None, None, None, 12.5]
    assert [v.get("raw") for v in published] == [*values[:4], None]


async def test_a_call_with_too_few_elements_is_a_protocol_error(open_charger: OpenCharger) -> None:
    charger = await open_charger()
    assert (await charger.send_raw("[2]", "-1"))[:3] == [4, "-1", "ProtocolError"]
    assert (await charger.send_raw('[2, "p1"]', "p1"))[:3] == [4, "p1", "ProtocolError"]
