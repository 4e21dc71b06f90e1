"""The rules engine: evaluates every rule on its group's schedule and runs the alerts.

One evaluation of a rule: run its query (:mod:`rules.evaluations`), advance its alerts
(:func:`rules.alerts.step`), then, across all rules, mark silenced and inhibited alerts,
save what changed and notify. A rule whose query fails is in *error*: its alerts are left
as they were (neither resolved nor silently normal) and its state says why; a rule whose
query finds no series at all is *nodata*. Both show in ``GET /api/v1/rules``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from chargetwin.metrics import RULE_GROUP_FAILURES, RULE_GROUP_SECONDS
from rules.actions import Actions
from rules.alerts import FIRING, PENDING, RESOLVED, Alert, AlertStore, matches, step
from rules.evaluations import Outcome, SharedQueries, observe, selection_key
from rules.files import Rule, RuleSet
from rules.notifiers import Notifier
from rules.points import Labels
from rules.series import SeriesError, SeriesStore
from rules.tracking import Tracker, tracked

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        store: SeriesStore,
        alert_store: AlertStore,
        ruleset: RuleSet,
        *,
        notifier: Notifier | None = None,
        actions: Actions | None = None,
        concurrency: int = 4,
        value_refresh: float = 60.0,
        settle: float = 120.0,
        full_read_every: float = 900.0,
    ) -> None:
        """``settle`` and ``full_read_every`` (seconds) tune the rules with long windows
        that carry their points across evaluations (:mod:`rules.tracking`): points up to
        ``settle`` late still count at the next evaluation, later ones at the next full
        read; ``settle=math.inf`` carries none (every window is read whole each time)."""
        self.store = store
        self.alert_store = alert_store
        self.ruleset = ruleset
        self.notifier = notifier
        self.actions = actions
        self.current: dict[str, dict[str, Alert]] = defaultdict(dict)
        self.states: dict[str, dict[str, Any]] = {
            r.alert: {"health": "unknown", "pending": 0, "firing": 0} for r in ruleset.rules
        }
        self.value_refresh = value_refresh
        self._lock = asyncio.Lock()
        self.closed = False
        self._concurrency = asyncio.Semaphore(concurrency)
        self._fingerprints: dict[str, dict[Labels, str]] = {}
        self.settle = settle
        self.full_read_every = full_read_every
        self.trackers: dict[str, Tracker] = {}
        # Periodic full reads are staggered, but rules evaluated together (one group) that
        # read the same points do theirs in the same cycle: one shared query serves them.
        long_windows = [r for r in ruleset.rules if tracked(r, settle)]
        reads = [(r.file, r.group, selection_key(r.selection), r.window) for r in long_windows]
        phases = {read: (i + 1) / len(set(reads)) for i, read in enumerate(dict.fromkeys(reads))}
        for rule, read in zip(long_windows, reads, strict=True):
            self.trackers[rule.alert] = self._tracker(rule, phases[read])

    def _tracker(self, rule: Rule, phase: float = 1.0) -> Tracker:
        return Tracker(rule, settle=self.settle, refresh=self.full_read_every, phase=phase)

    @property
    def rules(self) -> list[Rule]:
        return self.ruleset.rules

    async def load(self) -> None:
        """Create tables and take back the open alerts of a previous run."""
        await self.alert_store.create_schema()
        if self.actions is not None:
            await self.actions.create_schema()
        known = {r.alert for r in self.rules}
        for alert in await self.alert_store.open_alerts():
            if alert.rule in known:
                self.current[alert.rule][alert.fingerprint] = alert
        await self.alert_store.forget_rules_except(known)

    async def close(self) -> None:
        """Evaluate no more: the evaluation in flight finishes, later ones do nothing."""
        self.closed = True
        async with self._lock:
            pass

    def firing(self, rule: str | None = None) -> list[Alert]:
        rules = [rule] if rule else list(self.current)
        return [a for r in rules for a in self.current.get(r, {}).values() if a.state == FIRING]

    async def evaluate(
        self, at: float | None = None, rules: Iterable[Rule] | None = None
    ) -> list[Alert]:
        """Evaluate ``rules`` (all by default) at ``at`` (now); return the transitions.

        The rules' queries run concurrently (at most ``concurrency`` at once) and identical
        queries are asked once; alerts then advance rule by rule, in the rules' order.
        """
        at = time.time() if at is None else at
        async with self._lock:
            if self.closed:
                return []
            evaluated = list(self.rules if rules is None else rules)
            queries = SharedQueries(self.store)
            async with asyncio.TaskGroup() as group:
                observing = [
                    group.create_task(self._observe(rule, queries, at), name=f"rule-{rule.alert}")
                    for rule in evaluated
                ]
            transitions: list[Alert] = []
            for rule, task in zip(evaluated, observing, strict=True):
                transitions.extend(self._advance(rule, *task.result(), at))
            return await self._finish(transitions, evaluated, at)

    async def _observe(
        self, rule: Rule, queries: SharedQueries, at: float
    ) -> tuple[Outcome | SeriesError, float]:
        tracker = self.trackers.get(rule.alert)
        if tracker is not None and tracker.rule is not rule:  # a rule given by the caller
            tracker = self.trackers[rule.alert] = self._tracker(rule)
        async with self._concurrency:
            started = time.perf_counter()
            try:
                outcome: Outcome | SeriesError = await observe(rule, queries, at, tracker)
            except SeriesError as exc:
                outcome = exc
            return outcome, time.perf_counter() - started

    def _advance(
        self, rule: Rule, outcome: Outcome | SeriesError, seconds: float, at: float
    ) -> list[Alert]:
        started = time.perf_counter()
        state = self.states.setdefault(rule.alert, {})
        if isinstance(outcome, SeriesError):
            if state.get("health") != "error":
                log.warning(
                    "rule %s (%s:%d) in error: %s", rule.alert, rule.file, rule.line, outcome
                )
            state.update(health="error", lastError=str(outcome))
            return []
        current = self.current[rule.alert]
        fingerprints = self._fingerprints.setdefault(rule.alert, {})
        transitions = step(rule, current, outcome.observations, at, fingerprints)
        state.update(
            health="nodata" if outcome.no_data else "ok",
            lastError=None,
            lastEvaluation=at,
            evaluationSeconds=seconds + time.perf_counter() - started,
            pending=sum(1 for a in current.values() if a.state == PENDING),
            firing=sum(1 for a in current.values() if a.state == FIRING),
        )
        return transitions

    async def _finish(self, transitions: list[Alert], rules: list[Rule], at: float) -> list[Alert]:
        """Silence, inhibit, save and notify; the transitions the store took are returned."""
        silences = await self.alert_store.active_silences(at)
        everything = [a for alerts in self.current.values() for a in alerts.values()]
        firing = [a for a in everything if a.state == FIRING]
        by_rule = {r.alert: r for r in self.rules}
        # Per inhibit rule, the firing sources keyed by their ``equal`` labels: one lookup
        # per alert instead of a scan of every firing alert.
        sources = []
        for inhibit in self.ruleset.inhibit_rules:
            index: dict[tuple[str | None, ...], list[Alert]] = defaultdict(list)
            for src in firing:
                if matches(inhibit.source, src.labels):
                    index[tuple(src.labels.get(k) for k in inhibit.equal)].append(src)
            sources.append((inhibit, index))
        for alert in everything:
            silenced = any(matches(s, alert.labels) for s in silences)
            inhibited = any(
                matches(inhibit.target, alert.labels)
                and any(
                    src is not alert
                    for src in index.get(tuple(alert.labels.get(k) for k in inhibit.equal), ())
                )
                for inhibit, index in sources
            )
            if (silenced, inhibited) != (alert.silenced, alert.inhibited):
                alert.silenced, alert.inhibited, alert.changed = silenced, inhibited, True
        notify = [
            alert
            for alert in everything
            if alert.state == FIRING
            and not alert.notified
            and not (alert.silenced or alert.inhibited)
        ]
        # Saved: what changed state (at once), alerts to announce (the store's claim on their
        # first notification), and alerts whose value or annotations moved (at most every
        # ``value_refresh`` seconds each: a held-for duration moves every evaluation, and
        # rewriting thousands of rows per cycle for it is the slow part).
        changed = {id(a): a for a in [*transitions, *notify]}
        for alert in everything:
            if alert.changed or (alert.stale and at - alert.saved_at >= self.value_refresh):
                changed[id(alert)] = alert
        saved = await self.alert_store.save(changed.values(), notify=notify)
        for alert in changed.values():
            alert.changed = alert.stale = False
            alert.saved_at = at
        for alert in notify:  # announced now, or by another engine that claimed it first
            alert.notified = True
        if saved.refused:
            await self._take_stored([a for a in changed.values() if a.id in saved.refused], at)
            transitions = [a for a in transitions if a.id not in saved.refused]
        notify = saved.notify
        for rule in rules:
            await self.alert_store.save_rule_state(rule, self.states[rule.alert])
        notified = {id(a) for a in notify}
        moved = {id(a) for a in transitions}
        for alert in transitions:
            if alert.state in (PENDING, FIRING, RESOLVED) and self.notifier is not None:
                webhook = id(alert) in notified or (alert.state == RESOLVED and alert.notified)
                self.notifier.transition(alert, webhook=webhook)
        for alert in notify:
            if self.notifier is not None and id(alert) not in moved:
                self.notifier.transition(alert, webhook=True)
            owner = by_rule.get(alert.rule)
            if owner is not None and owner.actions and self.actions is not None:
                await self.actions.run(owner, alert)
        return transitions

    async def _take_stored(self, refused: list[Alert], at: float) -> None:
        """Put the store's open alert in place of each one it refused (another engine
        opened the label set first, or closed the alert); none left: forget ours."""
        for alert in refused:
            current = self.current.get(alert.rule, {})
            if current.get(alert.fingerprint) is not alert:
                continue  # resolved or dropped here: nothing open to replace
            stored = await self.alert_store.open_alert(alert.rule, alert.fingerprint)
            if stored is None:
                del current[alert.fingerprint]
            else:
                stored.saved_at = at
                current[alert.fingerprint] = stored
        if refused:
            log.warning(
                "%d alerts (first: rule %s, %s) were opened or closed by another engine "
                "meanwhile; took the stored ones",
                len(refused),
                refused[0].rule,
                refused[0].labels,
            )

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        """One job per rule group, every ``interval``; a late run is merged, never doubled."""
        groups: dict[tuple[str, str], list[Rule]] = defaultdict(list)
        for rule in self.rules:
            groups[(rule.file, rule.group)].append(rule)
        for (file, group), rules in groups.items():
            scheduler.add_job(
                self._run_group,
                "interval",
                seconds=rules[0].interval,
                args=[rules],
                id=f"{file}:{group}",
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(UTC),
            )

    async def _run_group(self, rules: list[Rule]) -> None:
        group = rules[0].group
        started = time.perf_counter()
        try:
            await self.evaluate(rules=rules)
            RULE_GROUP_SECONDS.labels(group).observe(time.perf_counter() - started)
        except Exception:  # the scheduler must keep running; the reason is logged once here
            RULE_GROUP_FAILURES.labels(group).inc()
            log.exception("evaluation of %s failed", ", ".join(r.alert for r in rules))
