"""The MQTT shadow service: answers ``shadow/update`` and ``shadow/get``, tracks presence.

Requests flow through one queue into batches: the batch is applied in arrival order to
cached documents, the changed documents are saved in one transaction (so a thousand
updates cost one commit, on SQLite as on PostgreSQL), and only then are the answers
published and the requests acknowledged to the broker. A crash before the commit loses
nothing: the broker delivers the unacknowledged requests again.

Presence (rules in :mod:`twin.presence`): the bridge holding a charger's socket publishes
a retained ``chargers/{id}/presence`` message; the service writes it into
``reported.connection`` and, when the charger comes online with a pending delta, publishes
the delta again so the bridge reconciles at once. A bridge announces each MQTT connection
on ``bridges/{id}/status`` with a last will; when the will arrives, the chargers it held
are marked offline. After each of its own MQTT (re)connects the service waits
``presence_grace`` for the bridges' statuses, then marks offline the chargers of every
bridge that did not announce itself (a broker that lost its retained messages publishes no
will: after a kill -9 of the whole platform, say). Every change of ``connection.online``
or ``since``, whoever made it, is published on ``chargers/{id}/presence/shadow`` for the
recorder.

Several workers (``share_group``): the batch loop keeps every shadow right whatever the
broker hands to whom.

* Writes are conditional on the version read; a batch that lost a race reloads the
  chargers concerned and applies their requests again, until they win (a report is never
  answered "conflict": only a request that names a stale ``version`` is).
* A batch's rows are written in charger-id order (see :mod:`twin.stores`), so two workers
  cannot deadlock each other; a batch the database aborts anyway for a reason of the
  moment (deadlock, serialization failure, busy file) is applied again from the store
  instead of being answered 500.
* Before a batch runs, the versions of the cached documents it touches are checked in
  one query: a document another worker changed is read again, so ``get`` answers and
  ``version`` checks never rest on a stale copy.
* A request with a clientToken that already changed the shadow (delivered again after
  its worker died unacknowledged) is answered with the version it produced, not applied
  twice (``ShadowDocument.remember_request``).
* A request may carry a ``deadline`` (epoch seconds): past it, the twin refuses it (408)
  instead of applying it, so a requester that gave up waiting is never contradicted by a
  late change (see ``docs/shadow.md``).

Stopping keeps the broker subscriptions: the session is persistent, and what is
published while the twin is down waits in the broker for its return (or for a peer that
takes the session over, :mod:`twin.adoption`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chargetwin.database import DatabaseError
from chargetwin.mqtt import Handler, MqttClient
from chargetwin.topics import InvalidTopicError, Topics, shared, validate_charger_id
from twin.documents import ShadowDocument, delta_metadata
from twin.presence import (
    BridgeBook,
    BridgeLost,
    BridgeStatus,
    PresenceReport,
    lost_write,
    presence_changed,
    presence_key,
    presence_write,
)
from twin.registry import ChargerRegistry
from twin.requests import (
    Limits,
    ShadowError,
    UpdateRequest,
    client_token_of,
    parse_json_object,
    parse_update,
    request_metadata,
)
from twin.schemas import desired_errors
from twin.stores import ShadowStore, is_transient

log = logging.getLogger(__name__)

_BATCH_MAX = 1000
# How long a batch waits for more requests once one arrived: every batch is one trip to
# the database thread and one commit, which cost more than applying a request (in a
# firmware campaign, the hand-off to the thread alone was 11% of the twin's CPU with
# batches of one or two). Requests come in bursts (a charger's boot, a wave of desired
# writes): a few milliseconds gather most of a burst and add that much to an update.
_BATCH_WINDOW = 0.004
# A batch the database aborted for a reason of the moment is applied again this many times
# (with a growing pause) before its requests are answered 500.
_TRANSIENT_ATTEMPTS = 20
# A request whose conditional write lost to another worker is applied again (reloaded)
# up to this many times; each round some worker wins, so this is a guard, not a policy.
_CONFLICT_ATTEMPTS = 100
_CACHE_MAX = 50_000
# Deletes are remembered this long so that a late write cannot resurrect a deleted key.
_TOMBSTONE_HORIZON = 7 * 24 * 3600.0
# After the twin (re)connects, how long bridges have to announce themselves (their retained
# status arrives right after the subscription) before their chargers count as offline.
PRESENCE_GRACE = 3.0


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Job:
    charger_id: str
    kind: str  # "update" | "get" | "delete" | "presence" | "lost"
    update: UpdateRequest | None
    client_token: str | None
    done: asyncio.Future[None] = field(default_factory=_new_future)
    resend_delta: bool = False
    attempts: int = 0
    # Presence is decided against the document as it is when the batch runs (and again
    # when a concurrent write forces a retry), not when the message arrived.
    presence: PresenceReport | None = None
    lost: BridgeLost | None = None


@dataclass
class _Entry:
    """A charger's document within one batch (changed in place; see ShadowDocument)."""

    doc: ShadowDocument | None
    read_version: int  # the version the store holds; the save is conditional on it
    dirty: bool = False
    deleted: bool = False


_Working = dict[str, _Entry]


# A topic and its payload: a dict to encode, or JSON text already encoded.
_Message = tuple[str, dict[str, Any] | bytes]


@dataclass
class _Outcome:
    """What one job produced, published after the batch is durable."""

    job: _Job
    messages: list[_Message]
    changed: bool = False


class ShadowService:
    """One twin worker. Several may share the load through ``share_group``."""

    def __init__(
        self,
        mqtt: MqttClient,
        store: ShadowStore,
        registry: ChargerRegistry,
        topics: Topics,
        *,
        limits: Limits | None = None,
        share_group: str | None = None,
        clock: Callable[[], float] = time.time,
        presence_grace: float = PRESENCE_GRACE,
    ) -> None:
        self._mqtt = mqtt
        self._store = store
        self._registry = registry
        self._topics = topics
        self._limits = limits or Limits()
        self._group = f"{share_group}-twin" if share_group else None
        self._clock = clock
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._cache: OrderedDict[str, ShadowDocument] = OrderedDict()
        self._bridges = BridgeBook()
        self._presence_grace = presence_grace
        self._reconciler: asyncio.Task[None] | None = None
        # Bridges whose chargers we took offline for want of news: asked to announce them
        # again as soon as their status shows they are alive.
        self._presumed_gone: set[str] = set()
        self._stopping = False
        self._worker: asyncio.Task[None] | None = None
        self.updates_accepted = 0
        self.requests_refused = 0  # answered on .../rejected (invalid, too big, conflicts)
        self.batches_retried = 0  # batches the database aborted and that were applied again

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="twin-batches")
        t = self._topics
        for topic_filter, handler in self.subscriptions():
            self._mqtt.subscribe(topic_filter, handler)
        self._mqtt.on_connect(self._connected)
        if self._mqtt.is_connected:
            await self._connected()
        log.info(
            "twin service started (prefix %s%s)",
            t.prefix,
            f", shared group {self._group}" if self._group else "",
        )

    def subscriptions(self) -> list[tuple[str, Handler]]:
        """The topic filters the service serves, with their handlers."""
        t = self._topics
        return [
            # Every worker follows every bridge's status (low volume), so each knows which
            # bridges are gone. Subscribed first (and so again first after each reconnect):
            # the broker sends retained messages in subscription order, and the statuses
            # must not queue behind thousands of retained presences past the presence grace.
            (t.all_bridge_status(), self._on_bridge_status),
            *self.shared_subscriptions(),
        ]

    def shared_subscriptions(self) -> list[tuple[str, Handler]]:
        """The filters one worker of the group serves (all of them without a group)."""
        t = self._topics
        return [
            (shared(t.all_shadow_requests("update"), self._group), self._on_update),
            (shared(t.all_shadow_requests("get"), self._group), self._on_get),
            (shared(t.all_shadow_requests("delete"), self._group), self._on_delete),
            # Presence goes to one worker of the group.
            (shared(t.all_presence(), self._group), self._on_presence),
        ]

    async def stop(self) -> None:
        """Finish queued requests, then stop; nothing acknowledged is left unsaved.

        The broker subscriptions stay: the session is persistent, so what is published
        while the twin is down waits for it (unsubscribing lost those updates). A message
        that arrives during the stop is left unacknowledged, for the next start."""
        self._stopping = True
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), 10)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        log.info("twin service stopped after %d accepted updates", self.updates_accepted)

    # --- MQTT handlers -------------------------------------------------------------------
    async def _on_update(self, topic: str, payload: bytes) -> None:
        charger_id = self._topics.charger_id_of(topic)
        try:
            request = parse_update(payload, self._limits, self._clock())
            _check_id(charger_id, request.client_token)
        except ShadowError as exc:
            self._reject(charger_id, "update", exc)
            return
        await self._submit(_Job(charger_id, "update", request, request.client_token))

    async def _on_get(self, topic: str, payload: bytes) -> None:
        await self._on_plain_request("get", topic, payload)

    async def _on_delete(self, topic: str, payload: bytes) -> None:
        await self._on_plain_request("delete", topic, payload)

    async def _on_plain_request(self, kind: str, topic: str, payload: bytes) -> None:
        """``get`` and ``delete`` carry nothing but an optional clientToken."""
        charger_id = self._topics.charger_id_of(topic)
        try:
            token = client_token_of(parse_json_object(payload, self._limits))
            _check_id(charger_id, token)
        except ShadowError as exc:
            self._reject(charger_id, kind, exc)
            return
        await self._submit(_Job(charger_id, kind, None, token))

    async def _on_presence(self, topic: str, payload: bytes) -> None:
        charger_id = self._topics.charger_id_of(topic)
        try:
            validate_charger_id(charger_id)
            body = json.loads(payload) if payload else None
        except (ValueError, InvalidTopicError):
            log.warning("ignoring malformed presence on %s", topic)
            return
        report = PresenceReport.parse(body, self._clock())
        if report is not None:
            await self._submit(_Job(charger_id, "presence", None, None, presence=report))

    async def _on_bridge_status(self, topic: str, payload: bytes) -> None:
        try:
            bridge_id = self._topics.bridge_id_of(topic)
            body = json.loads(payload) if payload else None
        except (ValueError, InvalidTopicError):
            return
        status = BridgeStatus.parse(body)
        if status is None or not self._bridges.status(bridge_id, status):
            return  # cleared, malformed, or older than what we know
        if status.online:
            if bridge_id in self._presumed_gone:
                self._presumed_gone.discard(bridge_id)
                self._mqtt.publish(self._topics.bridge_announce(bridge_id), {})
            return
        lost = await self._chargers_of(bridge_id)
        if lost:
            log.warning("bridge %s is gone: marking %d chargers offline", bridge_id, len(lost))
        await self._mark_lost(lost, BridgeLost(bridge_id, status.epoch))

    # --- presence after our own (re)connects ------------------------------------------------
    async def _connected(self) -> None:
        """A new MQTT connection: bridges must announce themselves again (see BridgeBook)."""
        if self._stopping:
            return
        self._bridges.new_generation()
        if self._reconciler is not None:
            self._reconciler.cancel()
        self._reconciler = asyncio.create_task(self._reconcile(), name="twin-presence")

    async def _reconcile(self) -> None:
        """Chargers online on a bridge that has not announced itself within the grace go
        offline: after a kill -9 of everything, a broker without its retained messages
        publishes no will for the bridge that held them."""
        await asyncio.sleep(self._presence_grace)
        try:
            held = await self._store.online_chargers()
        except DatabaseError:
            # The next reconnect checks again; the wills of bridges that die meanwhile
            # are handled as they come.
            log.exception("cannot list online chargers to check their bridges")
            return
        silent: dict[str, list[str]] = {}
        for charger_id, bridge_id in held:
            if bridge_id is not None and not self._bridges.confirmed_alive(bridge_id):
                silent.setdefault(bridge_id, []).append(charger_id)
        for bridge_id, chargers in silent.items():
            self._presumed_gone.add(bridge_id)
            log.warning(
                "bridge %s has not announced itself: marking %d chargers offline",
                bridge_id,
                len(chargers),
            )
            await self._mark_lost(chargers, BridgeLost(bridge_id, None, unless_alive=True))

    async def _chargers_of(self, bridge: str) -> list[str]:
        """The chargers whose shadow says online on ``bridge``."""
        try:
            held = await self._store.online_chargers()
        except DatabaseError:
            log.exception("cannot list the chargers of bridge %s", bridge)
            return []
        return [charger_id for charger_id, bridge_id in held if bridge_id == bridge]

    async def _mark_lost(self, chargers: list[str], lost: BridgeLost) -> None:
        jobs = [_Job(charger_id, "lost", None, None, lost=lost) for charger_id in chargers]
        await asyncio.gather(*(self._submit(job) for job in jobs))

    async def _submit(self, job: _Job) -> None:
        if self._stopping:
            # Not acknowledged: the broker keeps it in the session for the next start.
            raise asyncio.CancelledError
        self._queue.put_nowait(job)
        # Acknowledge to the broker only once the batch holding the job is durable.
        await asyncio.shield(job.done)

    # --- the batch loop ------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.qsize() < _BATCH_MAX:
                await asyncio.sleep(_BATCH_WINDOW)
            while len(batch) < _BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._process_until_durable(batch)
            except Exception:
                log.exception("shadow batch of %d requests failed", len(batch))
                for job in batch:
                    self._fail(job, ShadowError(500, "internal error", job.client_token))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _process_until_durable(self, batch: list[_Job]) -> None:
        """Process the batch; when the database aborts it for a reason of the moment (a
        deadlock with another writer, say), apply it again from the store."""
        for attempt in range(1, _TRANSIENT_ATTEMPTS + 1):
            try:
                await self._process(batch)
                return
            except DatabaseError as exc:
                if not is_transient(exc) or attempt == _TRANSIENT_ATTEMPTS:
                    raise
                pause = min(0.02 * 2**attempt, 1.0)
                log.warning(
                    "shadow batch of %d requests aborted by the database (%s); applying it "
                    "again in %.2f s (attempt %d)",
                    len(batch),
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    pause,
                    attempt + 1,
                )
                self.batches_retried += 1
                await asyncio.sleep(pause)

    async def _process(self, batch: list[_Job]) -> None:
        working: _Working = {}
        outcomes: list[_Outcome] = []
        if self._group is not None:
            await self._drop_stale_cache({job.charger_id for job in batch})
        try:
            for job in batch:
                try:
                    outcomes.append(await self._handle(job, working))
                except ShadowError as exc:
                    exc.client_token = job.client_token
                    outcomes.append(_Outcome(job, [self._rejection(job, exc)]))
            saved = await self._save(working)
        except BaseException:
            # The cached documents were changed in place: forget them, the store is right
            # (and the batch may be applied again from it).
            for charger_id in working:
                self._cache.pop(charger_id, None)
            raise
        retry = {cid for cid, ok in saved.items() if not ok}
        for outcome in outcomes:
            job = outcome.job
            if job.charger_id in retry:
                # Another worker wrote this shadow first: reload and apply again.
                self._cache.pop(job.charger_id, None)
                job.attempts += 1
                if job.attempts < _CONFLICT_ATTEMPTS:
                    self._queue.put_nowait(job)
                    continue
                outcome = _Outcome(
                    job,
                    [
                        self._rejection(
                            job,
                            ShadowError(409, "conflicting concurrent updates", job.client_token),
                        )
                    ],
                )
            if outcome.changed:
                self.updates_accepted += 1
            for topic, message in outcome.messages:
                self._mqtt.publish(topic, message)
            if not job.done.done():
                job.done.set_result(None)

    async def _drop_stale_cache(self, charger_ids: set[str]) -> None:
        """Forget cached documents that another worker changed since we read them."""
        cached = sorted(cid for cid in charger_ids if cid in self._cache)
        if not cached:
            return
        stored = await self._store.versions(cached)
        for cid in cached:
            if stored.get(cid) != self._cache[cid].version:
                del self._cache[cid]

    async def _save(self, working: _Working) -> dict[str, bool]:
        """Write the batch in one transaction; per charger, whether its write won."""
        saves = [
            (e.doc, e.read_version)
            for e in working.values()
            if e.dirty and not e.deleted and e.doc is not None
        ]
        deletes = [(cid, e.read_version) for cid, e in working.items() if e.deleted]
        if not saves and not deletes:
            return {}
        saved, removed = await self._store.save_many(saves, deletes=deletes)
        out = {}
        for (doc, _), ok in zip(saves, saved, strict=True):
            out[doc.charger_id] = ok
            if ok:
                self._remember(doc)
            else:
                self._cache.pop(doc.charger_id, None)
        for (charger_id, _), ok in zip(deletes, removed, strict=True):
            out[charger_id] = ok
            self._cache.pop(charger_id, None)
        return out

    async def _current(self, charger_id: str, working: _Working) -> ShadowDocument | None:
        entry = working.get(charger_id)
        if entry is not None:
            return None if entry.deleted else entry.doc
        doc = self._cache.get(charger_id)
        if doc is None:
            doc = await self._store.load(charger_id)
            if doc is not None:
                self._remember(doc)
        working[charger_id] = _Entry(doc, doc.version if doc else 0)
        return doc

    async def _handle(self, job: _Job, working: _Working) -> _Outcome:
        t, cid = self._topics, job.charger_id
        doc = await self._current(cid, working)
        if doc is None and not await self._registry.exists(cid):
            raise ShadowError(404, f"charger {cid!r} is not registered")
        if job.kind == "delete":
            if doc is None:
                raise ShadowError(404, f"no shadow for charger {cid!r}")
            working[cid].deleted = True
            # Usually the charger was just unregistered: a late report must not recreate
            # its shadow on the strength of a cached registration.
            self._registry.forget(cid)
            log.info("charger %s: shadow deleted at version %d", cid, doc.version)
            answer = {"version": doc.version, "timestamp": self._clock()}
            return _Outcome(
                job, [(t.shadow(cid, "delete", "accepted"), _with_token(answer, job.client_token))]
            )
        if job.kind == "get":
            if doc is None:
                raise ShadowError(404, f"no shadow for charger {cid!r} yet")
            return _Outcome(
                job,
                [
                    (
                        t.shadow(cid, "get", "accepted"),
                        _with_token(doc.to_public(), job.client_token),
                    )
                ],
            )
        resend_delta = job.resend_delta
        if job.kind == "update":
            request = job.update
            assert request is not None
            if request.deadline is not None and self._clock() > request.deadline:
                # The requester stopped waiting: applying it now would contradict the
                # timeout it answered (and audited).
                raise ShadowError(408, "the request expired before the twin could apply it")
        else:
            decided = self._presence_request(job, doc)
            if decided is None:
                return _Outcome(job, [])  # nothing to change, nothing to answer
            request, resend_delta = decided
        current = doc or ShadowDocument(cid)
        done_at = current.requests.get(request.fingerprint) if request.fingerprint else None
        if done_at is not None:
            # Delivered again after it was applied (its worker died before acknowledging
            # it): answered as the first time, not applied twice.
            answer = self._accepted(request, current)
            answer["version"] = done_at
            return _Outcome(job, [(t.shadow(cid, "update", "accepted"), answer)])
        if request.version is not None and request.version != current.version:
            raise ShadowError(
                409,
                f"version conflict: the shadow is at version "
                f"{current.version}, the request expected {request.version}",
            )
        now = self._clock()
        previous = current.encoded() if doc is not None else None
        snapshot = current.snapshot()
        presence_before = presence_key(doc)
        if not current.apply(request.state, request.timestamp):
            unchanged: list[_Message] = [
                (t.shadow(cid, "update", "accepted"), self._accepted(request, current))
            ]
            if resend_delta:
                unchanged += self._delta_message(current, None)
            return _Outcome(job, unchanged)
        current.version += 1
        current.timestamp = now
        encoded = current.encoded()
        try:
            if encoded.state_bytes() > self._limits.max_document_bytes:
                raise ShadowError(
                    413, f"the shadow would exceed {self._limits.max_document_bytes} bytes"
                )
            if "desired" in request.state:
                errors = desired_errors(current.desired)
                if errors:
                    raise ShadowError(
                        422,
                        "invalid desired state: "
                        + "; ".join(f"{pointer}: {message}" for pointer, message in errors[:10]),
                    )
        except ShadowError:
            current.rollback(snapshot)
            raise
        if request.fingerprint is not None:
            current.remember_request(request.fingerprint)
        for section in current.sections.values():
            section.prune_tombstones(now - _TOMBSTONE_HORIZON)
        entry = working[cid]
        entry.doc, entry.dirty = current, True
        documents = (
            f'{{"previous":{previous.versioned() if previous else "null"},'
            f'"current":{encoded.versioned()},"timestamp":{json.dumps(now)}'
            + (
                f',"clientToken":{json.dumps(request.client_token)}}}'
                if request.client_token is not None
                else "}"
            )
        )
        messages: list[_Message] = [
            (t.shadow(cid, "update", "accepted"), self._accepted(request, current)),
            (t.shadow(cid, "update", "documents"), documents.encode()),
        ]
        connection = presence_changed(presence_before, current)
        if connection is not None:
            # Whoever changed it (the bridge's presence or report, or our own inference):
            # the recorder records this topic, so every change reaches the time series.
            messages.append((t.presence_change(cid), connection))
        new_delta = encoded.delta
        old_delta = previous.delta if previous is not None else {}
        if new_delta and ("desired" in request.state or new_delta != old_delta or resend_delta):
            messages += self._delta_message(current, request.client_token)
        elif "desired" in request.state:
            # Desired changed and nothing differs: a removal (or a value reached). Sent all
            # the same: the bridge clears what it set for a value nobody desires any more
            # (a charging limit), and it learns that from the whole desired state.
            messages += self._delta_message(current, request.client_token, empty=True)
        return _Outcome(job, messages, changed=True)

    def _presence_request(
        self, job: _Job, doc: ShadowDocument | None
    ) -> tuple[UpdateRequest, bool] | None:
        """The write a presence or lost job makes now, and whether it says online."""
        now = self._clock()
        if job.presence is not None:
            decided = presence_write(doc, job.presence, self._bridges, now)
        else:
            assert job.lost is not None
            decided = lost_write(doc, job.lost, self._bridges, now)
        if decided is None:
            return None
        connection, at = decided
        request = UpdateRequest({"reported": {"connection": connection}}, None, None, at)
        return request, connection["online"] is True

    # --- messages ------------------------------------------------------------------------
    def _accepted(self, request: UpdateRequest, doc: ShadowDocument) -> dict[str, Any]:
        return _with_token(
            {
                "state": request.state,
                "metadata": request_metadata(request.state, request.timestamp),
                "version": doc.version,
                "timestamp": doc.timestamp or self._clock(),
            },
            request.client_token,
        )

    def _delta_message(
        self, doc: ShadowDocument, token: str | None, *, empty: bool = False
    ) -> list[_Message]:
        """The delta, with the whole desired state (a reconciler sees removals in it)."""
        d = doc.delta()
        if not d and not empty:
            return []
        return [
            (
                self._topics.shadow(doc.charger_id, "update", "delta"),
                _with_token(
                    {
                        "state": d,
                        "metadata": delta_metadata(d, doc.sections["desired"].metadata),
                        "desired": doc.desired,
                        "version": doc.version,
                        "timestamp": doc.timestamp,
                    },
                    token,
                ),
            )
        ]

    def _rejection(self, job: _Job, error: ShadowError) -> _Message:
        self.requests_refused += 1
        if error.code >= 500:
            log.error("charger %s: %s refused: %s", job.charger_id, job.kind, error.message)
        else:
            log.info(
                "charger %s: %s refused (%d): %s",
                job.charger_id,
                job.kind,
                error.code,
                error.message,
            )
        # Presence writes are updates on the wire: refused ones are answered as such.
        operation = job.kind if job.kind in ("get", "delete") else "update"
        return (
            self._topics.shadow(job.charger_id, operation, "rejected"),
            error.payload(self._clock()),
        )

    def _reject(self, charger_id: str, kind: str, error: ShadowError) -> None:
        self.requests_refused += 1
        log.info("charger %s: %s refused (%d): %s", charger_id, kind, error.code, error.message)
        if "/" in charger_id or "+" in charger_id or "#" in charger_id or not charger_id:
            return
        self._mqtt.publish(
            self._topics.shadow(charger_id, kind, "rejected"), error.payload(self._clock())
        )

    def _fail(self, job: _Job, error: ShadowError) -> None:
        topic, message = self._rejection(job, error)
        self._mqtt.publish(topic, message)
        if not job.done.done():
            job.done.set_result(None)

    def _remember(self, doc: ShadowDocument) -> None:
        self._cache[doc.charger_id] = doc
        self._cache.move_to_end(doc.charger_id)
        if len(self._cache) > _CACHE_MAX:
            self._cache.popitem(last=False)


def _with_token(message: dict[str, Any], token: str | None) -> dict[str, Any]:
    if token is not None:
        message["clientToken"] = token
    return message


def _check_id(charger_id: str, token: str | None) -> None:
    try:
        validate_charger_id(charger_id)
    except InvalidTopicError as exc:
        raise ShadowError(400, str(exc), token) from exc
