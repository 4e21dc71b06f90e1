"""Usage of the chargers over a period, shaped for charts: energy and sessions per local
day, session starts by hour of week (the peak times), and utilization per charger.

Pure functions over :class:`~fleet.sessions.Session` records, so every figure is worked by
hand in the tests. Definitions (docs/monitoring.md, "Usage"):

* a session belongs to the local day and hour in which it **started**, and only sessions
  that started in ``[start, end)`` count; its energy is ``meter_stop - meter_start``, so a
  session still open has none yet;
* utilization of a charger = charging time / (ports x period), where charging time is each
  session's ``[start, stop)`` cut to the period (an open session charges until the
  period's end, as in :mod:`fleet.kpis`), and ports are the charger's connectors (not 0),
  at least one. Unlike the KPI's utilization it does not subtract outage time, so it needs
  no time-series store and reads the same for every charger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fleet.sessions import Session

DAYS_OF_WEEK = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# A period is at most 366 days (and a second); its first and last days may be partial, and
# a change of the clocks may push its end past one more midnight.
MAX_DAYS = 369


def local_days(start: float, end: float, zone: ZoneInfo) -> list[date]:
    """Every local calendar day that ``[start, end)`` touches, in order."""
    if end <= start:
        return []
    first = datetime.fromtimestamp(start, zone).date()
    last = datetime.fromtimestamp(end - 1e-6, zone).date()
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise ValueError(f"a period of {count} days is longer than {MAX_DAYS}")
    return [first + timedelta(days=i) for i in range(count)]


def _started_in(sessions: Sequence[Session], start: float, end: float) -> list[Session]:
    return [s for s in sessions if start <= s.started_at < end]


def per_day(
    sessions: Sequence[Session], start: float, end: float, zone: ZoneInfo
) -> list[dict[str, Any]]:
    """One row per local day of the period, days without a session included (a chart's
    x axis must not skip them): ``date``, ``sessions`` started and ``energyKwh``."""
    days = local_days(start, end, zone)
    index = {day: i for i, day in enumerate(days)}
    counts = [0] * len(days)
    energy = [0.0] * len(days)
    for session in _started_in(sessions, start, end):
        i = index[datetime.fromtimestamp(session.started_at, zone).date()]
        counts[i] += 1
        energy[i] += session.energy_kwh or 0.0
    return [
        {"date": day.isoformat(), "sessions": counts[i], "energyKwh": round(energy[i], 3)}
        for i, day in enumerate(days)
    ]


def hour_of_week(
    sessions: Sequence[Session], start: float, end: float, zone: ZoneInfo
) -> list[list[int]]:
    """Session starts as a 7 x 24 matrix: rows Monday..Sunday, columns local hours 0..23."""
    matrix = [[0] * 24 for _ in DAYS_OF_WEEK]
    for session in _started_in(sessions, start, end):
        local = datetime.fromtimestamp(session.started_at, zone)
        matrix[local.weekday()][local.hour] += 1
    return matrix


def charging_seconds(session: Session, start: float, end: float) -> float:
    """The part of the session's ``[start, stop)`` inside the period (open: until ``end``)."""
    lo = max(session.started_at, start)
    hi = min(session.stopped_at if session.stopped_at is not None else end, end)
    return max(0.0, hi - lo)


def per_charger(
    sessions: Sequence[Session],
    ports: Mapping[str, int],
    start: float,
    end: float,
) -> list[dict[str, Any]]:
    """Per charger of ``ports`` (charger id → its number of connectors) and any charger a
    session names: ``sessions`` started and ``energyKwh`` in the period, ``chargingHours``
    and ``utilization`` (0..1, see the module's definition), by charger id."""
    period = end - start
    seconds: dict[str, float] = {c: 0.0 for c in ports}
    started: dict[str, int] = {c: 0 for c in ports}
    energy: dict[str, float] = {c: 0.0 for c in ports}
    connectors: dict[str, set[int]] = {c: set() for c in ports}
    for session in sessions:
        charger = session.charger_id
        seconds[charger] = seconds.get(charger, 0.0) + charging_seconds(session, start, end)
        connectors.setdefault(charger, set()).add(session.connector_id)
        started.setdefault(charger, 0)
        energy.setdefault(charger, 0.0)
        if start <= session.started_at < end:
            started[charger] += 1
            energy[charger] += session.energy_kwh or 0.0
    rows = []
    for charger in sorted(seconds):
        count = max(1, ports.get(charger, 0), len(connectors[charger] - {0}))
        available = count * period
        rows.append(
            {
                "chargerId": charger,
                "ports": count,
                "sessions": started[charger],
                "energyKwh": round(energy[charger], 3),
                "chargingHours": round(seconds[charger] / 3600, 4),
                "utilization": round(seconds[charger] / available, 6) if available > 0 else None,
            }
        )
    return rows


def usage(
    sessions: Sequence[Session],
    ports: Mapping[str, int],
    start: float,
    end: float,
    *,
    timezone: str = "UTC",
) -> dict[str, Any]:
    """Everything the usage charts draw, for the chargers of ``ports``."""
    zone = ZoneInfo(timezone)
    days = per_day(sessions, start, end, zone)
    chargers = per_charger(sessions, ports, start, end)
    total_ports = sum(c["ports"] for c in chargers)
    charging = sum(charging_seconds(s, start, end) for s in sessions)
    available = total_ports * (end - start)
    return {
        "sessions": sum(d["sessions"] for d in days),
        "energyKwh": round(sum(d["energyKwh"] for d in days), 3),
        "utilization": round(charging / available, 6) if available > 0 else None,
        "days": days,
        "hourOfWeek": {
            "days": list(DAYS_OF_WEEK),
            "sessionsStarted": hour_of_week(sessions, start, end, zone),
        },
        "chargers": chargers,
    }
