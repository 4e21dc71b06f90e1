"""The usage figures of ``fleet.usage``, worked by hand (pure: no database, no broker).

Period 2026-10-05 00:00 .. 2026-10-08 00:00 UTC (3 days, 72 h; 5 October is a Monday):

* S1 CP-1/1 Mon 05 18:00-19:00, 10 kWh
* S2 CP-1/2 Tue 06 08:00-08:30, 5 kWh
* S3 CP-2/1 Wed 07 23:30, still open (no energy yet; charges 30 min up to the period's end)
* S4 CP-1/1 Sun 04 23:00 - Mon 05 01:00, 4 kWh: started before the period, so it is not a
  session of the period, but its hour inside the period is charging time

CP-1 has 2 ports, CP-2 1, CP-3 2 and no session.
CP-1 charges 1 + 0.5 + 1 = 2.5 h of 2 x 72 = 144 h; CP-2 0.5 h of 72 h; fleet 3 h of 360 h.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from fleet.sessions import Session
from fleet.usage import hour_of_week, local_days, per_charger, per_day, usage


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def session(
    number: int, charger: str, connector: int, start: str, stop: str | None, wh: int
) -> Session:
    return Session(
        number, charger, connector, "TAG", 1000, t(start),
        None if stop is None else 1000 + wh, None if stop is None else t(stop),
        None if stop is None else "Local",
    )  # fmt: skip


S1 = session(1, "CP-1", 1, "2026-10-05 18:00", "2026-10-05 19:00", 10_000)
S2 = session(2, "CP-1", 2, "2026-10-06 08:00", "2026-10-06 08:30", 5_000)
S3 = session(3, "CP-2", 1, "2026-10-07 23:30", None, 0)
S4 = session(4, "CP-1", 1, "2026-10-04 23:00", "2026-10-05 01:00", 4_000)
SESSIONS = [S1, S2, S3, S4]
START, END = t("2026-10-05 00:00"), t("2026-10-08 00:00")
PORTS = {"CP-1": 2, "CP-2": 1, "CP-3": 2}
UTC_ZONE = ZoneInfo("UTC")


def test_per_day_counts_each_session_on_the_day_it_started() -> None:
    assert per_day(SESSIONS, START, END, UTC_ZONE) == [
        {"date": "2026-10-05", "sessions": 1, "energyKwh": 10.0},
        {"date": "2026-10-06", "sessions": 1, "energyKwh": 5.0},
        {"date": "2026-10-07", "sessions": 1, "energyKwh": 0.0},  # open: no energy yet
    ]


def test_per_day_keeps_days_without_sessions_and_uses_local_days() -> None:
    # New York is UTC-4 in October: the period is 4 Oct 20:00 .. 7 Oct 20:00 local.
    rows = per_day(SESSIONS, START, END, ZoneInfo("America/New_York"))
    assert [(r["date"], r["sessions"], r["energyKwh"]) for r in rows] == [
        ("2026-10-04", 0, 0.0),  # S4 started before the period
        ("2026-10-05", 1, 10.0),  # S1 at 14:00 local
        ("2026-10-06", 1, 5.0),  # S2 at 04:00 local
        ("2026-10-07", 1, 0.0),  # S3 at 19:30 local
    ]


def test_a_day_of_25_hours_at_the_end_of_summer_time_is_one_day() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # clocks go back on Sunday 25 October 2026
    lo = datetime(2026, 10, 25, tzinfo=berlin).timestamp()
    hi = datetime(2026, 10, 26, tzinfo=berlin).timestamp()
    assert hi - lo == 25 * 3600
    assert local_days(lo, hi, berlin) == [date(2026, 10, 25)]
    assert local_days(lo, lo, berlin) == []


def test_a_period_longer_than_a_year_and_a_day_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than"):
        local_days(t("2025-01-01 00:00"), t("2026-01-06 00:00"), UTC_ZONE)
    # 366 days and a second from 23:30 local, over a change of the clocks, is 368 days.
    berlin = ZoneInfo("Europe/Berlin")
    lo = datetime(2026, 3, 28, 23, 30, tzinfo=berlin).timestamp()  # winter to summer time
    assert len(local_days(lo, lo + 366 * 86400 + 1, berlin)) == 368


def test_hour_of_week_counts_starts_monday_first_in_local_hours() -> None:
    matrix = hour_of_week(SESSIONS, START, END, UTC_ZONE)
    assert len(matrix) == 7 and {len(row) for row in matrix} == {24}
    hits = {(d, h): n for d, row in enumerate(matrix) for h, n in enumerate(row) if n}
    assert hits == {(0, 18): 1, (1, 8): 1, (2, 23): 1}  # S4 (Sunday 23:00) is outside
    local = hour_of_week(SESSIONS, START, END, ZoneInfo("America/New_York"))
    hits = {(d, h): n for d, row in enumerate(local) for h, n in enumerate(row) if n}
    assert hits == {(0, 14): 1, (1, 4): 1, (2, 19): 1}


def test_utilization_per_charger_is_charging_time_over_ports_times_period() -> None:
    rows = {r["chargerId"]: r for r in per_charger(SESSIONS, PORTS, START, END)}
    assert rows["CP-1"] == {
        "chargerId": "CP-1", "ports": 2, "sessions": 2, "energyKwh": 15.0,
        "chargingHours": 2.5, "utilization": round(2.5 / 144, 6),
    }  # fmt: skip
    assert rows["CP-2"] == {
        "chargerId": "CP-2", "ports": 1, "sessions": 1, "energyKwh": 0.0,
        "chargingHours": 0.5, "utilization": round(0.5 / 72, 6),
    }  # fmt: skip
    assert rows["CP-3"]["utilization"] == 0.0 and rows["CP-3"]["sessions"] == 0
    assert list(rows) == ["CP-1", "CP-2", "CP-3"]


def test_ports_are_at_least_the_connectors_sessions_used_and_at_least_one() -> None:
    rows = {r["chargerId"]: r for r in per_charger(SESSIONS, {"CP-1": 0}, START, END)}
    # No shadow told CP-1's connectors: its sessions used 1 and 2. CP-2 is not in the
    # mapping but a session names it.
    assert (rows["CP-1"]["ports"], rows["CP-2"]["ports"]) == (2, 1)
    lone = per_charger([], {"CP-9": 0}, START, END)
    assert lone == [{"chargerId": "CP-9", "ports": 1, "sessions": 0, "energyKwh": 0.0,
                     "chargingHours": 0.0, "utilization": 0.0}]  # fmt: skip


def test_usage_totals_and_shape() -> None:
    figures = usage(SESSIONS, PORTS, START, END)
    assert (figures["sessions"], figures["energyKwh"]) == (3, 15.0)
    assert figures["utilization"] == round(3 / 360, 6)
    assert figures["hourOfWeek"]["days"][0] == "Monday"
    assert sum(map(sum, figures["hourOfWeek"]["sessionsStarted"])) == 3
    assert [d["date"] for d in figures["days"]] == ["2026-10-05", "2026-10-06", "2026-10-07"]
    empty = usage([], {}, START, END)
    assert empty["utilization"] is None and empty["chargers"] == []
