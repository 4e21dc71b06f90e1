"""``aggregation: time_in``: the time-weighted share of a window spent in some states,
worked out by hand and computed alike over both stores' points."""

from __future__ import annotations

import pytest

from rules.documents import parse
from rules.evaluations import observe
from rules.files import Rule, load_document, validate_text
from rules.points import NS, Point
from rules.series import SeriesStore

T0 = 1_700_000_000  # s

RULE = """groups:
  - name: g
    rules:
      - alert: Outage
        query: {measurement: connector_status, field: status, aggregation: time_in,
                window: 100s, group_by: [charger, connector]}
        states: [Faulted, Unavailable]
        condition: {op: ">", threshold: 0.03}
        annotations: {summary: "$charger/$connector out $percent%"}
"""


def status(charger: str, t: int, value: str, connector: str = "1") -> Point:
    return Point(
        "connector_status",
        {"charger": charger, "connector": connector},
        {"status": value},
        (T0 + t) * NS,
    )


def outage_rule() -> Rule:
    [rule], _ = load_document(parse(RULE, "outage.yaml"))
    return rule


async def test_rules_time_in_hand_worked_fractions(series_store: SeriesStore) -> None:
    """Window (100, 200]: each series' share of its 100 s in Faulted or Unavailable."""
    await series_store.write(
        [
            # before the window Faulted; Available at 130, Unavailable 160-190: 30 + 30 s
            status("A", 50, "Faulted"),
            status("A", 130, "Available"),
            status("A", 160, "Unavailable"),
            status("A", 190, "Charging"),
            status("A", 210, "Faulted"),  # after the window: not counted
            # no change: Unavailable since before the window, all of it
            status("B", 20, "Available"),
            status("B", 40, "Unavailable"),
            # no change, not an outage; a point on the window's end holds for 0 s
            status("C", 20, "Available"),
            status("C", 200, "Faulted"),
            # nothing before the window: unknown until 150 counts as up, Faulted 150-200
            status("D", 150, "Faulted"),
            # a point on the window's start is before it (start < time): Faulted 100-175
            status("E", 100, "Faulted"),
            status("E", 175, "Available"),
        ]
    )
    outcome = await observe(outage_rule(), series_store, T0 + 200)
    got = {dict(o.labels)["charger"]: o.value for o in outcome.observations}
    assert got == pytest.approx({"A": 0.6, "B": 1.0, "C": 0.0, "D": 0.5, "E": 0.75})
    assert [o.breach for o in outcome.observations] == [None] * 5  # the condition decides
    assert not outcome.no_data


async def test_rules_time_in_one_hour_faulted_of_a_day(series_store: SeriesStore) -> None:
    """The pack's case: Faulted 1 h of the trailing 24 h is 1/24, over the 3% budget."""
    await series_store.write(
        [
            status("A", 0, "Available"),
            status("A", 3600, "Faulted"),
            status("A", 7200, "Available"),
            status("A", 7200, "Available", connector="2"),
        ]
    )
    day = RULE.replace("window: 100s", "window: 24h")
    [rule], _ = load_document(parse(day, "outage.yaml"))
    outcome = await observe(rule, series_store, T0 + 10 * 3600)
    got = {dict(o.labels)["connector"]: o.value for o in outcome.observations}
    assert got == pytest.approx({"1": 1 / 24, "2": 0.0})
    assert rule.condition is not None and rule.condition.holds(got["1"], False)


async def test_rules_time_in_no_series_is_no_data(series_store: SeriesStore) -> None:
    outcome = await observe(outage_rule(), series_store, T0 + 200)
    assert outcome.observations == [] and outcome.no_data


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (RULE.replace("        states: [Faulted, Unavailable]\n", ""), "'states' is a required"),
        (RULE.replace("      - alert: Outage\n", "      - alert: Outage\n        kind: state\n"),
         "'threshold' was expected"),
        (RULE.replace("window: 100s,", "window: 100s, min_points: 2,"), "min_points"),
    ],
)  # fmt: skip
def test_rules_time_in_needs_states_and_a_threshold_rule(text: str, words: str) -> None:
    findings = validate_text(text, "outage.yaml")
    assert any(words in f.message for f in findings), findings


def test_rules_time_in_rule_is_valid() -> None:
    assert validate_text(RULE) == []
