"""A rule's window of points, carried from one evaluation to the next.

Why: a rule with a long window (a day of sessions, a week of connector statuses) would
otherwise read its whole window — and, for ``state`` and ``time_in`` rules, each group's
newest point before it, with no lower time bound — at every evaluation, so each cycle
costs in proportion to the fleet times the history. A tracked rule reads everything once
(a *full read*), then only the points newer than its *settled* time: per group it keeps
the window's points (or, for ``state`` and ``absence`` rules, the few that can still
decide the outcome) and the newest point before the window,
``before(s1) = newest of (before(s0), points in (s0, s1])``.

Late points: the last ``settle`` seconds are read again at every evaluation and are not
kept, so a point that arrives up to ``settle`` late (a charger's own timestamp, the
recorder's batching) counts as if it had been on time. An older one is seen at the next
full read: every ``refresh`` seconds, after the store failed, when evaluation time goes
backwards, and after a gap longer than the window. Between those, the evaluation gives
exactly what a full read would (``tests/rules/test_rules_tracking.py`` checks it on both
stores).
"""

from __future__ import annotations

import bisect
import math
from operator import itemgetter

from rules.files import TIME_IN, Rule
from rules.points import NS, FieldValue, Labels, Sample
from rules.series import SeriesError, SeriesReader, check_function

TimedValue = tuple[int, FieldValue]
Window = dict[Labels, list[TimedValue]]
Before = dict[Labels, TimedValue]

# A window shorter than this many times the points read again each time (``settle`` plus
# the rule's interval) is cheaper to read whole: its store-side aggregate is one row per
# group, and carrying it saves little.
TRACKED_WINDOW_FACTOR = 4

# Points one rule may carry (about 100 bytes each); a rule whose window holds more is
# read whole, as it would be without carrying, until its next full read.
MAX_CARRIED = 1_000_000

_TIME = itemgetter(0)


def tracked(rule: Rule, settle: float) -> bool:
    """Whether ``rule`` is evaluated from carried points (long windows) or read whole."""
    return rule.window >= TRACKED_WINDOW_FACTOR * (settle + rule.interval)


def needs_before(rule: Rule) -> bool:
    """State and ``time_in`` rules also read each group's newest point before the window."""
    return rule.kind == "state" or rule.aggregation == TIME_IN


class Tracker:
    """The points one rule needs, per group: ``before`` (the newest point at or before the
    window's start) and the window's points up to the settled time."""

    def __init__(
        self,
        rule: Rule,
        *,
        settle: float,
        refresh: float,
        phase: float = 1.0,
        max_carried: int = MAX_CARRIED,
    ) -> None:
        """``phase`` (0..1] staggers the first periodic full read of the engine's trackers,
        so they do not all read everything in the same cycle. A rule whose window holds
        more than ``max_carried`` points is read whole until its next full read."""
        self.rule = rule
        self.max_carried = max_carried
        self.settle = round(settle * NS)
        self.refresh = round(refresh * NS)
        self.phase = phase
        self._with_before = needs_before(rule)
        self._wanted = frozenset(rule.states)
        self._points: Window | None = None  # None: the next read is a full read
        self._before: Before = {}
        self._settled = 0
        self._end = 0
        self._refresh_at: int | None = None
        self._whole_until: int | None = None
        self.full_reads = 0

    @property
    def carried(self) -> int:
        """How many points it holds (a measure of its memory)."""
        return len(self._before) + sum(map(len, (self._points or {}).values()))

    def forget(self) -> None:
        """Read everything again next time (after a failed query, or on demand)."""
        self._points = None

    async def read(self, store: SeriesReader, start: int, end: int) -> tuple[Window, Before] | None:
        """The window ``(start, end]``'s points per group (oldest first) and each group's
        newest point at or before ``start`` (only for rules that need it); None when the
        window holds too many points to carry: the caller reads it whole."""
        try:
            return await self._read(store, start, end)
        except BaseException:
            self.forget()
            raise

    async def _read(
        self, store: SeriesReader, start: int, end: int
    ) -> tuple[Window, Before] | None:
        rule = self.rule
        if self._whole_until is not None and self._whole_until > end >= self._end:
            return None
        self._whole_until = None
        if (
            self._points is None
            or end < self._end
            or self._settled < start
            or (self._refresh_at is not None and end >= self._refresh_at)
        ):
            if not self._with_before and rule.kind != "absence":
                # An aggregation's window may hold far more points than groups (meter
                # values every few seconds): count them on the store before reading them.
                counts = await store.aggregate(rule.selection, "count", start, end)
                if sum(float(s.value) for s in counts) > self.max_carried:
                    self._too_many(end)
                    return None
            new = await store.points(rule.selection, start, end)
            before: Before = {}
            if self._with_before:
                earlier = await store.last(rule.selection, None, start)
                before = {s.labels: (s.time, s.value) for s in earlier}
            self._points, self._before, self._settled = {}, before, start
            if self._refresh_at is None:
                self._refresh_at = end + round(self.refresh * self.phase)
            else:
                self._refresh_at = end + self.refresh
            self.full_reads += 1
        else:
            new = await store.points(rule.selection, self._settled, end)
        self._end = end
        cut = max(self._settled, end - self.settle)
        unsettled: Window = {}
        for labels, points in new.items():
            i = bisect.bisect_right(points, cut, key=_TIME)
            if i:
                self._settle(labels, points[:i])
            if i < len(points):
                unsettled[labels] = points[i:]
        self._settled = cut
        self._advance(start)
        if self.carried > self.max_carried:
            self._too_many(end)
            return None
        window = self._points
        if unsettled:
            window = dict(window)
            for labels, points in unsettled.items():
                window[labels] = window.get(labels, []) + points
        return window, self._before

    def _too_many(self, end: int) -> None:
        self.forget()
        self._end = end
        self._whole_until = end + self.refresh

    def _settle(self, labels: Labels, points: list[TimedValue]) -> None:
        assert self._points is not None
        kept = self._points.get(labels)
        if kept is None:
            kept = self._points[labels] = []
        if self.rule.kind == "absence":  # only the newest point counts
            kept[:] = points[-1:]
        elif self.rule.kind == "state":
            # Only the newest point outside ``states`` and the run after it can still
            # decide how long the group has been in them; older points never will.
            for point in points:
                if str(point[1]) not in self._wanted:
                    kept.clear()
                    self._before.pop(labels, None)
                kept.append(point)
        else:
            kept.extend(points)

    def _advance(self, start: int) -> None:
        """Move points at or before the window's start out of it (into ``before``)."""
        assert self._points is not None
        emptied = []
        for labels, points in self._points.items():
            if points and points[0][0] <= start:
                i = bisect.bisect_right(points, start, key=_TIME)
                if self._with_before:
                    self._before[labels] = points[i - 1]
                del points[:i]
            if not points:
                emptied.append(labels)
        for labels in emptied:
            del self._points[labels]


def aggregate(rule: Rule, window: Window, start: int) -> list[Sample]:
    """``rule``'s aggregation of each group's points, as a store's ``aggregate`` answers
    it (sums exactly rounded, so the order of a group's points does not matter)."""
    function = check_function(rule.aggregation)
    out = []
    for labels in sorted(window):
        values = [value for _, value in window[labels]]
        if values:
            out.append(Sample(labels, _aggregate(function, values, rule), start))
    return out


def _aggregate(function: str, values: list[FieldValue], rule: Rule) -> FieldValue:
    if function == "count":
        return float(len(values))
    if function == "last":
        return values[-1]
    try:
        total = math.fsum(values)  # type: ignore[arg-type]  # strings raise TypeError
    except TypeError:
        selection = rule.selection
        raise SeriesError(
            f"{function}() needs a numeric field; {selection.measurement}.{selection.field} "
            "holds strings"
        ) from None
    if function == "sum":
        return total
    if function == "mean":
        return total / len(values)
    if function == "min":
        return min(values)
    if function == "max":
        return max(values)
    return max(values) - min(values)  # type: ignore[operator]  # spread: numbers only
