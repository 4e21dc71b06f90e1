"""The embedded time-series store: one SQLite file in the data dir, no service to run.

Why this layout: ``samples`` is keyed ``(series_id, field, time)`` (a series belongs to one
measurement, so this is the (measurement, series, time) order), so a window of one
series is one range of the table, and a replayed point replaces itself, as in InfluxDB.
Queries push everything into SQL, as InfluxQL does on the server: the tag filters select
series (``json_extract`` on their tag set, a missing tag reading as ``""``), the window
is a key range per series, and grouping and aggregation are ``GROUP BY`` the group-by
tags — so a query returns one row per group, not per series or per point.

SQLite runs in WAL mode: one writer connection (its own thread) and a small pool of
reader connections, so rules evaluate while the recorder writes, and several rules'
queries run at once (sqlite releases the GIL while it steps).

Retention (:meth:`SQLiteSeriesStore.prune`, driven by :mod:`rules.retention`) deletes old
points in small transactions on the writer thread, between the recorder's writes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from rules.points import FieldValue, Labels, Point, Rejection, Sample, Selection, sort_out
from rules.series import SeriesError, StoreUnavailable, check_function

T = TypeVar("T")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, tags TEXT NOT NULL,
        UNIQUE (measurement, tags))""",
    """CREATE TABLE IF NOT EXISTS samples (
        measurement TEXT NOT NULL, field TEXT NOT NULL, time INTEGER NOT NULL,
        series_id INTEGER NOT NULL, num REAL, str TEXT,
        PRIMARY KEY (series_id, field, time)) WITHOUT ROWID""",
    # Earlier versions scanned by time across series; every query now goes by series.
    "DROP INDEX IF EXISTS samples_by_time",
)

_INSERT = "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?)"
_Row = tuple[str, str, int, int, float | None, str | None]
# Errors that a point's own values cause (binding a value SQLite cannot hold, a number
# beyond 64 bits, a string that is not Unicode); anything else is the file's outage.
_POINT_ERRORS = (
    ValueError,  # UnicodeEncodeError included
    TypeError,
    OverflowError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
)
_NO_START = -(2**62)

# Retention walks the samples key (series_id, field, time): every statement is a seek.
_SERIES_AFTER = "SELECT id, measurement FROM series WHERE id > ? ORDER BY id LIMIT ?"
_OLDEST_OF_NEXT_FIELD = (
    "SELECT field, time FROM samples WHERE series_id = ? AND field > ? ORDER BY field, time LIMIT 1"
)
_NEWEST_BEFORE = "SELECT MAX(time) FROM samples WHERE series_id = ? AND field = ? AND time < ?"
_NTH_BEFORE = (
    "SELECT time FROM samples WHERE series_id = ? AND field = ? AND time < ? ORDER BY time "
    "LIMIT 1 OFFSET ?"
)
_DELETE_BEFORE = "DELETE FROM samples WHERE series_id = ? AND field = ? AND time < ?"


class Pruned(NamedTuple):
    """What one :meth:`SQLiteSeriesStore.prune` step did, and where the next one starts."""

    removed: dict[str, int]  # values deleted (one per point and field), per measurement
    resume_after: int | None  # series id to pass as ``after`` next; None: the pass is done


class SQLiteSeriesStore:
    """The default store (``{data_dir}/series.db``)."""

    name = "sqlite"

    def __init__(self, path: Path, *, readers: int = 2) -> None:
        self.path = path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="series-write")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="series-read")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_conn: sqlite3.Connection | None = None
        # (measurement, tag keys, tag values) → series id; only the writer thread uses it.
        self._series: dict[tuple[str, tuple[str, ...], tuple[str, ...]], int] = {}

    # --- connections ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    async def _in(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def open(self) -> None:
        def _open() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._write_conn = self._connect()
            for statement in SCHEMA:
                conn.execute(statement)

        try:
            await self._in(self._writer, _open)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open series store {self.path}: {exc}") from exc

    async def close(self) -> None:
        def _close() -> None:
            with self._connections_lock:
                connections, self._connections = self._connections, []
            for conn in connections:
                conn.close()

        self._readers.shutdown(wait=True)
        await self._in(self._writer, _close)
        self._writer.shutdown(wait=True)

    # --- writing -------------------------------------------------------------------------
    async def write(self, points: Sequence[Point]) -> list[Rejection]:
        """Store the points; those no store can hold are refused alone, with their reason.

        They are found before the transaction (:func:`~rules.points.problem_of`); a point
        that still makes SQLite or its binding raise (a value it cannot bind) is found by
        writing the batch again point by point, each in a savepoint, so one bad point never
        fails the others. Only an outage of the file (locked, full, I/O) fails the write.
        """
        good, rejections = sort_out(points)
        if good:
            try:
                rejections += await self._in(self._writer, self._write_sync, good)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"series store write failed: {exc}") from exc
        return rejections

    def _write_sync(self, points: Sequence[Point]) -> list[Rejection]:
        conn = self._write_conn
        if conn is None:
            raise sqlite3.OperationalError("series store not open")
        added: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows: list[_Row] = []
            for point in points:
                self._rows_of(conn, point, rows, added)
            conn.executemany(_INSERT, rows)
        except _POINT_ERRORS:
            self._roll_back(conn, added)
            return self._write_one_by_one(conn, points)
        except BaseException:
            self._roll_back(conn, added)
            raise
        conn.execute("COMMIT")
        return []

    def _write_one_by_one(
        self, conn: sqlite3.Connection, points: Sequence[Point]
    ) -> list[Rejection]:
        """The batch again, each point in its own savepoint: the ones that raise are refused."""
        rejections: list[Rejection] = []
        added: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for point in points:
                conn.execute("SAVEPOINT point")
                mark = len(added)
                try:
                    rows: list[_Row] = []
                    self._rows_of(conn, point, rows, added)
                    conn.executemany(_INSERT, rows)
                except _POINT_ERRORS as exc:
                    conn.execute("ROLLBACK TO point")
                    for key in added[mark:]:
                        self._series.pop(key, None)
                    del added[mark:]
                    rejections.append(Rejection(f"refused by SQLite: {exc!r}", point))
                conn.execute("RELEASE point")
        except BaseException:
            self._roll_back(conn, added)
            raise
        conn.execute("COMMIT")
        return rejections

    def _roll_back(
        self,
        conn: sqlite3.Connection,
        added: list[tuple[str, tuple[str, ...], tuple[str, ...]]],
    ) -> None:
        conn.execute("ROLLBACK")
        for key in added:  # series created in the transaction: forgotten with it
            self._series.pop(key, None)

    def _rows_of(
        self,
        conn: sqlite3.Connection,
        point: Point,
        rows: list[_Row],
        added: list[tuple[str, tuple[str, ...], tuple[str, ...]]],
    ) -> None:
        tags = point.tags
        key = (point.measurement, tuple(tags), tuple(tags.values()))
        sid = self._series.get(key)
        if sid is None:
            sid = self._series[key] = self._series_id(conn, point.measurement, tags)
            added.append(key)
        for name, value in point.fields.items():
            if isinstance(value, str):
                rows.append((point.measurement, name, point.time, sid, None, value))
            else:
                rows.append((point.measurement, name, point.time, sid, float(value), None))

    @staticmethod
    def _series_id(conn: sqlite3.Connection, measurement: str, tags: Any) -> int:
        text = json.dumps(dict(tags), sort_keys=True, separators=(",", ":"))
        conn.execute(
            "INSERT OR IGNORE INTO series (measurement, tags) VALUES (?, ?)", (measurement, text)
        )
        row = conn.execute(
            "SELECT id FROM series WHERE measurement = ? AND tags = ?", (measurement, text)
        ).fetchone()
        return int(row[0])

    # --- retention -----------------------------------------------------------------------
    async def prune(
        self,
        cutoffs: Mapping[str, int | None],
        default_cutoff: int | None,
        *,
        after: int = 0,
        max_series: int = 200,
        max_rows: int = 5000,
    ) -> Pruned:
        """One step of a retention pass: delete the points older than their measurement's
        cutoff (ns; ``default_cutoff`` for measurements not in ``cutoffs``; None keeps
        every point) in the series with ids above ``after``, at most ``max_series``
        series and ``max_rows`` values, in one short transaction on the writer thread.

        The newest point before the cutoff of each series and field is kept: it is the
        value held at the cutoff, which state rules and uptime reports read as "the
        newest point before the window" however old it is.
        """
        try:
            return await self._in(
                self._writer,
                self._prune_sync,
                cutoffs,
                default_cutoff,
                after,
                max_series,
                max_rows,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"series store retention failed: {exc}") from exc

    def _prune_sync(
        self,
        cutoffs: Mapping[str, int | None],
        default_cutoff: int | None,
        after: int,
        max_series: int,
        max_rows: int,
    ) -> Pruned:
        conn = self._write_conn
        if conn is None:
            raise sqlite3.OperationalError("series store not open")
        removed: dict[str, int] = {}
        budget = max_rows
        conn.execute("BEGIN IMMEDIATE")
        try:
            series = conn.execute(_SERIES_AFTER, (after, max_series)).fetchall()
            for sid, measurement in series:
                cutoff = cutoffs.get(measurement, default_cutoff)
                if cutoff is None:
                    continue
                field = ""
                while row := conn.execute(_OLDEST_OF_NEXT_FIELD, (sid, field)).fetchone():
                    field, oldest = row
                    if oldest >= cutoff:
                        continue
                    keep = conn.execute(_NEWEST_BEFORE, (sid, field, cutoff)).fetchone()[0]
                    if oldest >= keep:
                        continue  # only the value held at the cutoff is older
                    # Up to ``budget`` points: the time of the point after them bounds the
                    # delete; without one, everything before ``keep`` fits.
                    nth = conn.execute(_NTH_BEFORE, (sid, field, keep, budget)).fetchone()
                    bound = keep if nth is None else nth[0]
                    count = conn.execute(_DELETE_BEFORE, (sid, field, bound)).rowcount
                    removed[measurement] = removed.get(measurement, 0) + count
                    budget -= count
                    if budget <= 0:
                        # This series may hold more: the next step starts with it again.
                        conn.execute("COMMIT")
                        return Pruned(removed, sid - 1)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        done = len(series) < max_series
        return Pruned(removed, None if done else int(series[-1][0]))

    # --- queries ---------------------------------------------------------------------------
    async def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        def _fetch() -> list[Any]:
            return self._reader().execute(sql, params).fetchall()

        try:
            return await self._in(self._readers, _fetch)
        except sqlite3.Error as exc:
            raise SeriesError(f"series query failed: {exc}") from exc

    async def aggregate(
        self, selection: Selection, function: str, start: int, end: int
    ) -> list[Sample]:
        check_function(function)
        if function == "last":
            return await self.last(selection, start, end)
        labels, where, params = _selecting(selection)
        rows = await self._query(
            f"SELECT {labels}SUM(x.num), COUNT(COALESCE(x.num, x.str)), MIN(x.num), MAX(x.num), "
            "COUNT(x.num) FROM series s JOIN samples x ON x.series_id = s.id AND x.field = ? "
            f"AND x.time > ? AND x.time <= ? WHERE {where}{_group_by(selection)}",
            (selection.field, start, end, *params),
        )
        width = len(selection.group_by)
        out = []
        for row in rows:
            total, count, low, high, numeric = row[width:]
            if count:
                value = _finish(function, total, count, low, high, numeric, selection)
                out.append(Sample(_labels(selection, row), value, start))
        return sorted(out, key=lambda s: s.labels)

    async def last(self, selection: Selection, start: int | None, end: int) -> list[Sample]:
        labels, where, params = _selecting(selection)
        # The newest point of each series is one key lookup (not a scan of its history);
        # SQLite then returns the bare columns of the row holding MAX(time) (documented).
        rows = await self._query(
            f"SELECT {labels}MAX(x.time), x.num, x.str FROM series s JOIN samples x "
            "ON x.series_id = s.id AND x.field = ? AND x.time = (SELECT MAX(y.time) "
            "FROM samples y WHERE y.series_id = s.id AND y.field = ? AND y.time > ? "
            f"AND y.time <= ?) WHERE {where}{_group_by(selection)}",
            (
                selection.field,
                selection.field,
                _NO_START if start is None else start,
                end,
                *params,
            ),
        )
        width = len(selection.group_by)
        out = []
        for row in rows:
            time, num, text = row[width:]
            if time is not None:
                value: FieldValue = float(num) if num is not None else str(text)
                out.append(Sample(_labels(selection, row), value, int(time)))
        return sorted(out, key=lambda s: s.labels)

    async def points(
        self, selection: Selection, start: int, end: int
    ) -> dict[Labels, list[tuple[int, FieldValue]]]:
        labels, where, params = _selecting(selection)
        width = len(selection.group_by)
        order = ", ".join(str(i) for i in range(1, width + 1))
        rows = await self._query(
            f"SELECT {labels}x.time, COALESCE(x.num, x.str) FROM series s JOIN samples x "
            "ON x.series_id = s.id AND x.field = ? AND x.time > ? AND x.time <= ? "
            f"WHERE {where} ORDER BY {order + ', ' if order else ''}x.time",
            (selection.field, start, end, *params),
        )
        return {
            _labels(selection, key): [row[width:] for row in group]
            for key, group in itertools.groupby(rows, key=lambda row: row[:width])
        }


def _tag(tag: str) -> str:
    # Tag names are checked identifiers (rules.points.check_name): safe in a JSON path.
    return f"COALESCE(json_extract(s.tags, '$.{tag}'), '')"


def _selecting(selection: Selection) -> tuple[str, str, list[str]]:
    """The group-by columns (each followed by a comma), the series filter and its values."""
    labels = "".join(f"{_tag(tag)}, " for tag in selection.group_by)
    where = ["s.measurement = ?"]
    params = [selection.measurement]
    for tag, allowed in selection.filters.items():
        where.append(f"{_tag(tag)} IN ({', '.join('?' for _ in allowed)})")
        params.extend(allowed)
    return labels, " AND ".join(where), params


def _group_by(selection: Selection) -> str:
    if not selection.group_by:
        return ""
    return " GROUP BY " + ", ".join(str(i) for i in range(1, len(selection.group_by) + 1))


# Labels of the groups seen: the same groups come back every evaluation, and one labels
# object per group is both cheaper to get than to build and quicker to compare later.
_LABELS: dict[tuple[Any, ...], Labels] = {}
_LABELS_SIZE = 100_000


def _labels(selection: Selection, row: Sequence[Any]) -> Labels:
    # The group-by columns come first, as text (COALESCE of the tag's text or "").
    group_by = selection.group_by
    key = (group_by, *row[: len(group_by)])
    labels = _LABELS.get(key)
    if labels is None:
        labels = tuple(zip(group_by, row, strict=False))
        if len(_LABELS) >= _LABELS_SIZE:
            _LABELS.clear()
        _LABELS[key] = labels
    return labels


def _finish(
    function: str,
    total: float | None,
    count: int,
    low: float | None,
    high: float | None,
    numeric: int,
    selection: Selection,
) -> float:
    if function == "count":
        return float(count)
    if numeric < count:
        raise SeriesError(
            f"{function}() needs a numeric field; {selection.measurement}.{selection.field} "
            "holds strings"
        )
    assert total is not None and low is not None and high is not None
    if function == "sum":
        return float(total)
    if function == "mean":
        return float(total) / count
    if function == "min":
        return float(low)
    if function == "max":
        return float(high)
    return float(high) - float(low)  # spread
