"""Pure logic of the OCPP 2.0.1 modules: the device-model key scheme, value checks before
SetVariables, NotifyReport assembly, 2.0.1 error codes for frame problems."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from ocpp.exceptions import (
    FormationViolationError,
    OccurenceConstraintViolationError,
    PropertyConstraintViolationError,
    ProtocolError,
    TypeConstraintViolationError,
)
from ocpp.messages import MessageType

from bridge.errors import FrameError
from bridge.frames import _nests_deeper, parse_frame
from bridge.v201.devicemodel import (
    MAX_PENDING_REPORTS,
    MAX_REPORT_PARTS,
    KeyError201,
    ReportAssembly,
    ReportTooLargeError,
    VariableKey,
    key_text,
    parse_key,
    report_entries,
    value_problem,
)
from bridge.v201.endpoints import compiled, for_ocpp201, frame_error_201
from bridge.v201.handlers import ACKNOWLEDGED, StationHandler
from bridge.v201.transactions import energy_wh, sample_value
from twin.schemas import desired_errors


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (VariableKey("OCPPCommCtrlr", "HeartbeatInterval"), "OCPPCommCtrlr/HeartbeatInterval"),
        (VariableKey("EVSE", "AvailabilityState", evse=1), "EVSE@1/AvailabilityState"),
        (VariableKey("Connector", "ConnectorType", evse=1, connector=2),
         "Connector@1.2/ConnectorType"),
        (VariableKey("SampledDataCtrlr", "TxUpdatedInterval", attribute="Target"),
         "SampledDataCtrlr/TxUpdatedInterval#Target"),
        (VariableKey("Fan", "Speed", component_instance="inlet", variable_instance="rpm"),
         "Fan:inlet/Speed:rpm"),
        (VariableKey("A/B", "c:d@e#f.g%"), "A%2FB/c%3Ad%40e%23f%2Eg%25"),
    ],
)  # fmt: skip
def test_keys_name_one_attribute_and_read_back(key: VariableKey, text: str) -> None:
    assert key.text() == text
    assert parse_key(text) == key


@pytest.mark.parametrize(
    "bad", ["HeartbeatInterval", "a/b/c", "/x", "x/", "EVSE@x/Y", "A/B#Bogus", "A%zz/B"]
)
def test_malformed_keys_are_refused(bad: str) -> None:
    with pytest.raises(KeyError201):
        parse_key(bad)


def test_device_model_keys_are_valid_desired_state() -> None:
    keys = ["OCPPCommCtrlr/HeartbeatInterval", "Connector@1.2/X#MaxSet", "A%2FB/c%3Ad", "K"]
    assert desired_errors({"config": dict.fromkeys(keys, "1")}) == []
    assert desired_errors({"config": {"a/b/c": "1"}})
    assert desired_errors({"config": {"SecurityCtrlr/BasicAuthPassword": "secret-password"}})


@pytest.mark.parametrize(
    ("value", "meta", "problem"),
    [
        ("5", {"mutability": "ReadOnly"}, "ReadOnly"),
        ("abc", {"dataType": "integer"}, "not an integer"),
        ("5", {"dataType": "integer", "minLimit": 10}, "below"),
        ("5.5", {"dataType": "decimal", "maxLimit": 5}, "above"),
        ("yes", {"dataType": "boolean"}, "true or false"),
        ("Off", {"dataType": "OptionList", "valuesList": "On,Idle"}, "one of"),
        ("12", {"dataType": "integer", "minLimit": 10, "maxLimit": 20}, None),
        ("true", {"dataType": "boolean"}, None),
        ("anything", {"dataType": "string"}, None),
    ],
)
def test_values_are_checked_against_the_device_model(
    value: str, meta: dict[str, object], problem: str | None
) -> None:
    found = value_problem(value, meta)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_report_entries_keep_mutability_and_type_and_drop_write_only_values() -> None:
    config, model = report_entries(
        [
            {
                "component": {"name": "SecurityCtrlr"},
                "variable": {"name": "BasicAuthPassword"},
                "variableAttribute": [{"mutability": "WriteOnly", "value": "leaked"}],
                "variableCharacteristics": {"dataType": "string", "supportsMonitoring": False},
            },
            {
                "component": {"name": "TxCtrlr"},
                "variable": {"name": "StopTxOnEVSideDisconnect"},
                "variableAttribute": [
                    {"value": "true", "persistent": True},
                    {"type": "Target", "value": "false"},
                ],
            },
        ]
    )
    assert config == {
        "TxCtrlr/StopTxOnEVSideDisconnect": "true",
        "TxCtrlr/StopTxOnEVSideDisconnect#Target": "false",
    }
    assert model["SecurityCtrlr/BasicAuthPassword"] == {
        "mutability": "WriteOnly",
        "dataType": "string",
    }
    assert model["TxCtrlr/StopTxOnEVSideDisconnect"] == {
        "mutability": "ReadWrite",
        "persistent": True,
    }


async def test_report_parts_are_assembled_by_seq_no() -> None:
    assembly = ReportAssembly()
    whole = assembly.expect(7)
    assert assembly.add(7, 2, False, ["c"]) is None
    assert assembly.add(7, 0, True, ["a"]) is None
    assert not whole.done()
    assert assembly.add(7, 0, True, ["a"]) is None  # a part sent again
    assert assembly.add(7, 1, True, ["b1", "b2"]) is None  # the awaiting side gets it
    assert whole.result() == ["a", "b1", "b2", "c"]
    assert assembly.pending == 0
    # A report nobody expected is returned whole by the part that completes it.
    assert assembly.add(9, 0, False, ["x"]) == ["x"]


async def test_report_assembly_is_bounded() -> None:
    assembly = ReportAssembly()
    whole = assembly.expect(1)
    for seq_no in range(MAX_REPORT_PARTS):
        assembly.add(1, seq_no, True, [])
    assembly.add(1, MAX_REPORT_PARTS, True, [])
    with pytest.raises(ReportTooLargeError):
        await asyncio.wait_for(whole, 1)
    for request_id in range(100, 100 + MAX_PENDING_REPORTS + 5):
        assembly.add(request_id, 1, False, ["x"])  # never complete (no seqNo 0)
    assert assembly.pending == MAX_PENDING_REPORTS


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("nope", "RpcFrameworkError"),
        ("[]", "RpcFrameworkError"),
        ('{"a": 1}', "RpcFrameworkError"),
        ('[2, 5, "Heartbeat", {}]', "RpcFrameworkError"),
        ('[2, "' + "x" * 40 + '", "Heartbeat", {}]', "RpcFrameworkError"),
        ('[9, "a", "Heartbeat", {}]', "MessageTypeNotSupported"),
        ('[2, "a", 5, {}]', "FormatViolation"),
        ('[2, "a", "Heartbeat", {"v": 1e400}]', "TypeConstraintViolation"),
        ('[2, "a", "Heartbeat", {"v": "\\u0000"}]', "PropertyConstraintViolation"),
    ],
)
def test_frame_problems_get_2_0_1_codes(frame: str, code: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_frame(frame)
    assert frame_error_201(caught.value.error).code == code


def test_1_6_spellings_become_2_0_1_ones() -> None:
    assert for_ocpp201(FormationViolationError()).code == "FormatViolation"
    assert for_ocpp201(OccurenceConstraintViolationError()).code == (
        "OccurrenceConstraintViolation"
    )
    assert for_ocpp201(TypeConstraintViolationError()).code == "TypeConstraintViolation"
    assert for_ocpp201(PropertyConstraintViolationError()).code == "PropertyConstraintViolation"
    assert for_ocpp201(ProtocolError()).code == "ProtocolError"
    long = for_ocpp201(TypeConstraintViolationError(details={"cause": "x" * 5000}))
    assert len(long.details["cause"]) <= 200


def test_sampled_values_apply_the_multiplier_and_defaults() -> None:
    sample = sample_value({"value": 12.5, "unitOfMeasure": {"unit": "kWh", "multiplier": 3}})
    assert sample["value"] == 12500.0 and sample["unit"] == "kWh"
    assert sample["measurand"] == "Energy.Active.Import.Register"
    assert sample["context"] == "Sample.Periodic" and sample["location"] == "Outlet"
    assert sample_value({"value": 3})["unit"] == "Wh"
    assert sample_value({"value": 3, "measurand": "SoC"})["unit"] is None
    readings = [
        {"sampledValue": [{"value": 2.0, "unitOfMeasure": {"unit": "kWh"}}]},
        {"sampledValue": [{"value": 900, "phase": "L1"}, {"value": 4.5, "measurand": "SoC"}]},
        {"sampledValue": [{"value": 3100}]},
    ]
    assert energy_wh(readings) == 3100
    assert energy_wh(readings[:2]) == 2000
    assert energy_wh([]) is None


# Every message a charging station initiates in OCPP 2.0.1 (part 2, the Messages section),
# written out here rather than derived from the code under test.
CHARGER_INITIATED = {
    "Authorize", "BootNotification", "ClearedChargingLimit", "DataTransfer",
    "FirmwareStatusNotification", "Get15118EVCertificate", "GetCertificateStatus",
    "Heartbeat", "LogStatusNotification", "MeterValues", "NotifyChargingLimit",
    "NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds",
    "NotifyEVChargingSchedule", "NotifyEvent", "NotifyMonitoringReport", "NotifyReport",
    "PublishFirmwareStatusNotification", "ReportChargingProfiles", "ReservationStatusUpdate",
    "SecurityEventNotification", "SignCertificate", "StatusNotification", "TransactionEvent",
}  # fmt: skip


def test_every_charger_initiated_action_has_a_handler_and_valid_acknowledgements() -> None:
    assert set(StationHandler.handlers) == CHARGER_INITIATED
    for action, answer in ACKNOWLEDGED.items():
        compiled(action, MessageType.CallResult)(dict(answer))  # a schema-valid answer


def _height(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_height(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_height(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("height", [1, 5, 31, 32, 33, 40])
@pytest.mark.parametrize(
    "noise",
    # Escapes (the slow way); brackets in strings without escapes, which the fast way must
    # notice (a string with a bracket after one without, adjacent, and before one).
    ["", '[{"x": "[[[{{{\\"]]"}]', '"\\\\"', '["]", "[", "{}"]', '["", "[[[["]', '["]]]", ""]'],
)
def test_the_fast_depth_check_agrees_with_the_tree(height: int, noise: str) -> None:
    """A NotifyReport part has more than 32 brackets without nesting deeply: the depth is
    read at C speed (bridge.frames._nests_deeper), and must agree with walking the tree."""
    value: object = 1
    for level in range(height):
        value = {"k": value, "n": json.loads(noise)} if level % 2 and noise else [value]
    text = json.dumps(value)
    assert _nests_deeper(text) == (_height(json.loads(text)) > 32)
    wide = json.dumps([[{"a": [1]}] for _ in range(100)])  # 300 brackets, height 5
    assert not _nests_deeper(wide)


@pytest.mark.parametrize(
    ("component", "variable", "attribute"),
    [
        ({"name": "OCPPCommCtrlr"}, {"name": "HeartbeatInterval"}, None),
        ({"name": "EVSE", "evse": {"id": 1}}, {"name": "AvailabilityState"}, "Actual"),
        ({"name": "Connector", "evse": {"id": 1, "connectorId": 2}}, {"name": "Type"}, "Target"),
        ({"name": "Fan", "instance": "in:let"}, {"name": "Speed", "instance": "r.p/m"}, "MaxSet"),
        ({"name": "A/B%", "evse": {"id": 3, "connectorId": None}}, {"name": "c#d@e"}, "MinSet"),
    ],
)  # fmt: skip
def test_the_key_text_of_a_report_entry_is_the_key_s(
    component: dict[str, Any], variable: dict[str, Any], attribute: str | None
) -> None:
    """report_entries names attributes without building a VariableKey: the same text."""
    expected = VariableKey.of(component, variable, attribute).text()
    assert key_text(component, variable, attribute) == expected
    assert parse_key(expected) == VariableKey.of(component, variable, attribute)
