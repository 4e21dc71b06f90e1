"""Both time-series stores answer the rules' queries with the same results."""

from __future__ import annotations

import pytest

from rules.points import NS, Point, Selection
from rules.series import SeriesError, SeriesStore

T0 = 1_700_000_000 * NS


def meter(
    charger: str, connector: str, value: float, t: int, measurand: str = "Temperature"
) -> Point:
    return Point(
        "meter_values",
        {"charger": charger, "connector": connector, "measurand": measurand},
        {"value": value},
        T0 + t * NS,
    )


@pytest.fixture
async def loaded(series_store: SeriesStore) -> SeriesStore:
    await series_store.write(
        [
            meter("CP1", "1", 10.0, 10),
            meter("CP1", "1", 30.0, 20),
            meter("CP1", "2", 50.0, 30),
            meter("CP2", "1", 5.0, 15),
            meter("CP2", "1", 7.0, 70),  # outside a (0, 60] window
            meter("CP1", "1", 230.0, 20, measurand="Voltage"),
        ]
    )
    return series_store


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("mean", {"CP1": 30.0, "CP2": 5.0}),
        ("max", {"CP1": 50.0, "CP2": 5.0}),
        ("min", {"CP1": 10.0, "CP2": 5.0}),
        ("sum", {"CP1": 90.0, "CP2": 5.0}),
        ("count", {"CP1": 3.0, "CP2": 1.0}),
        ("spread", {"CP1": 40.0, "CP2": 0.0}),
        ("last", {"CP1": 50.0, "CP2": 5.0}),
    ],
)
async def test_rules_series_aggregations_grouped_by_charger(
    loaded: SeriesStore, function: str, expected: dict[str, float]
) -> None:
    selection = Selection(
        "meter_values", "value", {"measurand": ("Temperature",)}, group_by=("charger",)
    )
    samples = await loaded.aggregate(selection, function, T0, T0 + 60 * NS)
    assert {dict(s.labels)["charger"]: s.value for s in samples} == pytest.approx(expected)


async def test_rules_series_group_by_two_tags_and_filter_lists(loaded: SeriesStore) -> None:
    selection = Selection(
        "meter_values",
        "value",
        {"measurand": ("Temperature", "Voltage"), "charger": ("CP1",)},
        group_by=("charger", "connector"),
    )
    samples = await loaded.aggregate(selection, "max", T0, T0 + 60 * NS)
    got = {(dict(s.labels)["charger"], dict(s.labels)["connector"]): s.value for s in samples}
    assert got == {("CP1", "1"): 230.0, ("CP1", "2"): 50.0}


async def test_rules_series_no_group_by_is_one_group(loaded: SeriesStore) -> None:
    selection = Selection("meter_values", "value", {"measurand": ("Temperature",)})
    [sample] = await loaded.aggregate(selection, "count", T0, T0 + 100 * NS)
    assert sample.labels == () and sample.value == 5.0


async def test_rules_series_missing_tag_groups_and_filters_as_empty(
    series_store: SeriesStore,
) -> None:
    await series_store.write(
        [
            Point("m", {"charger": "A", "phase": "L1"}, {"value": 1.0}, T0 + NS),
            Point("m", {"charger": "A"}, {"value": 2.0}, T0 + 2 * NS),
        ]
    )
    grouped = Selection("m", "value", group_by=("phase",))
    samples = await series_store.aggregate(grouped, "sum", T0, T0 + 10 * NS)
    assert {s.labels: s.value for s in samples} == {(("phase", ""),): 2.0, (("phase", "L1"),): 1.0}
    only_missing = Selection("m", "value", {"phase": ("",)})
    [sample] = await series_store.aggregate(only_missing, "sum", T0, T0 + 10 * NS)
    assert sample.value == 2.0


async def test_rules_series_window_is_half_open(loaded: SeriesStore) -> None:
    selection = Selection("meter_values", "value", {"measurand": ("Temperature",)})
    [sample] = await loaded.aggregate(selection, "count", T0 + 10 * NS, T0 + 20 * NS)
    assert sample.value == 2.0  # t=15 and t=20, not t=10


async def test_rules_series_empty_window_has_no_groups(loaded: SeriesStore) -> None:
    selection = Selection("meter_values", "value", group_by=("charger",))
    assert await loaded.aggregate(selection, "mean", T0 + 1000 * NS, T0 + 2000 * NS) == []
    assert await loaded.last(selection, T0 + 1000 * NS, T0 + 2000 * NS) == []


async def test_rules_series_last_gives_time_and_string_values(series_store: SeriesStore) -> None:
    await series_store.write(
        [
            Point(
                "connector_status",
                {"charger": "A", "connector": "1"},
                {"status": "Available"},
                T0 + NS,
            ),
            Point(
                "connector_status",
                {"charger": "A", "connector": "1"},
                {"status": "Faulted"},
                T0 + 5 * NS,
            ),
            Point(
                "connector_status",
                {"charger": "B", "connector": "1"},
                {"status": "Charging"},
                T0 + 3 * NS,
            ),
        ]
    )
    selection = Selection("connector_status", "status", group_by=("charger", "connector"))
    samples = await series_store.last(selection, None, T0 + 10 * NS)
    assert [(dict(s.labels)["charger"], s.value, s.time) for s in samples] == [
        ("A", "Faulted", T0 + 5 * NS),
        ("B", "Charging", T0 + 3 * NS),
    ]
    counts = await series_store.aggregate(selection, "count", T0, T0 + 10 * NS)
    assert [s.value for s in counts] == [2.0, 1.0]
    with pytest.raises(SeriesError):
        await series_store.aggregate(selection, "mean", T0, T0 + 10 * NS)


async def test_rules_series_points_are_ordered_per_group(loaded: SeriesStore) -> None:
    selection = Selection(
        "meter_values", "value", {"measurand": ("Temperature",)}, group_by=("charger",)
    )
    got = await loaded.points(selection, T0, T0 + 100 * NS)
    assert got == {
        (("charger", "CP1"),): [(T0 + 10 * NS, 10.0), (T0 + 20 * NS, 30.0), (T0 + 30 * NS, 50.0)],
        (("charger", "CP2"),): [(T0 + 15 * NS, 5.0), (T0 + 70 * NS, 7.0)],
    }


async def test_rules_series_points_group_missing_tags_as_empty(
    series_store: SeriesStore,
) -> None:
    await series_store.write(
        [
            Point("m", {"charger": "A", "phase": "L1"}, {"value": 1.0}, T0 + NS),
            Point("m", {"charger": "A"}, {"value": 2.0}, T0 + 2 * NS),
            Point("m", {"charger": "B"}, {"value": 3.0}, T0 + 3 * NS),
            Point("m", {"charger": "A", "phase": "L1"}, {"value": 4.0}, T0 + 4 * NS),
        ]
    )
    grouped = Selection("m", "value", group_by=("phase", "charger"))
    assert await series_store.points(grouped, T0, T0 + 10 * NS) == {
        (("phase", "L1"), ("charger", "A")): [(T0 + NS, 1.0), (T0 + 4 * NS, 4.0)],
        (("phase", ""), ("charger", "A")): [(T0 + 2 * NS, 2.0)],
        (("phase", ""), ("charger", "B")): [(T0 + 3 * NS, 3.0)],
    }
    everything = await series_store.points(Selection("m", "value"), T0 + NS, T0 + 10 * NS)
    assert everything == {(): [(T0 + 2 * NS, 2.0), (T0 + 3 * NS, 3.0), (T0 + 4 * NS, 4.0)]}


async def test_rules_series_same_series_and_time_replaces(series_store: SeriesStore) -> None:
    point = meter("CP1", "1", 10.0, 10)
    await series_store.write([point, point, meter("CP1", "1", 11.0, 10)])
    selection = Selection("meter_values", "value")
    [sample] = await series_store.aggregate(selection, "count", T0, T0 + 60 * NS)
    assert sample.value == 1.0
    [last] = await series_store.last(selection, T0, T0 + 60 * NS)
    assert last.value == 11.0


async def test_rules_series_tags_and_strings_with_special_characters(
    series_store: SeriesStore,
) -> None:
    tags = {"charger": "CP 1,=x", "connector": "1"}
    await series_store.write([Point("m", tags, {"text": 'say "hi", it\'s ok'}, T0 + NS)])
    selection = Selection("m", "text", {"charger": ("CP 1,=x",)}, group_by=("charger",))
    [sample] = await series_store.last(selection, None, T0 + 2 * NS)
    assert sample.labels == (("charger", "CP 1,=x"),)
    assert sample.value == 'say "hi", it\'s ok'
