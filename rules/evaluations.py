"""What a rule sees at one instant: the observations of its query, one per group.

All the arithmetic after the store's answer happens here, in Python, on both stores, so
the same data gives the same alerts on SQLite and InfluxDB.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.files import Rule
from rules.points import NS, FieldValue, Labels
from rules.series import SeriesStore


@dataclass(frozen=True, slots=True)
class Observation:
    """One group's value; ``breach`` is the rule's own test (threshold rules: None, as the
    hysteresis depends on the alert's state)."""

    labels: Labels
    value: float
    breach: bool | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    observations: list[Observation]
    no_data: bool


async def observe(rule: Rule, store: SeriesStore, at: float) -> Outcome:
    """Run the rule's query at ``at`` (epoch seconds); SeriesError when the store fails."""
    end = round(at * NS)
    start = end - round(rule.window * NS)
    if rule.kind == "absence":
        last = await store.last(rule.selection, start, end)
        obs = []
        for sample in last:
            silent = (end - sample.time) / NS
            obs.append(Observation(sample.labels, silent, silent >= rule.absent_for))
        return Outcome(obs, not last)
    if rule.kind == "state":
        return await _states(rule, store, start, end)
    samples = await store.aggregate(rule.selection, rule.aggregation, start, end)
    if rule.min_points is not None and samples:
        counts = await store.aggregate(rule.selection, "count", start, end)
        enough = {s.labels for s in counts if float(s.value) >= rule.min_points}
        samples = [s for s in samples if s.labels in enough]
        return Outcome([Observation(s.labels, float(s.value)) for s in samples], not counts)
    return Outcome([Observation(s.labels, float(s.value)) for s in samples], not samples)


async def _states(rule: Rule, store: SeriesStore, start: int, end: int) -> Outcome:
    """How long each group has been in one of ``rule.states``, from the points' own times."""
    window = await store.points(rule.selection, start, end)
    before = {s.labels: (s.time, s.value) for s in await store.last(rule.selection, None, start)}
    wanted = set(rule.states)
    obs = []
    for labels in sorted(set(window) | set(before)):
        history: list[tuple[int, FieldValue]] = []
        if labels in before:
            history.append(before[labels])
        history.extend(window.get(labels, []))
        if not history or str(history[-1][1]) not in wanted:
            continue
        since = history[-1][0]
        for time, value in reversed(history):
            if str(value) not in wanted:
                break
            since = time
        held = (end - since) / NS
        obs.append(Observation(labels, held, held >= rule.held_for))
    return Outcome(obs, not window and not before)
