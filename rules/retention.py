"""Retention of the embedded time-series store: old points are deleted in the background.

How long each measurement is kept is the operator's (``--series-retention-days``,
``--meter-values-retention-days``). Meter values are the bulk of the store and only feed
rules over short windows and the sessions' peak power, so they go sooner; status,
presence and session history feed the uptime reports, which read twelve months ending
with a month, up to a quarter and its filing month back (docs/monitoring.md). Whatever
the retention, the newest point before the cutoff of each series is kept: it is the
state held since, which state rules and reports read however old it is.

A pass runs every ``interval`` seconds as a series of small steps (one short write
transaction each, on the store's writer thread), so the recorder's writes go in between
and are never held up by more than one step. Freed pages are reused by SQLite; the file
does not shrink (no VACUUM: it rewrites the whole file while holding the write lock).

InfluxDB keeps points by its own retention policy, set on the server (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from rules.points import NS
from rules.series import SeriesError
from rules.sqlite_series import SQLiteSeriesStore

log = logging.getLogger(__name__)

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Seconds each measurement is kept; None keeps it forever."""

    default: float | None
    per_measurement: Mapping[str, float | None] = field(default_factory=dict)

    @classmethod
    def from_days(cls, series_days: float, meter_values_days: float) -> RetentionPolicy:
        """The settings' form: days, 0 meaning "keep everything"."""
        return cls(
            series_days * DAY or None,
            {"meter_values": meter_values_days * DAY or None},
        )

    @property
    def keeps_everything(self) -> bool:
        return self.default is None and all(v is None for v in self.per_measurement.values())

    def cutoffs(self, now: float) -> tuple[dict[str, int | None], int | None]:
        """Per measurement and for the others: the time (ns) before which points go."""

        def cutoff(seconds: float | None) -> int | None:
            return None if seconds is None else int((now - seconds) * NS)

        per = {m: cutoff(seconds) for m, seconds in self.per_measurement.items()}
        return per, cutoff(self.default)

    def describe(self) -> str:
        def days(seconds: float | None) -> str:
            return "forever" if seconds is None else f"{seconds / DAY:g} d"

        kept = [f"{m} {days(s)}" for m, s in sorted(self.per_measurement.items())]
        return ", ".join([*kept, f"others {days(self.default)}"])


class SeriesRetention:
    """Runs retention passes over a :class:`SQLiteSeriesStore` in the background."""

    def __init__(
        self,
        store: SQLiteSeriesStore,
        policy: RetentionPolicy,
        *,
        interval: float = 3600.0,
        first_after: float = 60.0,
        max_series: int = 200,
        max_rows: int = 5000,
        pause: float = 0.005,
    ) -> None:
        self.store = store
        self.policy = policy
        self.interval = interval
        self.first_after = first_after
        self.max_series = max_series
        self.max_rows = max_rows
        self.pause = pause
        self.passes = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.policy.keeps_everything:
            log.info("series retention: off, the store keeps every point")
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="series-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        await asyncio.sleep(self.first_after)
        while True:
            try:
                await self.run_pass()
            except SeriesError as exc:
                log.warning("series retention: pass failed, next in %g s: %s", self.interval, exc)
            await asyncio.sleep(self.interval)

    async def run_pass(self, now: float | None = None) -> dict[str, int]:
        """Delete what is past its retention; the values (one per point and field)
        removed per measurement."""
        cutoffs, default = self.policy.cutoffs(time.time() if now is None else now)
        started = time.monotonic()
        removed: dict[str, int] = {}
        steps = 0
        after: int | None = 0
        while after is not None:
            step = await self.store.prune(
                cutoffs, default, after=after, max_series=self.max_series, max_rows=self.max_rows
            )
            steps += 1
            for measurement, count in step.removed.items():
                removed[measurement] = removed.get(measurement, 0) + count
            after = step.resume_after
            if after is not None:
                await asyncio.sleep(self.pause)  # let the recorder's writes in
        self.passes += 1
        total = sum(removed.values())
        log.log(
            logging.INFO if total else logging.DEBUG,
            "series retention: removed %d values (%s) past their retention (%s) in %.1f s, "
            "%d steps",
            total,
            ", ".join(f"{m} {n}" for m, n in sorted(removed.items())) or "nothing due",
            self.policy.describe(),
            time.monotonic() - started,
            steps,
        )
        return removed
