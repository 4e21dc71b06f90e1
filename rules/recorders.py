"""The telemetry recorder: MQTT telemetry, events, presence and site energy reports → the
time-series store.

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

A bad point never costs another point. A message that gives points no store can hold
(a time beyond 64-bit nanoseconds, a number that is not finite, a lone surrogate, an
unreadable payload) has them refused at conversion (:mod:`rules.measurements`); a point
a store still refuses is refused alone, the rest of its batch written (the stores
isolate it; a store error that is not an outage splits the batch here, down to the
point). Refused points and messages go to the dead letter (:mod:`rules.dead_letters`)
with their reason, durably, before the message is acknowledged; ``dead_lettered``
counts them and a warning says so at most every ``dead_letter_log_interval``.

Points carry the charger's ``site`` tag from a :class:`~rules.sites.SiteDirectory`, an
in-memory copy of the charger registry: no query per message.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics, shared
from rules import measurements
from rules.dead_letters import DeadLetters
from rules.points import CheckedPoints, Point, Rejection, sort_out
from rules.series import SeriesStore, StoreUnavailable
from rules.sites import SiteDirectory
from rules.spools import Spool

log = logging.getLogger(__name__)


class Source(NamedTuple):
    """The message points came from, kept for the dead letter: its topic and payload."""

    topic: str
    payload: bytes


class _Shipment:
    """One closed batch on its way: its points, the futures of its messages, the write."""

    __slots__ = ("durables", "points", "seq", "sources", "write")

    def __init__(
        self,
        seq: int,
        points: list[Point],
        durables: list[asyncio.Future[None]],
        write: asyncio.Task[list[Rejection]] | None,
        sources: list[tuple[int, Source | None]],
    ) -> None:
        self.seq = seq
        self.points = points
        self.durables = durables
        self.write = write  # None: goes to the spool (the spool holds older points)
        self.sources = sources  # per message: the index after its last point, its source

    def source_of(self, point: Point | None) -> Source | None:
        """The message ``point`` came from, when it is one of this batch's."""
        for index, candidate in enumerate(self.points):
            if candidate is point:
                at = bisect.bisect_right(self.sources, index, key=lambda mark: mark[0])
                return self.sources[at][1] if at < len(self.sources) else None
        return None


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
        dead_letters: DeadLetters | None = None,
        dead_letter_log_interval: float = 10.0,
    ) -> None:
        self.store = store
        self.spool = spool
        # Beside the spool: {data_dir}/dead-letter when the spool is {data_dir}/spool.
        self.dead_letters = dead_letters or DeadLetters(spool.folder.parent / "dead-letter")
        self.dead_letter_log_interval = dead_letter_log_interval
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
        self._marks: list[tuple[int, asyncio.Future[None], Source | None]] = []
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
        self.dead_lettered = 0  # points and messages refused, kept in the dead letter
        self._unlogged = 0  # of them, not yet in a log line
        self._dead_logged_at = -math.inf

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
                # The energy allocator's report of each site after a pass (site_energy,
                # charging_limits).
                self.topics.all_site_energy_reports(),
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
                points, durables, sources = self._take(len(self._marks))
                await self._ship(points, durables, sources)

    # --- accepting -----------------------------------------------------------------------
    async def handle(self, topic: str, payload: bytes) -> None:
        """The MQTT handler: returns once the message's points are durable."""
        prefix = self.topics.prefix
        site = None
        if self.sites is not None:
            site = await self.sites.site_of(measurements.charger_of(prefix, topic))
        points, rejections = measurements.convert(prefix, topic, payload, time.time(), site)
        source = Source(topic, payload)
        if rejections:
            await self._dead_letter(rejections, lambda _: source)
        if points and points[0].measurement == "sessions":
            points = CheckedPoints(p for p in points if not self._duplicate(p))
        if points:
            await self.accept(points, source)

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

    async def accept(self, points: Sequence[Point], source: Source | None = None) -> None:
        """Add points to the open batch and wait until they are durable (or refused and
        kept in the dead letter)."""
        points, rejections = sort_out(points)  # checked once: the store trusts the batch
        if rejections:
            await self._dead_letter(rejections, lambda _: source)
        if not points:
            return
        if self._stopped:  # a message that raced the shutdown: ship it on its own
            async with self._shipping:
                await self._ship(list(points), [], [(len(points), source)])
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
        self._marks.append((len(self._buffer), durable, source))
        self._grew.set()
        await durable

    def _take(
        self, messages: int
    ) -> tuple[list[Point], list[asyncio.Future[None]], list[tuple[int, Source | None]]]:
        """The first ``messages`` messages of the open batch: points, futures, sources."""
        marks, self._marks = self._marks[:messages], self._marks[messages:]
        end = marks[-1][0] if marks else 0
        points, self._buffer = CheckedPoints(self._buffer[:end]), self._buffer[end:]
        if self._marks:
            self._marks = [(i - end, f, s) for i, f, s in self._marks]
        return points, [f for _, f, _ in marks], [(i, s) for i, _, s in marks]

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
        self._in_flight += 1
        self._shipments.put_nowait(self._shipment(*self._take(messages)))

    def _shipment(
        self,
        points: list[Point],
        durables: list[asyncio.Future[None]],
        sources: list[tuple[int, Source | None]],
    ) -> _Shipment:
        self._seq += 1
        write = None
        if self.spool.has_data or self._spool_bound:
            self._spool_bound += 1  # behind the spool: the store gets points in order
        else:
            write = asyncio.get_running_loop().create_task(
                self._write(points), name=f"recorder-write-{self._seq}"
            )
        return _Shipment(self._seq, points, durables, write, sources)

    async def _write(self, points: Sequence[Point]) -> list[Rejection]:
        """Write points; what the store refuses comes back, the rest is written.

        The stores refuse bad points alone. A store error that is not an outage (a
        refusal of the whole batch, or an error the store did not translate) must not
        cost the batch either: the batch is written again in halves, down to the point
        that fails, which is refused with the error as its reason.
        """
        try:
            return list(await self.store.write(points))
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(points) <= 1:
                reason = f"refused by the {self.store.name} store: {type(exc).__name__}: {exc}"
                return [Rejection(reason, point) for point in points]
            half = len(points) // 2
            return await self._write(points[:half]) + await self._write(points[half:])

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
                    rejections = await write
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
                else:
                    if shipment.seq > self._spill_until:
                        self.written += len(points) - len(rejections)
                        if rejections:
                            await self._dead_letter(rejections, shipment.source_of)
                        return None
            await self.spool.append(points)
        except Exception as exc:
            return exc
        self.spooled += len(points)
        self._spooled.set()
        return None

    async def _ship(
        self,
        points: list[Point],
        durables: list[asyncio.Future[None]],
        sources: list[tuple[int, Source | None]],
    ) -> None:
        """Write (or spool) points now, after the writes in flight: the shutdown path."""
        await self._shipments.join()
        for start in range(0, len(points), self.max_lines):
            chunk = CheckedPoints(points[start : start + self.max_lines])
            shifted = [(end - start, source) for end, source in sources if end > start]
            error = await self._settle(self._shipment(chunk, [], shifted))
            if error is not None:
                raise RuntimeError(f"batch not recorded: {error!r}") from error
        for durable in durables:
            if not durable.done():
                durable.set_result(None)

    async def _replay_loop(self) -> None:
        delay = self.retry_delay
        while True:
            await self._spooled.wait()
            try:
                oldest = await self.spool.oldest()
            except OSError as exc:  # the disk, not the points: try again, never give up
                log.error("recorder: cannot read the spool in %s: %s", self.spool.folder, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            if oldest is None:
                self._spooled.clear()
                log.info("recorder: spool replayed; writing to the %s store again", self.store.name)
                continue
            path, points = oldest
            # A segment goes only once the store took or refused every point of it: a
            # poisoned point is refused alone and kept, so it cannot block the replay.
            rejections: list[Rejection] = []
            try:
                for start in range(0, len(points), self.max_lines):
                    rejections += await self._write(points[start : start + self.max_lines])
                await self._dead_letter(rejections, lambda _: None)
            except (StoreUnavailable, OSError) as exc:
                if not isinstance(exc, StoreUnavailable):  # the dead letter not writable
                    log.error("recorder: cannot keep refused spooled points: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            delay = self.retry_delay
            self.written += len(points) - len(rejections)
            await self.spool.remove(path)
            if not self.spool.full:
                self._room.set()

    # --- the dead letter ---------------------------------------------------------------
    async def _dead_letter(
        self,
        rejections: Sequence[Rejection],
        source_of: Callable[[Point | None], Source | None],
    ) -> None:
        """Keep refused points and messages (durably) with their reason, count them, and
        say so in the log at most every ``dead_letter_log_interval``: a hostile publisher
        must not flood the log either."""
        if not rejections:
            return
        lines = []
        for rejection in rejections:
            source = source_of(rejection.point)
            lines.append(
                self.dead_letters.entry(
                    rejection.reason,
                    topic=source.topic if source else None,
                    payload=source.payload if source else None,
                    point=rejection.point,
                )
            )
        await self.dead_letters.add(lines)
        self.dead_lettered += len(rejections)
        self._unlogged += len(rejections)
        now = time.monotonic()
        if now - self._dead_logged_at >= self.dead_letter_log_interval:
            latest = rejections[-1]
            log.warning(
                "recorder: %d refused point(s) or message(s) kept in %s since the last "
                "such line (%d in all); latest: %s",
                self._unlogged,
                self.dead_letters.folder,
                self.dead_lettered,
                latest.reason[:300],
            )
            self._unlogged = 0
            self._dead_logged_at = now
