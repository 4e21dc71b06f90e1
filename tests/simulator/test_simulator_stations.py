"""Simulated OCPP 2.0.1 stations against an independent CSMS (the ``ocpp`` library's v201
ChargePoint, which checks every message against the official schemas), over real
websockets: boot through Pending and a multi-part device-model report, Get/SetVariables
results of every kind, a TransactionEvent session, firmware update with checksum and
reboot, log upload, faults, and the version mix of a fleet."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from csms201 import Csms201, now
from ocpp.v201 import call
from simulator_helpers import HttpServer, fast_options, running

from simulator import Fleet, SimulatedCharger, SimulatedStation, parse_ocpp_mix, transactions
from simulator.options import ChargerModel, SessionTiming, SimulatorOptions


@pytest.fixture
async def csms() -> AsyncIterator[Csms201]:
    server = Csms201()
    await server.start()
    yield server
    await server.stop()


def station_options(url: str, **changes: Any) -> SimulatorOptions:
    changes.setdefault("ocpp_mix", (("2.0.1", 1.0),))
    return fast_options(url, password=None, **changes)


def component(name: str, evse: int | None = None, connector: int | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name}
    if evse is not None:
        found["evse"] = {"id": evse, **({} if connector is None else {"connectorId": connector})}
    return found


async def test_boot_pending_device_model_report_then_accepted(csms: Csms201) -> None:
    csms.boot_statuses = ["Pending"]
    async with running(station_options(csms.url)) as fleet:
        station = fleet.chargers[0]
        assert isinstance(station, SimulatedStation)
        await csms.wait(lambda: station.id in csms.points)
        await csms.wait(lambda: len(csms.messages(station.id, "BootNotification")) == 1)
        # While Pending the station answers the CSMS's requests...
        answer = await csms.call(
            station.id, call.GetBaseReport(request_id=7, report_base="FullInventory")
        )
        assert answer.status == "Accepted"
        await csms.wait(
            lambda: any(p["tbc"] is False for p in csms.messages(station.id, "NotifyReport"))
        )
        parts = csms.messages(station.id, "NotifyReport")
        assert [p["seqNo"] for p in parts] == list(range(len(parts)))
        assert len(parts) > 1 and all(p["requestId"] == 7 for p in parts)
        entries = [entry for part in parts for entry in part["reportData"]]
        names = {(e["component"]["name"], e["variable"]["name"]) for e in entries}
        for expected in [
            ("OCPPCommCtrlr", "HeartbeatInterval"),
            ("SampledDataCtrlr", "TxUpdatedInterval"),
            ("TxCtrlr", "TxStartPoint"),
            ("SecurityCtrlr", "SecurityProfile"),
            ("EVSE", "AvailabilityState"),
            ("Connector", "ConnectorType"),
        ]:
            assert expected in names
        assert len(entries) == len(station.device_model)
        # ... and boots again when triggered: Accepted, then a status per EVSE's connector.
        trigger = await csms.call(
            station.id, call.TriggerMessage(requested_message="BootNotification")
        )
        assert trigger.status == "Accepted"
        await fleet.wait_for(1, timeout=5)
        boots = csms.messages(station.id, "BootNotification")
        assert [b["reason"] for b in boots] == ["PowerUp", "Triggered"]
        assert boots[1]["chargingStation"]["model"] == station.model.model
        await csms.wait(
            lambda: len(csms.messages(station.id, "StatusNotification")) == station.model.connectors
        )
        statuses = csms.messages(station.id, "StatusNotification")
        assert {(s["evseId"], s["connectorId"], s["connectorStatus"]) for s in statuses} == {
            (evse, 1, "Available") for evse in range(1, station.model.connectors + 1)
        }
        again = await csms.call(
            station.id, call.TriggerMessage(requested_message="BootNotification")
        )
        assert again.status == "Rejected"  # F06.FR.17: already Accepted


async def test_set_and_get_variables_answer_every_status(csms: Csms201) -> None:
    async with running(station_options(csms.url)) as fleet:
        station = fleet.chargers[0]
        await fleet.wait_for(1, timeout=5)
        items = [
            ("OCPPCommCtrlr", "HeartbeatInterval", "45", None),
            ("OCPPCommCtrlr", "HeartbeatInterval", "0", None),  # below minLimit 1
            ("ChargingStation", "Model", "X", None),  # ReadOnly
            ("OCPPCommCtrlr", "WebSocketPingInterval", "30", None),  # takes a reboot
            ("NoSuchCtrlr", "Enabled", "true", None),
            ("OCPPCommCtrlr", "NoSuchVariable", "1", None),
            ("OCPPCommCtrlr", "HeartbeatInterval", "50", "Target"),
            ("SampledDataCtrlr", "TxUpdatedMeasurands", "Voltage,Nonsense", None),
        ]
        answer = await csms.call(
            station.id,
            call.SetVariables(
                set_variable_data=[
                    {
                        "attributeValue": value,
                        "component": component(comp),
                        "variable": {"name": var},
                        **({"attributeType": kind} if kind else {}),
                    }
                    for comp, var, value, kind in items
                ]
            ),
        )
        statuses = [r["attribute_status"] for r in answer.set_variable_result]
        assert statuses == [
            "Accepted",
            "Rejected",
            "Rejected",
            "RebootRequired",
            "UnknownComponent",
            "UnknownVariable",
            "NotSupportedAttributeType",
            "Rejected",
        ]
        assert station.device_model.value("OCPPCommCtrlr", "HeartbeatInterval") == "45"
        wanted = [
            (component("OCPPCommCtrlr"), "HeartbeatInterval"),
            (component("EVSE", 1), "AvailabilityState"),
            (component("SecurityCtrlr"), "BasicAuthPassword"),
            (component("EVSE", 9), "AvailabilityState"),
        ]
        read = await csms.call(
            station.id,
            call.GetVariables(
                get_variable_data=[{"component": c, "variable": {"name": v}} for c, v in wanted]
            ),
        )
        results = [
            (r["attribute_status"], r.get("attribute_value")) for r in read.get_variable_result
        ]
        assert results == [
            ("Accepted", "45"),
            ("Accepted", "Available"),
            ("Rejected", None),  # WriteOnly
            ("UnknownComponent", None),
        ]


async def test_a_session_is_transaction_events_with_rising_seq_no(csms: Csms201) -> None:
    async with running(station_options(csms.url)) as fleet:
        station = fleet.chargers[0]
        assert isinstance(station, SimulatedStation)
        await fleet.wait_for(1, timeout=5)
        station.spawn(
            transactions.run_transaction(station, station.connectors[1], "TAG1", authorize=True)
        )
        await csms.wait(lambda: ended(csms, station.id), timeout=10)
        events = csms.messages(station.id, "TransactionEvent")
        assert [e["seqNo"] for e in events] == list(range(len(events)))
        assert len({e["transactionInfo"]["transactionId"] for e in events}) == 1
        assert events[0]["eventType"] == "Started"
        assert events[0]["triggerReason"] == "CablePluggedIn"
        assert events[0]["evse"] == {"id": 1, "connectorId": 1}
        triggers = [e["triggerReason"] for e in events]
        assert "Authorized" in triggers and "MeterValuePeriodic" in triggers
        authorized = events[triggers.index("Authorized")]
        assert authorized["idToken"] == {"idToken": "TAG1", "type": "ISO14443"}
        last = events[-1]
        assert last["triggerReason"] == "EVCommunicationLost"
        assert last["transactionInfo"]["stoppedReason"] == "EVDisconnected"
        energy = [
            v["value"]
            for e in events
            for m in e.get("meterValue", [])
            for v in m["sampledValue"]
            if v["measurand"] == "Energy.Active.Import.Register"
        ]
        assert energy == sorted(energy) and energy[-1] > energy[0]
        await csms.wait(
            lambda: (
                csms.messages(station.id, "StatusNotification")[-1]["connectorStatus"]
                == "Available"
            )
        )
        assert csms.messages(station.id, "Authorize")[0]["idToken"]["idToken"] == "TAG1"


async def test_reset_ends_the_session_and_boots_with_remote_reset(csms: Csms201) -> None:
    async with running(station_options(csms.url)) as fleet:
        station = fleet.chargers[0]
        assert isinstance(station, SimulatedStation)
        await fleet.wait_for(1, timeout=5)
        station.spawn(
            transactions.run_transaction(station, station.connectors[1], "TAG2", authorize=True)
        )
        await csms.wait(lambda: len(csms.messages(station.id, "TransactionEvent")) >= 3)
        answer = await csms.call(station.id, call.Reset(type="Immediate"))
        assert answer.status == "Accepted"
        await csms.wait(lambda: len(csms.messages(station.id, "BootNotification")) == 2)
        last = csms.messages(station.id, "TransactionEvent")[-1]
        assert (last["eventType"], last["triggerReason"]) == ("Ended", "ResetCommand")
        assert last["transactionInfo"]["stoppedReason"] == "ImmediateReset"
        assert csms.messages(station.id, "BootNotification")[-1]["reason"] == "RemoteReset"
        evse = await csms.call(station.id, call.Reset(type="Immediate", evse_id=1))
        assert evse.status == "Rejected"


async def test_change_availability_of_an_evse_and_the_station(csms: Csms201) -> None:
    two_evses = ChargerModel("ChargeTwin", "CT-AC22", "1.4.2", 2, 22_000.0, 3)
    async with running(station_options(csms.url, models=(two_evses,))) as fleet:
        station = fleet.chargers[0]
        await fleet.wait_for(1, timeout=5)
        answer = await csms.call(
            station.id,
            call.ChangeAvailability(operational_status="Inoperative", evse={"id": 2}),
        )
        assert answer.status == "Accepted"
        await csms.wait(lambda: last_status(csms, station.id) == "Unavailable")
        assert csms.messages(station.id, "StatusNotification")[-1]["evseId"] == 2
        unknown = await csms.call(
            station.id,
            call.ChangeAvailability(operational_status="Inoperative", evse={"id": 7}),
        )
        assert unknown.status == "Rejected"
        await csms.call(station.id, call.ChangeAvailability(operational_status="Operative"))
        sent = csms.messages
        await csms.wait(
            lambda: (
                [m["connectorStatus"] for m in sent(station.id, "StatusNotification")][-2:]
                == ["Available", "Available"]
            )
        )


async def test_firmware_update_downloads_checks_installs_and_reboots(
    csms: Csms201, http_server: HttpServer
) -> None:
    image = b"\x7fFW" + bytes(range(256)) * 8
    http_server.files["/fw/CT-AC22_2.0.0.bin"] = image
    digest = hashlib.sha256(image).hexdigest()
    async with running(station_options(csms.url)) as fleet:
        station = fleet.chargers[0]
        await fleet.wait_for(1, timeout=5)
        bad = http_server.url("/fw/CT-AC22_2.0.0.bin") + "?sha256=" + "0" * 64
        answer = await csms.call(
            station.id,
            call.UpdateFirmware(
                request_id=1, firmware={"location": bad, "retrieveDateTime": now()}
            ),
        )
        assert answer.status == "Accepted"
        await csms.wait(lambda: statuses(csms, station.id, 1)[-1:] == ["DownloadFailed"])
        good = http_server.url("/fw/CT-AC22_2.0.0.bin") + f"?sha256={digest}"
        await csms.call(
            station.id,
            call.UpdateFirmware(
                request_id=2, firmware={"location": good, "retrieveDateTime": now()}
            ),
        )
        await csms.wait(lambda: "Installed" in statuses(csms, station.id, 2), timeout=10)
        assert statuses(csms, station.id, 2) == [
            "Downloading",
            "Downloaded",
            "Installing",
            "InstallRebooting",
            "Installed",
        ]
        boots = csms.messages(station.id, "BootNotification")
        assert boots[-1]["reason"] == "FirmwareUpdate"
        assert boots[-1]["chargingStation"]["firmwareVersion"] == "CT-AC22_2.0.0"


async def test_get_log_uploads_and_reports_with_request_id(
    csms: Csms201, http_server: HttpServer
) -> None:
    async with running(station_options(csms.url)) as fleet:
        station = fleet.chargers[0]
        await fleet.wait_for(1, timeout=5)
        answer = await csms.call(
            station.id,
            call.GetLog(
                log={"remoteLocation": http_server.url("/logs/")},
                log_type="DiagnosticsLog",
                request_id=42,
            ),
        )
        assert answer.status == "Accepted" and answer.filename.endswith(".log")
        await csms.wait(
            lambda: (
                [m["status"] for m in csms.messages(station.id, "LogStatusNotification")]
                == ["Uploading", "Uploaded"]
            )
        )
        assert {m["requestId"] for m in csms.messages(station.id, "LogStatusNotification")} == {42}
        method, path, body = http_server.uploads[0]
        assert (method, path) == ("PUT", "/logs/" + answer.filename)
        assert station.id.encode() in body


async def test_a_fault_is_notify_event_and_faulted_then_cleared(csms: Csms201) -> None:
    async with running(station_options(csms.url)) as fleet:
        station = fleet.chargers[0]
        await fleet.wait_for(1, timeout=5)
        station.inject_fault("overheating", 1)
        await csms.wait(lambda: last_status(csms, station.id) == "Faulted")
        event = csms.messages(station.id, "NotifyEvent")[0]["eventData"][0]
        assert event["component"] == {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}
        assert (event["variable"]["name"], event["cleared"]) == ("Problem", False)
        assert event["techCode"] == "HighTemperature"
        hot = csms.messages(station.id, "MeterValues")
        assert hot and hot[0]["evseId"] == 1
        station.clear_fault("overheating", 1)
        await csms.wait(lambda: last_status(csms, station.id) == "Available")
        assert csms.messages(station.id, "NotifyEvent")[-1]["eventData"][0]["cleared"] is True
        assert station.errors == 0


def test_a_mix_spreads_versions_exactly_through_the_fleet() -> None:
    options = SimulatorOptions(chargers=10, ocpp_mix=parse_ocpp_mix("1.6=60,2.0.1=40"))
    versions = options.versions()
    assert versions.count("1.6") == 6 and versions.count("2.0.1") == 4
    assert "2.0.1" in versions[:3]  # mixed from the start, not 6 then 4
    assert SimulatorOptions(chargers=3, ocpp_mix=(("2.0.1", 1.0),)).versions() == ["2.0.1"] * 3
    for bad in ("1.6", "1.6=x", "2.0=1", "1.6=0", "1.6=1,1.6=2", "1.6=-1", "1.6=inf"):
        with pytest.raises(ValueError):
            parse_ocpp_mix(bad)
    with pytest.raises(ValueError, match="not simulated"):
        SimulatorOptions(ocpp_mix=(("2.1", 1.0),))


def test_a_mixed_fleet_has_a_charger_object_per_version() -> None:
    fleet = Fleet(SimulatorOptions(chargers=4, ocpp_mix=(("1.6", 1.0), ("2.0.1", 1.0))))
    stations = [c for c in fleet.chargers if isinstance(c, SimulatedStation)]
    assert len(stations) == 2
    assert {c.subprotocol for c in fleet.chargers} == {"ocpp1.6", "ocpp2.0.1"}
    assert all(isinstance(c, SimulatedCharger) for c in fleet.chargers)


def statuses(csms: Csms201, station_id: str, request_id: int) -> list[str]:
    return [
        m["status"]
        for m in csms.messages(station_id, "FirmwareStatusNotification")
        if m.get("requestId") == request_id
    ]


def ended(csms: Csms201, station_id: str) -> bool:
    return any(e["eventType"] == "Ended" for e in csms.messages(station_id, "TransactionEvent"))


def last_status(csms: Csms201, station_id: str) -> str | None:
    sent = csms.messages(station_id, "StatusNotification")
    return str(sent[-1]["connectorStatus"]) if sent else None


async def test_chargetwin_simulate_ocpp_201_runs_stations(csms: Csms201) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "launch.cli", "simulate", "--ocpp", "2.0.1", "--chargers", "2",
        "--url", csms.url, "--id-prefix", "CLI-", "--seed", "3",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await csms.wait(
            lambda: (
                {c for c, a, _ in csms.received if a == "StatusNotification"}
                == {"CLI-00001", "CLI-00002"}
            ),
            timeout=20,
        )
    finally:
        process.terminate()
        _, errors = await process.communicate()
    assert process.returncode == 0, errors.decode()
    assert all(b["reason"] == "PowerUp" for _, a, b in csms.received if a == "BootNotification")


def tx_default(limit: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": 1001,
        "stack_level": 1,
        "charging_profile_purpose": "TxDefaultProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": [
            {
                "id": 1001,
                "charging_rate_unit": "A",
                "charging_schedule_period": [
                    {"start_period": 0, "limit": limit, "number_phases": 3}
                ],
            }
        ],
        **extra,
    }


async def test_charging_profiles_bind_the_car_and_the_composite_schedule(csms: Csms201) -> None:
    long = SessionTiming(
        auto_sessions=False, plug_delay_s=0.05, unplug_delay_s=0.05, duration_s=(60.0, 60.0)
    )
    async with running(station_options(csms.url, sessions=long)) as fleet:
        station = fleet.chargers[0]
        assert isinstance(station, SimulatedStation)
        await fleet.wait_for(1, timeout=5)
        # The library checks each answer against the official schemas.
        answer = await csms.call(
            station.id, call.SetChargingProfile(evse_id=1, charging_profile=tx_default(10.0))
        )
        assert answer.status == "Accepted"
        composite = await csms.call(
            station.id, call.GetCompositeSchedule(duration=300, evse_id=1, charging_rate_unit="A")
        )
        assert composite.status == "Accepted"
        assert composite.schedule["evse_id"] == 1
        assert composite.schedule["charging_schedule_period"] == [
            {"start_period": 0, "limit": 10.0, "number_phases": 3}
        ]
        connector = station.connectors[1]
        station.spawn(transactions.run_transaction(station, connector, "TAG3", authorize=False))
        await csms.wait(lambda: station.transaction_id(connector) is not None)
        transaction_id = station.transaction_id(connector)

        def currents() -> list[float]:
            events = csms.messages(station.id, "TransactionEvent")
            return [
                v["value"]
                for e in events[-1:]
                for m in e.get("meterValue", [])
                for v in m["sampledValue"]
                if v["measurand"] == "Current.Import"
            ]

        await csms.wait(lambda: currents() and min(currents()) > 8.0, timeout=10)
        assert max(currents()) <= 10.0
        # A TxProfile for another transaction is refused with the reason.
        other = tx_default(6.0, charging_profile_purpose="TxProfile", transaction_id="nope")
        refused = await csms.call(
            station.id, call.SetChargingProfile(evse_id=1, charging_profile=other)
        )
        assert refused.status == "Rejected"
        assert refused.status_info["reason_code"] == "InvalidProfile"
        # One for the running transaction binds at once: ChargingRateChanged shows it.
        mine = tx_default(6.0, charging_profile_purpose="TxProfile", transaction_id=transaction_id)
        answer = await csms.call(
            station.id, call.SetChargingProfile(evse_id=1, charging_profile=mine)
        )
        assert answer.status == "Accepted"
        await csms.wait(
            lambda: (
                csms.messages(station.id, "TransactionEvent")[-1]["triggerReason"]
                == "ChargingRateChanged"
            )
        )
        await csms.wait(lambda: currents() and max(currents()) <= 6.0, timeout=10)
        cleared = await csms.call(station.id, call.ClearChargingProfile(charging_profile_id=1001))
        assert cleared.status == "Accepted"
        again = await csms.call(station.id, call.ClearChargingProfile(charging_profile_id=1001))
        assert again.status == "Unknown"
        await csms.wait(lambda: currents() and min(currents()) > 11.0, timeout=10)
