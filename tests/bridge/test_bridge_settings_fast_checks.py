"""The fast path's schema checks never accept what the ``ocpp`` library's validator refuses.

Pure logic against the library's own validator: the live fast path is covered by the
frame and message tests, which must answer exactly as before.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import ValidationError
from ocpp.messages import MessageType, get_validator
from ocpp.routing import create_route_map, on
from ocpp.v16 import ChargePoint, call_result

from bridge.endpoints import OcppEndpoint, compile_schema, fast_check


class Endpoint(OcppEndpoint):
    @on("Heartbeat")  # type: ignore[misc]
    async def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time="2025-01-01T00:00:00Z")


SAMPLE = {"value": "1.5", "measurand": "Power.Active.Import", "unit": "W", "phase": "L1"}
METER: dict[str, Any] = {
    "connectorId": 1,
    "transactionId": 7,
    "meterValue": [{"timestamp": "2025-01-01T00:00:00Z", "sampledValue": [SAMPLE]}],
}
STATUS: dict[str, Any] = {"connectorId": 0, "errorCode": "NoError", "status": "Available"}
BOOT: dict[str, Any] = {"chargePointVendor": "V", "chargePointModel": "M", "iccid": "1"}
CONFIGURATION: dict[str, Any] = {
    "configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}],
    "unknownKey": ["Nope"],
}


def variants(payload: dict[str, Any]) -> list[Any]:
    """The payload, then many ways of breaking it (or not) one field at a time."""
    out: list[Any] = [payload, [], "x", None, {}, {**payload, "extra": 1}]
    for key in payload:
        out.append({k: v for k, v in payload.items() if k != key})
        for bad in (None, "1", 1.0, True, 1, [], {}, "x" * 300, "Available"):
            out.append({**payload, key: bad})
    return out


def meter_variants() -> list[Any]:
    out = variants(METER)
    for bad in (None, 1, "Celsius", "Voltage", "x" * 60, True, "Raw"):
        for key in ("value", "measurand", "unit", "phase", "context", "format", "location"):
            broken = copy.deepcopy(METER)
            broken["meterValue"][0]["sampledValue"][0][key] = bad
            out.append(broken)
    empty = copy.deepcopy(METER)
    empty["meterValue"][0]["sampledValue"] = []
    out.append(empty)
    out.append({**METER, "meterValue": []})
    return out


def configuration_variants() -> list[Any]:
    out = variants(CONFIGURATION)
    for key, bad in (("key", "k" * 51), ("readonly", "false"), ("value", 1), ("extra", 1)):
        broken = copy.deepcopy(CONFIGURATION)
        broken["configurationKey"][0][key] = bad
        out.append(broken)
    return out


CALL, RESULT = MessageType.Call, MessageType.CallResult
CASES = [
    ("MeterValues", CALL, meter_variants()),
    ("StatusNotification", CALL, [*variants(STATUS), {**STATUS, "info": "x" * 51}]),
    ("Heartbeat", CALL, [{}, {"x": 1}, [], None]),
    ("BootNotification", CALL, [*variants(BOOT), {**BOOT, "chargePointVendor": "v" * 21}]),
    ("GetConfiguration", RESULT, configuration_variants()),
]


@pytest.mark.parametrize(
    ("action", "message_type", "payloads"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_fast_check_agrees_with_the_library(
    action: str, message_type: int, payloads: list[Any]
) -> None:
    check = fast_check(action, message_type)
    assert check is not None
    validator = get_validator(message_type, action, "1.6")
    fast_accepted = 0
    for payload in payloads:
        try:
            validator.validate(payload)
            valid = True
        except ValidationError:
            valid = False
        if check(payload):
            assert valid, payload  # never faster than correct
            fast_accepted += 1
        elif valid:
            # Only floats standing in for integers may take the slow path while valid.
            assert any(type(v) is float for v in payload.values()), payload
    assert fast_accepted >= 1  # the common shape does take the fast path


def test_unknown_keywords_give_no_fast_check() -> None:
    assert compile_schema({"type": "number", "multipleOf": 0.1}) is None
    assert compile_schema({"type": "object", "properties": {}}) is None  # open object
    assert compile_schema({"type": "object", "additionalProperties": False}) is not None
    assert compile_schema({"type": "integer", "enum": [1, 2]}) is None


def test_endpoint_sets_what_the_library_constructor_sets() -> None:
    """OcppEndpoint skips ChargePoint.__init__ (see there): it must leave nothing unset."""
    library = ChargePoint("cp-1", object())
    ours = Endpoint("cp-1", object())
    assert set(vars(library)) <= set(vars(ours))
    assert ours.route_map == create_route_map(ours)
    assert ours.route_map["Heartbeat"]["_on_action"].__self__ is ours
