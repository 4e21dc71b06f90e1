"""Simulated OCPP 2.0.1 stations against the real platform (twin, bridge, API, Mosquitto):
boot through Pending and the device-model read, the device model in the shadow, a
TransactionEvent session in the transactions table, desired configuration applied with
SetVariables, a firmware/log upload the station performs, and a fleet that mixes 1.6 and
2.0.1 chargers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from e2e_operations import platform, reported

from simulator import SimulatedStation, transactions
from simulator.options import SessionTiming

QUICK = SessionTiming(
    # 3 s: the car ramps up at 10 A/s and the register counts whole Wh.
    auto_sessions=False,
    duration_s=(3.0, 3.0),
    plug_delay_s=0.1,
    unplug_delay_s=0.2,
)


def config(document: dict[str, Any]) -> dict[str, Any]:
    return dict(reported(document).get("config") or {})


def version(document: dict[str, Any]) -> Any:
    return (reported(document).get("connection") or {}).get("ocppVersion")


async def test_a_201_station_boots_reports_its_device_model_and_charges(
    tmp_path: Path, mosquitto_url: str
) -> None:
    async with platform(
        tmp_path, mosquitto_url, chargers=2, ocpp_mix=(("2.0.1", 1.0),), sessions=QUICK
    ) as ops:
        assert ops.fleet is not None
        station = ops.fleet.chargers[0]
        assert isinstance(station, SimulatedStation)
        # Pending -> GetBaseReport -> NotifyReport parts -> TriggerMessage -> Accepted.
        received = [action for action, _ in station.received]
        assert "GetBaseReport" in received
        assert "TriggerMessage" in received
        document = await ops.until(
            station.id,
            lambda d: (
                version(d) == "2.0.1"
                and (reported(d).get("connection") or {}).get("online") is True
                and "EVSE@1/AvailabilityState" in config(d)
            ),
        )
        values = config(document)
        assert values["OCPPCommCtrlr/HeartbeatInterval"].isdigit()
        assert values["ChargingStation/Model"] == station.model.model
        assert values["SampledDataCtrlr/TxUpdatedInterval"].isdigit()
        assert values["OCPPCommCtrlr/MessageTimeout:Default"] == "30"
        assert "SecurityCtrlr/BasicAuthPassword" not in values  # WriteOnly: no value
        model = reported(document)["deviceModel"]
        assert model["ChargingStation/Model"]["mutability"] == "ReadOnly"
        assert model["EVSE@1/Power#MaxSet"]["dataType"] == "decimal"
        assert model["SampledDataCtrlr/TxUpdatedMeasurands"]["dataType"] == "MemberList"
        attributes = sum(len(variable.values) for variable in station.device_model)
        assert len(values) == attributes - 1  # every attribute but the WriteOnly password
        assert reported(document)["chargePoint"]["vendor"] == station.model.vendor

        # A session: plug-in, authorize, charge with meter values, unplug.
        connector = station.connectors[1]
        station.spawn(transactions.run_transaction(station, connector, "E2ETAG01", authorize=True))
        assert ops.bridge.db is not None
        rows: list[Any] = []
        for _ in range(200):
            rows = await ops.bridge.db.fetchall(
                "SELECT stop_reason, meter_start, meter_stop, connector_id "
                "FROM transactions WHERE charger_id = ? AND meter_stop IS NOT NULL",
                (station.id,),
            )
            if rows:
                break
            await asyncio.sleep(0.1)
        assert len(rows) == 1, "the session did not land in the transactions table"
        # (The idToken comes after the Started event, at authorization; the bridge keeps
        # the Started event's, so id_tag is not checked here.)
        stop_reason, meter_start, meter_stop, connector_id = rows[0]
        assert (stop_reason, connector_id) == ("EVDisconnected", 1)
        assert meter_stop > meter_start

        # Desired configuration in the device-model key scheme -> SetVariables.
        answer = await ops.api.patch(
            f"/chargers/{station.id}/shadow/desired",
            json={"config": {"OCPPCommCtrlr/HeartbeatInterval": "123"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert answer.status_code == 200, answer.text
        await ops.until(
            station.id,
            lambda d: (
                config(d).get("OCPPCommCtrlr/HeartbeatInterval") == "123"
                and "delta" not in d["state"]
            ),
        )
        assert station.device_model.value("OCPPCommCtrlr", "HeartbeatInterval") == "123"
        assert any(action == "SetVariables" for action, _ in station.received)


async def test_a_fault_is_a_notify_event_and_a_faulted_status(
    tmp_path: Path, mosquitto_url: str
) -> None:
    async with platform(tmp_path, mosquitto_url, chargers=1, ocpp_mix=(("2.0.1", 1.0),)) as ops:
        assert ops.fleet is not None
        station = ops.fleet.chargers[0]
        await ops.until(station.id, lambda d: version(d) == "2.0.1")
        station.inject_fault("ground_failure", 1)
        faulted = await ops.until(
            station.id,
            lambda d: (reported(d).get("connectors") or {}).get("1", {}).get("status") == "Faulted",
        )
        assert reported(faulted)["connectors"]["1"]["connectors"]["1"] == "Faulted"
        station.clear_fault("ground_failure", 1)
        await ops.until(
            station.id,
            lambda d: (
                (reported(d).get("connectors") or {}).get("1", {}).get("status") == "Available"
            ),
        )
        assert station.errors == 0


async def test_a_mixed_fleet_has_16_and_201_chargers_online(
    tmp_path: Path, mosquitto_url: str
) -> None:
    mix = (("1.6", 50.0), ("2.0.1", 50.0))
    async with platform(tmp_path, mosquitto_url, chargers=4, ocpp_mix=mix) as ops:
        assert ops.fleet is not None
        seen: dict[str, list[str]] = {}
        for charger in ops.fleet.chargers:
            document = await ops.until(charger.id, lambda d: version(d) in ("1.6", "2.0.1"))
            seen.setdefault(version(document), []).append(charger.id)
            expected = "2.0.1" if isinstance(charger, SimulatedStation) else "1.6"
            assert version(document) == expected
        assert sorted(len(ids) for ids in seen.values()) == [2, 2]
        assert ops.fleet.counts.booted == 4


async def test_desired_state_reaches_a_201_station_with_every_outcome(
    tmp_path: Path, mosquitto_url: str
) -> None:
    async with platform(tmp_path, mosquitto_url, chargers=1, ocpp_mix=(("2.0.1", 1.0),)) as ops:
        assert ops.fleet is not None
        station = ops.fleet.chargers[0]
        assert isinstance(station, SimulatedStation)
        await ops.until(station.id, lambda d: "EVSE@1/AvailabilityState" in config(d))
        patch = {"Content-Type": "application/merge-patch+json"}
        answer = await ops.api.patch(
            f"/chargers/{station.id}/shadow/desired",
            json={
                "availability": {"1": "Inoperative"},
                # The station answers RebootRequired for this one.
                "config": {"OCPPCommCtrlr/WebSocketPingInterval": "30"},
            },
            headers=patch,
        )
        assert answer.status_code == 200, answer.text
        done = await ops.until(
            station.id,
            lambda d: (
                (reported(d).get("availability") or {}).get("1") == "Inoperative"
                and config(d).get("OCPPCommCtrlr/WebSocketPingInterval") == "30"
            ),
        )
        assert reported(done)["rebootRequired"] is True
        assert reported(done)["connectors"]["1"]["status"] == "Unavailable"
        assert not station.connectors[1].operative

        # A ReadOnly variable never reaches the station: refused by the API (422) where it
        # checks the device model, else by the bridge before sending (reported.refused).
        refused = await ops.api.patch(
            f"/chargers/{station.id}/shadow/desired",
            json={"config": {"ChargingStation/Model": "Other"}},
            headers=patch,
        )
        if refused.status_code == 422:
            assert "ReadOnly" in refused.text
        else:
            assert refused.status_code == 200, refused.text
            await ops.until(
                station.id,
                lambda d: (
                    "ChargingStation/Model"
                    in ((reported(d).get("refused") or {}).get("config") or {})
                ),
            )
        assert station.device_model.value("ChargingStation", "Model") == station.model.model
        sets = [p for action, p in station.received if action == "SetVariables"]
        assert [p["setVariableData"][0]["variable"]["name"] for p in sets] == [
            "WebSocketPingInterval"
        ]
