"""Port uptime (23 CFR 680.116(b)) worked by hand, to the minute.

Every expected figure below is written out as the arithmetic a reviewer can redo.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleet.uptime import (
    MINUTES_PER_YEAR,
    Cause,
    Exclusion,
    Interval,
    held_states,
    intersect,
    merge,
    out_of_service,
    parse_month,
    parse_quarter,
    port_uptime,
    quarter_bounds,
    subtract,
    twelve_months_ending,
)


def t(text: str) -> float:
    """``"2026-07-31 23:30"`` (UTC) → epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


OUT = frozenset({"Faulted", "Unavailable"})


def test_api_uptime_period_is_the_twelve_months_ending_with_the_month() -> None:
    start, end = twelve_months_ending(2026, 7)
    assert (start, end) == (t("2025-08-01 00:00"), t("2026-08-01 00:00"))
    assert (end - start) / 60 == MINUTES_PER_YEAR  # 365 days x 1440
    # A period holding 29 February 2028 is 366 days: 366 x 1440 = 527,040 minutes.
    start, end = twelve_months_ending(2028, 12)
    assert (end - start) / 60 == 527_040
    assert quarter_bounds(2026, 3) == (t("2026-07-01 00:00"), t("2026-10-01 00:00"))
    assert parse_month("2026-01") == (2026, 1)
    assert parse_quarter("2026Q3") == (2026, 3)
    for bad in ("2026-13", "2026-1", "26-01", "2026/01", ""):
        with pytest.raises(ValueError):
            parse_month(bad)
    for bad in ("2026Q5", "2026-Q3", "Q3"):
        with pytest.raises(ValueError):
            parse_quarter(bad)


def test_api_uptime_interval_algebra() -> None:
    a = [Interval(0, 10), Interval(5, 20), Interval(30, 40), Interval(40, 45)]
    assert merge(a) == [Interval(0, 20), Interval(30, 45)]
    assert intersect(a, [Interval(15, 35)]) == [Interval(15, 20), Interval(30, 35)]
    assert subtract(a, [Interval(15, 35)]) == [Interval(0, 15), Interval(35, 45)]
    assert subtract([Interval(0, 10)], [Interval(0, 10)]) == []


def test_api_uptime_no_outage_is_one_hundred_percent() -> None:
    start, end = twelve_months_ending(2026, 7)
    figure = port_uptime("CP-1/1", [], [], start, end)
    assert figure.uptime == 100.0 and figure.outages == ()


def test_api_uptime_outage_spanning_a_month_boundary() -> None:
    # Faulted 2026-07-31 23:30 → 2026-08-01 01:00 (90 minutes). The July report's period
    # ends at 2026-08-01 00:00: 30 minutes fall in it, the other 60 in August's period.
    changes = [(t("2026-07-31 23:30"), "Faulted"), (t("2026-08-01 01:00"), "Available")]
    july = twelve_months_ending(2026, 7)
    causes = out_of_service(changes, "Available", *july, OUT)
    figure = port_uptime("CP-1/1", causes, [], *july)
    assert figure.outage_minutes == 30
    # μ = (525,600 - 30) / 525,600 x 100 = 99.994292237...
    assert figure.uptime == pytest.approx((525_600 - 30) / 525_600 * 100)
    assert [r.outage_duration for r in figure.outages] == [30]
    assert figure.outages[0].open  # still out when July's period ended

    august = twelve_months_ending(2026, 8)
    causes = out_of_service(changes, "Available", *august, OUT)
    figure = port_uptime("CP-1/1", causes, [], *august)
    # August's period (2025-09-01 → 2026-09-01) holds the whole 90 minutes.
    assert figure.outage_minutes == 90
    assert figure.uptime == pytest.approx((525_600 - 90) / 525_600 * 100)
    assert not figure.outages[0].open


def test_api_uptime_overlapping_outage_and_exclusion() -> None:
    # Unavailable 10:00 → 14:00 (240 min); scheduled maintenance 12:00 → 16:00.
    # Excluded = outage ∩ maintenance = 12:00 → 14:00 = 120 min; the window's last two
    # hours are not outage and exclude nothing.  μ = (525,600 - (240 - 120)) / 525,600.
    period = twelve_months_ending(2026, 3)
    changes = [(t("2026-03-10 10:00"), "Unavailable"), (t("2026-03-10 14:00"), "Available")]
    causes = out_of_service(changes, "Available", *period, OUT)
    window = Exclusion(t("2026-03-10 12:00"), t("2026-03-10 16:00"), "scheduled_maintenance")
    figure = port_uptime("CP-1/1", causes, [window], *period)
    assert (figure.outage_minutes, figure.excluded_minutes) == (240, 120)
    assert figure.uptime == pytest.approx((525_600 - 120) / 525_600 * 100)
    rows = [
        (r.outage_duration, r.excluded_outage, r.excluded_outage_reason) for r in figure.outages
    ]
    assert rows == [(120, False, None), (120, True, "scheduled_maintenance")]
    assert figure.outages[0].outage_id != figure.outages[1].outage_id


def test_api_uptime_exclusion_inside_outage_and_overlapping_exclusions() -> None:
    # Faulted 08:00 → 12:00 (240 min). Grid outage 09:00 → 10:00 and vandalism 09:30 →
    # 11:00 overlap each other: excluded = 09:00 → 11:00 = 120 min, the earlier one naming
    # the overlap (09:00-10:00 grid, 10:00-11:00 vandalism). Counted: 08-09 and 11-12.
    period = twelve_months_ending(2026, 3)
    causes = [Cause(t("2026-03-02 08:00"), t("2026-03-02 12:00"), "Faulted")]
    exclusions = [
        Exclusion(t("2026-03-02 09:30"), t("2026-03-02 11:00"), "vandalism"),
        Exclusion(t("2026-03-02 09:00"), t("2026-03-02 10:00"), "utility_interruption"),
    ]
    figure = port_uptime("CP-1/1", causes, exclusions, *period)
    assert (figure.outage_minutes, figure.excluded_minutes) == (240, 120)
    assert [(r.outage_duration, r.excluded_outage_reason) for r in figure.outages] == [
        (60, None),
        (60, "utility_interruption"),
        (60, "vandalism"),
        (60, None),
    ]
    assert figure.uptime == pytest.approx((525_600 - 120) / 525_600 * 100)


def test_api_uptime_outage_still_open_at_the_period_end() -> None:
    # Faulted since 2026-06-30 22:00 and never back: June's period ends 2026-07-01 00:00,
    # so 120 minutes count, and the row says it is still open.
    period = twelve_months_ending(2026, 6)
    causes = out_of_service([(t("2026-06-30 22:00"), "Faulted")], "Available", *period, OUT)
    figure = port_uptime("CP-1/1", causes, [], *period)
    assert figure.outage_minutes == 120
    assert figure.outages[0].open and figure.outages[0].end == period[1]
    # Faulted before the period began (initial state) and all along: 0 %.
    causes = out_of_service([], "Faulted", *period, OUT)
    assert port_uptime("CP-1/1", causes, [], *period).uptime == 0.0


def test_api_uptime_leap_year() -> None:
    # Period for 2028-12: 2028-01-01 → 2029-01-01, 527,040 minutes (29 Feb 2028 included).
    # Faulted the whole of 29 February: 1,440 minutes.
    # μ = (527,040 - 1,440) / 527,040 x 100 = 99.7267759...
    period = twelve_months_ending(2028, 12)
    changes = [(t("2028-02-29 00:00"), "Faulted"), (t("2028-03-01 00:00"), "Available")]
    figure = port_uptime("CP-1/1", out_of_service(changes, "Available", *period, OUT), [], *period)
    assert figure.period_minutes == 527_040
    assert figure.outage_minutes == 1_440
    assert figure.uptime == pytest.approx(525_600 / 527_040 * 100)


def test_api_uptime_several_ports_and_charger_wide_causes() -> None:
    # Port 1 Faulted 10:00-11:00; the charger offline 10:30-12:00 (every port out);
    # port 2 Available throughout. Port 1: union 10:00-12:00 = 120 min, one outage
    # named by its first cause. Port 2: 90 min offline.
    period = twelve_months_ending(2026, 5)
    offline = out_of_service(
        [(t("2026-05-05 10:30"), "offline"), (t("2026-05-05 12:00"), "online")],
        "online",
        *period,
        frozenset({"offline"}),
        cause="Offline",
    )
    port1 = out_of_service(
        [(t("2026-05-05 10:00"), "Faulted"), (t("2026-05-05 11:00"), "Available")],
        "Available",
        *period,
        OUT,
    )
    port2 = out_of_service([], "Available", *period, OUT)
    one = port_uptime("CP-1/1", port1 + offline, [], *period)
    two = port_uptime("CP-1/2", port2 + offline, [], *period)
    assert [(r.cause, r.outage_duration) for r in one.outages] == [("Faulted", 120)]
    assert [(r.cause, r.outage_duration) for r in two.outages] == [("Offline", 90)]
    assert one.uptime == pytest.approx((525_600 - 120) / 525_600 * 100)
    assert two.uptime == pytest.approx((525_600 - 90) / 525_600 * 100)


def test_api_uptime_held_states_with_unknown_start() -> None:
    # Nothing known before the first status: that time is not counted as outage.
    changes = [(100.0, "Faulted"), (160.0, "Available"), (200.0, "Unavailable")]
    assert held_states(changes, None, 0, 300) == [
        (Interval(100, 160), "Faulted"),
        (Interval(160, 200), "Available"),
        (Interval(200, 300), "Unavailable"),
    ]
    # Changes before the period start only set the state held at the start.
    assert held_states([(-50.0, "Faulted"), (30.0, "Available")], None, 0, 60) == [
        (Interval(0, 30), "Faulted"),
        (Interval(30, 60), "Available"),
    ]
