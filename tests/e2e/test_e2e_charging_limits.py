"""Charging limits end to end: desired chargingLimit PATCHed through the API -> twin ->
bridge -> SetChargingProfile -> simulated charger, whose car follows the limit in the
MeterValues it sends; refusals, removal, reboot and running transactions."""

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

LONG_SESSIONS = SessionTiming(
    auto_sessions=False, plug_delay_s=0.05, unplug_delay_s=0.05, duration_s=(600.0, 600.0)
)


@pytest.fixture
async def ops(tmp_path: Path, mosquitto_url: str) -> AsyncIterator[Platform]:
    simulator = {"meter_interval_s": 1, "sessions": LONG_SESSIONS}
    async with platform(tmp_path, mosquitto_url, chargers=1, simulator=simulator) as p:
        yield p


class Currents:
    """The Current.Import per phase of each connector, as the bridge publishes it."""

    def __init__(self) -> None:
        self.latest: dict[int, dict[str, float]] = {}
        self.changed = asyncio.Event()

    async def on_message(self, topic: str, payload: bytes) -> None:
        message = json.loads(payload)
        phases = {
            v["phase"]: v["value"] for v in message["values"] if v["measurand"] == "Current.Import"
        }
        if phases:
            self.latest[message["connectorId"]] = phases
            self.changed.set()

    async def until(self, connector: int, check: Any, timeout: float = 15.0) -> dict[str, float]:
        async with asyncio.timeout(timeout):
            while True:
                phases = self.latest.get(connector)
                if phases is not None and check(phases):
                    return phases
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def currents(ops: Platform, mosquitto_url: str) -> AsyncIterator[Currents]:
    assert ops.fleet is not None
    client = MqttClient(mosquitto_url, f"e2e-currents-{uuid.uuid4().hex[:8]}")
    await client.connect()
    seen = Currents()
    topic = ops.bridge.topics.telemetry(ops.fleet.chargers[0].id, "meterValues")
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


def connector(document: dict[str, Any], n: str) -> dict[str, Any]:
    return dict((limits(document).get("connectors") or {}).get(n) or {})


def refusals(document: dict[str, Any]) -> dict[str, Any]:
    return dict((reported(document).get("refused") or {}).get("chargingLimit") or {})


async def composite(ops: Platform, charger_id: str, connector_id: int) -> list[dict[str, Any]]:
    answer = await ops.api.post(
        f"/chargers/{charger_id}/commands/get-composite-schedule",
        json={"connectorId": connector_id, "duration": 600, "chargingRateUnit": "A"},
    )
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    assert response["status"] == "Accepted"
    return list(response["chargingSchedule"]["chargingSchedulePeriod"])


async def test_limits_reach_the_car_and_removal_clears(ops: Platform, currents: Currents) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    cid = charger.id
    await ops.until(cid, lambda d: reported(d).get("connection", {}).get("online"))
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
            connector(d, "1").get("limit") == 10.04
            and connector(d, "2").get("purpose") == "TxDefaultProfile"
            and (limits(d).get("failsafe") or {}).get("purpose") == "ChargePointMaxProfile"
            and "chargingLimit" not in d["state"].get("delta", {})
        ),
    )
    assert limits(document)["site"] == "depot-1" and limits(document)["unit"] == "A"
    # Sent rounded to one decimal (OCPP 1.6 section 7.7).
    assert await composite(ops, cid, 1) == [{"startPeriod": 0, "limit": 10.0, "numberPhases": 3}]
    assert (await composite(ops, cid, 0))[0]["limit"] == 20.0

    # A session under the TxDefaultProfile: the car draws at most 10 A on each phase.
    start = await ops.api.post(
        f"/chargers/{cid}/commands/remote-start", json={"idTag": "TAG-1", "connectorId": 1}
    )
    assert start.status_code == 200, start.text
    phases = await currents.until(1, lambda p: len(p) == 3 and min(p.values()) > 8.0)
    assert max(phases.values()) <= 10.0

    # A new limit during the transaction: a TxProfile for it, and the car follows.
    await desire(ops, cid, {"connectors": {"1": {"limit": 7.0}}})
    document = await ops.until(cid, lambda d: connector(d, "1").get("purpose") == "TxProfile")
    transaction_id = charger.connectors[1].transaction_id
    assert connector(document, "1")["transactionId"] == transaction_id
    await currents.until(1, lambda p: 0 < max(p.values()) <= 7.0)
    assert [p["limit"] for p in await composite(ops, cid, 1)] == [7.0]

    # Removed: the profile is cleared by id; only the failsafe (20 A) binds the car now.
    await desire(ops, cid, {"connectors": {"1": None}})
    await ops.until(cid, lambda d: not connector(d, "1"))
    phases = await currents.until(1, lambda p: min(p.values()) > 17.0)
    assert max(phases.values()) <= 20.0
    assert await composite(ops, cid, 1) == [{"startPeriod": 0, "limit": 20.0, "numberPhases": 3}]
    audit_calls = [action for action, _ in charger.received]
    assert "ClearChargingProfile" in audit_calls

    # All of it removed: every ChargeTwin profile goes.
    await desire(ops, cid, None)
    await ops.until(cid, lambda d: not limits(d))
    assert charger.profiles.profiles == {}


async def test_refusals_are_recorded_once_and_a_new_value_is_tried(ops: Platform) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    cid = charger.id
    await ops.until(cid, lambda d: reported(d).get("connection", {}).get("online"))
    charger.profile_answer = "NotSupported"
    await desire(ops, cid, {"unit": "A", "connectors": {"1": {"limit": 16.0, "phases": 3}}})
    document = await ops.until(cid, lambda d: "1" in refusals(d))
    refusal = refusals(document)["1"]
    assert refusal["status"] == "NotSupported"
    assert refusal["value"] == {"unit": "A", "limit": 16.0, "phases": 3}
    assert document["state"]["delta"]["chargingLimit"]["connectors"]["1"]["limit"] == 16.0
    sent = sum(1 for action, _ in charger.received if action == "SetChargingProfile")

    # A CALLERROR is recorded with its code; then the charger accepts a new value.
    charger.profile_answer = "CallError"
    await desire(ops, cid, {"connectors": {"1": {"limit": 12.0}}})
    await ops.until(cid, lambda d: refusals(d).get("1", {}).get("status") == "CallError")
    assert refusals(await ops.shadow(cid))["1"]["reason"] == "NotSupported"
    # Another desired change elsewhere does not retry the refused value.
    await desire(ops, cid, {"site": "depot-2"})
    await ops.until(cid, lambda d: limits(d).get("site") == "depot-2")
    assert sum(1 for a, _ in charger.received if a == "SetChargingProfile") == sent + 1
    charger.profile_answer = "Accepted"
    await desire(ops, cid, {"connectors": {"1": {"limit": 11.0}}})
    document = await ops.until(cid, lambda d: connector(d, "1").get("limit") == 11.0)
    assert "1" not in refusals(document)


async def test_a_reboot_sets_the_limits_again(ops: Platform) -> None:
    assert ops.fleet is not None
    charger = ops.fleet.chargers[0]
    cid = charger.id
    await ops.until(cid, lambda d: reported(d).get("connection", {}).get("online"))
    await desire(
        ops,
        cid,
        {"unit": "W", "failsafe": {"limit": 11000.0}, "connectors": {"2": {"limit": 4140.0}}},
    )
    first = await ops.until(cid, lambda d: connector(d, "2").get("limit") == 4140.0)
    assert charger.profiles.limit(2, first["timestamp"] + 1) is not None
    reset = await ops.api.post(f"/chargers/{cid}/commands/reset", json={"type": "Soft"})
    assert reset.status_code == 200, reset.text
    boots = charger.boots
    for _ in range(100):
        if charger.boots > boots:
            break
        await asyncio.sleep(0.1)
    assert charger.boots > boots
    # The simulated charger lost its profiles in the reboot; the bridge sets them again.
    document = await ops.until(
        cid,
        lambda d: (
            connector(d, "2").get("at", 0) > connector(first, "2")["at"]
            and (limits(d).get("failsafe") or {}).get("limit") == 11000.0
        ),
    )
    assert "delta" not in document["state"]
    periods = await composite(ops, cid, 2)
    assert periods == [{"startPeriod": 0, "limit": 6.0, "numberPhases": 3}]  # 4,140 W / 690 V
