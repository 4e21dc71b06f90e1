"""Charging limits end to end for an OCPP 2.0.1 station: desired chargingLimit PATCHed
through the API -> twin -> bridge -> 2.0.1 SetChargingProfile -> simulated station, whose
car follows the offer in the TransactionEvent meter values it sends; the composite schedule
(GetCompositeSchedule, 2.0.1 shape), a TxProfile for the running transaction, refusals and
removal. Real websockets, broker, twin and HTTP API."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from e2e_operations import Platform, platform, reported

from chargetwin.mqtt import MqttClient
from simulator.options import SessionTiming
from simulator.stations import SimulatedStation

LONG_SESSIONS = SessionTiming(
    auto_sessions=False, plug_delay_s=0.05, unplug_delay_s=0.05, duration_s=(600.0, 600.0)
)


@pytest.fixture
async def ops(tmp_path: Path, mosquitto_url: str) -> AsyncIterator[Platform]:
    simulator = {"meter_interval_s": 1, "sessions": LONG_SESSIONS}
    async with platform(
        tmp_path, mosquitto_url, chargers=1, ocpp_mix=(("2.0.1", 1.0),), simulator=simulator
    ) as p:
        yield p


class Currents:
    """The Current.Import per phase of each EVSE's transaction, as the bridge publishes the
    TransactionEvent meter values, and the latest reading of each EVSE."""

    def __init__(self) -> None:
        self.latest: dict[int, dict[str, float]] = {}
        self.transactions: dict[int, Any] = {}
        self.changed = asyncio.Event()

    async def on_message(self, topic: str, payload: bytes) -> None:
        message = json.loads(payload)
        phases = {
            v["phase"]: v["value"] for v in message["values"] if v["measurand"] == "Current.Import"
        }
        if phases:
            self.latest[message["evseId"]] = phases
            self.transactions[message["evseId"]] = message["transactionId"]
            self.changed.set()

    async def until(self, evse: int, check: Any, timeout: float = 15.0) -> dict[str, float]:
        async with asyncio.timeout(timeout):
            while True:
                phases = self.latest.get(evse)
                if phases is not None and check(phases):
                    return phases
                self.changed.clear()
                await self.changed.wait()


def station_of(ops: Platform) -> SimulatedStation:
    assert ops.fleet is not None
    station = ops.fleet.chargers[0]
    assert isinstance(station, SimulatedStation)
    return station


@pytest.fixture
async def currents(ops: Platform, mosquitto_url: str) -> AsyncIterator[Currents]:
    client = MqttClient(mosquitto_url, f"e2e-currents-{uuid.uuid4().hex[:8]}")
    await client.connect()
    seen = Currents()
    topic = ops.bridge.topics.telemetry(station_of(ops).id, "meterValues")
    await client.subscribe_acked(topic, seen.on_message)
    yield seen
    await client.disconnect()


async def desire(ops: Platform, charger_id: str, limit: Any) -> None:
    answer = await ops.api.patch(
        f"/chargers/{charger_id}/shadow/desired",
        json={"chargingLimit": limit},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text


def limits(document: dict[str, Any]) -> dict[str, Any]:
    return dict(reported(document).get("chargingLimit") or {})


def evse(document: dict[str, Any], n: str) -> dict[str, Any]:
    return dict((limits(document).get("connectors") or {}).get(n) or {})


def refusals(document: dict[str, Any]) -> dict[str, Any]:
    return dict((reported(document).get("refused") or {}).get("chargingLimit") or {})


async def composite(ops: Platform, charger_id: str, evse_id: int) -> list[dict[str, Any]]:
    answer = await ops.api.post(
        f"/chargers/{charger_id}/commands/get-composite-schedule",
        json={"evseId": evse_id, "duration": 600, "chargingRateUnit": "A"},
    )
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    assert response["status"] == "Accepted", response
    assert response["schedule"]["evseId"] == evse_id
    return list(response["schedule"]["chargingSchedulePeriod"])


async def online(ops: Platform, cid: str) -> None:
    await ops.until(
        cid,
        lambda d: (
            reported(d).get("connection", {}).get("online")
            and reported(d).get("connection", {}).get("ocppVersion") == "2.0.1"
        ),
    )


async def test_limits_reach_the_car_and_removal_clears(ops: Platform, currents: Currents) -> None:
    station = station_of(ops)
    cid = station.id
    await online(ops, cid)
    await desire(
        ops,
        cid,
        {
            "site": "depot-1",
            "unit": "A",
            "failsafe": {"limit": 20.0, "phases": 3},
            "connectors": {"1": {"limit": 10.04, "phases": 3}, "2": {"limit": 0.0, "phases": 3}},
        },
    )
    document = await ops.until(
        cid,
        lambda d: (
            evse(d, "1").get("limit") == 10.04
            and evse(d, "2").get("purpose") == "TxDefaultProfile"
            and (limits(d).get("failsafe") or {}).get("purpose") == "ChargingStationMaxProfile"
            and "chargingLimit" not in d["state"].get("delta", {})
        ),
    )
    assert limits(document)["site"] == "depot-1"
    assert await composite(ops, cid, 1) == [{"startPeriod": 0, "limit": 10.0, "numberPhases": 3}]
    assert await composite(ops, cid, 2) == [{"startPeriod": 0, "limit": 0.0, "numberPhases": 3}]
    assert (await composite(ops, cid, 0))[0]["limit"] == 20.0

    # A session under the TxDefaultProfile: the car draws at most 10 A on each phase.
    start = await ops.api.post(
        f"/chargers/{cid}/commands/remote-start",
        json={"idToken": {"idToken": "TAG-1", "type": "ISO14443"}, "remoteStartId": 7, "evseId": 1},
    )
    assert start.status_code == 200, start.text
    phases = await currents.until(1, lambda p: len(p) == 3 and min(p.values()) > 8.0)
    assert max(phases.values()) <= 10.0

    # A new limit during the transaction: a TxProfile naming it (the station's string id),
    # and the car follows at once (an Updated event, ChargingRateChanged).
    await desire(ops, cid, {"connectors": {"1": {"limit": 7.0}}})
    document = await ops.until(cid, lambda d: evse(d, "1").get("purpose") == "TxProfile")
    transaction_id = station.transaction_id(station.connectors[1])
    assert isinstance(transaction_id, str)
    assert evse(document, "1")["transactionId"] == transaction_id
    await currents.until(1, lambda p: 0 < max(p.values()) <= 7.0)
    assert currents.transactions[1] == transaction_id
    assert [p["limit"] for p in await composite(ops, cid, 1)] == [7.0]
    tx_profiles = [
        payload["chargingProfile"]
        for action, payload in station.received
        if action == "SetChargingProfile"
        and payload["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
    ]
    assert tx_profiles[-1]["transactionId"] == transaction_id

    # Removed: the profile is cleared by id; only the failsafe (20 A) binds the car now.
    await desire(ops, cid, {"connectors": {"1": None}})
    await ops.until(cid, lambda d: not evse(d, "1"))
    phases = await currents.until(1, lambda p: min(p.values()) > 17.0)
    assert max(phases.values()) <= 20.0
    assert await composite(ops, cid, 1) == [{"startPeriod": 0, "limit": 20.0, "numberPhases": 3}]
    clears = [payload for action, payload in station.received if action == "ClearChargingProfile"]
    assert clears == [{"chargingProfileId": 1001}]

    # All of it removed: every ChargeTwin profile goes.
    await desire(ops, cid, None)
    await ops.until(cid, lambda d: not limits(d))
    assert station.profiles.profiles == {}


async def test_refusals_are_recorded_and_a_new_value_is_tried(ops: Platform) -> None:
    station = station_of(ops)
    cid = station.id
    await online(ops, cid)
    station.profile_answer = "NotSupported"  # 2.0.1: Rejected with that reason code
    await desire(ops, cid, {"unit": "A", "connectors": {"1": {"limit": 16.0, "phases": 3}}})
    document = await ops.until(cid, lambda d: "1" in refusals(d))
    refusal = refusals(document)["1"]
    assert refusal["status"] == "Rejected" and refusal["reason"] == "NotSupported"
    assert refusal["value"] == {"unit": "A", "limit": 16.0, "phases": 3}
    assert document["state"]["delta"]["chargingLimit"]["connectors"]["1"]["limit"] == 16.0

    station.profile_answer = "CallError"
    await desire(ops, cid, {"connectors": {"1": {"limit": 12.0}}})
    await ops.until(cid, lambda d: refusals(d).get("1", {}).get("status") == "CallError")
    assert refusals(await ops.shadow(cid))["1"]["reason"] == "NotSupported"

    station.profile_answer = "Accepted"
    await desire(ops, cid, {"connectors": {"1": {"limit": 11.0}}})
    document = await ops.until(cid, lambda d: evse(d, "1").get("limit") == 11.0)
    assert "1" not in refusals(document)
    assert await composite(ops, cid, 1) == [{"startPeriod": 0, "limit": 11.0, "numberPhases": 3}]


async def test_a_reboot_sets_the_limits_again(ops: Platform) -> None:
    station = station_of(ops)
    cid = station.id
    await online(ops, cid)
    await desire(
        ops,
        cid,
        {"unit": "W", "failsafe": {"limit": 11000.0}, "connectors": {"2": {"limit": 4140.0}}},
    )
    first = await ops.until(cid, lambda d: evse(d, "2").get("limit") == 4140.0)
    assert station.profiles.limit(2, first["timestamp"] + 1) is not None
    boots = station.boots
    reset = await ops.api.post(f"/chargers/{cid}/commands/reset", json={"type": "Immediate"})
    assert reset.status_code == 200, reset.text
    for _ in range(100):
        if station.boots > boots:
            break
        await asyncio.sleep(0.1)
    assert station.boots > boots
    # The simulated station lost its profiles in the reboot; the bridge sets them again.
    document = await ops.until(
        cid,
        lambda d: (
            evse(d, "2").get("at", 0) > evse(first, "2")["at"]
            and (limits(d).get("failsafe") or {}).get("limit") == 11000.0
        ),
    )
    assert "delta" not in document["state"]
    assert await composite(ops, cid, 2) == [{"startPeriod": 0, "limit": 6.0, "numberPhases": 3}]
