"""InfluxDB as the time-series store, over its v1-compatible HTTP API only.

``/write`` takes line protocol built by influxdb-client's ``Point`` serializer, gzipped;
``/query`` takes InfluxQL through httpx. InfluxDB 1.8+, 2.x (v1 compatibility API with a
DBRP mapping) and 3.x all serve these two endpoints; the v2 API is never used. Times are
sent and asked for in nanoseconds (``precision=ns``, ``epoch=ns``).
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from influxdb_client.client.write import point as line_points
from influxdb_client.domain import write_precision

from rules.points import FieldValue, Labels, Point, Rejection, Sample, Selection, sort_out
from rules.series import SeriesError, StoreUnavailable, check_function

log = logging.getLogger(__name__)

# influxdb-client ships without type hints; only its line-protocol serializer is used.
LinePoint: Any = line_points.Point
NANOSECONDS: Any = write_precision.WritePrecision.NS


# Caches of what the official serializer makes of names: series repeat, so the escaping
# of ``measurement,tag=value,...`` and of field keys is paid once per series and key.
_PREFIXES: dict[tuple[str, tuple[str, ...], tuple[str, ...]], str] = {}
_FIELD_KEYS: dict[str, str] = {}
_CACHE_SIZE = 100_000
# What the serializer does to string field values (line protocol: escape " and \).
_ESCAPE_STRING = str.maketrans({'"': '\\"', "\\": "\\\\"})


def _series_prefix(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,tag=value,...`` as the serializer escapes and sorts it."""
    key = (measurement, tuple(tags), tuple(tags.values()))  # no pair tuples: cheaper
    prefix = _PREFIXES.get(key)
    if prefix is None:
        line = LinePoint(measurement)
        for tag, value in tags.items():
            line.tag(tag, value)
        text = str(line.field("f", 0.0).to_line_protocol())
        assert text.endswith(" f=0"), text
        prefix = text[:-4]
        if len(_PREFIXES) >= _CACHE_SIZE:
            _PREFIXES.clear()
        _PREFIXES[key] = prefix
    return prefix


def _field_key(name: str) -> str:
    """A field key as the serializer escapes it."""
    escaped = _FIELD_KEYS.get(name)
    if escaped is None:
        text = str(LinePoint("m").field(name, 0.0).to_line_protocol())
        assert text.startswith("m ") and text.endswith("=0"), text
        escaped = text[2:-2]
        if len(_FIELD_KEYS) >= _CACHE_SIZE:
            _FIELD_KEYS.clear()
        _FIELD_KEYS[name] = escaped
    return escaped


def _field(name: str, value: FieldValue) -> str | None:
    """``key=value`` as the serializer writes it; None for a value it leaves out."""
    if isinstance(value, str):
        return f'{_field_key(name)}="{value.translate(_ESCAPE_STRING)}"'
    number = float(value)
    if not math.isfinite(number):
        return None
    text = str(number)
    return f"{_field_key(name)}={text[:-2] if text.endswith('.0') else text}"


def to_line(point: Point) -> str:
    """One line of line protocol, byte for byte what influxdb-client's ``Point`` makes of
    it (with numbers as floats), at a fraction of the cost; "" when no field has a value.

    Names are escaped by the official serializer and cached; values are formatted here
    with its rules (floats by ``str`` without a trailing ``.0``, non-finite ones left out,
    strings quoted with ``"`` and ``\\`` escaped). ``tests/rules/test_rules_lines.py``
    checks the equality on generated points.
    """
    fields = point.fields
    if len(fields) == 1:
        [(name, value)] = fields.items()
        if type(value) is float and math.isfinite(value):  # the common case, inlined
            number = str(value)
            text = f"{_field_key(name)}={number[:-2] if number.endswith('.0') else number}"
        else:
            maybe = _field(name, value)
            if maybe is None:
                return ""
            text = maybe
    else:
        parts = [_field(name, fields[name]) for name in sorted(fields)]
        text = ",".join(p for p in parts if p is not None)
        if not text:
            return ""
    return f"{_series_prefix(point.measurement, point.tags)} {text} {int(point.time)}"


def to_body(points: Sequence[Point]) -> bytes:
    """A gzipped ``/write`` body (level 1: the CPU matters more than the bytes here);
    b"" when no point has a value to write."""
    lines = [line for line in map(to_line, points) if line]
    if not lines:
        return b""
    return gzip.compress("\n".join(lines).encode(), compresslevel=1)


class _Refused(SeriesError):
    """influxd refused (some of) a write's lines: 400 or 413."""


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxStore:
    """One database of an InfluxDB server; created on first use when missing."""

    name = "influxdb"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._client = httpx.AsyncClient(base_url=self.url, auth=auth, timeout=timeout)
        self._database_ready = False

    async def open(self) -> None:
        try:
            await self._ensure_database()
        except StoreUnavailable as exc:
            # The recorder spools until the server answers; say so once here.
            log.warning("InfluxDB at %s not reachable yet: %s", self.url, exc)

    async def close(self) -> None:
        await self._client.aclose()

    async def _ensure_database(self) -> None:
        if not self._database_ready:
            await self._post_query(f"CREATE DATABASE {quote_ident(self.database)}")
            self._database_ready = True

    # --- HTTP ------------------------------------------------------------------------------
    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url} unreachable: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise StoreUnavailable(
                f"InfluxDB at {self.url} answered {response.status_code}: {response.text[:200]}"
            )
        if response.status_code >= 400:
            raise SeriesError(
                f"InfluxDB refused {path}: {response.status_code} {response.text[:300]}"
            )
        return response

    async def _post_query(self, q: str) -> list[dict[str, Any]]:
        response = await self._send(
            "POST", "/query", data={"q": q, "db": self.database, "epoch": "ns"}
        )
        return _series_of(response.json(), q)

    async def write_body(self, body: bytes) -> None:
        """POST an already gzipped line-protocol body (the benchmark's baseline path)."""
        await self._ensure_database()
        await self._send(
            "POST",
            "/write",
            params={"db": self.database, "precision": "ns"},
            content=body,
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"},
        )

    async def write(self, points: Sequence[Point]) -> list[Rejection]:
        """Write the points; those InfluxDB cannot take are refused alone, with the reason.

        Points no store can hold are found before sending (:func:`~rules.points.problem_of`),
        so a batch is not refused for them. What only the server can judge (a field whose
        type conflicts with the shard's, a time before the retention policy) answers 400
        "partial write", and influxd has written the batch's other lines: the batch is
        then sent again in halves, down to the refused points. A good point may so be sent
        twice; it replaces itself (same series, time and value), so the database holds it
        once.
        """
        good, rejections = sort_out(points)
        if good:
            try:
                await self._ensure_database()
            except StoreUnavailable:
                raise
            except SeriesError as exc:  # e.g. a user allowed to write but not to create
                log.warning(
                    "InfluxDB: cannot create %s (%s); writing to it anyway", self.database, exc
                )
                self._database_ready = True  # /write answers 404 if it really is missing
            rejections += await self._write_isolating(good)
        return rejections

    async def _write_isolating(self, points: Sequence[Point]) -> list[Rejection]:
        try:
            await self._post_write(to_body(points))
        except _Refused as exc:
            if len(points) == 1:
                return [Rejection(f"refused by InfluxDB: {exc}", points[0])]
            half = len(points) // 2
            first = await self._write_isolating(points[:half])
            return first + await self._write_isolating(points[half:])
        return []

    async def _post_write(self, body: bytes) -> None:
        """POST a gzipped body to ``/write``: 400 and 413 refuse the points, anything else
        that is not a success is an outage (the recorder spools and retries)."""
        if not body:
            return
        try:
            response = await self._client.post(
                "/write",
                params={"db": self.database, "precision": "ns"},
                content=body,
                headers={"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"},
            )
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url} unreachable: {exc!r}") from exc
        status = response.status_code
        if status < 300:
            return
        text = response.text[:300]
        if status in (400, 413):  # the line protocol's content, or a body too large
            raise _Refused(f"{status} {text}")
        if status == 404:  # the database was dropped: create it again on the next try
            self._database_ready = False
        # Credentials, permissions, a missing database, an overloaded or failing server:
        # none is the points' fault, and none may cost an accepted point.
        raise StoreUnavailable(f"InfluxDB at {self.url} answered {status} to /write: {text}")

    # --- queries -----------------------------------------------------------------------
    def _where(self, selection: Selection, start: int | None, end: int) -> str:
        parts = [f"time <= {end}"]
        if start is not None:
            parts.insert(0, f"time > {start}")
        for tag, allowed in selection.filters.items():
            alternatives = " OR ".join(f"{quote_ident(tag)} = {quote_string(v)}" for v in allowed)
            parts.append(f"({alternatives})" if len(allowed) > 1 else alternatives)
        return " AND ".join(parts)

    def _statement(self, selection: Selection, select: str, start: int | None, end: int) -> str:
        """``select`` (one aggregate or selector) per group, as one series whose rows are
        ``time, value, group-by tags...``.

        The grouped statement runs as a subquery and the outer one lists its groups as
        rows: influxd 1.x spends most of a grouped answer's time on its per-group series
        objects (and so does the JSON parsing here), so with thousands of groups this shape
        answers two to three times faster for the same work on the points.
        """
        q = (
            f'SELECT {select} AS "value" FROM {quote_ident(selection.measurement)} '
            f"WHERE {self._where(selection, start, end)}"
        )
        if not selection.group_by:
            return q
        tags = ", ".join(f"{quote_ident(t)}::tag" for t in selection.group_by)
        grouped = ",".join(quote_ident(t) for t in selection.group_by)
        return f'SELECT "value"::field, {tags} FROM ({q} GROUP BY {grouped})'

    async def _select(self, q: str) -> list[dict[str, Any]]:
        await self._ensure_database()
        return await self._post_query(q)

    async def _per_group(
        self, selection: Selection, select: str, start: int | None, end: int
    ) -> list[tuple[Labels, int, FieldValue]]:
        out = []
        group_by = selection.group_by
        for series in await self._select(self._statement(selection, select, start, end)):
            for row in series.get("values", []):
                if row[1] is not None:
                    out.append((_row_labels(group_by, row), int(row[0]), _value(row[1])))
        out.sort(key=lambda r: r[0])
        return out

    async def aggregate(
        self, selection: Selection, function: str, start: int, end: int
    ) -> list[Sample]:
        check_function(function)
        if function == "last":
            return await self.last(selection, start, end)
        select = f"{function}({quote_ident(selection.field)})"
        rows = await self._per_group(selection, select, start, end)
        return [Sample(labels, float(value), start) for labels, _, value in rows]

    async def last(self, selection: Selection, start: int | None, end: int) -> list[Sample]:
        select = f"last({quote_ident(selection.field)})"
        rows = await self._per_group(selection, select, start, end)
        return [Sample(labels, value, time) for labels, time, value in rows]

    async def points(
        self, selection: Selection, start: int, end: int
    ) -> dict[Labels, list[tuple[int, FieldValue]]]:
        # The group-by tags as columns of one time-ordered series, grouped here: influxd
        # answers this several times faster than a GROUP BY of the same rows, whose cost
        # is per group (thousands of chargers) more than per point.
        columns = [f"{quote_ident(selection.field)}::field"]
        columns += [f"{quote_ident(tag)}::tag" for tag in selection.group_by]
        q = (
            f"SELECT {', '.join(columns)} FROM {quote_ident(selection.measurement)} "
            f"WHERE {self._where(selection, start, end)}"
        )
        out: dict[Labels, list[tuple[int, FieldValue]]] = {}
        group_by = selection.group_by
        for series in await self._select(q):
            for row in series.get("values", []):
                if row[1] is None:
                    continue
                labels = _row_labels(group_by, row)
                points = out.get(labels)
                if points is None:
                    points = out[labels] = []
                points.append((int(row[0]), _value(row[1])))
        return out


def _value(raw: Any) -> FieldValue:
    return raw if isinstance(raw, str) else float(raw)


# Labels of the groups seen: the same thousands of groups come back every evaluation,
# and building their tuples was a good part of the engine's time per cycle.
_LABELS: dict[tuple[Any, ...], Labels] = {}


def _row_labels(group_by: tuple[str, ...], row: list[Any]) -> Labels:
    """The labels of a ``time, value, group-by tags...`` row (a missing tag reads "")."""
    key = (group_by, *row[2:])
    labels = _LABELS.get(key)
    if labels is None:
        labels = tuple(
            (tag, "" if value is None else str(value))
            for tag, value in zip(group_by, row[2:], strict=True)
        )
        if len(_LABELS) >= _CACHE_SIZE:
            _LABELS.clear()
        _LABELS[key] = labels
    return labels


def _series_of(body: Any, q: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise SeriesError(f"unexpected InfluxDB answer to {q!r}")
    if "error" in body:
        raise SeriesError(f"InfluxDB error for {q!r}: {body['error']}")
    out: list[dict[str, Any]] = []
    for result in body.get("results", []):
        if "error" in result:
            raise SeriesError(f"InfluxDB error for {q!r}: {result['error']}")
        out.extend(result.get("series", []))
    return out
