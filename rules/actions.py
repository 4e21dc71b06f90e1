"""What a firing alert may do besides notify: open a work order, set desired state, send a
command. Guardrails: a rate limit per rule action (sliding window) and ``dry_run``, which
logs and records what would be done and does nothing.

A rule opens one work order per alert (the store's unique ``alert_id``), and none while
one it opened for the same charger, connector and title is still open or in progress: a
charger that faults again before the technician came gets no second order for it."""

from __future__ import annotations

import logging
import re
import string
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.shadow_client import ShadowClient, ShadowRequestError
from chargetwin.topics import Topics
from fleet.work_orders import WorkOrderStore
from rules.alerts import Alert
from rules.files import Action, Rule

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One action taken (or, in dry run, not taken) for an alert."""

    rule: str
    alert_id: str
    type: str
    outcome: str  # done | dry-run | rate-limited | failed | skipped
    detail: str = ""


def _fill(value: Any, labels: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return string.Template(value).safe_substitute(labels)
    if isinstance(value, dict):
        return {k: _fill(v, labels) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, labels) for v in value]
    return value


# A string that is one placeholder alone, and a label that is a whole number.
_ALONE = re.compile(r"\$(?:(\w+)|\{(\w+)\})")
_WHOLE_NUMBER = re.compile(r"0|[1-9][0-9]{0,8}")


def _fill_request(value: Any, labels: Mapping[str, str]) -> Any:
    """A command's payload, filled as :func:`_fill` does, except that a value that is one
    placeholder alone (``"$connector"``) of a whole-number label becomes that number: labels
    are text, and OCPP's connector and EVSE ids are integers its schemas refuse as strings."""
    if isinstance(value, str):
        alone = _ALONE.fullmatch(value)
        if alone is not None:
            label = labels.get(alone.group(1) or alone.group(2))
            if label is not None and _WHOLE_NUMBER.fullmatch(label):
                return int(label)
        return _fill(value, labels)
    if isinstance(value, dict):
        return {k: _fill_request(v, labels) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_request(v, labels) for v in value]
    return value


class Actions:
    def __init__(
        self,
        db: Database,
        *,
        mqtt: MqttClient | None = None,
        topics: Topics | None = None,
        shadow_client: ShadowClient | None = None,
        dry_run: bool = False,
    ) -> None:
        self.db = db
        self.work_orders = WorkOrderStore(db)
        self.dry_run = dry_run
        self.mqtt = mqtt
        self.topics = topics
        self.shadow_client = shadow_client
        self._recent: dict[tuple[str, int], deque[float]] = defaultdict(deque)
        self.history: deque[ActionRecord] = deque(maxlen=1000)

    async def create_schema(self) -> None:
        await self.work_orders.create_schema()

    async def run(self, rule: Rule, alert: Alert) -> list[ActionRecord]:
        out = []
        for index, action in enumerate(rule.actions):
            record = await self._run_one(rule, index, action, alert)
            self.history.append(record)
            out.append(record)
            log.info(
                "rule %s action %s for %s: %s %s",
                rule.alert,
                action.type,
                alert.labels.get("charger", "-"),
                record.outcome,
                record.detail,
            )
        return out

    async def _open_order(
        self, rule: str, charger: str, connector: str | None, title: str
    ) -> str | None:
        """The id of an open or in-progress work order ``rule`` opened for the same
        charger, connector and title, if any."""
        orders, _ = await self.work_orders.list(
            statuses=("open", "in_progress"), charger_ids=[charger], source="rule", limit=1000
        )
        for order in orders:
            if (order.rule, order.connector_id, order.title) == (rule, connector, title):
                return order.id
        return None

    def _allowed(self, rule: Rule, index: int, action: Action, now: float) -> bool:
        if action.rate_max is None:
            return True
        recent = self._recent[(rule.alert, index)]
        while recent and recent[0] <= now - action.rate_per:
            recent.popleft()
        if len(recent) >= action.rate_max:
            return False
        recent.append(now)
        return True

    async def _run_one(self, rule: Rule, index: int, action: Action, alert: Alert) -> ActionRecord:
        labels = {**alert.labels, **alert.annotations}
        options = _fill(dict(action.options), labels)
        charger = alert.labels.get("charger")

        def record(outcome: str, detail: str = "") -> ActionRecord:
            return ActionRecord(rule.alert, alert.id, action.type, outcome, detail)

        if action.type != "work_order" and not charger:
            return record("skipped", "the alert has no charger label")
        title = str(options.get("title") or alert.annotations.get("summary") or rule.alert)
        if action.type == "work_order" and charger:
            pending = await self._open_order(
                rule.alert, charger, alert.labels.get("connector"), title
            )
            if pending is not None:
                return record("skipped", f"work order {pending} is still open")
        if not self._allowed(rule, index, action, time.monotonic()):
            return record("rate-limited", f"more than {action.rate_max} per {action.rate_per:g} s")
        if action.dry_run or self.dry_run:
            return record("dry-run", repr(options))
        try:
            if action.type == "work_order":
                order = await self.work_orders.create(
                    title,
                    actor=f"rule:{rule.alert}",
                    source="rule",
                    description=options.get("description") or alert.annotations.get("description"),
                    charger_id=charger,
                    connector_id=alert.labels.get("connector"),
                    alert_id=alert.id,
                    rule=rule.alert,
                    priority=str(options.get("priority") or "normal"),
                )
                if order is None:
                    return record("skipped", "the alert has a work order already")
            elif action.type == "desired":
                if self.shadow_client is None:
                    return record("skipped", "no MQTT connection")
                assert charger is not None
                await self.shadow_client.update(charger, {"desired": options["state"]})
            else:
                if self.mqtt is None or self.topics is None:
                    return record("skipped", "no MQTT connection")
                assert charger is not None
                self.mqtt.publish(
                    self.topics.command(charger),
                    {
                        "name": options["name"],
                        "payload": _fill_request(action.options.get("payload", {}), labels),
                        "clientToken": f"rule-{alert.id}-{index}",
                    },
                )
        except ShadowRequestError as exc:
            return record("failed", str(exc))
        return record("done")


async def list_work_orders(db: Database, charger_id: str | None = None) -> list[dict[str, Any]]:
    """The work orders (oldest first), as the rules tests and tools read them."""
    store = WorkOrderStore(db)
    orders, _ = await store.list(charger_ids=[charger_id] if charger_id else None, limit=100_000)
    return [
        {
            "id": o.id, "alertId": o.alert_id, "rule": o.rule, "chargerId": o.charger_id,
            "connectorId": o.connector_id, "title": o.title, "description": o.description,
            "status": o.status, "createdAt": o.created_at,
        }
        for o in reversed(orders)
    ]  # fmt: skip
