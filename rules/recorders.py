"""The telemetry recorder: MQTT telemetry, events and presence → the time-series store.

"Nothing accepted is lost": the MQTT handler returns (and the broker gets its PUBACK)
only once the message's points are durable — written to the store, or fsynced to the
spool when the store did not take them. Until then the broker still owns the message
and sends it again after a crash. Batches close at ``max_lines`` points, ``max_delay``
after their first point, or when input pauses for ``linger`` (group commit: the broker
caps unacknowledged messages per client, so waiting for a full batch would stall it).
Up to ``in_flight`` writes run at once (the next batch is serialized while the store
takes one) and are settled in the order they started. When one fails, it and every
write started before its failure was seen go to the spool; while the spool holds
anything, new batches are appended behind it, so the store receives points in the order
they were accepted. When the spool is full the handler
waits (backpressure): the broker holds the messages instead of us dropping them.

Points carry the charger's ``site`` tag from a :class:`~rules.sites.SiteDirectory`, an
in-memory copy of the charger registry: no query per message.
"""

from __future__ import annotations

import asyncio
import bisect
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
from rules.sites import SiteDirectory
from rules.spools import Spool

log = logging.getLogger(__name__)


class _Shipment:
    """One closed batch on its way: its points, the futures of its messages, the write."""

    __slots__ = ("durables", "points", "seq", "write")

    def __init__(
        self,
        seq: int,
        points: list[Point],
        durables: list[asyncio.Future[None]],
        write: asyncio.Task[None] | None,
    ) -> None:
        self.seq = seq
        self.points = points
        self.durables = durables
        self.write = write  # None: goes to the spool (the spool holds older points)


class Recorder:
    def __init__(
        self,
        store: SeriesStore,
        spool: Spool,
        topics: Topics,
        *,
        sites: SiteDirectory | None = None,
        max_lines: int = 5000,
        max_delay: float = 1.0,
        linger: float = 0.002,
        in_flight: int = 2,
        min_split: int = 500,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        dedupe_size: int = 100_000,
    ) -> None:
        self.store = store
        self.spool = spool
        self.topics = topics
        self.sites = sites
        self.max_lines = max_lines
        self.max_delay = max_delay
        self.linger = linger
        self.min_split = min_split
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        # The open batch: points, and per message the index after its last point and the
        # future its handler waits on, so a batch can be cut between messages.
        self._buffer: list[Point] = []
        self._marks: list[tuple[int, asyncio.Future[None]]] = []
        self._first_at = 0.0
        self._grew = asyncio.Event()
        self._spooled = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._slots = asyncio.Semaphore(in_flight)
        self._shipments: asyncio.Queue[_Shipment] = asyncio.Queue()
        self._seq = 0
        self._spill_until = 0  # shipments up to this one go to the spool whatever they did
        self._spool_bound = 0  # shipments queued for the spool, not yet appended
        self._in_flight = 0
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._dedupe_size = dedupe_size
        self._tasks: list[asyncio.Task[None]] = []
        self._completer: asyncio.Task[None] | None = None
        self.subscriptions: list[str] = []
        self._shipping = asyncio.Lock()
        self._stopped = False
        self.written = 0
        self.spooled = 0

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self, mqtt: MqttClient | None = None, share_group: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._completer = loop.create_task(self._complete_loop(), name="recorder-complete")
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
                # Presence as the twin wrote it, its own inferences included (a dead
                # bridge publishes no "offline" for its chargers).
                self.topics.all_presence_changes(),
            ):
                self.subscriptions.append(shared(topic_filter, group))
                await mqtt.subscribe_acked(self.subscriptions[-1], self.handle)

    async def stop(self) -> None:
        """Make the open batch durable, then stop; the spool is replayed at next start."""
        tasks, self._tasks = self._tasks, []
        self._stopped = True
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        completer, self._completer = self._completer, None
        if completer is not None:
            await self._shipments.join()  # the writes in flight finish and are settled
            completer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await completer
        async with self._shipping:
            if self._buffer:
                points, durables = self._take(len(self._marks))
                await self._ship(points, durables)

    # --- accepting -----------------------------------------------------------------------
    async def handle(self, topic: str, payload: bytes) -> None:
        """The MQTT handler: returns once the message's points are durable."""
        prefix = self.topics.prefix
        site = None
        if self.sites is not None:
            site = await self.sites.site_of(measurements.charger_of(prefix, topic))
        points = measurements.convert(prefix, topic, payload, time.time(), site)
        if points and points[0].measurement == "sessions":
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
        """Add points to the open batch and wait until they are durable."""
        if self._stopped:  # a message that raced the shutdown: ship it on its own
            async with self._shipping:
                await self._ship(list(points), [])
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
        durable = asyncio.get_running_loop().create_future()
        self._buffer.extend(points)
        self._marks.append((len(self._buffer), durable))
        self._grew.set()
        await durable

    def _take(self, messages: int) -> tuple[list[Point], list[asyncio.Future[None]]]:
        """The first ``messages`` messages of the open batch, their points and futures."""
        marks, self._marks = self._marks[:messages], self._marks[messages:]
        end = marks[-1][0] if marks else 0
        points, self._buffer = self._buffer[:end], self._buffer[end:]
        if self._marks:
            self._marks = [(i - end, f) for i, f in self._marks]
        return points, [f for _, f in marks]

    # --- shipping ----------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        """Close batches and start their writes, at most ``in_flight`` at a time.

        A batch closes at ``max_lines`` points, ``max_delay`` after its first point, or
        when input pauses for ``linger``. With every write slot free it is cut in two
        between messages (when each half holds ``min_split`` points): the store takes the
        first half while the second is serialized, and the first half's messages are
        acknowledged sooner, so the broker sends more while the second is in flight.
        """
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
            while self._marks:
                await self._slots.acquire()
                self._dispatch(self._cut())  # no await between: the slot is used at once

    def _cut(self) -> int:
        """How many messages of the open batch the next write takes (at least one)."""
        limit = self.max_lines
        if self._in_flight == 0 and len(self._buffer) >= 2 * self.min_split:
            limit = min(limit, len(self._buffer) // 2)
        return max(1, bisect.bisect_right(self._marks, limit, key=lambda mark: mark[0]))

    def _dispatch(self, messages: int) -> None:
        """Start writing the first ``messages`` messages (or queue them for the spool)."""
        points, durables = self._take(messages)
        self._queue(points, durables)

    def _queue(self, points: list[Point], durables: list[asyncio.Future[None]]) -> None:
        self._in_flight += 1
        self._shipments.put_nowait(self._shipment(points, durables))

    def _shipment(self, points: list[Point], durables: list[asyncio.Future[None]]) -> _Shipment:
        self._seq += 1
        write = None
        if self.spool.has_data or self._spool_bound:
            self._spool_bound += 1  # behind the spool: the store gets points in order
        else:
            write = asyncio.get_running_loop().create_task(
                self.store.write(points), name=f"recorder-write-{self._seq}"
            )
        return _Shipment(self._seq, points, durables, write)

    async def _complete_loop(self) -> None:
        """Settle shipments in the order they were dispatched, so the spool keeps it too."""
        while True:
            shipment = await self._shipments.get()
            try:
                error = await self._settle(shipment)
                for durable in shipment.durables:
                    if durable.done():
                        continue
                    if error is None:
                        durable.set_result(None)
                    else:
                        durable.set_exception(RuntimeError(f"batch not recorded: {error!r}"))
            finally:
                self._in_flight -= 1
                self._slots.release()
                self._shipments.task_done()

    async def _settle(self, shipment: _Shipment) -> Exception | None:
        """Wait for the write; spool what the store did not take. The error, if any, means
        the points are not durable."""
        points, write = shipment.points, shipment.write
        try:
            if write is None:
                self._spool_bound -= 1
            else:
                try:
                    await write
                except StoreUnavailable as exc:
                    log.warning(
                        "recorder: %s store unavailable, spooling to %s: %s",
                        self.store.name,
                        self.spool.folder,
                        exc,
                    )
                    # Writes started after this one go to the spool too, whatever they
                    # did, so the store receives the points in acceptance order.
                    self._spill_until = self._seq
                except SeriesError as exc:
                    path = await self.spool.reject(points, str(exc))
                    log.error(
                        "recorder: store refused %d points, kept in %s: %s", len(points), path, exc
                    )
                    return None
                else:
                    if shipment.seq > self._spill_until:
                        self.written += len(points)
                        return None
            await self.spool.append(points)
        except Exception as exc:
            return exc
        self.spooled += len(points)
        self._spooled.set()
        return None

    async def _ship(self, points: list[Point], durables: list[asyncio.Future[None]]) -> None:
        """Write (or spool) points now, after the writes in flight: the shutdown path."""
        await self._shipments.join()
        for start in range(0, len(points), self.max_lines):
            error = await self._settle(self._shipment(points[start : start + self.max_lines], []))
            if error is not None:
                raise RuntimeError(f"batch not recorded: {error!r}") from error
        for durable in durables:
            if not durable.done():
                durable.set_result(None)

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
