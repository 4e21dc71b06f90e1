"""The recorder's line protocol is byte for byte what influxdb-client's ``Point`` makes."""

from __future__ import annotations

import gzip
import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rules.influx import NANOSECONDS, LinePoint, to_body, to_line
from rules.points import Point

NASTY = " ,=\"'\\\n\t\r#é"
names = st.text(alphabet=st.sampled_from("abcXYZ_09" + NASTY), min_size=1, max_size=12)
tag_values = st.text(alphabet=st.sampled_from("ab1." + NASTY), max_size=12)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.text(max_size=20),
    st.text(alphabet=st.sampled_from("a \"\\'\n,="), max_size=12),
)


def official(point: Point) -> str:
    line = LinePoint(point.measurement)
    for tag, value in point.tags.items():
        line.tag(tag, value)
    for name, field in point.fields.items():
        line.field(name, field if isinstance(field, str) else float(field))
    line.time(point.time, NANOSECONDS)
    return str(line.to_line_protocol())


@settings(max_examples=400, deadline=None)
@given(
    measurement=names.filter(lambda n: not n.startswith("#")),
    tags=st.dictionaries(names, tag_values, max_size=5),
    fields=st.dictionaries(names, values, min_size=1, max_size=4),
    time=st.integers(min_value=0, max_value=2**62),
)
@example(
    measurement="meter values",
    tags={"charger": "CP 1,=x", "phase": "L1\\", "unit": ""},
    fields={"value": 230.0, "raw": 'say "hi", it\'s \\ ok'},
    time=1_700_000_000_000_000_000,
)
@example(measurement="m", tags={}, fields={"value": math.nan}, time=1)
@example(measurement="m", tags={"a": "b"}, fields={"x": 1e16, "y": -0.0, "z": 5}, time=0)
def test_rules_lines_are_what_the_official_serializer_writes(
    measurement: str, tags: dict[str, str], fields: dict[str, float | str], time: int
) -> None:
    point = Point(measurement, tags, fields, time)
    assert to_line(point) == official(point)
    assert to_line(point) == official(point)  # the second time from the caches


def test_rules_lines_body_leaves_out_points_without_values() -> None:
    points = [
        Point("m", {"a": "1"}, {"value": 1.5}, 10),
        Point("m", {"a": "1"}, {"value": math.inf}, 20),
        Point("m", {"a": "2"}, {"text": 'q"'}, 30),
    ]
    assert gzip.decompress(to_body(points)).decode() == 'm,a=1 value=1.5 10\nm,a=2 text="q\\"" 30'
    assert to_body(points[1:2]) == b""
