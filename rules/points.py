"""Points and selections: the values every time-series store reads and writes.

Times are integer nanoseconds since the epoch (InfluxDB's native precision), so both
stores compare the same numbers and a replayed point lands on the same timestamp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any, NamedTuple

NS = 1_000_000_000

FieldValue = float | str
Labels = tuple[tuple[str, str], ...]

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def check_name(name: str, what: str) -> str:
    """Measurement, field and tag names are plain identifiers: no quoting games in queries."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"invalid {what} name {name!r}: use letters, digits and _")
    return name


def parse_duration(text: str | int | float) -> float:
    """``90``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"7d"`` → seconds (Prometheus style)."""
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: negative")
        return float(text)
    total, pos = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m, 7d")
    return total


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)


def to_ns(value: Any, default: float) -> int:
    """An epoch-seconds float or an ISO 8601 string → ns; ``default`` (seconds) otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(float(value) * NS)
    if isinstance(value, str) and value:
        try:
            return round(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * NS)
        except ValueError:
            pass
    return round(default * NS)


class Point(NamedTuple):
    """One measurement at one time: tags identify the series, fields hold the values.

    A named tuple, not a dataclass: the recorder builds one per sampled value, and a tuple
    is built several times faster than a frozen dataclass.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time: int  # ns

    def as_json(self) -> list[Any]:
        return [self.measurement, dict(self.tags), dict(self.fields), self.time]

    @classmethod
    def from_json(cls, data: list[Any]) -> Point:
        measurement, tags, fields, time = data
        return cls(str(measurement), dict(tags), dict(fields), int(time))


def make_point(
    measurement: str, tags: Mapping[str, Any], fields: Mapping[str, Any], time: int
) -> Point | None:
    """A point with null tags dropped, numbers as floats (one type per field in InfluxDB),
    other values as strings; None when no field has a value."""
    clean_tags = {k: str(v) for k, v in tags.items() if v is not None and str(v) != ""}
    clean_fields: dict[str, FieldValue] = {}
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, bool):
            clean_fields[key] = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            clean_fields[key] = float(value)
        else:
            clean_fields[key] = str(value)
    if not clean_fields:
        return None
    return Point(measurement, clean_tags, clean_fields, time)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which points a rule reads: one field of one measurement, tag filters, grouping.

    A filter value is one tag value or a list of accepted ones; a missing tag reads as
    ``""`` in filters and groups, as it does in InfluxQL.
    """

    measurement: str
    field: str
    filters: Mapping[str, tuple[str, ...]] = dataclass_field(default_factory=dict)
    group_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.measurement, "measurement")
        check_name(self.field, "field")
        for tag in (*self.filters, *self.group_by):
            check_name(tag, "tag")

    def matches(self, tags: Mapping[str, str]) -> bool:
        return all(tags.get(k, "") in allowed for k, allowed in self.filters.items())

    def labels_of(self, tags: Mapping[str, str]) -> Labels:
        return tuple((k, tags.get(k, "")) for k in self.group_by)


class Sample(NamedTuple):
    """One group's answer: its group-by labels, a value and the time it refers to (ns)."""

    labels: Labels
    value: FieldValue
    time: int
