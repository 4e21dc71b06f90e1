"""Prometheus metrics of a ChargeTwin process (``prometheus_client``, its default registry).

Two kinds:

- events counted where they happen: OCPP calls per action and CALLERRORs per code
  (bridge), HTTP requests per route and status (API), rule group evaluations (rules);
- state read at scrape time from the objects that hold it (:func:`watch`): connected
  chargers, the MQTT outbox, shadow updates, recorder points, spool bytes, campaign
  chargers per state. Nothing is copied into a second counter that could drift.

Every process serves them: the API on its own port at ``/metrics``; a process without the
API (``chargetwin bridge|twin|rules|fleet``) on ``--metrics-port`` when set
(:func:`serve`). ``docs/operations.md`` lists every metric, an example Prometheus
configuration and the alerting rules an operator sets on the platform itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

NAMESPACE = "chargetwin"

# --- events ---------------------------------------------------------------------------------
OCPP_CALLS = Counter(
    "chargetwin_ocpp_calls",
    "OCPP calls received from chargers, by action (unknown actions as 'other').",
    ["action"],
)
OCPP_CALL_ERRORS = Counter(
    "chargetwin_ocpp_call_errors",
    "CALLERRORs sent to chargers, by OCPP error code.",
    ["code"],
)
OCPP_CALLS_SENT = Counter(
    "chargetwin_ocpp_calls_sent",
    "OCPP calls the bridge sent to chargers (its own and operators' commands), by action "
    "and outcome: answered, call_error (the charger answered CALLERROR), invalid (the "
    "answer broke the schema), timeout, gone (the connection closed first).",
    ["action", "outcome"],
)
OCPP_CALL_SECONDS = Histogram(
    "chargetwin_ocpp_call_duration_seconds",
    "From a charger's CALL frame to its answer on the wire. The answer waits until the "
    "broker has stored what the call published (the shadow report, telemetry), so this is "
    "the frame-to-shadow latency as the bridge guarantees it.",
    ["action"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_REQUESTS = Counter(
    "chargetwin_http_requests",
    "HTTP requests answered by the API, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "chargetwin_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RULE_GROUP_SECONDS = Histogram(
    "chargetwin_rule_group_evaluation_seconds",
    "Time to evaluate one rule group (all its rules over the fleet), by group.",
    ["group"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CAMPAIGN_CHARGERS = Gauge(
    "chargetwin_campaign_chargers",
    "Chargers of running and paused firmware campaigns, by state (leading fleet process).",
    ["state"],
)
RULE_GROUP_FAILURES = Counter(
    "chargetwin_rule_group_failures",
    "Rule group evaluations that failed (the group's rules keep their last state).",
    ["group"],
)


# --- state read at scrape time --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Watched:
    name: str
    documentation: str
    kind: str  # "gauge" | "counter"
    read: Callable[[], float | dict[str, float]]
    label: str | None


class _StateCollector(Collector):
    """Reads registered callbacks at scrape time; one failing callback costs only itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[str, list[_Watched]] = {}

    def add(self, watched: _Watched) -> None:
        with self._lock:
            self._watched.setdefault(watched.name, []).append(watched)

    def remove(self, watched: _Watched) -> None:
        with self._lock:
            entries = self._watched.get(watched.name, [])
            if watched in entries:
                entries.remove(watched)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            groups = [list(v) for v in self._watched.values() if v]
        for entries in groups:
            first = entries[0]
            labels = [first.label] if first.label else []
            family: GaugeMetricFamily | CounterMetricFamily
            if first.kind == "counter":
                family = CounterMetricFamily(first.name, first.documentation, labels=labels)
            else:
                family = GaugeMetricFamily(first.name, first.documentation, labels=labels)
            totals: dict[str, float] = {}
            for entry in entries:  # several instances in one process (tests): summed
                try:
                    value = entry.read()
                except Exception:  # a metric must never break a scrape
                    log.debug("metric %s could not be read", entry.name, exc_info=True)
                    continue
                items = value.items() if isinstance(value, dict) else [("", value)]
                for key, number in items:
                    totals[key] = totals.get(key, 0.0) + float(number)
            for key, number in sorted(totals.items()):
                family.add_metric([key] if labels else [], number)
            yield family


_STATE = _StateCollector()
REGISTRY.register(_STATE)


class Watch:
    """A registration of :func:`watch`; :meth:`close` removes it (a component stopping)."""

    def __init__(self, entries: Iterable[_Watched]) -> None:
        self._entries = list(entries)

    def close(self) -> None:
        for entry in self._entries:
            _STATE.remove(entry)
        self._entries = []


def watch(
    name: str,
    documentation: str,
    read: Callable[[], float | dict[str, float]],
    *,
    kind: str = "gauge",
    label: str | None = None,
) -> Watch:
    """Report ``read()`` as ``chargetwin_<name>`` at every scrape (a dict: one sample per
    ``label`` value). Counters keep their ``_total`` suffix as Prometheus adds it."""
    entry = _Watched(f"{NAMESPACE}_{name}", documentation, kind, read, label)
    _STATE.add(entry)
    return Watch([entry])


def watch_outbox(component: str, waiting: Callable[[], int]) -> Watch:
    """The MQTT outbox of ``component``: messages the broker has not acknowledged yet."""
    return watch(
        "mqtt_outbox_messages",
        "Messages published and not yet acknowledged by the broker (queued or in flight), "
        "by component.",
        lambda: {component: waiting()},
        label="component",
    )


def known_action(action: str, actions: frozenset[str]) -> str:
    """The action as a label value: a charger's free text must not create new series."""
    return action if action in actions else "other"


_served: set[tuple[str, int]] = set()


def serve(host: str, port: int) -> None:
    """Serve ``/metrics`` of this process on ``host:port`` (a thread; once per address)."""
    if port <= 0 or (host, port) in _served:
        return
    start_http_server(port, addr=host)
    _served.add((host, port))
    log.info("metrics on http://%s:%d/metrics", host, port)
