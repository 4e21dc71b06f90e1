"""Unit tests for rules, as ``promtool test rules``: input series, evaluation times,
expected alerts. Each test runs on a fresh store (embedded SQLite unless another is
given), evaluating every rule at each ``evaluation_interval`` step from 0 to the last
``eval_time``, so ``for`` and hysteresis behave as in production.

Test file::

    rule_files: [connector_faulted.yaml]       # relative to this file
    evaluation_interval: 1m
    tests:
      - name: a faulted connector fires after 5 minutes
        input_series:
          - measurement: connector_status
            tags: {charger: CP-1, connector: "1"}
            field: status
            values: "Available Faulted*10"      # one value per interval; _ = none
            # or: points: [{at: 2m, value: Faulted}]
        alert_rule_test:
          - eval_time: 7m
            alertname: ConnectorFaulted
            exp_alerts:
              - exp_labels: {charger: CP-1, connector: "1", severity: critical}
                exp_annotations: {summary: "..."}   # compared only when given
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chargetwin.database import connect
from rules.alerts import AlertStore
from rules.documents import Document, Finding, RuleFileError, read
from rules.engine import Engine
from rules.files import RuleSet, load_rules
from rules.points import NS, Point, make_point, parse_duration, problem_of
from rules.series import SeriesStore
from rules.sqlite_series import SQLiteSeriesStore

T0 = 1_700_000_000.0  # the test clock's zero, so every store sees ordinary timestamps

StoreFactory = Callable[[Path], Awaitable[SeriesStore]]

_SERIES = re.compile(r"^(-?\d+(?:\.\d+)?(?:e-?\d+)?)(?:([+-])(\d+(?:\.\d+)?))?x(\d+)$")


def expand_values(text: str) -> list[Any]:
    """``"1 2 3"``, ``"0+10x3"`` (0 10 20 30), ``"5x2"`` (5 5 5), ``"_x2"``, ``"Faulted*3"``;
    ``_`` leaves a step without a point (None)."""
    out: list[Any] = []
    for token in str(text).split():
        match = _SERIES.match(token)
        if match:
            start, sign, step, n = match.groups()
            delta = float(step or 0) * (-1 if sign == "-" else 1)
            out.extend(float(start) + i * delta for i in range(int(n) + 1))
        elif re.fullmatch(r"_x\d+", token):
            out.extend([None] * (int(token[2:]) + 1))
        elif "*" in token and token.rsplit("*", 1)[1].isdigit():
            word, count = token.rsplit("*", 1)
            out.extend([_scalar(word)] * int(count))
        else:
            out.append(_scalar(token))
    return out


def _scalar(token: str) -> Any:
    if token == "_":
        return None
    try:
        return float(token)
    except ValueError:
        return token


async def sqlite_store(folder: Path) -> SeriesStore:
    store = SQLiteSeriesStore(folder / "series.db")
    await store.open()
    return store


def _points(
    doc: Document, path: tuple[Any, ...], series: dict[str, Any], step: float
) -> list[Point]:
    out = []
    values: list[tuple[float, Any]] = []
    interval = parse_duration(series.get("interval", step))
    if "values" in series:
        values = [(i * interval, v) for i, v in enumerate(expand_values(series["values"]))]
    for item in series.get("points", []):
        values.append((parse_duration(item["at"]), item["value"]))
    for at, value in values:
        if value is None:
            continue
        point = make_point(
            series["measurement"],
            series.get("tags", {}),
            {series.get("field", "value"): value},
            round((T0 + at) * NS),
        )
        if point is not None:
            # Refused here with its place in the file, not dropped by the store unseen.
            if problem := problem_of(point):
                raise RuleFileError([doc.finding(path, f"input point at {at:g} s: {problem}")])
            out.append(point)
    if not out and not values:
        raise RuleFileError([doc.finding(path, "input series without values or points")])
    return out


async def run_test_file(path: Path, store_factory: StoreFactory = sqlite_store) -> list[Finding]:
    """Every failed expectation of one test file (empty when all pass)."""
    doc = read(path)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        return [Finding(doc.name, 1, "a test file needs 'rule_files' and 'tests'")]
    ruleset = load_rules(path.parent / f for f in data.get("rule_files", []))
    if ruleset.findings:
        return ruleset.findings
    step = parse_duration(data.get("evaluation_interval", "1m"))
    failures: list[Finding] = []
    for index, test in enumerate(data["tests"]):
        try:
            failures.extend(
                await _run_test(doc, ("tests", index), test, ruleset, step, store_factory)
            )
        except RuleFileError as exc:
            failures.extend(exc.findings)
        except (KeyError, TypeError, ValueError) as exc:
            failures.append(doc.finding(("tests", index), f"invalid test: {exc!r}"))
    return failures


async def _run_test(
    doc: Document,
    path: tuple[Any, ...],
    test: dict[str, Any],
    ruleset: RuleSet,
    step: float,
    store_factory: StoreFactory,
) -> list[Finding]:
    name = test.get("name", f"test {path[-1]}")
    with tempfile.TemporaryDirectory(prefix="chargetwin-rules-test-") as folder:
        store = await store_factory(Path(folder))
        db = connect(f"sqlite:///{folder}/alerts.db")
        await db.open()
        try:
            points = []
            for i, series in enumerate(test.get("input_series", [])):
                points.extend(_points(doc, (*path, "input_series", i), series, step))
            await store.write(points)
            engine = Engine(store, AlertStore(db), ruleset)
            await engine.load()
            checks = sorted(
                enumerate(test.get("alert_rule_test", [])),
                key=lambda c: parse_duration(c[1]["eval_time"]),
            )
            failures: list[Finding] = []
            now = 0.0
            for i, check in checks:
                where = (*path, "alert_rule_test", i)
                until = parse_duration(check["eval_time"])
                while now <= until + 1e-9:
                    await engine.evaluate(T0 + now)
                    now += step
                if now - step < until - 1e-9:
                    await engine.evaluate(T0 + until)
                failures.extend(_compare(doc, where, name, check, engine))
            return failures
        finally:
            await db.close()
            await store.close()


def _compare(
    doc: Document, where: tuple[Any, ...], name: str, check: dict[str, Any], engine: Engine
) -> list[Finding]:
    alertname = check["alertname"]
    got = [
        (
            {k: v for k, v in a.labels.items() if k != "alertname"},
            a.annotations,
        )
        for a in engine.firing(alertname)
    ]
    expected = check.get("exp_alerts") or []
    missing = []
    unmatched = list(got)
    for exp in expected:
        labels = {k: str(v) for k, v in (exp.get("exp_labels") or {}).items()}
        annotations = exp.get("exp_annotations")
        hit = next(
            (
                g
                for g in unmatched
                if g[0] == labels and (annotations is None or g[1] == annotations)
            ),
            None,
        )
        if hit is None:
            missing.append(exp)
        else:
            unmatched.remove(hit)
    if not missing and not unmatched:
        return []
    at = check["eval_time"]
    return [
        doc.finding(
            where,
            f"{name}: {alertname} at {at}: expected {_show(expected)}, got "
            f"{_show([{'exp_labels': g[0], 'exp_annotations': g[1]} for g in got])}",
        )
    ]


def _show(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "no firing alerts"
    return "; ".join(
        "{"
        + ", ".join(f"{k}={v}" for k, v in sorted((a.get("exp_labels") or {}).items()))
        + "}"
        + (f" {a['exp_annotations']}" if a.get("exp_annotations") else "")
        for a in alerts
    )
