"""Desired charging limits become SetChargingProfile calls (bridge.charging_limits), over a
real socket: TxProfile for a running transaction, TxDefault again after it, a charger that
does not answer, removal by profile id."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import MqttWatcher, OpenCharger, RunningTwin

# The 2.0.1 station fixture lives with the 2.0.1 tests.
from test_bridge_ocpp201 import OpenStation, open_station  # noqa: F401

from bridge import Bridge
from bridge.times import iso_time

T0 = float(int(time.time()) - 60)


def delta(state: dict[str, Any], desired: dict[str, Any], version: int = 1) -> dict[str, Any]:
    return {
        "state": state,
        "metadata": {},
        "desired": desired,
        "version": version,
        "timestamp": 1.0,
    }


def limit(value: float) -> dict[str, Any]:
    return {"unit": "A", "connectors": {"1": {"limit": value, "phases": 3}}}


def reported_connector(message: dict[str, Any]) -> Any:
    section = message["state"]["reported"].get("chargingLimit") or {}
    return (section.get("connectors") or {}).get("1")


async def test_transaction_profiles_timeouts_and_removal(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    start = {"connectorId": 1, "idTag": "TAG-1", "meterStart": 0, "timestamp": iso_time(T0)}
    transaction_id = (await charger.result("StartTransaction", start))["transactionId"]

    # A limit while a transaction runs: a TxProfile naming it, id 1001.
    watcher.publish(
        delta_topic, delta({"chargingLimit": limit(8.0)}, {"chargingLimit": limit(8.0)})
    )
    call = await charger.next_call()
    assert call[2:] == [
        "SetChargingProfile",
        {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 1001,
                "stackLevel": 1,
                "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8.0, "numberPhases": 3}],
                },
                "transactionId": transaction_id,
            },
        },
    ]
    await charger.reply(call, {"status": "Accepted"})
    report = await watcher.wait_for(shadow, reported_connector)
    assert reported_connector(report)["purpose"] == "TxProfile"
    assert reported_connector(report)["transactionId"] == transaction_id

    # The charger drops a TxProfile with its transaction: the TxDefault is set again.
    stop = {"transactionId": transaction_id, "meterStop": 10, "timestamp": iso_time(T0 + 30)}
    await charger.result("StopTransaction", stop)
    call = await charger.next_call()
    profile = call[3]["csChargingProfiles"]
    assert profile["chargingProfilePurpose"] == "TxDefaultProfile"
    assert profile["chargingProfileId"] == 1001 and "transactionId" not in profile
    await charger.reply(call, {"status": "Accepted"})
    await watcher.wait_for(
        shadow, lambda m: (reported_connector(m) or {}).get("purpose") == "TxDefaultProfile"
    )

    # No answer (the bridge's call timeout is 2 s): refused as Timeout, not sent again.
    watcher.publish(
        delta_topic, delta({"chargingLimit": limit(6.0)}, {"chargingLimit": limit(6.0)}, 2)
    )
    unanswered = await charger.next_call()
    assert (
        unanswered[3]["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0][
            "limit"
        ]
        == 6.0
    )

    def timed_out(message: dict[str, Any]) -> Any:
        refused = message["state"]["reported"].get("refused") or {}
        return (refused.get("chargingLimit") or {}).get("1")

    refusal = timed_out(await watcher.wait_for(shadow, timed_out, timeout=6))
    assert refusal["status"] == "Timeout" and refusal["value"]["limit"] == 6.0

    # Removed from desired: cleared by its id; the refusal goes with it.
    watcher.publish(delta_topic, delta({}, {}, 3))
    clear = await charger.next_call()
    assert clear[2:] == ["ClearChargingProfile", {"id": 1001}]
    await charger.reply(clear, {"status": "Accepted"})
    gone = await watcher.wait_for(
        shadow,
        lambda m: (
            m["state"]["reported"].get("chargingLimit") is None
            and "chargingLimit" in m["state"]["reported"]
        ),
    )
    assert gone["state"]["reported"] == {"chargingLimit": None}


async def test_invalid_limits_are_refused_without_a_call(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    shadow = bridge.topics.shadow(charger.charger_id, "update")
    bad = {"unit": "A", "connectors": {"1": {"limit": -1}}}
    watcher.publish(delta_topic, delta({"chargingLimit": bad}, {"chargingLimit": bad}))
    report = await watcher.wait_for(shadow, lambda m: "refused" in m["state"]["reported"])
    refusal = report["state"]["reported"]["refused"]["chargingLimit"]["1"]
    assert refusal["status"] == "Invalid" and "limit" in refusal["reason"]


async def test_a_2_0_1_station_refuses_limits_with_the_reason(
    bridge: Bridge,
    open_station: OpenStation,  # noqa: F811  # the imported fixture, by its name
    twin: RunningTwin,
    watcher: MqttWatcher,
) -> None:
    station = await open_station()
    await twin.wait_reported(station.id, lambda r: r.get("config"))
    desired = {"chargingLimit": limit(16.0)}
    watcher.publish(bridge.topics.shadow(station.id, "update"), {"state": {"desired": desired}})
    reported = await twin.wait_reported(
        station.id, lambda r: r.get("refused", {}).get("chargingLimit", {}).get("1")
    )
    refusal = reported["refused"]["chargingLimit"]["1"]
    assert refusal["status"] == "NotSupported"
    assert refusal["reason"] == "charging limits are not built for OCPP 2.0.1 yet"
    assert not [action for action, _ in station.calls if "ChargingProfile" in action]


async def test_a_transaction_under_its_tx_default_needs_no_call(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    delta_topic = bridge.topics.shadow(charger.charger_id, "update", "delta")
    watcher.publish(
        delta_topic, delta({"chargingLimit": limit(10.0)}, {"chargingLimit": limit(10.0)})
    )
    call = await charger.next_call()
    assert call[3]["csChargingProfiles"]["chargingProfilePurpose"] == "TxDefaultProfile"
    await charger.reply(call, {"status": "Accepted"})
    start = {"connectorId": 1, "idTag": "TAG-1", "meterStart": 0, "timestamp": iso_time(T0)}
    transaction_id = (await charger.result("StartTransaction", start))["transactionId"]
    with pytest.raises(TimeoutError):
        await charger.next_call(timeout=0.5)
    # Its TxDefault was never replaced by a TxProfile: nothing to set again after it.
    stop = {"transactionId": transaction_id, "meterStop": 10, "timestamp": iso_time(T0 + 30)}
    await charger.result("StopTransaction", stop)
    with pytest.raises(TimeoutError):
        await charger.next_call(timeout=0.5)
