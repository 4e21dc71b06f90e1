"""Alerts: identity by labels, the pending → firing → resolved lifecycle, persistence.

An alert is one rule's finding for one label set (values never go in labels, so an alert
keeps its identity while its value moves). Lifecycle as Prometheus: a breach opens it
*pending*; after ``for`` it is *firing*; when the breach ends a pending alert is dropped
and a firing one *resolved* (after ``keep_firing_for``). A later breach opens a new alert.
Acknowledgements and silences are written by operators (API) and only read here.

One open alert per label set, in the store: a partial unique index over the pending and
firing rows of a rule's fingerprint. A new alert is inserted only if no open one holds
its label set (``INSERT ... ON CONFLICT DO NOTHING``), an open one is updated only while
it is still open, and the first notification is claimed with a conditional update; so
even two engines racing (a leader and one that has not yet noticed it lost the lead)
cannot open, or announce, one alert twice. :meth:`AlertStore.save` reports what the store
refused, and the engine takes the stored alert in its place.
"""

from __future__ import annotations

import hashlib
import json
import string
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chargetwin.database import Database, SQLiteDatabase
from chargetwin.leadership import lock_key
from rules.evaluations import Observation
from rules.files import Rule
from rules.points import Labels, format_duration

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, rule TEXT NOT NULL,
        state TEXT NOT NULL, severity TEXT NOT NULL, charger_id TEXT,
        labels TEXT NOT NULL, annotations TEXT NOT NULL, value DOUBLE PRECISION,
        active_at DOUBLE PRECISION NOT NULL, fired_at DOUBLE PRECISION,
        resolved_at DOUBLE PRECISION, last_active_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, silenced BOOLEAN NOT NULL DEFAULT FALSE,
        inhibited BOOLEAN NOT NULL DEFAULT FALSE, notified BOOLEAN NOT NULL DEFAULT FALSE,
        acknowledged_by TEXT, acknowledged_at DOUBLE PRECISION, ack_comment TEXT,
        ack_expires_at DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state, updated_at)",
    # Before the unique index: open duplicates left by engines that ran side by side before
    # it existed. The oldest open alert of a label set stays.
    """DELETE FROM alerts WHERE state IN ('pending', 'firing') AND EXISTS (
        SELECT 1 FROM alerts AS older WHERE older.rule = alerts.rule
        AND older.fingerprint = alerts.fingerprint AND older.state IN ('pending', 'firing')
        AND (older.active_at < alerts.active_at
             OR (older.active_at = alerts.active_at AND older.id < alerts.id)))""",
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_once ON alerts (rule, fingerprint) "
    "WHERE state IN ('pending', 'firing')",
    "CREATE INDEX IF NOT EXISTS alerts_by_charger ON alerts (charger_id)",
    """CREATE TABLE IF NOT EXISTS silences (
        id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at DOUBLE PRECISION NOT NULL,
        ends_at DOUBLE PRECISION NOT NULL, created_by TEXT, comment TEXT,
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rule_states (
        name TEXT PRIMARY KEY, grp TEXT NOT NULL, file TEXT NOT NULL, line INTEGER NOT NULL,
        kind TEXT NOT NULL, severity TEXT NOT NULL, health TEXT NOT NULL, last_error TEXT,
        last_eval DOUBLE PRECISION, eval_seconds DOUBLE PRECISION, pending INTEGER NOT NULL,
        firing INTEGER NOT NULL, definition TEXT NOT NULL)""",
)

_COLUMNS = (
    "id, fingerprint, rule, state, severity, charger_id, labels, annotations, value, active_at, "
    "fired_at, resolved_at, last_active_at, updated_at, silenced, inhibited, notified, "
    "acknowledged_by, acknowledged_at, ack_comment, ack_expires_at"
)


_OPEN = "state IN ('pending', 'firing')"
_INSERT = (
    f"INSERT INTO alerts ({_COLUMNS}) VALUES ({', '.join('?' for _ in _COLUMNS.split(', '))}) "
    "ON CONFLICT DO NOTHING"
)
# The engine's columns; an alert closed meanwhile (by another engine) is not opened again.
_UPDATE = (
    "UPDATE alerts SET state = ?, value = ?, annotations = ?, fired_at = ?, resolved_at = ?, "
    "last_active_at = ?, updated_at = ?, silenced = ?, inhibited = ? "
    f"WHERE id = ? AND {_OPEN}"
)
_CLAIM = f"UPDATE alerts SET notified = TRUE WHERE id = ? AND notified = FALSE AND {_OPEN}"
_DROP = "DELETE FROM alerts WHERE id = ? AND state = 'pending'"
SCHEMA_LOCK = "rules-alerts-schema"


@dataclass
class Saved:
    """What :meth:`AlertStore.save` could not write, and the notifications it claimed."""

    refused: set[str] = field(default_factory=set)  # ids of alerts the store did not take
    notify: list[Alert] = field(default_factory=list)  # first notifications now ours to send


def fingerprint(labels: Mapping[str, str]) -> str:
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Alert:
    id: str
    fingerprint: str
    rule: str
    state: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    active_at: float
    last_active_at: float
    updated_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    silenced: bool = False
    inhibited: bool = False
    notified: bool = False
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    ack_comment: str | None = None
    ack_expires_at: float | None = None
    changed: bool = field(default=False, compare=False)  # to save now: new or state moved
    stale: bool = field(default=False, compare=False)  # value/annotations moved since saved
    saved_at: float = field(default=0.0, compare=False)
    stored: bool = field(default=False, compare=False)  # its row exists in the store

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        acked = self.acknowledged_at is not None and (
            self.ack_expires_at is None or self.ack_expires_at > now
        )
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "state": self.state,
            "severity": self.severity,
            "labels": self.labels,
            "annotations": self.annotations,
            "value": self.value,
            "activeAt": self.active_at,
            "firedAt": self.fired_at,
            "resolvedAt": self.resolved_at,
            "updatedAt": self.updated_at,
            "silenced": self.silenced,
            "inhibited": self.inhibited,
            "acknowledged": acked,
            "acknowledgedBy": self.acknowledged_by if acked else None,
            "acknowledgedAt": self.acknowledged_at if acked else None,
            "ackExpiresAt": self.ack_expires_at if acked else None,
        }

    def row(self) -> tuple[Any, ...]:
        return (
            self.id, self.fingerprint, self.rule, self.state, self.severity,
            self.labels.get("charger"), json.dumps(self.labels), json.dumps(self.annotations),
            self.value, self.active_at, self.fired_at, self.resolved_at, self.last_active_at,
            self.updated_at, self.silenced, self.inhibited, self.notified,
            self.acknowledged_by, self.acknowledged_at, self.ack_comment, self.ack_expires_at,
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Alert:
        return cls(
            id=row[0], fingerprint=row[1], rule=row[2], state=row[3], severity=row[4],
            labels=json.loads(row[6]), annotations=json.loads(row[7]),
            value=float(row[8]) if row[8] is not None else float("nan"),
            active_at=row[9], fired_at=row[10], resolved_at=row[11], last_active_at=row[12],
            updated_at=row[13], silenced=bool(row[14]), inhibited=bool(row[15]),
            notified=bool(row[16]), acknowledged_by=row[17], acknowledged_at=row[18],
            ack_comment=row[19], ack_expires_at=row[20], stored=True,
        )  # fmt: skip


def _update_params(alert: Alert) -> tuple[Any, ...]:
    return (
        alert.state, alert.value, json.dumps(alert.annotations), alert.fired_at,
        alert.resolved_at, alert.last_active_at, alert.updated_at, alert.silenced,
        alert.inhibited, alert.id,
    )  # fmt: skip


def labels_for(rule: Rule, group: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {**dict(group), **rule.labels, "alertname": rule.alert, "severity": rule.severity}


def render(rule: Rule, labels: Mapping[str, str], value: float) -> dict[str, str]:
    """Annotations with ``$label``, ``$value``, ``$percent`` (value x 100, for fractions)
    and ``$duration`` (value as 1h5m) filled in."""
    values = {
        **labels,
        "value": f"{value:.4g}",
        "percent": f"{value * 100:.4g}",
        "duration": format_duration(value) if value == value and value >= 0 else "",
    }
    return {k: string.Template(v).safe_substitute(values) for k, v in rule.annotations.items()}


def step(
    rule: Rule,
    current: dict[str, Alert],
    observations: Iterable[Observation],
    at: float,
    fingerprints: dict[Labels, str] | None = None,
) -> list[Alert]:
    """Advance one rule's alerts to ``at``; return the alerts whose state changed.

    ``current`` (fingerprint → pending or firing alert) is updated in place: resolved
    and dropped alerts leave it. An alert gets ``changed`` when it must be saved now (new,
    or its state moved) and ``stale`` when only its value and annotations moved, which
    the caller saves less often. ``fingerprints`` caches the rule's group → fingerprint
    across calls (a sha256 per group and evaluation is most of the cost otherwise).
    """
    transitions: list[Alert] = []
    opened: set[str] = set()
    breached: set[str] = set()
    cache: dict[Labels, str] = {} if fingerprints is None else fingerprints
    for obs in observations:
        fp = cache.get(obs.labels)
        if fp is None:
            fp = cache[obs.labels] = fingerprint(labels_for(rule, obs.labels))
        alert = current.get(fp)
        if obs.breach is None:
            assert rule.condition is not None
            breach = rule.condition.holds(obs.value, alert is not None)
        else:
            breach = obs.breach
        if not breach:
            if alert is not None and alert.value != obs.value:
                alert.value, alert.stale = obs.value, True
            continue
        breached.add(fp)
        if alert is None:
            labels = labels_for(rule, obs.labels)
            alert = Alert(
                id=uuid.uuid4().hex, fingerprint=fp, rule=rule.alert, state=PENDING,
                severity=rule.severity, labels=labels, annotations=render(rule, labels, obs.value),
                value=obs.value, active_at=at, last_active_at=at, updated_at=at, changed=True,
            )  # fmt: skip
            current[fp] = alert
            opened.add(fp)
            transitions.append(alert)
        elif alert.value != obs.value or not alert.annotations:
            alert.value = obs.value
            alert.annotations = render(rule, alert.labels, obs.value)
            alert.stale = True
        alert.last_active_at = at
        if alert.state == PENDING and at - alert.active_at >= rule.for_:
            alert.state, alert.fired_at, alert.updated_at = FIRING, at, at
            alert.changed = True
            if fp not in opened:
                transitions.append(alert)
    for fp, alert in list(current.items()):
        if fp in breached:
            continue
        if alert.state == FIRING and at - alert.last_active_at < rule.keep_firing_for:
            continue
        del current[fp]
        alert.state = RESOLVED if alert.state == FIRING else "inactive"
        alert.resolved_at = alert.updated_at = at
        alert.changed = True
        transitions.append(alert)
    return transitions


def matches(matchers: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in matchers.items())


class AlertStore:
    """Alerts, silences and rule states in the shared database (``chargetwin.database``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_schema(self) -> None:
        # One transaction, and on PostgreSQL one process at a time: processes starting
        # together would otherwise race on creating the same index.
        async with self.db.transaction() as tx:
            if not isinstance(self.db, SQLiteDatabase):
                await tx.fetchall("SELECT pg_advisory_xact_lock(?)", (lock_key(SCHEMA_LOCK),))
            for statement in SCHEMA:
                await tx.execute(statement)

    async def save(self, alerts: Iterable[Alert], *, notify: Iterable[Alert] = ()) -> Saved:
        """Write the engine's view of ``alerts`` and claim the first notification of those
        in ``notify`` (firing alerts not yet announced, each one of ``alerts``); operator
        columns (acknowledgement) are left alone. What the store refuses is returned, not
        written (module docstring)."""
        claims = {a.id for a in notify}
        statements: list[tuple[str, tuple[Any, ...]]] = []
        purposes: list[tuple[str, Alert]] = []
        for alert in alerts:
            if alert.state == "inactive":  # a pending alert whose breach ended: gone
                statements.append((_DROP, (alert.id,)))
                purposes.append(("drop", alert))
            elif not alert.stored:
                row = alert.row()
                if alert.id in claims:
                    row = (*row[:16], True, *row[17:])
                statements.append((_INSERT, row))
                purposes.append(("insert", alert))
            else:
                if alert.id in claims:
                    statements.append((_CLAIM, (alert.id,)))
                    purposes.append(("claim", alert))
                statements.append((_UPDATE, _update_params(alert)))
                purposes.append(("update", alert))
        saved = Saved()
        if not statements:
            return saved
        counts = await self.db.execute_batch(statements)
        for (purpose, alert), count in zip(purposes, counts, strict=True):
            if purpose == "insert":
                if count == 1:
                    alert.stored = True
                    if alert.id in claims:
                        saved.notify.append(alert)
                else:
                    saved.refused.add(alert.id)
            elif purpose == "update" and count != 1:
                saved.refused.add(alert.id)
            elif purpose == "claim" and count == 1:
                saved.notify.append(alert)
        saved.notify = [a for a in saved.notify if a.id not in saved.refused]
        return saved

    async def open_alert(self, rule: str, fp: str) -> Alert | None:
        """The open (pending or firing) alert of ``rule`` for one label set, if any."""
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM alerts WHERE rule = ? AND fingerprint = ? AND state IN (?, ?)",
            (rule, fp, PENDING, FIRING),
        )
        return Alert.from_row(row) if row else None

    async def open_alerts(self) -> list[Alert]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM alerts WHERE state IN (?, ?)", (PENDING, FIRING)
        )
        return [Alert.from_row(r) for r in rows]

    async def find(
        self,
        *,
        states: Iterable[str] = (),
        severity: str | None = None,
        charger_id: str | None = None,
        limit: int = 500,
    ) -> list[Alert]:
        clauses, params = [], []
        wanted = list(states)
        if wanted:
            clauses.append(f"state IN ({', '.join('?' for _ in wanted)})")
            params.extend(wanted)
        if severity:
            clauses.append("severity = ?")
            params.append(severity)
        if charger_id:
            clauses.append("charger_id = ?")
            params.append(charger_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM alerts {where} ORDER BY updated_at DESC LIMIT ?",
            (*params, limit),
        )
        return [Alert.from_row(r) for r in rows]

    async def get(self, alert_id: str) -> Alert | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", (alert_id,))
        return Alert.from_row(row) if row else None

    async def acknowledge(
        self, alert_id: str, by: str, *, comment: str | None, expires_at: float | None
    ) -> Alert | None:
        await self.db.execute(
            "UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ?, ack_comment = ?, "
            "ack_expires_at = ? WHERE id = ?",
            (by, time.time(), comment, expires_at, alert_id),
        )
        return await self.get(alert_id)

    async def add_silence(
        self, matchers: Mapping[str, str], starts_at: float, ends_at: float, by: str, comment: str
    ) -> str:
        silence_id = uuid.uuid4().hex
        await self.db.execute(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (silence_id, json.dumps(dict(matchers)), starts_at, ends_at, by, comment, time.time()),
        )
        return silence_id

    async def active_silences(self, at: float) -> list[dict[str, str]]:
        rows = await self.db.fetchall(
            "SELECT matchers FROM silences WHERE starts_at <= ? AND ends_at > ?", (at, at)
        )
        return [json.loads(r[0]) for r in rows]

    async def save_rule_state(self, rule: Rule, state: Mapping[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO rule_states (name, grp, file, line, kind, severity, health, last_error, "
            "last_eval, eval_seconds, pending, firing, definition) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "grp = excluded.grp, file = excluded.file, line = excluded.line, "
            "kind = excluded.kind, severity = excluded.severity, health = excluded.health, "
            "last_error = excluded.last_error, last_eval = excluded.last_eval, "
            "eval_seconds = excluded.eval_seconds, pending = excluded.pending, "
            "firing = excluded.firing, definition = excluded.definition",
            (
                rule.alert, rule.group, rule.file, rule.line, rule.kind, rule.severity,
                state["health"], state.get("lastError"), state.get("lastEvaluation"),
                state.get("evaluationSeconds"), state.get("pending", 0), state.get("firing", 0),
                json.dumps(rule.source, default=str),
            ),
        )  # fmt: skip

    async def rule_states(self) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT name, grp, file, line, kind, severity, health, last_error, last_eval, "
            "eval_seconds, pending, firing, definition FROM rule_states ORDER BY grp, name"
        )
        keys = ("name", "group", "file", "line", "kind", "severity", "health", "lastError",
                "lastEvaluation", "evaluationSeconds", "pending", "firing")  # fmt: skip
        return [
            {**dict(zip(keys, r[:12], strict=True)), "definition": json.loads(r[12])} for r in rows
        ]

    async def forget_rules_except(self, names: Iterable[str]) -> None:
        keep = list(names)
        if keep:
            await self.db.execute(
                f"DELETE FROM rule_states WHERE name NOT IN ({', '.join('?' for _ in keep)})", keep
            )
        else:
            await self.db.execute("DELETE FROM rule_states")
