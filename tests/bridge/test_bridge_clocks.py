"""Charger clocks are judged at the edge (bridge.times): a time that is not plausible is
replaced by the receipt time, reported as a skew, and never costs a status or a point."""

from __future__ import annotations

import time
from typing import Any

from conftest import MqttWatcher, OpenCharger, RunningTwin, eventually

from bridge import Bridge
from bridge.times import iso_time, parse_timestamp


def status(connector: int, state: str, at: str, error: str = "NoError") -> dict[str, Any]:
    return {"connectorId": connector, "errorCode": error, "status": state, "timestamp": at}


def connector_status(connector: str) -> Any:
    return lambda r: ((r.get("connectors") or {}).get(connector) or {}).get("status")


async def test_a_status_from_a_clock_far_ahead_is_kept_with_receipt_time(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher, twin: RunningTwin
) -> None:
    charger = await open_charger()
    await charger.boot()
    before = time.time()
    ahead = iso_time(before + 600)
    await charger.result("StatusNotification", status(1, "Faulted", ahead, "GroundFailure"))
    reported = await twin.wait_reported(
        charger.charger_id, lambda r: connector_status("1")(r) == "Faulted"
    )
    assert before <= reported["connectors"]["1"]["timestamp"] <= time.time()
    skew = reported["connection"]["clockSkew"]
    assert skew["status"] == "ahead" and 590 < skew["seconds"] < 610
    assert (skew["action"], skew["value"]) == ("StatusNotification", ahead)
    event = await watcher.wait_for(bridge.topics.events(charger.charger_id, "clockSkew"))
    assert event["status"] == "ahead"


async def test_a_status_from_a_reset_clock_is_not_ignored_as_old(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher, twin: RunningTwin
) -> None:
    charger = await open_charger()
    await charger.boot()
    await charger.result("StatusNotification", status(1, "Available", iso_time()))
    await twin.wait_reported(charger.charger_id, lambda r: connector_status("1")(r) == "Available")
    # The RTC lost its time: 2000-01-01, older than what the shadow holds.
    reset = "2000-01-01T00:00:00Z"
    await charger.result("StatusNotification", status(1, "Faulted", reset, "OtherError"))
    reported = await twin.wait_reported(
        charger.charger_id, lambda r: connector_status("1")(r) == "Faulted"
    )
    assert reported["connection"]["clockSkew"]["status"] == "behind"

    # The clock is set again: the skew is cleared, and the event says so.
    await charger.result("StatusNotification", status(1, "Available", iso_time()))
    await twin.wait_reported(
        charger.charger_id,
        lambda r: connector_status("1")(r) == "Available" and "clockSkew" not in r["connection"],
    )
    events = bridge.topics.events(charger.charger_id, "clockSkew")
    await watcher.wait_for(events, lambda e: e["status"] == "ok")


async def test_a_later_status_wins_whatever_its_clock_says(
    bridge: Bridge, open_charger: OpenCharger, twin: RunningTwin
) -> None:
    charger = await open_charger()
    await charger.boot()
    now = time.time()
    # Both times plausible, but the second (sent later on the same socket) is earlier.
    await charger.result("StatusNotification", status(2, "Charging", iso_time(now + 30)))
    earlier = iso_time(now - 30)
    await charger.result("StatusNotification", status(2, "Finishing", earlier))
    reported = await twin.wait_reported(
        charger.charger_id, lambda r: connector_status("2")(r) == "Finishing"
    )
    # The charger's time is still what the connector shows.
    assert reported["connectors"]["2"]["timestamp"] == parse_timestamp(earlier)


async def test_meter_values_with_impossible_dates_and_numbers_publish_receipt_time_and_null(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    charger = await open_charger()
    await charger.boot()
    telemetry = bridge.topics.telemetry(charger.charger_id, "meterValues")
    before = time.time()
    dates = ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00", "2262-04-12T00:00:00Z"]
    await charger.result(
        "MeterValues",
        {
            "connectorId": 1,
            "meterValue": [
                {"timestamp": date, "sampledValue": [{"value": value}]}
                for date, value in zip(dates, ["NaN", "Infinity", "1e999"], strict=True)
            ],
        },
    )
    messages = await eventually(lambda: len(watcher.on(telemetry)) == 3 and watcher.on(telemetry))
    for message in messages:
        assert before <= message["timestamp"] <= time.time()
        (value,) = message["values"]
        assert value["value"] is None and value["raw"] in {"NaN", "Infinity", "1e999"}


async def test_a_retried_start_with_a_broken_clock_gets_the_same_transaction(
    open_charger: OpenCharger,
) -> None:
    charger = await open_charger()
    await charger.boot()
    start = {"connectorId": 1, "idTag": "T", "meterStart": 7, "timestamp": "2000-01-01T00:00:00Z"}
    first = await charger.result("StartTransaction", start)
    again = await charger.result("StartTransaction", start)
    assert again["transactionId"] == first["transactionId"]
