"""Rule files: YAML validated against ``schema.json``, turned into :class:`Rule` values.

Every finding carries its file and line. A folder is loaded file by file, so one broken
file is refused with its location and the rules of the others keep running.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from rules.documents import Document, Finding, RuleFileError, parse, read
from rules.points import Selection, parse_duration

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0
DEFAULT_WINDOW = 300.0
DEFAULT_LOOKBACK = 7 * 86400.0
# Time-weighted share of the window in ``states``: computed by the engine from the points
# (rules.evaluations), not by the store, so both stores give the same answer.
TIME_IN = "time_in"


@cache
def schema() -> dict[str, Any]:
    """The published JSON Schema of rule files (``rules/schema.json``)."""
    text = resources.files("rules").joinpath("schema.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@dataclass(frozen=True, slots=True)
class Condition:
    op: str
    threshold: float
    clear: float | None = None

    def holds(self, value: float, active: bool) -> bool:
        """True while alerting; once ``active``, the ``clear`` threshold decides instead."""
        limit = self.clear if active and self.clear is not None else self.threshold
        match self.op:
            case ">":
                return value > limit
            case ">=":
                return value >= limit
            case "<":
                return value < limit
            case "<=":
                return value <= limit
            case "==":
                return value == limit
            case _:
                return value != limit


@dataclass(frozen=True, slots=True)
class Action:
    type: str
    options: Mapping[str, Any]
    dry_run: bool = False
    rate_max: int | None = None
    rate_per: float = 3600.0


@dataclass(frozen=True, slots=True)
class Rule:
    alert: str
    group: str
    file: str
    line: int
    kind: str
    selection: Selection
    aggregation: str
    window: float
    condition: Condition | None
    states: tuple[str, ...]
    held_for: float
    absent_for: float
    for_: float
    keep_firing_for: float
    severity: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    actions: tuple[Action, ...]
    min_points: int | None
    interval: float
    source: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """While an alert matching ``source`` fires, alerts matching ``target`` with the same
    ``equal`` labels are held (not notified, no actions)."""

    source: Mapping[str, str]
    target: Mapping[str, str]
    equal: tuple[str, ...]


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)
    inhibit_rules: list[InhibitRule] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def check_template(text: str) -> str | None:
    try:
        string.Template(text).substitute(_AnyKey())
    except ValueError as exc:
        return f"invalid template {text!r}: {exc} (use $name or ${{name}}, $$ for $)"
    return None


class _AnyKey(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def load_document(doc: Document) -> tuple[list[Rule], list[InhibitRule]]:
    """Rules of one parsed file, or :class:`RuleFileError` listing every finding."""
    findings: list[Finding] = []
    if doc.data is None:
        raise RuleFileError([Finding(doc.name, 1, "empty rule file: expected 'groups:'")])
    validator = jsonschema.Draft202012Validator(schema())
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        findings.append(doc.finding(error.absolute_path, f"{where}: {error.message}"))
    if findings:
        raise RuleFileError(findings)
    rules: list[Rule] = []
    seen: set[str] = set()
    for g, group in enumerate(doc.data["groups"]):
        for r, raw in enumerate(group["rules"]):
            path = ("groups", g, "rules", r)
            try:
                rule = _rule(doc, path, group, raw)
            except ValueError as exc:
                findings.append(doc.finding(path, f"rule {raw.get('alert')}: {exc}"))
                continue
            if rule.alert in seen:
                findings.append(doc.finding(path, f"duplicate alert name {rule.alert!r}"))
            seen.add(rule.alert)
            for key, text in rule.annotations.items():
                problem = check_template(text)
                if problem:
                    findings.append(doc.finding((*path, "annotations", key), problem))
            rules.append(rule)
    if findings:
        raise RuleFileError(findings)
    inhibits = [
        InhibitRule(dict(i["source"]), dict(i.get("target", {})), tuple(i.get("equal", ())))
        for i in doc.data.get("inhibit_rules", [])
    ]
    return rules, inhibits


def _rule(doc: Document, path: tuple[Any, ...], group: dict[str, Any], raw: dict[str, Any]) -> Rule:
    query = raw["query"]
    kind = raw.get("kind", "threshold")
    filters = {
        k: tuple(v) if isinstance(v, list) else (v,) for k, v in query.get("filters", {}).items()
    }
    absent_for = parse_duration(raw.get("absent_for", 0))
    held_for = parse_duration(raw.get("held_for", 0))
    default_window = {"threshold": DEFAULT_WINDOW, "absence": max(DEFAULT_LOOKBACK, absent_for)}
    window = parse_duration(query.get("window", default_window.get(kind, DEFAULT_LOOKBACK)))
    if window <= 0:
        raise ValueError("query.window must be longer than 0s")
    if kind == "absence" and window <= absent_for:
        raise ValueError("query.window must be longer than absent_for")
    if query.get("aggregation") == TIME_IN and "min_points" in query:
        raise ValueError("query.min_points does not apply to aggregation time_in")
    condition = raw.get("condition")
    actions = tuple(
        Action(
            type=a["type"],
            options={k: v for k, v in a.items() if k not in ("type", "dry_run", "rate_limit")},
            dry_run=bool(a.get("dry_run", False)),
            rate_max=a["rate_limit"]["max"] if "rate_limit" in a else None,
            rate_per=parse_duration(a["rate_limit"]["per"]) if "rate_limit" in a else 3600.0,
        )
        for a in raw.get("actions", [])
    )
    return Rule(
        alert=raw["alert"],
        group=group["name"],
        file=doc.name,
        line=doc.line(path),
        kind=kind,
        selection=Selection(
            query["measurement"], query["field"], filters, tuple(query.get("group_by", ()))
        ),
        aggregation=query.get("aggregation", "last" if kind != "threshold" else "mean"),
        window=window,
        condition=Condition(condition["op"], float(condition["threshold"]), condition.get("clear"))
        if condition
        else None,
        states=tuple(raw.get("states", ())),
        held_for=held_for,
        absent_for=absent_for,
        for_=parse_duration(raw.get("for", 0)),
        keep_firing_for=parse_duration(raw.get("keep_firing_for", 0)),
        severity=raw.get("severity", "warning"),
        labels=dict(raw.get("labels", {})),
        annotations=dict(raw.get("annotations", {})),
        actions=actions,
        min_points=query.get("min_points"),
        interval=parse_duration(group.get("interval", DEFAULT_INTERVAL)),
        source=raw,
    )


def validate_text(text: str, name: str = "<body>") -> list[Finding]:
    """Every finding in one rule file's text (empty when valid)."""
    try:
        load_document(parse(text, name))
    except RuleFileError as exc:
        return exc.findings
    return []


def rule_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders expanded to their ``*.yaml``/``*.yml`` minus ``*_test.*``."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                p
                for p in sorted(path.iterdir())
                if p.suffix in (".yaml", ".yml") and not p.stem.endswith("_test")
            )
        else:
            out.append(path)
    return out


def load_rules(paths: Iterable[Path]) -> RuleSet:
    """Every valid file's rules; broken files are listed in ``findings`` and skipped."""
    out = RuleSet()
    names: dict[str, str] = {}
    for path in rule_paths(paths):
        try:
            rules, inhibits = load_document(read(path))
        except RuleFileError as exc:
            for finding in exc.findings:
                log.error("rule file refused: %s", finding)
            out.findings.extend(exc.findings)
            continue
        clashes = [r for r in rules if r.alert in names]
        if clashes:
            for rule in clashes:
                finding = Finding(
                    rule.file,
                    rule.line,
                    f"alert {rule.alert!r} already defined in {names[rule.alert]}",
                )
                log.error("rule file refused: %s", finding)
                out.findings.append(finding)
            continue
        names.update((r.alert, r.file) for r in rules)
        out.rules.extend(rules)
        out.inhibit_rules.extend(inhibits)
        out.files.append(str(path))
    return out


def bundled_pack() -> Path:
    return Path(str(resources.files("rules").joinpath("pack")))
