"""What a rule sees at one instant: the observations of its query, one per group.

All the arithmetic after the store's answer happens here, in Python, on both stores, so
the same data gives the same alerts on SQLite and InfluxDB.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from rules.files import TIME_IN, Rule
from rules.points import NS, FieldValue, Labels, Sample, Selection
from rules.series import SeriesReader
from rules.tracking import Before, Tracker, Window, aggregate

T = TypeVar("T")


class Observation(NamedTuple):
    """One group's value; ``breach`` is the rule's own test (threshold rules: None, as the
    hysteresis depends on the alert's state). A tuple: one is built per group and rule."""

    labels: Labels
    value: float
    breach: bool | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    observations: list[Observation]
    no_data: bool


async def observe(
    rule: Rule, store: SeriesReader, at: float, tracker: Tracker | None = None
) -> Outcome:
    """Run the rule's query at ``at`` (epoch seconds); SeriesError when the store fails.

    With a ``tracker`` (rules with long windows, :mod:`rules.tracking`) the points come
    from what it carries plus what is new, and aggregations are computed here; the
    outcome is the same as reading the window whole (which it does when the tracker holds
    too many points).
    """
    end = round(at * NS)
    start = end - round(rule.window * NS)
    carried = None if tracker is None else await tracker.read(store, start, end)
    if carried is not None:
        window, before = carried
        if rule.kind == "absence":
            return _absence(rule, [Sample(k, p[-1][1], p[-1][0]) for k, p in window.items()], end)
        if rule.kind == "state":
            return _states(rule, window, before, end)
        if rule.aggregation == TIME_IN:
            return _time_in(rule, window, before, start, end)
        samples = aggregate(rule, window, start)
        if rule.min_points is not None:
            enough = {k for k, p in window.items() if len(p) >= rule.min_points}
            samples = [s for s in samples if s.labels in enough]
        return Outcome([Observation(s.labels, float(s.value)) for s in samples], not window)
    if rule.kind == "absence":
        return _absence(rule, await store.last(rule.selection, start, end), end)
    if rule.kind == "state" or rule.aggregation == TIME_IN:
        window = await store.points(rule.selection, start, end)
        earlier = await store.last(rule.selection, None, start)
        before = {s.labels: (s.time, s.value) for s in earlier}
        if rule.kind == "state":
            return _states(rule, window, before, end)
        return _time_in(rule, window, before, start, end)
    samples = await store.aggregate(rule.selection, rule.aggregation, start, end)
    if rule.min_points is not None and samples:
        counts = await store.aggregate(rule.selection, "count", start, end)
        enough = {s.labels for s in counts if float(s.value) >= rule.min_points}
        samples = [s for s in samples if s.labels in enough]
        return Outcome([Observation(s.labels, float(s.value)) for s in samples], not counts)
    return Outcome([Observation(s.labels, float(s.value)) for s in samples], not samples)


def _absence(rule: Rule, last: list[Sample], end: int) -> Outcome:
    obs = []
    for sample in sorted(last, key=lambda s: s.labels):
        silent = (end - sample.time) / NS
        obs.append(Observation(sample.labels, silent, silent >= rule.absent_for))
    return Outcome(obs, not last)


def _states(rule: Rule, window: Window, before: Before, end: int) -> Outcome:
    """How long each group has been in one of ``rule.states``, from the points' own times."""
    wanted = set(rule.states)
    obs = []
    for labels, points in window.items():
        newest = points[-1]
        if str(newest[1]) not in wanted:
            continue  # most groups: one look at the newest point
        since = newest[0]
        for time, value in reversed(points):
            if str(value) not in wanted:
                break
            since = time
        else:  # in those states through the window: maybe since before it
            earlier = before.get(labels)
            if earlier is not None and str(earlier[1]) in wanted:
                since = earlier[0]
        held = (end - since) / NS
        obs.append(Observation(labels, held, held >= rule.held_for))
    for labels, (time, value) in before.items():
        if labels not in window and str(value) in wanted:
            held = (end - time) / NS
            obs.append(Observation(labels, held, held >= rule.held_for))
    obs.sort(key=lambda o: o.labels)
    return Outcome(obs, not window and not before)


def _time_in(rule: Rule, window: Window, before: Before, start: int, end: int) -> Outcome:
    """The fraction of the window each group spent in one of ``rule.states`` (time-weighted:
    a value holds from its point to the next). The state at the window's start is the
    newest point before it; with none, the time up to the first point counts as outside."""
    wanted = set(rule.states)
    span = end - start
    obs = []
    for labels in sorted(window.keys() | before.keys()):
        inside = str(before[labels][1]) in wanted if labels in before else False
        since, total = start, 0
        for time, value in window.get(labels, ()):
            if inside:
                total += time - since
            inside, since = str(value) in wanted, time
        if inside:
            total += end - since
        obs.append(Observation(labels, total / span))
    return Outcome(obs, not window and not before)


class SharedQueries:
    """One evaluation cycle's queries, each asked of the store once: rules that read the
    same selection and window (the pack's connector-status rules do) share the answer,
    also while it is still on its way."""

    def __init__(self, store: SeriesReader) -> None:
        self.store = store
        self._answers: dict[Hashable, asyncio.Future[Any]] = {}

    async def _shared(self, key: Hashable, ask: Callable[[], Awaitable[T]]) -> T:
        answer = self._answers.get(key)
        if answer is not None:
            result: T = await asyncio.shield(answer)
            return result
        answer = self._answers[key] = asyncio.get_running_loop().create_future()
        try:
            value = await ask()
        except Exception as exc:
            answer.set_exception(exc)
            answer.exception()  # retrieved: no "never retrieved" warning when unshared
            raise
        except BaseException:
            answer.cancel()
            raise
        answer.set_result(value)
        return value

    async def aggregate(
        self, selection: Selection, function: str, start: int, end: int
    ) -> list[Sample]:
        return await self._shared(
            ("aggregate", selection_key(selection), function, start, end),
            lambda: self.store.aggregate(selection, function, start, end),
        )

    async def last(self, selection: Selection, start: int | None, end: int) -> list[Sample]:
        return await self._shared(
            ("last", selection_key(selection), start, end),
            lambda: self.store.last(selection, start, end),
        )

    async def points(
        self, selection: Selection, start: int, end: int
    ) -> dict[Labels, list[tuple[int, FieldValue]]]:
        return await self._shared(
            ("points", selection_key(selection), start, end),
            lambda: self.store.points(selection, start, end),
        )


def selection_key(selection: Selection) -> Hashable:
    filters = tuple(sorted((tag, tuple(allowed)) for tag, allowed in selection.filters.items()))
    return (selection.measurement, selection.field, filters, selection.group_by)
