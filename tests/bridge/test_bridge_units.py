"""Pure logic: the token bucket, timestamps, sampled-value defaults, config values."""

from __future__ import annotations

import pytest

from bridge.limits import FloodGuard, FloodLimit, TokenBucket
from bridge.reconcilers import config_text
from bridge.reports import sampled_value
from bridge.times import iso_time, parse_timestamp


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, capacity=5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now = 0.1  # one token back
    assert [bucket.take(), bucket.take()] == [True, False]


def test_flood_guard_closes_only_a_persistent_flood() -> None:
    clock = Clock()
    guard = FloodGuard(FloodLimit(rate=10, burst=2, grace=1.0, quiet=0.5), clock=clock)
    assert guard.admit() and guard.admit()
    assert not guard.admit() and not guard.exhausted
    # Flooding at 100/s: a refilled token now and then does not forgive it.
    for step in range(1, 151):
        clock.now = step / 100
        guard.admit()
    assert guard.exhausted
    # A quiet second later it is forgiven.
    clock.now += 2.0
    assert guard.admit() and not guard.exhausted


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2025-03-01T10:00:00Z", 1740823200.0),
        ("2025-03-01T10:00:00.500Z", 1740823200.5),
        ("2025-03-01T11:00:00+01:00", 1740823200.0),
        ("2025-03-01T10:00:00", 1740823200.0),
    ],
)
def test_ocpp_date_times_parse_to_epoch_seconds(text: str, epoch: float) -> None:
    assert parse_timestamp(text) == epoch


def test_a_bad_date_time_is_none() -> None:
    assert parse_timestamp("yesterday") is None
    assert iso_time(1740823200.0) == "2025-03-01T10:00:00.000Z"


def test_sampled_value_defaults_follow_ocpp_16() -> None:
    assert sampled_value({"value": "12"})["unit"] == "Wh"
    assert sampled_value({"value": "50", "measurand": "Frequency"})["unit"] is None
    signed = sampled_value({"value": "abc==", "format": "SignedData"})
    assert signed["value"] is None and signed["signedData"] == "abc=="
    assert sampled_value({"value": "n/a"})["raw"] == "n/a"


def test_config_values_become_ocpp_strings() -> None:
    assert [config_text(v) for v in (True, 60, 1.5, "x", {"a": 1})] == [
        "true",
        "60",
        "1.5",
        "x",
        None,
    ]
