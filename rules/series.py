"""The time-series store interface the recorder writes to and the rules engine reads from.

Two implementations answer the same queries with the same results: InfluxDB over its
v1-compatible HTTP API (:mod:`rules.influx`) and an embedded SQLite file
(:mod:`rules.sqlite_series`, the default). Windows are half-open, ``start < time <= end``
(ns), as InfluxQL's ``time > start AND time <= end``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rules.points import Point, Rejection, Sample, Selection

AGGREGATIONS = ("mean", "max", "min", "sum", "count", "last", "spread")


class SeriesError(RuntimeError):
    """A time-series store refused a write or a query (bad data or a bad query)."""


class StoreUnavailable(SeriesError):
    """The store cannot be reached or is overloaded: try again later, nothing is lost."""


class SeriesReader(Protocol):
    """The queries the rules engine runs (a store, or a per-cycle memo of one)."""

    async def aggregate(
        self, selection: Selection, function: str, start: int, end: int
    ) -> list[Sample]:
        """One sample per group with points in the window; ``function`` in AGGREGATIONS."""
        ...

    async def last(self, selection: Selection, start: int | None, end: int) -> list[Sample]:
        """The newest point per group (value and time) in the window; no lower bound when
        ``start`` is None."""
        ...

    async def points(
        self, selection: Selection, start: int, end: int
    ) -> dict[tuple[tuple[str, str], ...], list[tuple[int, float | str]]]:
        """Every point per group in the window, oldest first."""
        ...


class SeriesStore(SeriesReader, Protocol):
    """What the recorder and the rules engine need from a time-series store."""

    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def write(self, points: Sequence[Point]) -> list[Rejection]:
        """Store points; a point with the series and time of a stored one replaces it.

        A point the store cannot hold is refused alone and returned with its reason; the
        others are written. :class:`StoreUnavailable` means none was.
        """
        ...


def check_function(function: str) -> str:
    if function not in AGGREGATIONS:
        raise SeriesError(f"unknown aggregation {function!r}: one of {', '.join(AGGREGATIONS)}")
    return function
