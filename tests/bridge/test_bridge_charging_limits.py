"""Desired charging limits become SetChargingProfile calls (bridge.charging_limits), over a
real socket: TxProfile for a running transaction, TxDefault again after it, a charger that
does not answer, removal by profile id; the same in the OCPP 2.0.1 shapes for a station
that is the ``ocpp`` library's ``v201.ChargePoint`` (it checks every request against the
official schemas)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from conftest import PASSWORD, MqttWatcher, OpenCharger, RunningTwin, basic, url_of
from ocpp.routing import on
from ocpp.v201 import call, call_result
from test_bridge_ocpp201 import OCPP201, Station
from websockets.asyncio.client import connect

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


class ProfileStation(Station):
    """The library's 2.0.1 station (it checks every request against the official schemas)
    that answers SetChargingProfile as ``profile_answer`` says and keeps what it got."""

    def __init__(self, charger_id: str, ws: Any) -> None:
        super().__init__(charger_id, ws)
        self.profile_answer: dict[str, Any] = {"status": "Accepted"}
        self.profiles: list[dict[str, Any]] = []
        self.cleared: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    @on("SetChargingProfile")
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any]) -> Any:
        self.profiles.append({"evse_id": evse_id, **charging_profile})
        self.changed.set()
        return call_result.SetChargingProfile(**self.profile_answer)

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **fields: Any) -> Any:
        self.cleared.append(fields)
        self.changed.set()
        return call_result.ClearChargingProfile(status="Accepted")

    async def until(self, check: Callable[[], Any], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()


async def open_profile_station(
    bridge: Bridge, stack: contextlib.AsyncExitStack, charger_id: str | None = None
) -> ProfileStation:
    """A registered station, booted; ``charger_id``: the same station again, reconnected
    without a boot (the bridge knows it booted before)."""
    reconnect = charger_id is not None
    charger_id = charger_id or f"cs-{uuid.uuid4().hex[:10]}"
    assert bridge.server is not None
    if not reconnect:
        await bridge.server.registry.register(charger_id, PASSWORD)
    ws = await stack.enter_async_context(
        connect(
            url_of(bridge, charger_id),
            subprotocols=[OCPP201],  # type: ignore[list-item]
            additional_headers=basic(charger_id, PASSWORD),
            ping_interval=None,
        )
    )
    station = ProfileStation(charger_id, ws)
    task = asyncio.get_running_loop().create_task(station.start())
    stack.callback(task.cancel)
    if reconnect:
        return station
    assert (await station.boot()).status == "Pending"
    async with asyncio.timeout(10):
        await station.accepted.wait()
    return station


TRIGGERS = {"Started": "CablePluggedIn", "Updated": "MeterValuePeriodic"}


def transaction_event(kind: str, seq_no: int, transaction_id: str) -> Any:
    return call.TransactionEvent(
        event_type=kind,
        timestamp=iso_time(time.time()),
        trigger_reason=TRIGGERS.get(kind, "EVCommunicationLost"),
        seq_no=seq_no,
        transaction_info={"transaction_id": transaction_id},
        evse={"id": 1, "connector_id": 1},
    )


def refused_201(reported: dict[str, Any]) -> dict[str, Any]:
    return dict((reported.get("refused") or {}).get("chargingLimit") or {})


def confirmed_201(reported: dict[str, Any], slot: str) -> dict[str, Any]:
    section = reported.get("chargingLimit") or {}
    if slot == "failsafe":
        return dict(section.get("failsafe") or {})
    return dict((section.get("connectors") or {}).get(slot) or {})


async def test_a_2_0_1_station_gets_its_limits_as_2_0_1_profiles(
    bridge: Bridge, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        station = await open_profile_station(bridge, stack)
        cid = station.id
        update = bridge.topics.shadow(cid, "update")
        desired = {"unit": "A", "failsafe": {"limit": 32.0, "phases": 3}, **limit(16.04)}
        watcher.publish(update, {"state": {"desired": {"chargingLimit": desired}}})
        reported = await twin.wait_reported(
            cid, lambda r: confirmed_201(r, "1") and confirmed_201(r, "failsafe")
        )
        # Keys as the library hands them (snake_case), after its schema check.
        failsafe, default = sorted(station.profiles, key=lambda p: p["evse_id"])
        assert failsafe == {
            "evse_id": 0,
            "id": 1000,
            "stack_level": 0,
            "charging_profile_purpose": "ChargingStationMaxProfile",
            "charging_profile_kind": "Absolute",
            "charging_schedule": [
                {
                    "id": 1000,
                    "charging_rate_unit": "A",
                    "charging_schedule_period": [
                        {"start_period": 0, "limit": 32.0, "number_phases": 3}
                    ],
                }
            ],
        }
        assert default["evse_id"] == 1 and default["id"] == 1001
        assert default["charging_profile_purpose"] == "TxDefaultProfile"
        assert default["stack_level"] == 1 and "transaction_id" not in default
        assert default["charging_schedule"][0]["charging_schedule_period"][0]["limit"] == 16.0
        assert confirmed_201(reported, "failsafe")["purpose"] == "ChargingStationMaxProfile"
        assert confirmed_201(reported, "1")["limit"] == 16.04
        assert confirmed_201(reported, "1")["purpose"] == "TxDefaultProfile"

        # A transaction runs on EVSE 1: a new value is a TxProfile naming it (a string).
        transaction_id = f"tx-{uuid.uuid4().hex[:8]}"
        await station.call(transaction_event("Started", 0, transaction_id))
        watcher.publish(update, {"state": {"desired": {"chargingLimit": limit(10.0)}}})
        reported = await twin.wait_reported(
            cid, lambda r: confirmed_201(r, "1").get("purpose") == "TxProfile"
        )
        assert confirmed_201(reported, "1")["transactionId"] == transaction_id
        tx_profile = station.profiles[-1]
        assert tx_profile["charging_profile_purpose"] == "TxProfile"
        assert tx_profile["transaction_id"] == transaction_id and tx_profile["id"] == 1001

        # The station drops a TxProfile with its transaction: the TxDefault goes back.
        sent = len(station.profiles)
        await station.call(transaction_event("Ended", 1, transaction_id))
        await station.until(lambda: len(station.profiles) > sent)
        assert station.profiles[-1]["charging_profile_purpose"] == "TxDefaultProfile"
        await twin.wait_reported(
            cid, lambda r: confirmed_201(r, "1").get("purpose") == "TxDefaultProfile"
        )

        # Rejected with a reason code: recorded as for 1.6, with the station's reason.
        station.profile_answer = {
            "status": "Rejected",
            "status_info": {"reason_code": "InvalidSchedule"},
        }
        watcher.publish(update, {"state": {"desired": {"chargingLimit": limit(6.0)}}})
        reported = await twin.wait_reported(cid, lambda r: "1" in refused_201(r))
        assert refused_201(reported)["1"]["status"] == "Rejected"
        assert refused_201(reported)["1"]["reason"] == "InvalidSchedule"
        assert refused_201(reported)["1"]["value"] == {"unit": "A", "limit": 6.0, "phases": 3}

        # Removed: cleared by profile id (2.0.1 chargingProfileId) and gone from reported.
        watcher.publish(update, {"state": {"desired": {"chargingLimit": {"connectors": None}}}})
        reported = await twin.wait_reported(
            cid, lambda r: not confirmed_201(r, "1") and "1" not in refused_201(r)
        )
        await station.until(lambda: station.cleared)
        assert station.cleared == [{"charging_profile_id": 1001}]
        assert confirmed_201(reported, "failsafe")["limit"] == 32.0


async def test_a_2_0_1_transaction_seen_after_a_reconnect_gets_a_tx_profile(
    bridge: Bridge, twin: RunningTwin, watcher: MqttWatcher
) -> None:
    async with contextlib.AsyncExitStack() as first:
        station = await open_profile_station(bridge, first)
        cid = station.id
        transaction_id = f"tx-{uuid.uuid4().hex[:8]}"
        await station.call(transaction_event("Started", 0, transaction_id))
    await twin.wait_reported(cid, lambda r: not r.get("connection", {}).get("online"))
    async with contextlib.AsyncExitStack() as second:
        station = await open_profile_station(bridge, second, cid)
        await twin.wait_reported(cid, lambda r: r.get("connection", {}).get("online"))
        # The first event of the running transaction on the new connection says where it
        # runs (1.6 cannot tell this until the next StartTransaction).
        await station.call(transaction_event("Updated", 1, transaction_id))
        update = bridge.topics.shadow(cid, "update")
        watcher.publish(update, {"state": {"desired": {"chargingLimit": limit(12.0)}}})
        reported = await twin.wait_reported(cid, lambda r: confirmed_201(r, "1"))
        assert confirmed_201(reported, "1")["purpose"] == "TxProfile"
        assert confirmed_201(reported, "1")["transactionId"] == transaction_id
        assert station.profiles[-1]["transaction_id"] == transaction_id


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
