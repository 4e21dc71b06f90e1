"""The rules of plausible charger times and usable meter values (pure)."""

from __future__ import annotations

import math

from bridge.reports import sampled_value
from bridge.times import MAX_AHEAD_S, MAX_QUEUED_S, ChargerClock, iso_time, judge


def test_plausible_means_a_little_ahead_or_queued_since_the_connection_started() -> None:
    connected, received = 1_700_000_000.0, 1_700_003_600.0
    assert judge(iso_time(received + MAX_AHEAD_S - 1), received, connected).kept
    assert judge(iso_time(connected - MAX_QUEUED_S + 1), received, connected).kept
    assert judge(iso_time(received + MAX_AHEAD_S + 1), received, connected).status == "ahead"
    assert judge(iso_time(connected - MAX_QUEUED_S - 1), received, connected).status == "behind"
    assert judge("9999-12-31T23:59:59-05:00", received, connected).status in {"ahead", "unreadable"}
    assert judge("0001-01-01T00:00:00+01:00", received, connected).status in {
        "behind",
        "unreadable",
    }
    assert judge("yesterday", received, connected).status == "unreadable"
    assert judge(None, received, connected).at == received


def test_non_finite_sampled_values_are_null_with_their_text() -> None:
    for text in ("NaN", "-Infinity", "1e400"):
        out = sampled_value({"value": text})
        assert out["value"] is None and out["raw"] == text
    assert math.isclose(sampled_value({"value": "1e300"})["value"], 1e300)


def test_state_stamps_never_go_back_and_a_boot_forgets_them() -> None:
    clock = ChargerClock("cp", 1000.0, lambda skew, at: None)
    assert clock.state_stamp("1", 900.0) == 1000.0  # not before the connection started
    later = clock.state_stamp("1", 2000.0)
    assert later == 2000.0
    assert clock.state_stamp("1", 1500.0) > later  # sent later, so newer
    assert clock.state_stamp("2", 1500.0) == 1500.0  # each connector on its own
    reset = clock.reset_state(1800.0)
    assert reset > later
    assert clock.state_stamp("1", 1900.0) > reset
