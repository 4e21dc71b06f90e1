"""Injected faults (OCPP 1.6 section 4.9 error codes) and reconnection after lost sockets."""

from __future__ import annotations

import asyncio
import time

from ocpp.v16 import call
from simulator_helpers import CentralSystem, fast_options, running

from simulator import FaultKind, FaultScheduleEntry, SessionTiming

LONG = SessionTiming(auto_sessions=False, plug_delay_s=0.01, duration_s=(60.0, 60.0))


def last_status(central: CentralSystem, cid: str, connector: int) -> dict[str, object]:
    return [
        m for m in central.messages(cid, "StatusNotification") if m["connectorId"] == connector
    ][-1]


async def test_overheating_faults_the_connector_and_stops_the_session(
    central: CentralSystem,
) -> None:
    async with running(fast_options(central.url, sessions=LONG)) as fleet:
        charger = fleet.chargers[0]
        cid = charger.id
        await fleet.wait_for(booted=1, timeout=5)
        await central.call(cid, call.RemoteStartTransaction(id_tag="HOT", connector_id=1))
        await central.wait(lambda: last_status(central, cid, 1)["status"] == "Charging")
        charger.inject_fault(FaultKind.OVERHEATING, connector_id=1, duration_s=0.5)
        await central.wait(lambda: central.messages(cid, "StopTransaction"))
        faulted = [
            m for m in central.messages(cid, "StatusNotification") if m["status"] == "Faulted"
        ]
        assert faulted[0]["errorCode"] == "HighTemperature"
        assert central.messages(cid, "StopTransaction")[0]["reason"] == "EmergencyStop"
        hot = [
            float(s["value"])
            for m in central.messages(cid, "MeterValues")
            for v in m["meterValue"]
            for s in v["sampledValue"]
            if s["measurand"] == "Temperature"
        ]
        assert max(hot) > 80.0
        # The fault clears itself after its duration; the cable goes once it has.
        await central.wait(lambda: last_status(central, cid, 1)["status"] == "Available", 4)
        assert last_status(central, cid, 1)["errorCode"] == "NoError"


async def test_ground_failure_stuck_connector_and_meter_failure(central: CentralSystem) -> None:
    async with running(fast_options(central.url)) as fleet:
        charger = fleet.chargers[0]
        cid = charger.id
        await fleet.wait_for(booted=1, timeout=5)
        charger.inject_fault("ground_failure", connector_id=1)
        await central.wait(lambda: last_status(central, cid, 1)["errorCode"] == "GroundFailure")
        assert last_status(central, cid, 1)["status"] == "Faulted"
        refused = await central.call(cid, call.RemoteStartTransaction(id_tag="G", connector_id=1))
        assert refused.status == "Rejected"
        charger.clear_fault("ground_failure", connector_id=1)
        await central.wait(lambda: last_status(central, cid, 1)["status"] == "Available")

        charger.inject_fault(FaultKind.STUCK_CONNECTOR, connector_id=1)
        await central.wait(
            lambda: last_status(central, cid, 1)["errorCode"] == "ConnectorLockFailure"
        )
        assert last_status(central, cid, 1)["status"] == "Preparing"
        unlock = await central.call(cid, call.UnlockConnector(connector_id=1))
        assert unlock.status == "UnlockFailed"
        charger.clear_fault(FaultKind.STUCK_CONNECTOR, connector_id=1)
        await central.wait(lambda: last_status(central, cid, 1)["status"] == "Available")

        charger.inject_fault(FaultKind.POWER_METER_FAILURE, connector_id=1)
        await central.wait(lambda: last_status(central, cid, 1)["errorCode"] == "PowerMeterFailure")
        before = len(central.messages(cid, "MeterValues"))
        await central.call(
            cid, call.TriggerMessage(requested_message="MeterValues", connector_id=1)
        )
        await asyncio.sleep(0.2)
        assert len(central.messages(cid, "MeterValues")) == before


async def test_offline_fault_and_schedule_bring_the_charger_back(central: CentralSystem) -> None:
    schedule = (FaultScheduleEntry(at_s=0.3, index=1, kind="offline", duration_s=0.5),)
    async with running(fast_options(central.url, fault_schedule=schedule)) as fleet:
        await fleet.wait_for(booted=1, timeout=5)
        cid = fleet.chargers[0].id
        await central.wait(lambda: cid not in central.points and central.connections[cid] == 1)
        gone = time.monotonic()
        await central.wait(lambda: central.connections.get(cid) == 2, timeout=4)
        assert time.monotonic() - gone >= 0.4
        await central.wait(lambda: len(central.messages(cid, "BootNotification")) == 2)


async def test_reconnects_when_the_server_drops_the_socket(central: CentralSystem) -> None:
    async with running(fast_options(central.url, chargers=2)) as fleet:
        await fleet.wait_for(booted=2, timeout=5)
        cid = fleet.chargers[0].id
        await central.points[cid]._connection.close()
        await central.wait(lambda: central.connections[cid] == 2)
        await central.wait(lambda: len(central.messages(cid, "BootNotification")) == 2)
        await fleet.wait_for(booted=2, timeout=5)
        assert fleet.counts.connects == 3


async def test_reconnects_with_backoff_until_the_server_is_up() -> None:
    central = CentralSystem()
    await central.start()
    port = central.port
    await central.stop()  # nothing listens on the port for a while
    async with running(fast_options(f"ws://127.0.0.1:{port}/ocpp")) as fleet:
        await asyncio.sleep(0.5)
        charger = fleet.chargers[0]
        assert charger.errors >= 2
        late = CentralSystem()
        await late.start(port)
        try:
            await fleet.wait_for(booted=1, timeout=5)
            assert late.connections == {charger.id: 1}
        finally:
            await late.stop()
