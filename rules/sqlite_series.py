"""The embedded time-series store: one SQLite file in the data dir, no service to run.

Why this layout: series (measurement + tag set) get an integer id held in memory, so
filters and group-by are decided in Python over the few series, and SQL only scans the
``(measurement, field, time)`` index and aggregates per series. Per-series partial
aggregates (sum, count, min, max, newest) merge exactly into group results, so groups
answer as InfluxDB does. ``(series, field, time)`` is the key: a replayed point replaces
itself, as in InfluxDB.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chargetwin.database import Database, DatabaseError, connect
from rules.points import FieldValue, Labels, Point, Sample, Selection
from rules.series import SeriesError, StoreUnavailable, check_function

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, tags TEXT NOT NULL,
        UNIQUE (measurement, tags))""",
    """CREATE TABLE IF NOT EXISTS samples (
        measurement TEXT NOT NULL, field TEXT NOT NULL, time INTEGER NOT NULL,
        series_id INTEGER NOT NULL, num REAL, str TEXT,
        PRIMARY KEY (series_id, field, time)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS samples_by_time ON samples (measurement, field, time)",
)

_INSERT = "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?)"


class SQLiteSeriesStore:
    """The default store (``{data_dir}/series.db``)."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Database = connect(f"sqlite:///{path}")
        self._series: dict[tuple[str, str], int] = {}
        self._tags: dict[int, dict[str, str]] = {}
        self._by_measurement: dict[str, list[int]] = defaultdict(list)

    async def open(self) -> None:
        try:
            await self._db.open()
            for statement in SCHEMA:
                await self._db.execute(statement)
            for sid, measurement, tags in await self._db.fetchall(
                "SELECT id, measurement, tags FROM series"
            ):
                self._remember(int(sid), str(measurement), str(tags))
        except DatabaseError as exc:
            raise StoreUnavailable(f"cannot open series store {self.path}: {exc}") from exc

    async def close(self) -> None:
        await self._db.close()

    def _remember(self, sid: int, measurement: str, tags: str) -> None:
        self._series[(measurement, tags)] = sid
        self._tags[sid] = json.loads(tags)
        self._by_measurement[measurement].append(sid)

    async def _series_id(self, measurement: str, tags: dict[str, str]) -> int:
        key = json.dumps(tags, sort_keys=True, separators=(",", ":"))
        sid = self._series.get((measurement, key))
        if sid is None:
            await self._db.execute(
                "INSERT OR IGNORE INTO series (measurement, tags) VALUES (?, ?)", (measurement, key)
            )
            row = await self._db.fetchone(
                "SELECT id FROM series WHERE measurement = ? AND tags = ?", (measurement, key)
            )
            assert row is not None
            sid = int(row[0])
            self._remember(sid, measurement, key)
        return sid

    async def write(self, points: Sequence[Point]) -> None:
        rows: list[tuple[str, Sequence[Any]]] = []
        try:
            for point in points:
                sid = await self._series_id(point.measurement, dict(point.tags))
                for name, value in point.fields.items():
                    num, text = (None, value) if isinstance(value, str) else (float(value), None)
                    rows.append((_INSERT, (point.measurement, name, point.time, sid, num, text)))
            if rows:
                await self._db.execute_batch(rows)
        except DatabaseError as exc:
            raise StoreUnavailable(f"series store write failed: {exc}") from exc

    def _matching(self, selection: Selection) -> dict[int, Labels]:
        return {
            sid: selection.labels_of(self._tags[sid])
            for sid in self._by_measurement.get(selection.measurement, ())
            if selection.matches(self._tags[sid])
        }

    async def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return await self._db.fetchall(sql, params)
        except DatabaseError as exc:
            raise SeriesError(f"series query failed: {exc}") from exc

    async def aggregate(
        self, selection: Selection, function: str, start: int, end: int
    ) -> list[Sample]:
        check_function(function)
        if function == "last":
            return await self.last(selection, start, end)
        wanted = self._matching(selection)
        rows = await self._query(
            "SELECT series_id, SUM(num), COUNT(COALESCE(num, str)), MIN(num), MAX(num), "
            "COUNT(num) FROM samples WHERE measurement = ? AND field = ? AND time > ? "
            "AND time <= ? GROUP BY series_id",
            (selection.measurement, selection.field, start, end),
        )
        groups: dict[Labels, list[Any]] = {}
        for sid, total, count, low, high, numeric in rows:
            labels = wanted.get(int(sid))
            if labels is None or not count:
                continue
            acc = groups.get(labels)
            part: list[Any] = [float(total or 0.0), float(count), low, high, float(numeric)]
            if acc is None:
                groups[labels] = part
            else:
                acc[0] += part[0]
                acc[1] += part[1]
                acc[2] = _pick(min, acc[2], low)
                acc[3] = _pick(max, acc[3], high)
                acc[4] += part[4]
        out = []
        for labels, (total, count, low, high, numeric) in groups.items():
            value = _finish(function, total, count, low, high, numeric, selection)
            out.append(Sample(labels, value, start))
        return sorted(out, key=lambda s: s.labels)

    async def last(self, selection: Selection, start: int | None, end: int) -> list[Sample]:
        wanted = self._matching(selection)
        # SQLite returns the bare columns of the row holding MAX(time) (documented behaviour).
        rows = await self._query(
            "SELECT series_id, MAX(time), num, str FROM samples WHERE measurement = ? "
            "AND field = ? AND time > ? AND time <= ? GROUP BY series_id",
            (selection.measurement, selection.field, -(2**62) if start is None else start, end),
        )
        best: dict[Labels, Sample] = {}
        for sid, time, num, text in rows:
            labels = wanted.get(int(sid))
            if labels is None:
                continue
            value: FieldValue = float(num) if num is not None else str(text)
            seen = best.get(labels)
            if seen is None or int(time) > seen.time:
                best[labels] = Sample(labels, value, int(time))
        return sorted(best.values(), key=lambda s: s.labels)

    async def points(
        self, selection: Selection, start: int, end: int
    ) -> dict[Labels, list[tuple[int, FieldValue]]]:
        wanted = self._matching(selection)
        rows = await self._query(
            "SELECT series_id, time, num, str FROM samples WHERE measurement = ? AND field = ? "
            "AND time > ? AND time <= ? ORDER BY time",
            (selection.measurement, selection.field, start, end),
        )
        out: dict[Labels, list[tuple[int, FieldValue]]] = defaultdict(list)
        for sid, time, num, text in rows:
            labels = wanted.get(int(sid))
            if labels is not None:
                out[labels].append((int(time), float(num) if num is not None else str(text)))
        return dict(out)


def _pick(fn: Any, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return float(fn(a, b))


def _finish(
    function: str,
    total: float,
    count: float,
    low: float | None,
    high: float | None,
    numeric: float,
    selection: Selection,
) -> float:
    if function == "count":
        return count
    if numeric < count:
        raise SeriesError(
            f"{function}() needs a numeric field; {selection.measurement}.{selection.field} "
            "holds strings"
        )
    if function == "sum":
        return total
    if function == "mean":
        return total / count
    assert low is not None and high is not None
    if function == "min":
        return float(low)
    if function == "max":
        return float(high)
    return float(high) - float(low)  # spread
