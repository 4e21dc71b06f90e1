"""Fleet, site and charger KPIs over a period: sessions, energy, charging time,
utilization, peak usage by hour of week, success rate, and reliability (MTTR, MTBF).

Pure functions over sessions, port uptimes and work orders, so each figure is checked
by hand in the tests. Definitions (docs/monitoring.md):

* utilization = charging time / available time, where available time is each port's
  period minus its outage minutes (excluded or not: an out port cannot be used);
* charging time is each session's ``[start, stop)`` (open sessions: until the period's
  end) cut to the period;
* MTTR (outages) = mean counted outage duration; MTBF = (port time - counted outage
  time) / number of counted outages; MTTR (work orders) = mean open → resolved time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fleet.sessions import Session
from fleet.uptime import PortUptime
from fleet.work_orders import WorkOrder


def kpis(
    sessions: Sequence[Session],
    ports: Sequence[PortUptime],
    orders: Sequence[WorkOrder],
    start: float,
    end: float,
    *,
    timezone: str = "UTC",
) -> dict[str, Any]:
    zone = ZoneInfo(timezone)
    charging_s = 0.0
    by_hour = [[0.0, 0] for _ in range(168)]  # charging seconds, sessions started
    for session in sessions:
        lo, hi = max(session.started_at, start), min(session.stopped_at or end, end)
        if session.started_at >= start:
            slot = _hour_of_week(session.started_at, zone)
            by_hour[slot][1] = int(by_hour[slot][1]) + 1
        if hi <= lo:
            continue
        charging_s += hi - lo
        _spread(lo, hi, zone, by_hour)
    port_ids = {p.port_id for p in ports} | {f"{s.charger_id}/{s.connector_id}" for s in sessions}
    period_s = end - start
    outage_s = sum(p.outage_minutes * 60 for p in ports)
    available_s = max(0.0, len(port_ids) * period_s - outage_s)
    completed = [s for s in sessions if s.stopped_at is not None]
    successful = sum(1 for s in completed if s.successful)
    counted_s = sum(r.end - r.start for p in ports for r in p.outages if not r.excluded_outage)
    failures = sum(_failures(p) for p in ports)
    resolved = [o for o in orders if o.resolved_at is not None]
    peak = max(range(168), key=lambda i: (by_hour[i][0], by_hour[i][1]))
    return {
        "sessions": len(sessions),
        "completedSessions": len(completed),
        "energyKwh": round(sum(s.energy_kwh or 0.0 for s in sessions), 3),
        "chargingHours": round(charging_s / 3600, 4),
        "ports": len(port_ids),
        "availableHours": round(available_s / 3600, 4),
        "utilization": round(charging_s / available_s, 6) if available_s else None,
        "successRate": round(successful / len(completed), 6) if completed else None,
        "averageSessionMinutes": (
            round(sum((s.stopped_at or 0) - s.started_at for s in completed)
                  / 60 / len(completed), 3)
            if completed else None
        ),
        "peakHourOfWeek": _slot(peak) if by_hour[peak][0] or by_hour[peak][1] else None,
        "byHourOfWeek": [
            {**_slot(i), "chargingMinutes": round(by_hour[i][0] / 60, 3),
             "sessionsStarted": int(by_hour[i][1])}
            for i in range(168)
        ],
        "reliability": {
            "outages": failures,
            "outageMinutes": round(counted_s / 60, 3),
            "mttrOutageMinutes": round(counted_s / 60 / failures, 3) if failures else None,
            "mtbfHours": (
                round((len(port_ids) * period_s - counted_s) / 3600 / failures, 3)
                if failures else None
            ),
            "workOrdersResolved": len(resolved),
            "mttrWorkOrderMinutes": (
                round(sum((o.resolved_at or 0) - o.created_at for o in resolved)
                      / 60 / len(resolved), 3)
                if resolved else None
            ),
        },
    }  # fmt: skip


def _failures(port: PortUptime) -> int:
    """Outages with counted minutes; the pieces an exclusion cut one outage into (which
    follow each other without a gap) are one failure."""
    count, previous_end, counted = 0, None, False
    for record in port.outages:
        if record.start != previous_end:
            count += counted
            counted = False
        counted = counted or not record.excluded_outage
        previous_end = record.end
    return count + counted


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _slot(index: int) -> dict[str, Any]:
    return {"dayOfWeek": _DAYS[index // 24], "hour": index % 24}


def _hour_of_week(moment: float, zone: ZoneInfo) -> int:
    local = datetime.fromtimestamp(moment, zone)
    return local.weekday() * 24 + local.hour


def _spread(lo: float, hi: float, zone: ZoneInfo, by_hour: list[list[float]]) -> None:
    """Add ``[lo, hi)`` to the charging seconds of each local hour of week it covers."""
    cursor = lo
    while cursor < hi:
        local = datetime.fromtimestamp(cursor, zone)
        hour_end = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        step_end = min(hi, hour_end.astimezone(UTC).timestamp())
        if step_end <= cursor:  # a DST fold; move on by the remainder of the hour
            step_end = min(hi, cursor + 3600 - local.minute * 60 - local.second)
        by_hour[local.weekday() * 24 + local.hour][0] += step_end - cursor
        cursor = step_end
