"""Charging sessions: the transaction flow of OCPP 1.6 sections 4.1, 4.7, 4.8, 4.9, 4.10."""

from __future__ import annotations

from ocpp.v16 import call
from simulator_helpers import CentralSystem, fast_options, running

from simulator import SessionTiming

MEASURANDS = {
    "Energy.Active.Import.Register": "Wh",
    "Power.Active.Import": "W",
    "Current.Import": "A",
    "Voltage": "V",
    "Temperature": "Celsius",
    "SoC": "Percent",
}


async def test_remote_start_runs_a_full_session_with_all_measurands(
    central: CentralSystem,
) -> None:
    async with running(fast_options(central.url)) as fleet:
        charger = fleet.chargers[0]
        cid = charger.id
        await fleet.wait_for(booted=1, timeout=5)
        answer = await central.call(cid, call.RemoteStartTransaction(id_tag="TAG-1"))
        assert answer.status == "Accepted"
        await central.wait(lambda: central.messages(cid, "StopTransaction"), timeout=6)
        await central.wait(
            lambda: central.messages(cid, "StatusNotification")[-1]["status"] == "Available"
        )

    connector_1 = [
        s["status"] for s in central.messages(cid, "StatusNotification") if s["connectorId"] == 1
    ]
    assert connector_1 == ["Available", "Preparing", "Charging", "Finishing", "Available"]
    assert central.messages(cid, "Authorize") == [{"idTag": "TAG-1"}]
    start = central.messages(cid, "StartTransaction")[0]
    assert start["connectorId"] == 1 and start["idTag"] == "TAG-1"

    meter_values = central.messages(cid, "MeterValues")
    assert len(meter_values) >= 2
    energy = []
    powers: list[float] = []
    for message in meter_values:
        assert message["transactionId"] == 1000
        (value,) = message["meterValue"]
        sampled = value["sampledValue"]
        units = {(s["measurand"], s["unit"]) for s in sampled}
        assert units == set(MEASURANDS.items())
        phases = {s.get("phase") for s in sampled if s["measurand"] == "Current.Import"}
        assert sorted(phases) == ["L1", "L2", "L3"][: charger.model.phases]
        power = next(float(s["value"]) for s in sampled if s["measurand"] == "Power.Active.Import")
        # The car ramps up over a few seconds (simulator.meters), then takes all it gets.
        assert 0 < power <= charger.model.max_power_w
        powers.append(power)
        energy.append(
            int(
                next(
                    s["value"] for s in sampled if s["measurand"] == "Energy.Active.Import.Register"
                )
            )
        )
    assert energy == sorted(energy) and energy[-1] > start["meterStart"]
    assert powers[-1] > 0.5 * charger.model.max_power_w

    stop = central.messages(cid, "StopTransaction")[0]
    assert stop["transactionId"] == 1000
    assert stop["reason"] == "EVDisconnected"
    assert stop["meterStop"] >= energy[-1]
    contexts = [v["sampledValue"][0]["context"] for v in stop["transactionData"]]
    assert contexts == ["Transaction.Begin", "Transaction.End"]
    assert charger.sessions_completed == 1
    assert fleet.counts.sessions_completed == 1


async def test_remote_stop_ends_the_session_with_reason_remote(central: CentralSystem) -> None:
    options = fast_options(
        central.url, sessions=SessionTiming(auto_sessions=False, duration_s=(60.0, 60.0))
    )
    async with running(options) as fleet:
        cid = fleet.chargers[0].id
        await fleet.wait_for(booted=1, timeout=5)
        await central.call(cid, call.RemoteStartTransaction(id_tag="T2", connector_id=1))
        await central.wait(lambda: central.messages(cid, "StartTransaction"), timeout=4)
        unknown = await central.call(cid, call.RemoteStopTransaction(transaction_id=999))
        assert unknown.status == "Rejected"
        answer = await central.call(cid, call.RemoteStopTransaction(transaction_id=1000))
        assert answer.status == "Accepted"
        await central.wait(lambda: central.messages(cid, "StopTransaction"), timeout=4)
        assert central.messages(cid, "StopTransaction")[0]["reason"] == "Remote"


async def test_blocked_tag_does_not_start_a_transaction(central: CentralSystem) -> None:
    central.blocked_tags.add("BAD")
    async with running(fast_options(central.url)) as fleet:
        cid = fleet.chargers[0].id
        await fleet.wait_for(booted=1, timeout=5)
        await central.call(cid, call.RemoteStartTransaction(id_tag="BAD", connector_id=1))
        await central.wait(
            lambda: (
                central.messages(cid, "StatusNotification")[-1]["status"] == "Available"
                and len(central.messages(cid, "StatusNotification")) > 3
            )
        )
        assert central.messages(cid, "Authorize") == [{"idTag": "BAD"}]
        assert not central.messages(cid, "StartTransaction")


async def test_automatic_sessions_run_without_commands(central: CentralSystem) -> None:
    timing = SessionTiming(
        idle_s=(0.1, 0.2), duration_s=(1.2, 1.2), plug_delay_s=0.01, unplug_delay_s=0.01
    )
    async with running(fast_options(central.url, sessions=timing, chargers=3)) as fleet:
        await central.wait(lambda: fleet.counts.sessions_completed >= 3, timeout=6)
        assert fleet.counts.sessions_started >= 3
