"""Points and selections: the values every time-series store reads and writes.

Times are integer nanoseconds since the epoch (InfluxDB's native precision), so both
stores compare the same numbers and a replayed point lands on the same timestamp.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any, NamedTuple

NS = 1_000_000_000

FieldValue = float | str
Labels = tuple[tuple[str, str], ...]

# The times both stores hold: InfluxDB's line protocol refuses anything outside
# MinInt64 + 2 .. MaxInt64 - 1 ns ("time outside range"), SQLite's INTEGER is 64 bits.
MIN_TIME = -(2**63) + 2
MAX_TIME = 2**63 - 2
# Bounds InfluxDB sets (a series key, measurement and tags, is at most 65,535 bytes) with
# room to spare; a string field is kept below 64 KiB, the largest string InfluxDB 1.x
# documents. Nothing the bridge publishes comes near them.
MAX_SERIES_KEY_BYTES = 4096
MAX_STRING_BYTES = 65_535
# Keys InfluxDB refuses (``invalid field name`` / ``invalid tag key``).
_RESERVED_KEYS = frozenset({"time"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

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


class InvalidPoint(ValueError):
    """A value no store can hold (a time out of range, a number that is not finite, ...);
    the message says which and why."""


def to_ns(value: Any, default: float) -> int:
    """An epoch-seconds number or an ISO 8601 string → ns; ``default`` (seconds) otherwise.

    A number that is not finite, or out of any float's range, raises :class:`InvalidPoint`;
    a time outside what the stores hold comes back as it is, for :func:`problem_of` to
    refuse with the time in its reason.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return round(float(value) * NS)
        except (OverflowError, ValueError) as exc:  # inf, NaN, an int beyond any float
            raise InvalidPoint(f"timestamp {_shown(value)} is not a time: {exc}") from exc
    if isinstance(value, str) and value:
        try:
            seconds = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError):
            pass
        else:
            return round(seconds * NS)
    return round(default * NS)


def as_number(value: int | float) -> float:
    """A JSON number as a float field; an int beyond any float stays as it is, so
    :func:`problem_of` refuses its point with a reason instead of the conversion raising."""
    try:
        return float(value)
    except OverflowError:
        return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _text_problem(text: Any, what: str, *, allow_control: bool = False) -> str | None:
    """Why a tag or field value cannot be stored as it is, or None."""
    if not isinstance(text, str):
        return f"{what} {_shown(text)} is not a string"
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a lone surrogate: JSON's \ud800 escape decodes to one
        return f"{what} {_shown(text)} is not valid Unicode (lone surrogate)"
    if size > MAX_STRING_BYTES:
        return f"{what} is {size} bytes long, more than {MAX_STRING_BYTES}"
    if not allow_control and _CONTROL.search(text):
        return f"{what} {_shown(text)} holds a control character"
    return None


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)  # an int beyond any float raises
    except OverflowError:
        return False


# Series and field keys already found good, so the recorder checks a series once.
_GOOD_SERIES: set[tuple[Any, tuple[Any, ...], tuple[Any, ...]]] = set()
_GOOD_FIELD_KEYS: set[Any] = set()
_CHECKED_SIZE = 100_000


def _series_problem(measurement: Any, tags: Mapping[Any, Any]) -> str | None:
    if not isinstance(measurement, str) or not NAME_PATTERN.fullmatch(measurement):
        return f"measurement {_shown(measurement)} is not a name (letters, digits and _)"
    key_bytes = len(measurement)
    for key, value in tags.items():
        # Rules select tags by name (check_name): a tag key that is not one is unreadable.
        if not isinstance(key, str) or not NAME_PATTERN.fullmatch(key) or key in _RESERVED_KEYS:
            return f"tag key {_shown(key)} is not a name (letters, digits and _; not time)"
        if problem := _text_problem(value, f"tag {key!r}"):
            return problem
        key_bytes += len(key) + len(value) + 2
    if key_bytes > MAX_SERIES_KEY_BYTES:
        return f"series key of about {key_bytes} bytes, more than {MAX_SERIES_KEY_BYTES}"
    return None


def problem_of(point: Any) -> str | None:
    """Why no store can take ``point`` as it is, or None when both can.

    Checked before a point is written, so one bad point is refused alone with its reason
    instead of failing the write of the whole batch: a time beyond 64-bit nanoseconds
    (``OverflowError`` in SQLite, "time outside range" in InfluxDB), a number that is not
    finite (NaN would be stored as NULL by SQLite and left out by the line protocol), a
    lone surrogate (``UnicodeEncodeError`` in both), tag values with control characters
    (line protocol cannot carry a newline there), names that rules cannot select
    (:func:`check_name`) or InfluxDB refuses (``time``), series keys and strings too long
    for InfluxDB.
    """
    if not isinstance(point, Point):
        return f"not a point: {_shown(point)}"
    measurement, tags, fields, time = point
    if type(time) is not int:
        return f"time {_shown(time)} is not an integer"
    if not MIN_TIME <= time <= MAX_TIME:
        return f"time {time} ns is outside what the stores hold ({MIN_TIME}..{MAX_TIME})"
    if not isinstance(tags, Mapping):
        return f"tags {_shown(tags)} are not a mapping"
    # Series repeat: a series checked once is not checked again (the recorder's hot path).
    try:
        series = (measurement, tuple(tags), tuple(tags.values()))
        known = series in _GOOD_SERIES
    except TypeError:  # an unhashable tag value (a spool file edited by hand)
        return _series_problem(measurement, tags) or f"tags {_shown(tags)} are not strings"
    if not known:
        if problem := _series_problem(measurement, tags):
            return problem
        if len(_GOOD_SERIES) >= _CHECKED_SIZE:
            _GOOD_SERIES.clear()
        _GOOD_SERIES.add(series)
    if not isinstance(fields, Mapping) or not fields:
        return f"fields {_shown(fields)} are not a non-empty mapping"
    for key, value in fields.items():
        if key not in _GOOD_FIELD_KEYS:
            if not isinstance(key, str) or not NAME_PATTERN.fullmatch(key) or key in _RESERVED_KEYS:
                return f"field key {_shown(key)} is not a name (letters, digits and _; not time)"
            if len(_GOOD_FIELD_KEYS) >= _CHECKED_SIZE:
                _GOOD_FIELD_KEYS.clear()
            _GOOD_FIELD_KEYS.add(key)
        if isinstance(value, str):
            if problem := _text_problem(value, f"field {key!r}", allow_control=True):
                return problem
        elif type(value) is not float and not isinstance(value, int):
            return f"field {key!r} = {_shown(value)} is neither a number nor a string"
        elif not _finite(value):
            return f"field {key!r} = {_shown(value)} is not a finite number"
    return None


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
            clean_fields[key] = as_number(value)
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


class Rejection(NamedTuple):
    """A point (or a message that gave none) refused, and why."""

    reason: str
    point: Point | None = None


class Sample(NamedTuple):
    """One group's answer: its group-by labels, a value and the time it refers to (ns)."""

    labels: Labels
    value: FieldValue
    time: int
