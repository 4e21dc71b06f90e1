"""The maintenance scheduler: takes chargers out at a window's start, returns them at its
end, and opens the work orders of scheduled inspections.

Why an owned asyncio task with an injectable clock rather than one scheduler job per
window edge: every decision is re-derived from the stores on each tick (which
occurrences contain "now", which runs are active), so a restart mid-window, a missed
start or end, a window edited or cancelled, all come out right without a job store to
keep in step; and tests drive :meth:`MaintenanceScheduler.tick` with any clock.

Semantics (docs/maintenance.md):

* At the start of an occurrence the charger's desired availability of connector 0 is
  set to ``Inoperative`` through the twin (the bridge sends ChangeAvailability). The
  value held before (desired, else reported, else ``Operative``) is saved first.
* Overlapping windows on one charger are a union: the charger stays out until the last
  one ends, and only then is the saved value restored.
* Restoring leaves an operator's own change alone: if desired connector 0 is no longer
  ``Inoperative`` at the end, it is not touched.
* A failed shadow request is retried on the next tick (the run's claim is given up when
  the charger could not be taken out; holds left without a run are released on every
  tick).

Who runs it: the one leading ``fleet`` process (:mod:`fleet.app`). Leadership makes two
schedulers at once rare and short, not impossible (a leader cut off from the database
finishing its tick while a standby takes over), so each step is conditional on what was
read rather than on a bare read:

* A window start is claimed first (a ``starting`` run, inserted once per window, charger
  and occurrence); only the scheduler whose insert won saves the hold and takes the
  charger out, then marks the run ``active``. A claim whose scheduler died before it
  finished is taken over after :data:`CLAIM_STALE_S`.
* An inspection's work orders have ids derived from the inspection, the charger and the
  occurrence, so opening them twice opens them once; the run is then recorded by a
  compare-and-set on the last run read.
* Ending a run is a compare-and-set on the run as read. Returning a charger is checked
  again just before it is written (no run keeps the charger out now), and its hold is
  released only if still no run does; writing the same restored value twice is harmless,
  so the return is re-checked rather than claimed (a claim lost with its scheduler would
  leave the charger out of service).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from chargetwin.database import Database
from chargetwin.shadow_client import ShadowClient, ShadowRequestError
from fleet.inspections import InspectionStore
from fleet.uptime import Interval
from fleet.windows import Run, Window, WindowStore
from fleet.work_orders import WorkOrderStore
from twin.registry import ChargerRegistry

log = logging.getLogger(__name__)

INOPERATIVE = "Inoperative"
ACTOR = "maintenance-scheduler"
CLAIM_STALE_S = 60.0  # a start claimed this long ago and not finished: its scheduler died


@dataclass
class MaintenanceScheduler:
    windows: WindowStore
    inspections: InspectionStore
    work_orders: WorkOrderStore
    registry: ChargerRegistry
    shadow_client: ShadowClient
    clock: Callable[[], float] = time.time
    interval: float = 30.0
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="maintenance-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MaintenanceScheduler]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    def wake(self) -> None:
        """Look again now (a window or inspection was created or cancelled)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                next_edge = await self.tick()
            except Exception as exc:  # a store hiccup must not end the schedule
                log.warning("maintenance: tick failed, trying again: %s", exc)
                next_edge = None
            delay = self.interval
            if next_edge is not None:
                delay = min(delay, max(0.05, next_edge - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # --- one pass -----------------------------------------------------------------------
    async def tick(self, now: float | None = None) -> float | None:
        """Apply every start, end and inspection due at ``now``; the next edge after it."""
        now = self.clock() if now is None else now
        windows = await self.windows.list()
        by_id = {w.id: w for w in windows}
        sites: dict[str, list[str]] = {}
        for charger in await self.registry.list():
            if charger.site:
                sites.setdefault(charger.site, []).append(charger.charger_id)
        # Starts first: with back-to-back windows the charger is never let go in between.
        for window in windows:
            for occurrence in window.occurrences(now, now + 1e-6):
                if not occurrence.start <= now < occurrence.end:
                    continue
                for charger_id in _targets(window, sites):
                    # Claimed (or found started) in one statement: no separate look first.
                    await self._start(window, charger_id, occurrence, now)
        stale_claims = [
            r for r in await self.windows.runs(state="starting")
            if r.started_at < now - CLAIM_STALE_S
        ]  # fmt: skip
        for run in [*await self.windows.runs(state="active"), *stale_claims]:
            owner = by_id.get(run.window_id)
            ends = run.ends_at
            if owner is not None and owner.cancelled_at is not None:
                ends = min(ends, owner.cancelled_at)
            moved = owner is not None and run.charger_id not in _targets(owner, sites)
            if ends <= now or moved:
                await self._end(run, now)
        active = {
            r.charger_id
            for state in ("active", "starting")
            for r in await self.windows.runs(state=state)
        }
        for charger_id, previous in (await self.windows.holds()).items():
            if charger_id not in active:
                await self._restore(charger_id, previous)
        await self._inspect(now, sites)
        edges = [e for w in windows if (e := w.next_edge(now)) is not None]
        edges += [
            due for i in await self.inspections.list(include_cancelled=False)
            if (due := i.next_due()) is not None
        ]  # fmt: skip
        return min(edges) if edges else None

    async def _start(
        self, window: Window, charger_id: str, occurrence: Interval, now: float
    ) -> None:
        if not await self.windows.claim_run(window.id, charger_id, occurrence, now, CLAIM_STALE_S):
            return  # another scheduler started it (or is starting it)
        try:
            if await self.windows.hold(charger_id) is None:
                previous = await self._availability(charger_id)
                await self.windows.put_hold(charger_id, previous, now)
            await self.shadow_client.update(
                charger_id, {"desired": {"availability": {"0": INOPERATIVE}}}
            )
        except ShadowRequestError as exc:
            log.warning(
                "%s: maintenance window %s could not take it out (retrying): %s",
                charger_id, window.id, exc,
            )  # fmt: skip
            await self.windows.drop_claim(window.id, charger_id, occurrence.start, now)
            return
        except BaseException:
            await self.windows.drop_claim(window.id, charger_id, occurrence.start, now)
            raise
        if not await self.windows.activate_run(window.id, charger_id, occurrence.start, now):
            return  # taken over meanwhile (we were too slow): the other scheduler logs it
        log.info(
            "%s: maintenance window %s (%s) started; Inoperative until %s",
            charger_id, window.id, window.title, _iso(occurrence.end),
        )  # fmt: skip

    async def _end(self, run: Run, now: float) -> None:
        if await self.windows.finish_run(run, now):
            log.info("%s: maintenance window %s ended", run.charger_id, run.window_id)

    async def _availability(self, charger_id: str) -> dict[str, Any]:
        """What connector 0 is meant to be before the window: desired, reported."""
        try:
            document = await self.shadow_client.get(charger_id)
        except ShadowRequestError as exc:
            if exc.code != 404:
                raise
            return {"desired": None, "reported": None}
        state = document.get("state") or {}
        desired = ((state.get("desired") or {}).get("availability") or {}).get("0")
        reported = ((state.get("reported") or {}).get("availability") or {}).get("0")
        return {"desired": desired, "reported": reported}

    async def _restore(self, charger_id: str, previous: dict[str, Any]) -> None:
        target = previous.get("desired") or previous.get("reported") or "Operative"
        if await self.windows.held_by_run(charger_id):
            return  # a window started since the holds were read: it keeps the charger out
        try:
            now_desired = (await self._availability(charger_id))["desired"]
            if now_desired == INOPERATIVE:
                await self.shadow_client.update(
                    charger_id, {"desired": {"availability": {"0": target}}}
                )
                log.info(
                    "%s: maintenance over; desired availability back to %s", charger_id, target
                )
            else:
                log.info(
                    "%s: maintenance over; desired availability was changed to %s meanwhile,"
                    " left as it is",
                    charger_id, now_desired,
                )  # fmt: skip
        except ShadowRequestError as exc:
            log.warning("%s: could not return it from maintenance (retrying): %s", charger_id, exc)
            return
        await self.windows.release_hold(charger_id)  # unless a window took it out meanwhile

    async def _inspect(self, now: float, sites: dict[str, list[str]]) -> None:
        for inspection in await self.inspections.list(include_cancelled=False):
            if not inspection.due(now):
                continue
            due = inspection.next_due()
            chargers = (
                [inspection.charger_id] if inspection.charger_id
                else sites.get(inspection.site or "", [])
            )  # fmt: skip
            opened = 0
            for charger_id in chargers:
                order = await self.work_orders.create(
                    inspection.title,
                    actor=ACTOR,
                    source="inspection",
                    description=inspection.description,
                    charger_id=charger_id,
                    inspection_id=inspection.id,
                    now=now,
                    order_id=inspection_order_id(inspection.id, charger_id, due),
                )
                opened += order is not None
            if await self.inspections.mark_run(inspection.id, now, seen=inspection.last_run_at):
                log.info(
                    "inspection %s (%s): %d work orders opened", inspection.id,
                    inspection.title, opened,
                )  # fmt: skip


def inspection_order_id(inspection_id: str, charger_id: str, due: float | None) -> str:
    """The id of the work order an inspection opens for a charger at one occurrence: the
    same for every scheduler that opens it, so it is opened once."""
    key = f"{inspection_id}:{charger_id}:{due!r}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def _targets(window: Window, sites: dict[str, list[str]]) -> list[str]:
    if window.charger_id:
        return [window.charger_id]
    return sites.get(window.site or "", [])


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


@dataclass
class Maintenance:
    """What the maintenance routes hold: work orders, windows, inspections, the scheduler."""

    work_orders: WorkOrderStore
    windows: WindowStore
    inspections: InspectionStore
    scheduler: MaintenanceScheduler

    @classmethod
    def build(
        cls,
        db: Database,
        registry: ChargerRegistry,
        shadow_client: ShadowClient,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = 30.0,
    ) -> Maintenance:
        work_orders, windows, inspections = (
            WorkOrderStore(db), WindowStore(db), InspectionStore(db)
        )  # fmt: skip
        scheduler = MaintenanceScheduler(
            windows, inspections, work_orders, registry, shadow_client,
            clock=clock, interval=interval,
        )  # fmt: skip
        return cls(work_orders, windows, inspections, scheduler)

    async def create_schema(self) -> None:
        await self.work_orders.create_schema()
        await self.windows.create_schema()
        await self.inspections.create_schema()
