"""OCPP 2.0.1 stations on the bridge's endpoint, beside 1.6 chargers.

The station here is the ``ocpp`` library's ``v201.ChargePoint`` (an implementation we did not
write), which validates every answer of the bridge against the official 2.0.1 schemas; bad
frames are hand-written. Real websockets, the real broker, the real twin where a test is
about what the shadow ends up holding.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import (
    PASSWORD,
    MqttWatcher,
    OpenCharger,
    RawCharger,
    RunningTwin,
    basic,
    eventually,
    url_of,
)
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.asyncio.client import ClientConnection, connect

from bridge import Bridge

OCPP201 = "ocpp2.0.1"


def iso_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def variable(
    component: str,
    name: str,
    value: str | None,
    *,
    mutability: str = "ReadWrite",
    data_type: str = "integer",
    evse: dict[str, int] | None = None,
    attribute: str = "Actual",
    **characteristics: Any,
) -> dict[str, Any]:
    """One ReportDataType entry."""
    comp: dict[str, Any] = {"name": component}
    if evse is not None:
        comp["evse"] = evse
    attr: dict[str, Any] = {"type": attribute, "mutability": mutability}
    if value is not None:
        attr["value"] = value
    return {
        "component": comp,
        "variable": {"name": name},
        "variableAttribute": [attr],
        "variableCharacteristics": {
            "dataType": data_type,
            "supportsMonitoring": False,
            **characteristics,
        },
    }


# A device model in three NotifyReport parts (seqNo 0, 1, 2), sent out of order.
DEVICE_MODEL = [
    [
        variable("OCPPCommCtrlr", "HeartbeatInterval", "300", minLimit=10, maxLimit=86400),
        variable("SecurityCtrlr", "BasicAuthPassword", None, mutability="WriteOnly",
                 data_type="string"),
    ],
    [
        variable("EVSE", "AvailabilityState", "Available", mutability="ReadOnly",
                 data_type="OptionList", evse={"id": 1},
                 valuesList="Available,Occupied,Reserved,Unavailable,Faulted"),
        variable("Connector", "ConnectorType", "cType2", mutability="ReadOnly",
                 data_type="string", evse={"id": 1, "connectorId": 1}),
    ],
    [
        variable("TxCtrlr", "EVConnectionTimeOut", "60"),
        variable("SampledDataCtrlr", "TxUpdatedInterval", "30", attribute="Target"),
    ],
]  # fmt: skip
PART_ORDER = (0, 2, 1)


class Station(ChargePoint):  # type: ignore[misc]  # the library ships no type information
    """A 2.0.1 station: answers GetBaseReport with the device model in parts, boots again
    when triggered, and answers SetVariables as ``variable_status`` says."""

    def __init__(self, charger_id: str, ws: ClientConnection) -> None:
        super().__init__(charger_id, ws, response_timeout=5)
        self.boots: list[Any] = []
        self.accepted = asyncio.Event()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.variable_status: dict[str, str] = {}

    async def boot(self) -> Any:
        answer = await self.call(
            call.BootNotification(
                charging_station={
                    "model": "Wallbox-201",
                    "vendor_name": "VendorX",
                    "firmware_version": "2.0.0",
                    "serial_number": "SN-1",
                },
                reason="PowerUp",
            )
        )
        self.boots.append(answer)
        if answer.status == "Accepted":
            self.accepted.set()
        return answer

    @on("GetBaseReport")
    def on_get_base_report(self, request_id: int, report_base: str, **_: Any) -> Any:
        self.calls.append(("GetBaseReport", {"requestId": request_id, "reportBase": report_base}))
        return call_result.GetBaseReport(status="Accepted")

    @after("GetBaseReport")
    async def after_get_base_report(self, request_id: int, **_: Any) -> None:
        for seq_no in PART_ORDER:
            await self.call(
                call.NotifyReport(
                    request_id=request_id,
                    generated_at=iso_now(),
                    seq_no=seq_no,
                    tbc=seq_no < len(DEVICE_MODEL) - 1,
                    report_data=DEVICE_MODEL[seq_no],
                )
            )

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, **_: Any) -> Any:
        self.calls.append(("TriggerMessage", {"requestedMessage": requested_message}))
        return call_result.TriggerMessage(status="Accepted")

    @after("TriggerMessage")
    async def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        if requested_message == "BootNotification":
            await self.boot()

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for data in set_variable_data:
            self.calls.append(("SetVariables", data))
            status = self.variable_status.get(data["variable"]["name"], "Accepted")
            results.append(
                {
                    "attribute_status": status,
                    "component": data["component"],
                    "variable": data["variable"],
                }
            )
        return call_result.SetVariables(set_variable_result=results)

    @on("ChangeAvailability")
    def on_change_availability(self, operational_status: str, **kwargs: Any) -> Any:
        self.calls.append(("ChangeAvailability", {"operationalStatus": operational_status,
                                                  **kwargs}))  # fmt: skip
        return call_result.ChangeAvailability(status="Accepted")


OpenStation = Callable[..., Awaitable[Station]]


@pytest.fixture
async def open_station(bridge: Bridge) -> AsyncIterator[OpenStation]:
    """Register and connect library stations (offering 2.0.1 first); close them after."""
    opened: list[tuple[Station, asyncio.Task[None], ClientConnection]] = []

    async def open_(charger_id: str | None = None, *, boot: bool = True) -> Station:
        charger_id = charger_id or f"cs-{uuid.uuid4().hex[:10]}"
        assert bridge.server is not None
        if not await bridge.server.registry.exists(charger_id):
            await bridge.server.registry.register(charger_id, PASSWORD)
        ws = await connect(
            url_of(bridge, charger_id),
            subprotocols=[OCPP201, "ocpp1.6"],  # type: ignore[list-item]
            additional_headers=basic(charger_id, PASSWORD),
            ping_interval=None,
        )
        assert ws.subprotocol == OCPP201
        station = Station(charger_id, ws)
        task = asyncio.get_running_loop().create_task(station.start())
        opened.append((station, task, ws))
        if boot:
            first = await station.boot()
            assert first.status == "Pending"
            async with asyncio.timeout(10):
                await station.accepted.wait()
        return station

    yield open_
    for _, task, ws in opened:
        await ws.close()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def open_raw_201(bridge: Bridge, charger_id: str | None = None) -> RawCharger:
    """A hand-written 2.0.1 client (frames of our own making), registered, accepted before."""
    charger_id = charger_id or f"raw-{uuid.uuid4().hex[:10]}"
    assert bridge.server is not None and bridge.services is not None
    await bridge.server.registry.register(charger_id, PASSWORD)
    bridge.services.accepted.add(charger_id)
    ws = await connect(
        url_of(bridge, charger_id),
        subprotocols=[OCPP201],  # type: ignore[list-item]
        additional_headers=basic(charger_id, PASSWORD),
        ping_interval=None,
    )
    assert ws.subprotocol == OCPP201
    return RawCharger(ws, charger_id)


# --- the endpoint ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([OCPP201, "ocpp1.6"], OCPP201),
        (["ocpp1.6", OCPP201], "ocpp1.6"),
        (["ocpp2.1", OCPP201], OCPP201),
    ],
)
async def test_the_first_offered_subprotocol_the_bridge_speaks_is_chosen(
    bridge: Bridge, offered: list[str], chosen: str
) -> None:
    charger_id = f"sp-{uuid.uuid4().hex[:8]}"
    assert bridge.server is not None
    await bridge.server.registry.register(charger_id, PASSWORD)
    ws = await connect(
        url_of(bridge, charger_id),
        subprotocols=offered,  # type: ignore[arg-type]
        additional_headers=basic(charger_id, PASSWORD),
        ping_interval=None,
    )
    try:
        assert ws.subprotocol == chosen
    finally:
        await ws.close()


async def test_a_2_0_1_station_needs_the_same_basic_auth(bridge: Bridge) -> None:
    charger_id = f"auth-{uuid.uuid4().hex[:8]}"
    assert bridge.server is not None
    await bridge.server.registry.register(charger_id, PASSWORD)
    with pytest.raises(Exception, match="401"):
        await connect(
            url_of(bridge, charger_id),
            subprotocols=[OCPP201],  # type: ignore[list-item]
            additional_headers=basic(charger_id, "wrong-password-here"),
        )


# --- boot and the device model -------------------------------------------------------------------
async def test_boot_is_pending_while_the_device_model_is_read_then_accepted(
    bridge: Bridge, open_station: OpenStation, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    station = await open_station()
    assert [b.status for b in station.boots] == ["Pending", "Accepted"]
    assert station.boots[0].interval > 0
    assert station.boots[1].interval == 300  # the heartbeat interval
    (base,) = [payload for action, payload in station.calls if action == "GetBaseReport"]
    assert base["reportBase"] == "FullInventory"
    assert ("TriggerMessage", {"requestedMessage": "BootNotification"}) in station.calls

    reported = await twin.wait_reported(
        station.id, lambda r: r.get("connection", {}).get("online") and r.get("config")
    )
    assert reported["connection"]["ocppVersion"] == "2.0.1"
    assert reported["chargePoint"] == {
        "vendor": "VendorX",
        "model": "Wallbox-201",
        "serialNumber": "SN-1",
        "firmwareVersion": "2.0.0",
    }
    assert reported["firmware"]["version"] == "2.0.0"
    # Every part, assembled by seqNo though sent as 0, 2, 1; WriteOnly has no value.
    assert reported["config"] == {
        "OCPPCommCtrlr/HeartbeatInterval": "300",
        "EVSE@1/AvailabilityState": "Available",
        "Connector@1.1/ConnectorType": "cType2",
        "TxCtrlr/EVConnectionTimeOut": "60",
        "SampledDataCtrlr/TxUpdatedInterval#Target": "30",
    }
    model = reported["deviceModel"]
    assert model["SecurityCtrlr/BasicAuthPassword"]["mutability"] == "WriteOnly"
    assert model["EVSE@1/AvailabilityState"]["mutability"] == "ReadOnly"
    assert model["EVSE@1/AvailabilityState"]["dataType"] == "OptionList"
    assert model["OCPPCommCtrlr/HeartbeatInterval"] == {
        "mutability": "ReadWrite",
        "dataType": "integer",
        "minLimit": 10,
        "maxLimit": 86400,
    }
    presence = await watcher.wait_for(bridge.topics.presence(station.id), lambda p: p["online"])
    assert presence["ocppVersion"] == "2.0.1"
    boot = await watcher.wait_for(bridge.topics.events(station.id, "boot"))
    assert boot["reason"] == "PowerUp" and boot["vendor"] == "VendorX"


async def test_nothing_but_boot_before_acceptance(
    bridge: Bridge, open_station: OpenStation
) -> None:
    station = await open_station(boot=False)
    with pytest.raises(Exception, match="SecurityError"):
        await station.call(
            call.StatusNotification(
                timestamp=iso_now(), connector_status="Available", evse_id=1, connector_id=1
            ),
            suppress=False,
        )
    # The bridge asks it to boot (TriggerMessage), and the boot sequence follows.
    async with asyncio.timeout(10):
        await station.accepted.wait()
    assert [b.status for b in station.boots] == ["Pending", "Accepted"]


# --- status, transactions, meter values -----------------------------------------------------------
def energy(wh: float, **extra: Any) -> dict[str, Any]:
    return {
        "timestamp": iso_now(),
        "sampled_value": [
            {"value": wh / 1000, "unit_of_measure": {"unit": "kWh"}, **extra},
            {"value": 7.2, "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "kW"}},
        ],
    }


async def test_status_notification_maps_evse_to_the_port(
    bridge: Bridge, open_station: OpenStation, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    station = await open_station()
    for connector, status in ((1, "Available"), (2, "Occupied")):
        await station.call(
            call.StatusNotification(
                timestamp=iso_now(), connector_status=status, evse_id=2, connector_id=connector
            )
        )
    reported = await twin.wait_reported(
        station.id, lambda r: len(r.get("connectors", {}).get("2", {}).get("connectors", {})) == 2
    )
    port = reported["connectors"]["2"]
    assert port["status"] == "Occupied"  # one connector in use: the EVSE is in use
    assert port["connectors"] == {"1": "Available", "2": "Occupied"}
    assert reported["availability"]["2"] == "Operative"
    events = await eventually(
        lambda: (
            len(watcher.on(bridge.topics.events(station.id, "status"))) == 2
            and watcher.on(bridge.topics.events(station.id, "status"))
        )
    )
    assert events[1]["connectorId"] == 2 and events[1]["evseConnectorId"] == 2
    assert events[1]["previous"] == "Available" and events[1]["status"] == "Occupied"


async def test_transaction_events_make_one_session_even_when_sent_again(
    bridge: Bridge, open_station: OpenStation, watcher: MqttWatcher
) -> None:
    station = await open_station()
    tx = f"tx-{uuid.uuid4().hex[:8]}"

    def event(kind: str, seq_no: int, trigger: str, **extra: Any) -> Any:
        return call.TransactionEvent(
            event_type=kind,
            timestamp=iso_now(),
            trigger_reason=trigger,
            seq_no=seq_no,
            transaction_info={"transaction_id": tx, **extra.pop("info", {})},
            evse={"id": 1, "connector_id": 1},
            **extra,
        )

    started = await station.call(
        event(
            "Started",
            0,
            "Authorized",
            id_token={"id_token": "TAG-1", "type": "ISO14443"},
            meter_value=[energy(1000.0)],
        )
    )
    assert started.id_token_info["status"] == "Accepted"
    updated = event("Updated", 1, "MeterValuePeriodic", meter_value=[energy(2500.0)])
    await station.call(updated)
    await station.call(updated)  # the answer was lost: sent again with the same seqNo
    await station.call(
        event(
            "Ended",
            2,
            "EVCommunicationLost",
            info={"stopped_reason": "EVDisconnected"},
            meter_value=[energy(4000.0)],
            offline=True,
        )
    )
    await station.call(  # sent again after a reconnect, say
        event("Ended", 2, "EVCommunicationLost", info={"stopped_reason": "EVDisconnected"})
    )

    topic = bridge.topics.events(station.id, "transaction")
    stopped = await watcher.wait_for(topic, lambda m: m["event"] == "stopped")
    assert stopped["transactionId"] == tx
    assert stopped["meterStart"] == 1000 and stopped["meterStop"] == 4000
    assert stopped["reason"] == "EVDisconnected" and stopped["offline"] is True
    assert stopped["connectorId"] == 1 and stopped["idTag"] == "TAG-1"
    await asyncio.sleep(0.3)  # anything published twice would be here by now
    kinds = [m["event"] for m in watcher.on(topic)]
    assert kinds == ["started", "updated", "stopped"]
    meter = watcher.on(bridge.topics.telemetry(station.id, "meterValues"))
    assert len(meter) == 3  # started, updated, ended: none twice
    assert meter[1]["values"][0]["value"] == 2.5 and meter[1]["values"][0]["unit"] == "kWh"
    assert meter[1]["transactionId"] == tx and meter[1]["evseId"] == 1

    assert bridge.services is not None
    session = await bridge.services.transactions.get(stopped["sessionId"])
    assert session is not None
    assert session["chargerId"] == station.id and session["connectorId"] == 1
    assert (session["meterStart"], session["meterStop"]) == (1000, 4000)
    assert session["stopReason"] == "EVDisconnected"
    assert bridge.db is not None
    rows = await bridge.db.fetchall(
        "SELECT COUNT(*) FROM transactions WHERE charger_id = ?", (station.id,)
    )
    assert rows[0][0] == 1


async def test_transaction_events_sent_again_after_a_reconnect_and_offline_ones(
    bridge: Bridge, open_station: OpenStation, watcher: MqttWatcher
) -> None:
    station = await open_station()
    tx = f"tx-{uuid.uuid4().hex[:8]}"
    started = call.TransactionEvent(
        event_type="Started",
        timestamp=iso_now(),
        trigger_reason="CablePluggedIn",
        seq_no=0,
        transaction_info={"transaction_id": tx},
        evse={"id": 2, "connector_id": 1},
        meter_value=[energy(500.0)],
    )
    await station.call(started)
    await station._connection.close()  # the answer may not have arrived: sent again below
    again = await open_station(station.id, boot=False)  # accepted before: no boot needed
    await again.call(started)
    for seq_no, kind, wh in ((1, "Updated", 900.0), (2, "Ended", 1500.0)):
        await again.call(
            call.TransactionEvent(
                event_type=kind,
                timestamp=iso_now(),
                trigger_reason="EVCommunicationLost" if kind == "Ended" else "ChargingStateChanged",
                seq_no=seq_no,
                transaction_info={"transaction_id": tx},
                meter_value=[energy(wh)],
                offline=True,  # queued while the connection was down
            )
        )
    topic = bridge.topics.events(station.id, "transaction")
    stopped = await watcher.wait_for(topic, lambda m: m["event"] == "stopped")
    assert stopped["offline"] is True and stopped["connectorId"] == 2
    assert (stopped["meterStart"], stopped["meterStop"]) == (500, 1500)
    assert stopped["reason"] == "Local"  # stoppedReason absent: Local (2.0.1 ReasonEnumType)
    await asyncio.sleep(0.3)
    assert [m["event"] for m in watcher.on(topic)] == ["started", "updated", "stopped"]
    assert bridge.db is not None
    rows = await bridge.db.fetchall(
        "SELECT COUNT(*) FROM transactions WHERE charger_id = ?", (station.id,)
    )
    assert rows[0][0] == 1


async def test_meter_values_authorize_and_notifications(
    bridge: Bridge, open_station: OpenStation, watcher: MqttWatcher
) -> None:
    station = await open_station()
    await station.call(call.MeterValues(evse_id=1, meter_value=[energy(1234.0)]))
    meter = await watcher.wait_for(bridge.topics.telemetry(station.id, "meterValues"))
    assert meter["connectorId"] == 1 and meter["transactionId"] is None
    assert meter["values"][0]["measurand"] == "Energy.Active.Import.Register"

    authorized = await station.call(
        call.Authorize(id_token={"id_token": "ANY", "type": "ISO14443"})
    )
    assert authorized.id_token_info["status"] == "Accepted"  # an empty tag table

    await station.call(call.FirmwareStatusNotification(status="Downloading", request_id=7))
    firmware = await watcher.wait_for(bridge.topics.events(station.id, "firmware"))
    assert firmware["status"] == "Downloading" and firmware["requestId"] == 7

    await station.call(
        call.SecurityEventNotification(type="TamperDetectionActivated", timestamp=iso_now())
    )
    security = await watcher.wait_for(bridge.topics.events(station.id, "security"))
    assert security["type"] == "TamperDetectionActivated"

    await station.call(
        call.NotifyEvent(
            generated_at=iso_now(),
            seq_no=0,
            event_data=[
                {
                    "event_id": 1,
                    "timestamp": iso_now(),
                    "trigger": "Delta",
                    "actual_value": "Faulted",
                    "tech_code": "E42",
                    "event_notification_type": "HardWiredNotification",
                    "component": {"name": "Connector", "evse": {"id": 1, "connector_id": 1}},
                    "variable": {"name": "Problem"},
                }
            ],
        )
    )
    device = await watcher.wait_for(bridge.topics.events(station.id, "deviceEvent"))
    assert device["key"] == "Connector@1.1/Problem"
    assert device["actualValue"] == "Faulted" and device["techCode"] == "E42"
    assert device["cleared"] is False

    transfer = await station.call(call.DataTransfer(vendor_id="acme", data={"x": 1}))
    assert transfer.status == "UnknownVendorId"

    # Acknowledged without a feature behind them: a correct answer, and an event.
    needs = await station.call(
        call.NotifyEVChargingNeeds(
            evse_id=1, charging_needs={"requested_energy_transfer": "AC_single_phase"}
        )
    )
    assert needs.status == "Rejected"
    certificate = await station.call(
        call.GetCertificateStatus(
            ocsp_request_data={
                "hash_algorithm": "SHA256",
                "issuer_name_hash": "a",
                "issuer_key_hash": "b",
                "serial_number": "c",
                "responder_url": "http://ocsp.invalid",
            }
        )
    )
    assert certificate.status == "Failed"
    notification = await watcher.wait_for(
        bridge.topics.events(station.id, "notification"),
        lambda m: m["action"] == "NotifyEVChargingNeeds",
    )
    assert notification["payload"]["evseId"] == 1


# --- SetVariables and ChangeAvailability ---------------------------------------------------------
async def test_desired_config_is_reconciled_with_set_variables(
    bridge: Bridge, open_station: OpenStation, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    station = await open_station()
    await twin.wait_reported(station.id, lambda r: r.get("config"))
    station.variable_status = {
        "EVConnectionTimeOut": "RebootRequired",
        "Missing": "UnknownVariable",
        "TxUpdatedInterval": "Rejected",
    }
    desired = {
        "config": {
            "OCPPCommCtrlr/HeartbeatInterval": "120",  # Accepted
            "TxCtrlr/EVConnectionTimeOut": "90",  # RebootRequired
            "TxCtrlr/Missing": "1",  # UnknownVariable
            "SampledDataCtrlr/TxUpdatedInterval#Target": "15",  # Rejected
            "EVSE@1/AvailabilityState": "Faulted",  # ReadOnly: never sent
            "OCPPCommCtrlr/HeartbeatInterval:x": "abc",  # not in the model: sent, Accepted
            "HeartbeatInterval": "60",  # a 1.6 key: refused, never sent
        },
        "availability": {"1": "Inoperative"},
    }
    watcher.publish(bridge.topics.shadow(station.id, "update"), {"state": {"desired": desired}})

    def settled(r: dict[str, Any]) -> bool:
        refused = r.get("refused", {}).get("config", {})
        return (
            r.get("config", {}).get("OCPPCommCtrlr/HeartbeatInterval") == "120"
            and len(refused) == 4
            and r.get("availability", {}).get("1") == "Inoperative"
        )

    reported = await twin.wait_reported(station.id, settled, timeout=10)
    refused = reported["refused"]["config"]
    assert refused["TxCtrlr/Missing"]["status"] == "UnknownVariable"
    assert refused["SampledDataCtrlr/TxUpdatedInterval#Target"]["status"] == "Rejected"
    assert refused["EVSE@1/AvailabilityState"]["status"] == "Invalid"
    assert "ReadOnly" in refused["EVSE@1/AvailabilityState"]["reason"]
    assert refused["HeartbeatInterval"]["status"] == "Invalid"
    assert reported["config"]["TxCtrlr/EVConnectionTimeOut"] == "90"
    assert reported["rebootRequired"] is True

    sent = {
        (d["component"]["name"], d["variable"]["name"], d.get("attribute_type"))
        for action, d in station.calls
        if action == "SetVariables"
    }
    assert ("EVSE", "AvailabilityState", None) not in sent
    assert ("SampledDataCtrlr", "TxUpdatedInterval", "Target") in sent
    assert ("OCPPCommCtrlr", "HeartbeatInterval", None) in sent
    availability = [d for action, d in station.calls if action == "ChangeAvailability"]
    assert availability == [{"operationalStatus": "Inoperative", "evse": {"id": 1}}]


# --- bad frames -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "answer_id", "code"),
    [
        ("not json", "-1", "RpcFrameworkError"),
        ('{"a": 1}', "-1", "RpcFrameworkError"),
        ('[2, "f1", "Heartbeat"]', "f1", "RpcFrameworkError"),
        ('[7, "f2", "Heartbeat", {}]', "f2", "MessageTypeNotSupported"),
        ('[2, "f3", "NoSuchAction", {}]', "f3", "NotImplemented"),
        ('[2, "f4", "Reset", {"type": "Immediate"}]', "f4", "NotSupported"),
        ('[2, "f5", "StatusNotification", {"timestamp": "2024-01-01T00:00:00Z"}]', "f5",
         "OccurrenceConstraintViolation"),
        ('[2, "f6", "StatusNotification", {"timestamp": "2024-01-01T00:00:00Z", '
         '"connectorStatus": "Broken", "evseId": 1, "connectorId": 1}]', "f6",
         "PropertyConstraintViolation"),
        ('[2, "f7", "StatusNotification", {"timestamp": "2024-01-01T00:00:00Z", '
         '"connectorStatus": "Available", "evseId": "one", "connectorId": 1}]', "f7",
         "TypeConstraintViolation"),
        ('[2, "f8", "Heartbeat", {"extra": 1}]', "f8", "FormatViolation"),
        ('[2, "f9", "Heartbeat", []]', "f9", "FormatViolation"),
        ('[2, "f10", "StatusNotification", {"timestamp": "2024-01-01T00:00:00Z", '
         '"connectorStatus": "Available", "evseId": 100000, "connectorId": 1}]', "f10",
         "PropertyConstraintViolation"),
    ],
)  # fmt: skip
async def test_bad_frames_get_2_0_1_error_codes_and_the_connection_stays(
    bridge: Bridge, frame: str, answer_id: str, code: str
) -> None:
    station = await open_raw_201(bridge)
    try:
        answer = await station.send_raw(frame, answer_id)
        assert answer[0] == 4 and answer[1] == answer_id
        assert answer[2] == code, answer
        assert isinstance(answer[4], dict)
        heartbeat = await station.result("Heartbeat", {})  # still served
        assert "currentTime" in heartbeat
    finally:
        await station.close()


TX = (
    '"eventType": "Started", "timestamp": "2024-01-01T00:00:00Z", "triggerReason": "Authorized",'
    ' "transactionInfo": {"transactionId": "t1"}'
)


@pytest.mark.parametrize(
    ("frame", "answer_id", "code"),
    [
        ('[true, "h1", "Heartbeat", {}]', "h1", "MessageTypeNotSupported"),
        (f'[2, "{"i" * 37}", "Heartbeat", {{}}]', "i" * 37, "RpcFrameworkError"),
        ('[2, "h2", "DataTransfer", {"vendorId": "v", "data": ' + "[" * 40 + "]" * 40 + "}]",
         "h2", "FormatViolation"),
        ('[2, "h3", "DataTransfer", {"vendorId": "v", "data": NaN}]', "h3", "FormatViolation"),
        ('[2, "h4", "DataTransfer", {"vendorId": "v\\u0000"}]', "h4",
         "PropertyConstraintViolation"),
        (f'[2, "h5", "TransactionEvent", {{{TX}, "seqNo": 99999999999999999999999}}]', "h5",
         "TypeConstraintViolation"),
        (f'[2, "h6", "TransactionEvent", {{{TX}, "seqNo": 1, "reservationId": 4294967296}}]',
         "h6", "PropertyConstraintViolation"),
        (f'[2, "h7", "TransactionEvent", {{{TX}, "seqNo": 1, "evse": {{"id": 9999}}}}]', "h7",
         "PropertyConstraintViolation"),
    ],
)  # fmt: skip
async def test_hostile_frames_get_2_0_1_answers_and_nothing_is_stored(
    bridge: Bridge, frame: str, answer_id: str, code: str
) -> None:
    station = await open_raw_201(bridge)
    try:
        answer = await station.send_raw(frame, answer_id)
        assert answer[:3] == [4, answer_id, code], answer
        assert "currentTime" in await station.result("Heartbeat", {})
    finally:
        await station.close()
    assert bridge.db is not None
    rows = await bridge.db.fetchall(
        "SELECT COUNT(*) FROM transactions WHERE charger_id = ?", (station.charger_id,)
    )
    assert rows[0][0] == 0


async def test_oversized_frames_close_a_2_0_1_station_as_a_1_6_one(bridge: Bridge) -> None:
    station = await open_raw_201(bridge)
    big = json.dumps([2, "big", "DataTransfer", {"vendorId": "v", "data": "x" * 70_000}])
    await station.ws.send(big)
    assert await station.closed() == 1009  # message too big, as for 1.6


# --- 1.6 and 2.0.1 side by side ---------------------------------------------------------------
async def test_a_1_6_and_a_2_0_1_charger_on_one_bridge(
    bridge: Bridge,
    open_station: OpenStation,
    open_charger: OpenCharger,
    twin: RunningTwin,
    watcher: MqttWatcher,
) -> None:
    station = await open_station()
    charger = await open_charger(accepted=False)
    await charger.boot(firmwareVersion="1.6.0")
    await charger.result(
        "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
    )
    await station.call(
        call.StatusNotification(
            timestamp=iso_now(), connector_status="Occupied", evse_id=1, connector_id=1
        )
    )
    old = await twin.wait_reported(charger.charger_id, lambda r: r.get("connectors", {}).get("1"))
    new = await twin.wait_reported(station.id, lambda r: r.get("connectors", {}).get("1"))
    assert old["connection"]["ocppVersion"] == "1.6"
    assert new["connection"]["ocppVersion"] == "2.0.1"
    assert old["connectors"]["1"]["status"] == "Charging"
    assert new["connectors"]["1"]["status"] == "Occupied"
    for charger_id in (charger.charger_id, station.id):
        presence = await watcher.wait_for(bridge.topics.presence(charger_id), lambda p: p["online"])
        assert presence["ocppVersion"] == ("2.0.1" if charger_id == station.id else "1.6")


async def test_after_a_reconnect_the_stored_device_model_still_guards_desired_values(
    bridge: Bridge, open_station: OpenStation, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    station = await open_station()
    await twin.wait_reported(station.id, lambda r: r.get("deviceModel"))
    await station._connection.close()
    again = await open_station(station.id, boot=False)  # no boot: no device-model read
    desired = {
        "config": {
            "EVSE@1/AvailabilityState": "Faulted",  # ReadOnly
            "OCPPCommCtrlr/HeartbeatInterval": "5",  # below minLimit 10
            "TxCtrlr/EVConnectionTimeOut": "45",  # fine
        }
    }
    watcher.publish(bridge.topics.shadow(station.id, "update"), {"state": {"desired": desired}})
    reported = await twin.wait_reported(
        station.id,
        lambda r: (
            len(r.get("refused", {}).get("config", {})) == 2
            and r["config"].get("TxCtrlr/EVConnectionTimeOut") == "45"
        ),
    )
    refused = reported["refused"]["config"]
    assert "ReadOnly" in refused["EVSE@1/AvailabilityState"]["reason"]
    assert "below the minimum 10" in refused["OCPPCommCtrlr/HeartbeatInterval"]["reason"]
    sent = [d["variable"]["name"] for action, d in again.calls if action == "SetVariables"]
    assert sent == ["EVConnectionTimeOut"]


async def test_a_report_nobody_asked_for_is_merged_into_the_config(
    bridge: Bridge, open_station: OpenStation, twin: RunningTwin
) -> None:
    station = await open_station()
    await twin.wait_reported(station.id, lambda r: r.get("config"))
    for seq_no, tbc in ((0, True), (1, False)):
        await station.call(
            call.NotifyReport(
                request_id=424242,
                generated_at=iso_now(),
                seq_no=seq_no,
                tbc=tbc,
                report_data=[variable("AlignedDataCtrlr", f"Interval{seq_no}", str(seq_no))],
            )
        )
    reported = await twin.wait_reported(
        station.id, lambda r: "AlignedDataCtrlr/Interval1" in r.get("config", {})
    )
    assert reported["config"]["AlignedDataCtrlr/Interval0"] == "0"
    assert reported["config"]["OCPPCommCtrlr/HeartbeatInterval"] == "300"  # still there
    assert reported["deviceModel"]["AlignedDataCtrlr/Interval1"]["mutability"] == "ReadWrite"
