"""The telemetry recorder: MQTT telemetry, events and presence → the time-series store.

"Nothing accepted is lost": the MQTT handler returns (and the broker gets its PUBACK)
only once the message's points are durable — written to the store, or fsynced to the
spool when the store did not take them. Until then the broker still owns the message
and sends it again after a crash. Batches close at ``max_lines`` points, ``max_delay``
after their first point, or when input pauses for ``linger`` (group commit: the broker
caps unacknowledged messages per client, so waiting for a full batch would stall it).
While the spool holds anything, new batches are appended behind it, so the store
receives points in the order they were accepted. When the spool is full the handler
waits (backpressure): the broker holds the messages instead of us dropping them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics, shared
from rules import measurements
from rules.points import Point
from rules.series import SeriesError, SeriesStore, StoreUnavailable
from rules.spools import Spool

log = logging.getLogger(__name__)


class Recorder:
    def __init__(
        self,
        store: SeriesStore,
        spool: Spool,
        topics: Topics,
        *,
        max_lines: int = 5000,
        max_delay: float = 1.0,
        linger: float = 0.02,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        dedupe_size: int = 100_000,
    ) -> None:
        self.store = store
        self.spool = spool
        self.topics = topics
        self.max_lines = max_lines
        self.max_delay = max_delay
        self.linger = linger
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._buffer: list[Point] = []
        self._first_at = 0.0
        self._durable: asyncio.Future[None] | None = None
        self._grew = asyncio.Event()
        self._spooled = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._dedupe_size = dedupe_size
        self._tasks: list[asyncio.Task[None]] = []
        self.subscriptions: list[str] = []
        self._shipping = asyncio.Lock()
        self._stopped = False
        self.written = 0
        self.spooled = 0

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self, mqtt: MqttClient | None = None, share_group: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._flush_loop(), name="recorder-flush"),
            loop.create_task(self._replay_loop(), name="recorder-replay"),
        ]
        if self.spool.has_data:
            log.warning(
                "recorder: %d bytes spooled from a previous run; replaying", self.spool.bytes
            )
            self._spooled.set()
        if mqtt is not None:
            group = f"{share_group}-rules" if share_group else None
            prefix = self.topics.prefix
            for topic_filter in (
                f"{prefix}/chargers/+/telemetry/#",
                f"{prefix}/chargers/+/events/#",
                self.topics.all_presence(),
            ):
                self.subscriptions.append(shared(topic_filter, group))
                await mqtt.subscribe_acked(self.subscriptions[-1], self.handle)

    async def stop(self) -> None:
        """Make the open batch durable, then stop; the spool is replayed at next start."""
        tasks, self._tasks = self._tasks, []
        self._stopped = True
        async with self._shipping:  # let a write in flight finish
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._buffer:
                await self._ship(self._take())

    # --- accepting -----------------------------------------------------------------------
    async def handle(self, topic: str, payload: bytes) -> None:
        """The MQTT handler: returns once the message's points are durable."""
        points = measurements.convert(self.topics.prefix, topic, payload, time.time())
        points = [p for p in points if not self._duplicate(p)]
        if points:
            await self.accept(points)

    def _duplicate(self, point: Point) -> bool:
        # Retried StartTransaction/StopTransaction are published again: dedupe by
        # (transactionId, event); the store's last-write-wins on (series, time) backs it up.
        if point.measurement != "sessions":
            return False
        key = (
            point.tags.get("charger", ""),
            str(point.fields.get("transaction_id")),
            point.tags.get("event", ""),
        )
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        self._seen[key] = None
        if len(self._seen) > self._dedupe_size:
            self._seen.popitem(last=False)
        return False

    async def accept(self, points: Sequence[Point]) -> None:
        """Add points to the open batch and wait until that batch is durable."""
        if self._stopped:  # a message that raced the shutdown: ship it on its own
            async with self._shipping:
                await self._ship((list(points), None))
            return
        while self.spool.full:
            if self._room.is_set():
                self._room.clear()
                log.warning(
                    "recorder: spool full (%d bytes in %s); not accepting telemetry until the "
                    "store is back (the broker keeps the messages)",
                    self.spool.bytes,
                    self.spool.folder,
                )
            await self._room.wait()
        if not self._buffer:
            self._first_at = time.monotonic()
        if self._durable is None:
            self._durable = asyncio.get_running_loop().create_future()
        durable = self._durable
        self._buffer.extend(points)
        self._grew.set()
        await asyncio.shield(durable)

    def _take(self) -> tuple[list[Point], asyncio.Future[None] | None]:
        batch, durable = self._buffer, self._durable
        self._buffer, self._durable = [], None
        return batch, durable

    # --- shipping ----------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            await self._grew.wait()
            while len(self._buffer) < self.max_lines:
                self._grew.clear()
                left = self.max_delay - (time.monotonic() - self._first_at)
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._grew.wait(), min(self.linger, left))
                except TimeoutError:
                    break
            self._grew.clear()
            async with self._shipping:
                if self._buffer:
                    await self._ship(self._take())

    async def _ship(self, taken: tuple[list[Point], asyncio.Future[None] | None]) -> None:
        batch, durable = taken
        try:
            for start in range(0, len(batch), self.max_lines):
                await self._ship_chunk(batch[start : start + self.max_lines])
        except BaseException as exc:
            if durable is not None and not durable.done():
                durable.set_exception(RuntimeError(f"batch not recorded: {exc!r}"))
            raise
        if durable is not None and not durable.done():
            durable.set_result(None)

    async def _ship_chunk(self, chunk: list[Point]) -> None:
        if not self.spool.has_data:
            try:
                await self.store.write(chunk)
                self.written += len(chunk)
                return
            except StoreUnavailable as exc:
                log.warning(
                    "recorder: %s store unavailable, spooling to %s: %s",
                    self.store.name,
                    self.spool.folder,
                    exc,
                )
            except SeriesError as exc:
                path = await self.spool.reject(chunk, str(exc))
                log.error(
                    "recorder: store refused %d points, kept in %s: %s", len(chunk), path, exc
                )
                return
        await self.spool.append(chunk)
        self.spooled += len(chunk)
        self._spooled.set()

    async def _replay_loop(self) -> None:
        delay = self.retry_delay
        while True:
            await self._spooled.wait()
            oldest = await self.spool.oldest()
            if oldest is None:
                self._spooled.clear()
                log.info("recorder: spool replayed; writing to the %s store again", self.store.name)
                continue
            path, points = oldest
            try:
                for start in range(0, len(points), self.max_lines):
                    await self.store.write(points[start : start + self.max_lines])
            except StoreUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            except SeriesError as exc:
                kept = await self.spool.reject(points, str(exc))
                log.error("recorder: store refused spooled points, kept in %s: %s", kept, exc)
            delay = self.retry_delay
            self.written += len(points)
            await self.spool.remove(path)
            if not self.spool.full:
                self._room.set()
