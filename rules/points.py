"""Points and selections: the values every time-series store reads and writes.

Times are integer nanoseconds since the epoch (InfluxDB's native precision), so both
stores compare the same numbers and a replayed point lands on the same timestamp.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Any, NamedTuple

NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

FieldValue = float | str
Labels = tuple[tuple[str, str], ...]

# The times both stores hold: InfluxDB's line protocol refuses anything outside
# MinInt64 + 2 .. MaxInt64 - 1 ns ("time outside range"), SQLite's INTEGER is 64 bits.
MIN_TIME = -(2**63) + 2
MAX_TIME = 2**63 - 2
# InfluxDB keeps a series key (measurement and tags) under 65,535 bytes: at most 32 tags
# of 1 KiB each stay well below it. A string field is kept below 64 KiB, the largest
# string InfluxDB 1.x documents. Nothing the bridge publishes comes near either.
MAX_TAGS = 32
MAX_TAG_BYTES = 1024
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
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                return round(moment.timestamp() * NS)
            # In integers: through a float, .017 s became .016999936 s.
            since = moment - _EPOCH
        except (ValueError, OverflowError):
            pass
        else:
            return (since.days * 86_400 + since.seconds) * NS + since.microseconds * 1_000
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


def _text_problem(text: Any, what: str, limit: int, *, allow_control: bool = False) -> str | None:
    """Why a tag or field value cannot be stored as it is, or None."""
    if not isinstance(text, str):
        return f"{what} {_shown(text)} is not a string"
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a lone surrogate: JSON's \ud800 escape decodes to one
        return f"{what} {_shown(text)} is not valid Unicode (lone surrogate)"
    if size > limit:
        return f"{what} is {size} bytes long, more than {limit}"
    if not allow_control and _CONTROL.search(text):
        return f"{what} {_shown(text)} holds a control character"
    return None


def _name_problem(name: Any, what: str) -> str | None:
    # Rules select by name (check_name): a key that is not one could never be read.
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in _RESERVED_KEYS:
        return f"{what} {_shown(name)} is not a name (letters, digits and _; not time)"
    return None


# Names and tag values found good: they repeat (chargers, measurands, units), so the
# recorder's hot path checks each once, not once per point. Bounded, cleared when full.
_GOOD_NAMES: set[str] = set()
_GOOD_TAG_VALUES: set[str] = set()
_CHECKED_SIZE = 100_000
_GOOD_TAG_VALUE = _GOOD_TAG_VALUES.__contains__
is_known_tag_value = _GOOD_TAG_VALUE  # for converters that check as they build (hot path)


def _remember(good: set[str], text: str) -> None:
    if len(good) >= _CHECKED_SIZE:
        good.clear()
    good.add(text)


def _tags_problem(tags: Mapping[Any, Any]) -> str | None:
    for key, value in tags.items():
        if key not in _GOOD_NAMES:
            if problem := _name_problem(key, "tag key"):
                return problem
            _remember(_GOOD_NAMES, key)
        if value not in _GOOD_TAG_VALUES:
            if problem := _text_problem(value, f"tag {key!r}", MAX_TAG_BYTES):
                return problem
            _remember(_GOOD_TAG_VALUES, value)
    return None


def problem_of(point: Any) -> str | None:
    """Why no store can take ``point`` as it is, or None when both can.

    Checked before a point is written, so one bad point is refused alone with its reason
    instead of failing the write of the whole batch: a time beyond 64-bit nanoseconds
    (``OverflowError`` in SQLite, "time outside range" in InfluxDB), a number that is not
    finite (NaN would be stored as NULL by SQLite and left out by the line protocol), a
    lone surrogate (``UnicodeEncodeError`` in both), tag values with control characters
    (line protocol cannot carry a newline there), names that rules cannot select
    (:func:`check_name`) or InfluxDB refuses (``time``), tags and strings too long for
    InfluxDB.
    """
    if type(point) is not Point:
        return f"not a point: {_shown(point)}"
    measurement, tags, fields, time = point
    if type(time) is not int:
        return f"time {_shown(time)} is not an integer"
    if not MIN_TIME <= time <= MAX_TIME:
        return f"time {time} ns is outside what the stores hold ({MIN_TIME}..{MAX_TIME})"
    try:
        if measurement not in _GOOD_NAMES:
            if problem := _name_problem(measurement, "measurement"):
                return problem
            _remember(_GOOD_NAMES, measurement)
        if type(tags) is not dict and not isinstance(tags, Mapping):
            return f"tags {_shown(tags)} are not a mapping"
        if len(tags) > MAX_TAGS:
            return f"{len(tags)} tags, more than {MAX_TAGS}"
        # Checked in C (no Python frame per tag) for the usual case: every tag seen before.
        known = tags.keys() <= _GOOD_NAMES and all(map(_GOOD_TAG_VALUE, tags.values()))
        if not known and (problem := _tags_problem(tags)):
            return problem
        if type(fields) is not dict and not isinstance(fields, Mapping):
            return f"fields {_shown(fields)} are not a mapping"
        if not fields:
            return "no field"
        if not fields.keys() <= _GOOD_NAMES:
            for name in fields:
                if problem := _name_problem(name, "field name"):
                    return problem
                _remember(_GOOD_NAMES, name)
        for name, field in fields.items():
            if type(field) is float:
                if not math.isfinite(field):
                    return f"field {name!r} = {field!r} is not a finite number"
            elif isinstance(field, str):
                if problem := _text_problem(
                    field, f"field {name!r}", MAX_STRING_BYTES, allow_control=True
                ):
                    return problem
            elif not isinstance(field, int):
                return f"field {name!r} = {_shown(field)} is neither a number nor a string"
            elif not _finite(field):
                return f"field {name!r} = {_shown(field)} is beyond any float"
    except TypeError:  # an unhashable name or tag value (a spool file edited by hand)
        return f"a name or tag value of {_shown(tuple(point))} is not a string"
    return None


class CheckedPoints(list["Point"]):
    """Points that passed :func:`problem_of`: a store need not check them again (the
    recorder checks each point once, when it converts its message)."""

    __slots__ = ()


def sort_out(points: Sequence[Point]) -> tuple[CheckedPoints, list[Rejection]]:
    """The points both stores can take, and the others refused with their reason."""
    if type(points) is CheckedPoints:
        return points, []
    problems = [problem_of(point) for point in points]
    if not any(problems):
        return CheckedPoints(points), []
    good = CheckedPoints(
        point for point, problem in zip(points, problems, strict=True) if problem is None
    )
    refused = [
        Rejection(problem, point)
        for point, problem in zip(points, problems, strict=True)
        if problem is not None
    ]
    return good, refused


def _finite(value: int) -> bool:
    try:
        return math.isfinite(value)  # an int beyond any float raises
    except OverflowError:
        return False


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
