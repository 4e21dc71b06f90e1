"""Running a fleet of simulated chargers in one process, and the entry point.

All chargers share one event loop and one ``asyncio.TaskGroup``; start-up is spread over
``ramp_s`` so a central system sees a realistic stream of connections rather than N
handshakes in one millisecond (pass ``ramp_s=0`` to ask for exactly that). While the fleet
starts, a line is logged every ``progress_step`` of it ("connected 500/5000 chargers").
A fleet may mix OCPP 1.6 chargers and 2.0.1 stations (``SimulatorOptions.ocpp_mix``); both
are ``SimulatedCharger`` objects here, a 2.0.1 one a ``SimulatedStation``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from simulator.chargers import SimulatedCharger
from simulator.options import SimulatorOptions
from simulator.stations import SimulatedStation

__all__ = ["Fleet", "FleetCounts", "run_simulator"]

logger = logging.getLogger("simulator.fleets")


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """A snapshot of the fleet, for progress lines, tests and benchmarks."""

    chargers: int
    connected: int
    booted: int
    connects: int
    boots: int
    sessions_started: int
    sessions_completed: int
    errors: int


class Fleet:
    """N simulated chargers; each one is reachable to inject faults or read its state."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        kinds = {"1.6": SimulatedCharger, "2.0.1": SimulatedStation}
        self.chargers = [
            kinds[version](options.first_index + i, options, self._observe)
            for i, version in enumerate(options.versions())
        ]
        self._by_id = {charger.id: charger for charger in self.chargers}
        self.connected = 0
        self.booted = 0
        self._first_connects = 0
        self._next_progress = 1
        self._started = time.monotonic()
        self._changed = asyncio.Event()

    def __getitem__(self, charger_id: str) -> SimulatedCharger:
        return self._by_id[charger_id]

    def by_index(self, index: int) -> SimulatedCharger | None:
        """The charger numbered ``index`` (as in its id), or None."""
        return self._by_id.get(self.options.charger_id(index))

    @property
    def counts(self) -> FleetCounts:
        chargers = self.chargers
        return FleetCounts(
            chargers=len(chargers),
            connected=self.connected,
            booted=self.booted,
            connects=sum(c.connects for c in chargers),
            boots=sum(c.boots for c in chargers),
            sessions_started=sum(c.sessions_started for c in chargers),
            sessions_completed=sum(c.sessions_completed for c in chargers),
            errors=sum(c.errors for c in chargers),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Start every charger (spread over ``ramp_s``) and run until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        start = loop.time()
        total = len(self.chargers)
        logger.info("starting %d chargers against %s", total, self.options.url)
        async with asyncio.TaskGroup() as tg:
            schedule = None
            if self.options.fault_schedule:
                schedule = tg.create_task(self._scheduled_faults(), name="fault-schedule")
            for i, charger in enumerate(self.chargers):
                if self.options.ramp_s > 0 and total > 1:
                    due = start + self.options.ramp_s * i / total
                    await _sleep(stop, due - loop.time())
                if stop.is_set():
                    break
                tg.create_task(charger.run(stop), name=f"charger-{charger.id}")
            await stop.wait()
            if schedule is not None:
                schedule.cancel()
        logger.info("fleet stopped: %s", self.counts)

    async def wait_for(self, booted: int, timeout: float) -> float:
        """Wait until ``booted`` chargers are booted at once; the seconds since start."""
        async with asyncio.timeout(timeout):
            while self.booted < booted:
                await self._changed.wait()
        return time.monotonic() - self._started

    async def _scheduled_faults(self) -> None:
        """Faults at the times ``SimulatorOptions.fault_schedule`` gives, from fleet start."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for entry in sorted(self.options.fault_schedule, key=lambda e: e.at_s):
            await asyncio.sleep(max(0.0, start + entry.at_s - loop.time()))
            charger = self.by_index(entry.index)
            if charger is not None:
                charger.inject_fault(entry.kind, entry.connector_id, entry.duration_s)

    def _observe(self, charger: SimulatedCharger, what: str) -> None:
        if what == "connected":
            self.connected += 1
            if charger.connects == 1:
                self._first_connects += 1
                self._progress()
        elif what == "booted":
            self.booted += 1
        elif what.startswith("disconnected"):
            self.connected -= 1
            if what == "disconnected-booted":
                self.booted -= 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _progress(self) -> None:
        total = len(self.chargers)
        step = max(1, round(total * self.options.progress_step))
        done = self._first_connects
        if done >= min(total, self._next_progress * step) or done == total:
            self._next_progress = done // step + 1
            logger.info(
                "connected %d/%d chargers (%.1f s)",
                done,
                total,
                time.monotonic() - self._started,
            )


async def run_simulator(options: SimulatorOptions, stop: asyncio.Event) -> None:
    """Run a simulated fleet until ``stop`` is set (the ``chargetwin simulate`` command)."""
    await Fleet(options).run(stop)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
