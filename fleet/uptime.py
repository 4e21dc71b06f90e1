"""Port uptime as 23 CFR 680.116(b) defines it, as pure functions over time intervals.

    mu = ((525,600 - (T_outage - T_excluded)) / 525,600) * 100

over the previous twelve months, recomputed every month. Kept free of stores and clocks
so every figure can be checked by hand to the minute (tests/api/test_api_uptime_*.py);
:mod:`fleet.outages` feeds it from the connector status history and the exclusions.

Conventions (docs/monitoring.md):

* Times are epoch seconds; intervals are half-open ``[start, end)``.
* 525,600 is the minutes of a 365-day year. A twelve-month period that holds 29 February
  has 527,040 minutes; the denominator is the period's real length, so a port that is
  never out reads 100 % and one that is always out reads 0 % in either case.
* Excluded time counts only where it overlaps outage time: T_excluded is the measure of
  outage ∩ exclusions, never more than T_outage.
* An outage still open at the end of the period is cut at the period's end (and at
  "now" for a period that has not ended yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

MINUTES_PER_YEAR = 525_600

# Reasons outside the operator's control that 23 CFR 680.116(b) lets an operator exclude
# from outage time, plus the hours outside the station's hours of operation.
EXCLUSION_REASONS: dict[str, str] = {
    "utility_interruption": "electric utility service interruption",
    "vehicle_fault": "failure to charge due to the fault of the vehicle",
    "scheduled_maintenance": "scheduled maintenance",
    "vandalism": "vandalism",
    "natural_disaster": "natural disaster",
    "outside_hours_of_operation": "outside the station's identified hours of operation",
}


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """``[start, end)`` in epoch seconds."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True, slots=True)
class Exclusion:
    """Time whose outages do not count against the operator, with the reason why."""

    start: float
    end: float
    reason: str
    source: str = ""  # e.g. "window:<id>" or "exclusion:<id>"


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a port was out during an interval (``Faulted``, ``Unavailable``, ``Offline``...)."""

    start: float
    end: float
    cause: str


@dataclass(frozen=True, slots=True)
class OutageRecord:
    """One row of the outage list (EV-ChART outage fields) behind an uptime figure."""

    outage_id: str
    port_id: str
    start: float
    end: float
    cause: str
    excluded_outage: bool
    excluded_outage_reason: str | None
    open: bool  # still out at the end of the period

    @property
    def outage_duration(self) -> float:
        """Minutes."""
        return (self.end - self.start) / 60


@dataclass(frozen=True, slots=True)
class PortUptime:
    port_id: str
    period_start: float
    period_end: float
    outage_minutes: float
    excluded_minutes: float
    outages: tuple[OutageRecord, ...]

    @property
    def period_minutes(self) -> float:
        return (self.period_end - self.period_start) / 60

    @property
    def uptime(self) -> float:
        """μ in percent."""
        if self.period_minutes <= 0:
            return 100.0
        counted = self.outage_minutes - self.excluded_minutes
        return (self.period_minutes - counted) / self.period_minutes * 100


# --- interval algebra ---------------------------------------------------------------------
def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping, non-empty; touching intervals are joined."""
    out: list[Interval] = []
    for item in sorted(i for i in intervals if i.end > i.start):
        if out and item.start <= out[-1].end:
            if item.end > out[-1].end:
                out[-1] = Interval(out[-1].start, item.end)
        else:
            out.append(item)
    return out


def clip(intervals: Iterable[Interval], start: float, end: float) -> list[Interval]:
    return merge(Interval(max(i.start, start), min(i.end, end)) for i in intervals)


def intersect(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    left, right = merge(a), merge(b)
    out: list[Interval] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start = max(left[i].start, right[j].start)
        end = min(left[i].end, right[j].end)
        if end > start:
            out.append(Interval(start, end))
        if left[i].end < right[j].end:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    cuts = merge(b)
    for item in merge(a):
        pos = item.start
        for cut in cuts:
            if cut.end <= pos or cut.start >= item.end:
                continue
            if cut.start > pos:
                out.append(Interval(pos, cut.start))
            pos = max(pos, cut.end)
        if pos < item.end:
            out.append(Interval(pos, item.end))
    return out


def total_seconds(intervals: Iterable[Interval]) -> float:
    return sum(i.seconds for i in merge(intervals))


# --- states to outages --------------------------------------------------------------------
def held_states(
    changes: Sequence[tuple[float, str]], initial: str | None, start: float, end: float
) -> list[tuple[Interval, str]]:
    """The state held over each part of ``[start, end)``, from ``initial`` (the state at
    ``start``, None when unknown) and the changes after it, oldest first."""
    out: list[tuple[Interval, str]] = []
    state, since = initial, start
    for when, new in sorted(changes, key=lambda c: c[0]):
        if when >= end:
            break
        when = max(when, start)
        if state is not None and when > since:
            out.append((Interval(since, when), state))
        state, since = new, when
    if state is not None and end > since:
        out.append((Interval(since, end), state))
    return out


def out_of_service(
    changes: Sequence[tuple[float, str]],
    initial: str | None,
    start: float,
    end: float,
    out_states: frozenset[str],
    cause: str | None = None,
) -> list[Cause]:
    """The parts of ``[start, end)`` spent in one of ``out_states``, labelled with the state
    (or ``cause``)."""
    return [
        Cause(interval.start, interval.end, cause or state)
        for interval, state in held_states(changes, initial, start, end)
        if state in out_states
    ]


def combine(causes: Iterable[Cause]) -> list[Cause]:
    """Union of outage causes; a merged outage keeps the cause that began it."""
    ordered = sorted((c for c in causes if c.end > c.start), key=lambda c: (c.start, c.end))
    out: list[Cause] = []
    for item in ordered:
        if out and item.start <= out[-1].end:
            last = out[-1]
            if item.end > last.end:
                out[-1] = Cause(last.start, item.end, last.cause)
        else:
            out.append(item)
    return out


def outage_records(
    port_id: str,
    outages: Iterable[Cause],
    exclusions: Iterable[Exclusion],
    *,
    period_end: float,
) -> list[OutageRecord]:
    """Each outage cut into its excluded and counted pieces, oldest first.

    Where exclusions overlap each other, the one that started first gives the reason.
    """
    ordered = sorted(exclusions, key=lambda e: (e.start, e.end))
    records: list[OutageRecord] = []
    for outage in combine(outages):
        pieces: list[tuple[Interval, str | None]] = []
        pos = outage.start
        for excl in ordered:
            lo, hi = max(excl.start, pos), min(excl.end, outage.end)
            if hi <= lo:
                continue
            if lo > pos:
                pieces.append((Interval(pos, lo), None))
            pieces.append((Interval(lo, hi), excl.reason))
            pos = hi
        if pos < outage.end:
            pieces.append((Interval(pos, outage.end), None))
        for interval, reason in pieces:
            records.append(
                OutageRecord(
                    outage_id=f"{port_id}@{int(interval.start)}",
                    port_id=port_id,
                    start=interval.start,
                    end=interval.end,
                    cause=outage.cause,
                    excluded_outage=reason is not None,
                    excluded_outage_reason=reason,
                    open=interval.end >= period_end,
                )
            )
    return records


def port_uptime(
    port_id: str,
    outages: Iterable[Cause],
    exclusions: Iterable[Exclusion],
    period_start: float,
    period_end: float,
) -> PortUptime:
    """μ of one port over ``[period_start, period_end)`` with the outage list behind it."""
    clipped = [Cause(max(c.start, period_start), min(c.end, period_end), c.cause) for c in outages]
    records = outage_records(port_id, clipped, exclusions, period_end=period_end)
    outage_s = sum(r.end - r.start for r in records)
    excluded_s = sum(r.end - r.start for r in records if r.excluded_outage)
    return PortUptime(
        port_id=port_id,
        period_start=period_start,
        period_end=period_end,
        outage_minutes=outage_s / 60,
        excluded_minutes=excluded_s / 60,
        outages=tuple(records),
    )


# --- periods ------------------------------------------------------------------------------
def parse_month(text: str) -> tuple[int, int]:
    """``"2026-07"`` → ``(2026, 7)``; ValueError otherwise."""
    try:
        year, month = (int(p) for p in text.split("-"))
    except ValueError:
        raise ValueError(f"invalid month {text!r}: use YYYY-MM") from None
    if not (1970 <= year <= 9999 and 1 <= month <= 12) or len(text) != 7:
        raise ValueError(f"invalid month {text!r}: use YYYY-MM")
    return year, month


def month_start(year: int, month: int) -> float:
    while month > 12:
        year, month = year + 1, month - 12
    while month < 1:
        year, month = year - 1, month + 12
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


def twelve_months_ending(year: int, month: int) -> tuple[float, float]:
    """The period whose uptime is reported for ``month``: the twelve months ending with it
    (UTC), e.g. 2026-07 → [2025-08-01, 2026-08-01)."""
    return month_start(year, month - 11), month_start(year, month + 1)


def parse_quarter(text: str) -> tuple[int, int]:
    """``"2026Q3"`` → ``(2026, 3)``; ValueError otherwise."""
    if len(text) != 6 or text[4] not in "Qq" or text[5] not in "1234" or not text[:4].isdigit():
        raise ValueError(f"invalid quarter {text!r}: use YYYYQn, e.g. 2026Q3")
    return int(text[:4]), int(text[5])


def quarter_bounds(year: int, quarter: int) -> tuple[float, float]:
    first = 3 * (quarter - 1) + 1
    return month_start(year, first), month_start(year, first + 3)
