"""Every charger-initiated OCPP 1.6 message: its CALLRESULT and what it puts on MQTT."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import MqttWatcher, OpenCharger, RawCharger

from bridge import Bridge
from bridge.stores import IdTagStore
from bridge.times import iso_time

# An hour ago: a plausible charger time (bridge.times), and distinct from receipt time.
T0_EPOCH = float(int(time.time()) - 3600)
T0 = iso_time(T0_EPOCH)


def topic(bridge: Bridge, charger: RawCharger, *parts: str) -> str:
    return "/".join([bridge.topics.charger(charger.charger_id), *parts])


async def test_boot_mirrors_the_charge_point_and_reads_the_configuration(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    result = await charger.result(
        "BootNotification",
        {
            "chargePointVendor": "Acme",
            "chargePointModel": "Volt-22",
            "chargePointSerialNumber": "SN-1",
            "firmwareVersion": "1.2.3",
            "iccid": "8901",
            "meterType": "DZG",
        },
    )
    assert result["status"] == "Accepted"
    assert result["interval"] == 300
    assert result["currentTime"].endswith("Z")

    shadow = topic(bridge, charger, "shadow", "update")
    boot = await watcher.wait_for(shadow, lambda m: "chargePoint" in m["state"]["reported"])
    assert boot["state"]["reported"]["chargePoint"] == {
        "vendor": "Acme",
        "model": "Volt-22",
        "serialNumber": "SN-1",
        "firmwareVersion": "1.2.3",
        "iccid": "8901",
        "meterType": "DZG",
    }
    assert boot["state"]["reported"]["firmware"] == {"version": "1.2.3"}
    assert isinstance(boot["timestamp"], float)
    event = await watcher.wait_for(topic(bridge, charger, "events", "boot"))
    assert event["vendor"] == "Acme"

    # The bridge asks for the whole configuration after answering the boot.
    get_configuration = await charger.next_call()
    assert get_configuration[2] == "GetConfiguration"
    assert get_configuration[3] == {}
    await charger.reply(
        get_configuration,
        {
            "configurationKey": [
                {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
                {"key": "NumberOfConnectors", "readonly": True, "value": "2"},
                {"key": "NoValueKey", "readonly": True},
            ],
            "unknownKey": [],
        },
    )
    # The whole configuration: the shadow held none, so every value is written, once.
    config = await watcher.wait_for(shadow, lambda m: m["state"]["reported"].get("config"))
    writes = [m for m in watcher.on(shadow) if "config" in m["state"]["reported"]]
    assert writes == [config]
    assert config["state"]["reported"]["config"] == {
        "HeartbeatInterval": "300",
        "NumberOfConnectors": "2",
    }
    # ... and every connector's status, which the boot made unknown.
    trigger = await charger.next_call()
    assert trigger[2:] == ["TriggerMessage", {"requestedMessage": "StatusNotification"}]
    await charger.reply(trigger, {"status": "Accepted"})


async def test_heartbeat_answers_the_current_time(open_charger: OpenCharger) -> None:
    charger = await open_charger()
    result = await charger.result("Heartbeat", {})
    assert result["currentTime"].endswith("Z")


async def test_status_notification_reports_the_connector_and_an_event(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    # A charger clock a little ahead of ours: plausible, so its time is kept.
    at = float(int(time.time()) + 30)
    assert (
        await charger.result(
            "StatusNotification",
            {
                "connectorId": 1,
                "errorCode": "GroundFailure",
                "status": "Faulted",
                "info": "earth leak",
                "vendorErrorCode": "E42",
                "timestamp": iso_time(at),
            },
        )
        == {}
    )
    assert (
        await charger.result(
            "StatusNotification",
            {
                "connectorId": 1,
                "errorCode": "NoError",
                "status": "Unavailable",
                "timestamp": iso_time(at + 5),
            },
        )
        == {}
    )
    shadow = topic(bridge, charger, "shadow", "update")
    await watcher.wait_for(
        shadow, lambda m: m["state"]["reported"].get("availability") == {"1": "Inoperative"}
    )
    faulted, unavailable = [m for m in watcher.on(shadow) if "connectors" in m["state"]["reported"]]
    assert faulted["timestamp"] == at  # the charger's own time, not receipt time
    assert faulted["state"]["reported"]["connectors"]["1"] == {
        "status": "Faulted",
        "errorCode": "GroundFailure",
        "info": "earth leak",
        "vendorId": None,
        "vendorErrorCode": "E42",
        "timestamp": at,
    }
    # Absent optional fields are sent as null, which deletes the old info in the shadow.
    assert unavailable["state"]["reported"]["connectors"]["1"]["info"] is None
    # Events and shadow updates are separate publishes: wait for the second event too.
    status_events = topic(bridge, charger, "events", "status")
    await watcher.wait_for(status_events, lambda e: e["status"] == "Unavailable")
    events = watcher.on(status_events)
    assert [(e["previous"], e["status"]) for e in events] == [
        (None, "Faulted"),
        ("Faulted", "Unavailable"),
    ]


async def test_meter_values_keep_every_measurand_phase_and_unit(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    assert (
        await charger.result(
            "MeterValues",
            {
                "connectorId": 2,
                "transactionId": 7,
                "meterValue": [
                    {
                        "timestamp": T0,
                        "sampledValue": [
                            {"value": "1234.5"},
                            {
                                "value": "230.1",
                                "measurand": "Voltage",
                                "phase": "L1-N",
                                "unit": "V",
                            },
                            {
                                "value": "229.8",
                                "measurand": "Voltage",
                                "phase": "L2-N",
                                "unit": "V",
                            },
                            {
                                "value": "16",
                                "measurand": "Current.Import",
                                "phase": "L1",
                                "unit": "A",
                                "context": "Sample.Clock",
                                "location": "Inlet",
                            },
                        ],
                    },
                    {"timestamp": iso_time(T0_EPOCH + 60), "sampledValue": [{"value": "1300"}]},
                ],
            },
        )
        == {}
    )
    telemetry = topic(bridge, charger, "telemetry", "meterValues")
    await watcher.wait_for(telemetry, lambda m: m["timestamp"] == T0_EPOCH + 60)
    first, second = watcher.on(telemetry)
    assert first["connectorId"] == 2 and first["transactionId"] == 7
    assert first["timestamp"] == T0_EPOCH
    assert first["values"] == [
        {
            "measurand": "Energy.Active.Import.Register",
            "phase": None,
            "unit": "Wh",
            "value": 1234.5,
            "context": "Sample.Periodic",
            "location": "Outlet",
        },
        {
            "measurand": "Voltage",
            "phase": "L1-N",
            "unit": "V",
            "value": 230.1,
            "context": "Sample.Periodic",
            "location": "Outlet",
        },
        {
            "measurand": "Voltage",
            "phase": "L2-N",
            "unit": "V",
            "value": 229.8,
            "context": "Sample.Periodic",
            "location": "Outlet",
        },
        {
            "measurand": "Current.Import",
            "phase": "L1",
            "unit": "A",
            "value": 16.0,
            "context": "Sample.Clock",
            "location": "Inlet",
        },
    ]
    assert second["values"][0]["value"] == 1300.0


async def test_authorize_accepts_everyone_while_the_id_tag_table_is_empty(
    bridge: Bridge, open_charger: OpenCharger
) -> None:
    charger = await open_charger()
    result = await charger.result("Authorize", {"idTag": "ANY-TAG"})
    assert result == {"idTagInfo": {"status": "Accepted"}}


async def test_authorize_uses_the_id_tag_table_once_it_has_rows(
    bridge: Bridge, open_charger: OpenCharger
) -> None:
    assert bridge.db is not None
    tags = IdTagStore(bridge.db)
    await tags.put("GOOD", "Accepted")
    await tags.put("STOLEN", "Blocked")
    await tags.put("OLD", "Accepted", expiry=1_000_000.0)
    charger = await open_charger()
    statuses = {
        tag: (await charger.result("Authorize", {"idTag": tag}))["idTagInfo"]["status"]
        for tag in ("GOOD", "STOLEN", "OLD", "UNKNOWN")
    }
    assert statuses == {
        "GOOD": "Accepted",
        "STOLEN": "Blocked",
        "OLD": "Expired",
        "UNKNOWN": "Invalid",
    }


async def test_data_transfer_answers_unknown_vendor_and_records_an_event(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    result = await charger.result(
        "DataTransfer", {"vendorId": "com.acme", "messageId": "m1", "data": "x"}
    )
    assert result == {"status": "UnknownVendorId"}
    event = await watcher.wait_for(topic(bridge, charger, "events", "dataTransfer"))
    assert event["vendorId"] == "com.acme" and event["data"] == "x"


@pytest.mark.parametrize(
    ("action", "payload", "kind", "expected"),
    [
        (
            "DiagnosticsStatusNotification",
            {"status": "Uploaded"},
            "diagnostics",
            {"kind": "diagnostics", "status": "Uploaded"},
        ),
        (
            "LogStatusNotification",
            {"status": "Uploading", "requestId": 4},
            "diagnostics",
            {"kind": "log", "status": "Uploading", "requestId": 4},
        ),
        (
            "SecurityEventNotification",
            {"type": "FirmwareUpdated", "timestamp": T0, "techInfo": "v2"},
            "security",
            {"type": "FirmwareUpdated", "techInfo": "v2", "timestamp": T0_EPOCH},
        ),
        (
            "FirmwareStatusNotification",
            {"status": "Downloading"},
            "firmware",
            {"status": "Downloading"},
        ),
        (
            "SignedFirmwareStatusNotification",
            {"status": "Installed", "requestId": 9},
            "firmware",
            {"status": "Installed", "requestId": 9},
        ),
    ],
)
async def test_notifications_answer_empty_and_publish_their_event(
    bridge: Bridge,
    open_charger: OpenCharger,
    watcher: MqttWatcher,
    action: str,
    payload: dict[str, Any],
    kind: str,
    expected: dict[str, Any],
) -> None:
    charger = await open_charger()
    assert await charger.result(action, payload) == {}
    event = await watcher.wait_for(topic(bridge, charger, "events", kind))
    assert {k: event[k] for k in expected} == expected
    if kind == "firmware":
        shadow = topic(bridge, charger, "shadow", "update")
        report = await watcher.wait_for(shadow, lambda m: "firmware" in m["state"]["reported"])
        assert report["state"]["reported"]["firmware"]["status"] == payload["status"]
        assert isinstance(report["state"]["reported"]["firmware"]["updatedAt"], float)


async def test_sign_certificate_is_rejected_without_a_certificate_authority(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    assert await charger.result("SignCertificate", {"csr": "-----BEGIN..."}) == {
        "status": "Rejected"
    }
    event = await watcher.wait_for(topic(bridge, charger, "events", "security"))
    assert event["type"] == "SignCertificateRejected"
