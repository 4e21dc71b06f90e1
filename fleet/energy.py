"""The energy engine: keeps every site within its limit by writing each charger's desired
``chargingLimit`` (the bridge turns it into OCPP charging profiles; docs/shadow.md,
"Charging limits"), and reports the site's load, allocation, headroom and last breach.

Run by the leading ``fleet`` process only (:mod:`fleet.app`), as the other fleet engines.
What it reads:

* the site's desired energy state and its last report (:mod:`fleet.sites`), the registry
  (which chargers a site has), the open transactions (session start, idTag);
* each charger's shadow from the shadow store: connection, connector status, the limits
  the charger confirmed (``reported.chargingLimit``) and refused
  (``reported.refused.chargingLimit``);
* over MQTT, while it leads and some charger belongs to a site: ``telemetry/meterValues``
  (Current.Import per phase, Power.Active.Import: the measured load),
  ``events/transaction`` (sessions start and stop) and ``shadow/update/documents`` (a
  charger going on- or offline, a status, a confirmation or refusal). Each marks the
  charger's site for a new pass, run after ``debounce`` seconds so a burst costs one pass
  (a session start cuts the wait short: it is what the reaction time is measured from);
  every site is also recomputed every ``interval`` seconds and at the schedule's edges, so
  a lost message costs one interval.

After every pass it stores the site's report, and publishes it on
``{prefix}/sites/{site}/energy/reported`` (docs/mqtt.md) at most every ``report_every``
seconds and at once when the site goes over or back or a port starts or stops ignoring its
limit; the recorder keeps it as time series (load against limit, allowed against drawn
current) for the pack's alerts.

Why it writes through the twin like an operator (``shadow/update``, only the leaves that
changed): the bridge reconciles desired state on every delta and re-applies it when a
charger reconnects, so a charger that reboots gets its limit back without the engine.

What must survive a restart or a leader change (who runs since when, who waits, who
draws less than offered since when) is kept in the site's report; measured load is
learnt again from the next meter values (until then it is unknown and not redistributed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chargetwin.database import DatabaseError
from chargetwin.mqtt import MqttClient
from chargetwin.shadow_client import ShadowClient, ShadowRequestError
from chargetwin.topics import InvalidTopicError, Topics
from fleet.allocation import Connector, Policy, State, allocate, under_since
from fleet.sites import (
    DEFAULT_RATED_A,
    DEFAULT_VOLTAGE,
    SiteNotFound,
    SiteStore,
    finite,
    limit_at,
)

log = logging.getLogger(__name__)

ACTOR = "energy-allocator"
# OCPP 1.6 section 7.7 statuses while a transaction runs (2.0.1 ports report Occupied).
TRANSACTION_STATUSES = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE", "Occupied"})
STALE_S = 300.0  # a meter value older than this says nothing about the load now
# A charger that draws more than it confirmed (beyond the tolerance) for this long ignores
# its limit: it is counted at its rated current, as a refusal is, until it obeys again.
IGNORED_AFTER_S = 60.0
IGNORE_TOLERANCE_A = 1.0
_WATCHED = ("connection", "connectors", "chargingLimit", "refused")


@dataclass(slots=True)
class Reading:
    amps: float | None  # A per phase, the highest phase
    watts: float | None
    at: float


@dataclass
class EnergyEngine:
    sites: SiteStore
    shadow_client: ShadowClient
    mqtt: MqttClient
    topics: Topics
    clock: Callable[[], float] = time.time
    interval: float = 60.0
    debounce: float = 0.2
    # A site's report goes out at most this often (a pass runs on every burst of meter
    # values), and at once when the site goes over or back or a port starts or stops
    # ignoring its limit: the alerts' minutes are kept, the series is not flooded.
    report_every: float = 15.0
    _readings: dict[tuple[str, str], Reading] = field(default_factory=dict, init=False)
    _site_of: dict[str, str] = field(default_factory=dict, init=False)
    _chargers: dict[str, list[tuple[str, list[str]]]] = field(default_factory=dict, init=False)
    _dirty: set[str] = field(default_factory=set, init=False)
    _all: bool = field(default=True, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _started: asyncio.Event = field(default_factory=asyncio.Event, init=False)  # a session
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _listening: bool = field(default=False, init=False)  # subscribed to the chargers
    passes: int = field(default=0, init=False)  # site passes run (for tests and logs)
    reports: int = field(default=0, init=False)  # reports published
    _announced: dict[str, tuple[float, bool, tuple[str, ...]]] = field(
        default_factory=dict, init=False
    )  # per site: when its last report went out, and whether it was over, who ignored

    # --- lifecycle ----------------------------------------------------------------------
    def _filters(self) -> dict[str, Any]:
        p = self.topics.prefix
        return {
            f"{p}/chargers/+/telemetry/meterValues": self._on_meter_values,
            f"{p}/chargers/+/events/transaction": self._on_transaction,
            f"{p}/chargers/+/shadow/update/documents": self._on_document,
        }

    @property
    def listening(self) -> bool:
        """Subscribed to the chargers' meter values, transactions and shadow documents."""
        return self._listening

    async def _load_sites(self) -> None:
        """Which chargers each site has (from the registry)."""
        self._chargers = await self.sites.chargers_by_site()
        self._site_of = {c: site for site, cs in self._chargers.items() for c, _ in cs}

    async def _listen(self, wanted: bool) -> None:
        """Hear the chargers' messages only while some charger belongs to a site: a fleet
        without sites sends the leader nothing (a shadow document is two whole documents,
        ~10 KB with a charger's configuration, for every write of every charger). Whatever
        a charger said meanwhile is in the store, which the pass that subscribes reads."""
        if wanted == self._listening:
            return
        self._listening = wanted
        for topic_filter, handler in self._filters().items():
            if wanted:
                await self.mqtt.subscribe_acked(topic_filter, handler, qos=0)
            else:
                self.mqtt.unsubscribe(topic_filter)

    async def start(self) -> None:
        if self._task is not None:
            return
        try:
            await self._load_sites()
            listen = bool(self._site_of)
        except DatabaseError as exc:
            log.warning("energy: sites unreadable at start (%s); listening to every charger", exc)
            listen = True
        await self._listen(listen)  # before returning: a message published next is heard
        self._all = True
        self._wake.set()  # the first pass at once
        self._task = asyncio.create_task(self._run(), name="energy-engine")

    async def stop(self) -> None:
        task, self._task = self._task, None
        for topic_filter in self._filters():
            self.mqtt.unsubscribe(topic_filter)
        self._listening = False
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[EnergyEngine]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    def wake(self) -> None:
        """Recompute every site now (a limit or schedule changed)."""
        self._all = True
        self._wake.set()

    async def _run(self) -> None:
        next_edge: float | None = None
        while True:
            delay = self.interval
            if next_edge is not None:
                delay = min(delay, max(0.05, next_edge - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            if self._wake.is_set() and not self._all and not self._started.is_set():
                with contextlib.suppress(TimeoutError):  # gather the rest of a burst
                    await asyncio.wait_for(self._started.wait(), self.debounce)
            self._wake.clear()
            self._started.clear()
            timed_out = not self._dirty and not self._all
            dirty, self._dirty = self._dirty, set()
            everything, self._all = self._all or timed_out, False
            try:
                edge = await self.tick(None if everything else dirty)
                if everything:
                    next_edge = edge
            except Exception as exc:  # a store hiccup must not end the engine
                log.warning("energy: pass failed, trying again: %s", exc)
                self._all = True
                next_edge = self.clock() + min(5.0, self.interval)

    # --- MQTT ---------------------------------------------------------------------------
    def _mark(self, charger_id: str) -> None:
        site = self._site_of.get(charger_id)
        if site is not None:
            self._dirty.add(site)
            self._wake.set()

    async def _on_meter_values(self, topic: str, payload: bytes) -> None:
        charger_id = self.topics.charger_id_of(topic)
        if charger_id not in self._site_of:
            return
        try:
            message = json.loads(payload)
            connector = str(int(message["connectorId"]))
            values = list(message.get("values") or [])
        except (ValueError, TypeError, KeyError):
            log.debug("energy: unreadable meter values from %s", charger_id)
            return
        if connector == "0":
            return
        amps: float | None = None
        watts: float | None = None
        for value in values:
            if not isinstance(value, dict):
                continue
            number = finite(value.get("value"))
            if number is None:
                continue
            measurand, unit = value.get("measurand"), (value.get("unit") or "")
            if measurand == "Current.Import":
                amps = number if amps is None else max(amps, number)
            elif measurand == "Power.Active.Import" and not value.get("phase"):
                watts = number * 1000 if unit == "kW" else number
        if amps is None and watts is None:
            return
        self._readings[(charger_id, connector)] = Reading(amps, watts, self.clock())
        self._mark(charger_id)

    async def _on_transaction(self, topic: str, payload: bytes) -> None:
        charger_id = self.topics.charger_id_of(topic)
        try:
            message = json.loads(payload)
            if message.get("event") == "stopped":
                self._readings.pop((charger_id, str(int(message["connectorId"]))), None)
            elif message.get("event") == "started" and charger_id in self._site_of:
                self._started.set()
        except (ValueError, TypeError, KeyError, AttributeError):
            return
        self._mark(charger_id)

    async def _on_document(self, topic: str, payload: bytes) -> None:
        charger_id = self.topics.charger_id_of(topic)
        if charger_id not in self._site_of:
            return
        try:
            message = json.loads(payload)
            before = (message.get("previous") or {}).get("state", {}).get("reported") or {}
            after = (message.get("current") or {}).get("state", {}).get("reported") or {}
        except (ValueError, AttributeError):
            return
        if any(before.get(key) != after.get(key) for key in _WATCHED):
            self._mark(charger_id)

    # --- one pass -----------------------------------------------------------------------
    async def tick(self, only: set[str] | None = None, now: float | None = None) -> float | None:
        """Recompute ``only`` those sites (every site when None); the next schedule edge.

        A full pass reloads which chargers each site has; a pass over a few sites (after
        their messages) uses what the last full pass loaded, so a burst of meter values
        costs a few queries per site, not a read of the whole registry."""
        now = self.clock() if now is None else now
        if only is None or not self._chargers:
            await self._load_sites()
            if self._task is not None:
                await self._listen(bool(self._site_of))
        if only is None:
            energies = await self.sites.all_energy()
        else:
            energies = {}
            for site in only:
                with contextlib.suppress(SiteNotFound):
                    energies[site] = await self.sites.energy(site)
        edges: list[float] = []
        for site, energy in sorted(energies.items()):
            limit = limit_at(energy.desired, now)
            if limit.next_edge is not None:
                edges.append(limit.next_edge)
            chargers = self._chargers.get(site, [])
            if limit.amps is None:
                self._announced.pop(site, None)  # no report either
                await self._release(site, chargers)  # no limit desired: nothing to keep
                continue
            await self._site_pass(site, energy.desired, chargers, limit.amps, limit.window, now)
        return min(edges) if edges else None

    async def _site_pass(
        self,
        site: str,
        desired: dict[str, Any],
        chargers: Sequence[tuple[str, list[str]]],
        amps: float,
        window: str | None,
        now: float,
    ) -> None:
        previous = await self.sites.report(site) or {}
        memory: dict[str, Any] = previous.get("connectors") or {}
        sessions = await self._sessions([c for c, _ in chargers])
        documents = await self.sites.documents([c for c, _ in chargers])
        connectors: list[Connector] = []
        readings: dict[str, Reading | None] = {}  # one snapshot for the pass and its report
        overs: dict[str, float | None] = {}  # since when each draws more than it confirmed
        for charger_id, tags in chargers:
            connectors.extend(
                self._connectors(
                    desired,
                    charger_id,
                    tags,
                    documents[charger_id],
                    sessions,
                    memory,
                    readings,
                    overs,
                    now,
                )
            )
        minimum = float(desired.get("minimumA", 6.0))
        policy = Policy(
            amps,
            minimum=minimum,
            strategy=str(desired.get("strategy", "equal")),
            # the minimum kept free for the next sessions, so that a new one is offered
            # current in one pass (docs/sites.md, "Reaction time: the reserve")
            reserve_sessions=Policy.reserve_for(len(connectors), amps, minimum),
        )
        allocation = allocate(connectors, policy, now)
        written = await self._write(site, desired, connectors, allocation.limits, documents)
        self.passes += 1
        load_amps, load_watts, unknown = 0.0, 0.0, 0
        report_connectors: dict[str, Any] = {}
        for c in connectors:
            reading = readings.get(c.key)
            if c.state is State.CHARGING and reading is None:
                unknown += 1
            if reading is not None:
                load_amps += c.measured or 0.0  # Current.Import, else from the power
                load_watts += reading.watts or 0.0
            offered = written.get(c.key, c.offered)
            target = allocation.targets.get(c.key)
            running = c.running_since if (c.offered or 0) > 0 else None
            paused = c.paused_since if c.offered == 0 else None
            if target is not None and target > 0:
                running = running if running is not None else now
                paused = None
            elif c.state is State.CHARGING:
                paused = paused if paused is not None else now
                running = None
            report_connectors[c.key] = {
                "state": c.state.value, "ratedA": c.rated, "phases": c.phases,
                "targetA": target, "limitA": offered, "confirmedA": c.confirmed,
                "measuredA": c.measured, "countedA": c.bound if target is None
                else max(c.bound, written.get(c.key, c.bound)),
                "priority": c.priority, "sessionStart": c.started_at,
                "runningSince": running, "pausedSince": paused,
                "underSince": under_since(c.measured, offered, c.under_since, now),
                "pendingA": _pending(c.confirmed, offered, c.pending),
                "overSince": overs.get(c.key),
            }  # fmt: skip
        ignoring = sorted(
            key for key, since in overs.items()
            if since is not None and now - since >= IGNORED_AFTER_S
        )  # fmt: skip
        for key in set(ignoring) - set(previous.get("ignoring") or []):
            log.warning("site %s: %s draws more than its confirmed limit since %.0f s; counted"
                        " at its rated current", site, key, now - (overs[key] or now))  # fmt: skip
        breach = previous.get("lastBreach")
        over = load_amps > amps + 1e-6
        if over:
            breach = {"at": now, "amountA": round(load_amps - amps, 3), "limitA": amps}
            if not previous.get("over"):  # once per breach, not once per pass
                log.warning(
                    "site %s: %.1f A over its limit of %.1f A", site, load_amps - amps, amps
                )
        report = {
            "limitA": amps,
            "window": window,
            "loadA": round(load_amps, 3),
            "loadKW": round(load_watts / 1000, 3),
            "unknownLoad": unknown,
            "fixedA": allocation.fixed,
            "countedA": round(allocation.counted, 3),
            "headroomA": round(allocation.headroom, 3),
            "paused": list(allocation.paused),
            "lastBreach": breach,
            "over": over,
            "ignoring": ignoring,
            "connectors": report_connectors,
            "updatedAt": now,
        }
        text = json.dumps(report, allow_nan=False)  # once, for the store and MQTT
        await self.sites.put_report(site, report, now, text)
        self._publish(site, report, text)

    def _publish(self, site: str, report: dict[str, Any], text: str) -> None:
        """Announce the report, so the recorder keeps the site's load, limit and each
        connector's allowed and drawn current in the time series for rules to watch.

        QoS 1 through the outbox: held while the broker is away, like any telemetry."""
        now, over, ignoring = report["updatedAt"], report["over"], tuple(report["ignoring"])
        last = self._announced.get(site)
        if (
            last is not None
            and last[1:] == (over, ignoring)
            and 0 <= now - last[0] < self.report_every
        ):
            return
        self._announced[site] = (now, over, ignoring)
        try:
            topic = self.topics.site_energy_reported(site)
        except InvalidTopicError:  # the site is steered; only its report is not announced
            log.debug("energy: site %r is no MQTT topic level; report not published", site)
            return
        self.mqtt.publish(topic, f'{{"site": {json.dumps(site)}, "reported": {text}}}', qos=1)
        self.reports += 1

    async def _release(self, site: str, chargers: Sequence[tuple[str, list[str]]]) -> None:
        """The site has no limit (any more): clear the limits this engine wrote for it."""
        documents = await self.sites.documents([c for c, _ in chargers])
        patches = {
            charger_id: {"desired": {"chargingLimit": None}}
            for charger_id, document in documents.items()
            if (
                ((document.get("state") or {}).get("desired") or {}).get("chargingLimit") or {}
            ).get("site")
            == site
        }
        if patches:
            log.info("site %s: no limit; clearing the charging limits of %d chargers",
                     site, len(patches))  # fmt: skip
            for charger_id, answer in (await self.shadow_client.update_many(patches)).items():
                if isinstance(answer, ShadowRequestError):
                    log.warning("site %s: limit of %s not cleared (next pass): %s",
                                site, charger_id, answer)  # fmt: skip

    async def _sessions(
        self, charger_ids: Sequence[str]
    ) -> dict[tuple[str, str], tuple[float, str]]:
        """Open transactions: (charger, connector) -> (start, idTag)."""
        if not charger_ids:
            return {}
        try:
            marks = ", ".join("?" for _ in charger_ids)
            rows = await self.sites.db.fetchall(
                "SELECT charger_id, connector_id, started_at, id_tag FROM transactions"
                f" WHERE stopped_at IS NULL AND charger_id IN ({marks})",
                tuple(charger_ids),
            )
        except DatabaseError:  # no bridge has written a transaction yet
            return {}
        return {(str(r[0]), str(r[1])): (float(r[2]), str(r[3])) for r in rows}

    def _reading(self, charger_id: str, connector: str, now: float) -> Reading | None:
        reading = self._readings.get((charger_id, connector))
        if reading is None or now - reading.at > STALE_S:
            return None
        return reading

    def _connectors(
        self,
        desired: dict[str, Any],
        charger_id: str,
        tags: list[str],
        document: dict[str, Any],
        sessions: dict[tuple[str, str], tuple[float, str]],
        memory: dict[str, Any],
        readings: dict[str, Reading | None],
        overs: dict[str, float | None],
        now: float,
    ) -> list[Connector]:
        spec = (desired.get("chargers") or {}).get(charger_id) or {}
        rated = float(spec.get("ratedA", desired.get("ratedA", DEFAULT_RATED_A)))
        phases = int(spec.get("phases", desired.get("phases", 3)))
        voltage = float(desired.get("voltage", DEFAULT_VOLTAGE))
        reported = (document.get("state") or {}).get("reported") or {}
        wanted = ((document.get("state") or {}).get("desired") or {}).get("chargingLimit") or {}
        online = bool((reported.get("connection") or {}).get("online"))
        limits = reported.get("chargingLimit") or {}
        refused = (reported.get("refused") or {}).get("chargingLimit") or {}
        failsafe_value = None
        if "failsafe" not in refused:
            failsafe_value = finite((limits.get("failsafe") or {}).get("limit"))
        ports = sorted(
            (k for k in (reported.get("connectors") or {}) if k != "0"), key=_port_order
        ) or ["1"]  # nothing reported yet: counted as one port
        out = []
        for port in ports:
            status = ((reported.get("connectors") or {}).get(port) or {}).get("status")
            session = sessions.get((charger_id, port))
            if not online:
                state = State.OFFLINE
            elif port in refused:
                state = State.REFUSED
            elif session is not None or status in TRANSACTION_STATUSES:
                state = State.CHARGING
            else:
                state = State.IDLE
            kept = memory.get(f"{charger_id}/{port}") or {}
            reading = readings[f"{charger_id}/{port}"] = self._reading(charger_id, port, now)
            measured = None
            if reading is not None:
                measured = reading.amps
                if measured is None and reading.watts is not None:
                    measured = reading.watts / (voltage * phases)
            offered = finite(((wanted.get("connectors") or {}).get(port) or {}).get("limit"))
            confirmed = finite(((limits.get("connectors") or {}).get(port) or {}).get("limit"))
            pending = _pending(confirmed, offered, finite(kept.get("pendingA")))
            over = _over_since(measured, confirmed, finite(kept.get("overSince")), now)
            overs[f"{charger_id}/{port}"] = over
            if state is State.CHARGING and over is not None and now - over >= IGNORED_AFTER_S:
                state = State.REFUSED  # it ignores its limit: counted at its rated current
            out.append(
                Connector(
                    charger_id,
                    port,
                    state,
                    rated,
                    phases=phases,
                    confirmed=confirmed,
                    pending=pending,
                    failsafe=failsafe_value,
                    measured=measured,
                    offered=offered,
                    under_since=under_since(measured, offered, finite(kept.get("underSince")), now),
                    started_at=_session_start(state, session, kept, now),
                    priority=_priority(desired, spec, tags, session[1] if session else None),
                    running_since=finite(kept.get("runningSince")),
                    paused_since=finite(kept.get("pausedSince")),
                )
            )
        return out

    async def _write(
        self,
        site: str,
        desired: dict[str, Any],
        connectors: Sequence[Connector],
        limits: dict[str, float],
        documents: dict[str, dict[str, Any]],
    ) -> dict[str, float]:
        """Patch each charger's desired ``chargingLimit`` where it differs; the limits the
        twin accepted."""
        patches: dict[str, dict[str, Any]] = {}
        wanted_by_charger: dict[str, dict[str, float]] = {}
        for c in connectors:
            if c.key in limits:
                wanted_by_charger.setdefault(c.charger_id, {})[c.connector] = limits[c.key]
        phases = {c.charger_id: c.phases for c in connectors}
        for charger_id, ports in wanted_by_charger.items():
            state = documents[charger_id].get("state") or {}
            current = (state.get("desired") or {}).get("chargingLimit") or {}
            patch: dict[str, Any] = {}
            if current.get("site") != site:
                patch["site"] = site
            if current.get("unit") != "A":
                patch["unit"] = "A"
            failsafe = desired.get("failsafeA")
            want_failsafe = None if failsafe is None else {
                "limit": float(failsafe), "phases": phases[charger_id]
            }  # fmt: skip
            if current.get("failsafe") != want_failsafe:
                patch["failsafe"] = want_failsafe
            now_ports = current.get("connectors") or {}
            port_patch = {
                port: {"limit": amps, "phases": phases[charger_id]}
                for port, amps in ports.items()
                if now_ports.get(port) != {"limit": amps, "phases": phases[charger_id]}
            }
            if port_patch:
                patch["connectors"] = port_patch
            if patch:
                patches[charger_id] = {"desired": {"chargingLimit": patch}}
        if not patches:
            return dict(limits)
        answers = await self.shadow_client.update_many(patches)
        accepted = dict(limits)
        for charger_id, answer in answers.items():
            if isinstance(answer, ShadowRequestError):
                log.warning(
                    "site %s: charging limit of %s not written (next pass): %s",
                    site, charger_id, answer,
                )  # fmt: skip
                for c in connectors:
                    if c.charger_id == charger_id and c.key in accepted:
                        if c.offered is None:
                            del accepted[c.key]
                        else:
                            accepted[c.key] = c.offered
        return accepted


def _session_start(
    state: State, session: tuple[float, str] | None, kept: dict[str, Any], now: float
) -> float | None:
    """The transaction's start; else (a session seen by its status only, e.g. the bridge's
    transactions are elsewhere) when this engine first saw it charging."""
    if session is not None:
        return session[0]
    if state is State.IDLE:
        return None
    known = finite(kept.get("sessionStart"))
    return known if known is not None or state is not State.CHARGING else now


def _pending(confirmed: float | None, written: float | None, before: float | None) -> float | None:
    """The highest limit written and maybe still on its way to the charger: None once the
    charger confirmed the latest one (the bridge applies them in order, so any earlier one
    is superseded), else the higher of the latest and those pending before."""
    if written is None or confirmed == written:
        return None
    return written if before is None else max(before, written)


def _over_since(
    measured: float | None, confirmed: float | None, before: float | None, now: float
) -> float | None:
    """Since when the connector draws more than the limit its charger confirmed (None: it
    does not, or either is unknown)."""
    if measured is None or confirmed is None or measured <= confirmed + IGNORE_TOLERANCE_A:
        return None
    return now if before is None else before


def _port_order(port: str) -> tuple[int, str]:
    return (int(port), port) if port.isdigit() else (1 << 30, port)


def _priority(
    desired: dict[str, Any], spec: dict[str, Any], tags: list[str], id_tag: str | None
) -> int:
    """Per charger wins; else the highest of its registry tags and its session's idTag."""
    if "priority" in spec:
        return int(spec["priority"])
    by_tag: dict[str, Any] = desired.get("tagPriorities") or {}
    found = [int(by_tag[t]) for t in [*tags, id_tag] if t is not None and t in by_tag]
    return max(found) if found else 0
