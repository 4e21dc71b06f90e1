"""The campaign engine: one owned asyncio task that moves every campaign a step each tick.

Each tick, per active campaign: read the shadows of the chargers being updated (one query
per 500, from the shadow store), turn what they report into campaign states, check the
phase's thresholds (pause above the failure threshold, move on at the success threshold),
then start as many queued chargers as the concurrency limit allows, when inside the
maintenance window and (if asked) only on idle chargers, by setting
``desired.firmware.version`` through the twin (:class:`~chargetwin.shadow_client.ShadowClient`).

Why poll the store rather than subscribe to ``shadow/update/documents``: the store is the
truth after any restart or change of leader (nothing to catch up on), and a tick costs
O(chargers in flight) — bounded by ``maxConcurrent`` — where the documents topic would
bring every shadow change of the whole fleet (heartbeats, meter-driven status) into the
``fleet`` process. The price is latency of one tick (``--campaign-interval``, 5 s), less
when the API wakes the engine after an operator's change.

What a tick costs (docs/campaigns.md, "Cost"): the versions of the in-flight shadows (one
small query per 500), and the documents of only those whose version moved since the last
tick, kept as the few leaves :func:`progress` reads (:class:`_FirmwareViews`); a charger
that is downloading for a minute is parsed a handful of times, not once a tick. Desired
versions are written as one batch per tick (:meth:`ShadowClient.update_many`: one
wildcard subscription for all the twin's answers).

A retry is the same desired version written again: the twin stamps the desired leaf anew,
and the bridge tries once more when the desired leaf is newer than its refusal
(docs/firmware.md). A charger that goes offline mid-update keeps its state; the twin
re-sends the delta when it returns, and an attempt without news (a status) for
``attemptTimeoutS`` is retried like a failure.

Who runs it: the one leading ``fleet`` process (:mod:`fleet.app`). Leadership makes two
engines at once rare and short, not impossible (a leader cut off from the database goes
on with the tick in hand while a standby takes over), so no step here is taken on a bare
read: every write is a compare-and-set on the row's state and revision as read (and, for
starts, on the campaign's state and revision), and only the engine whose write won sets
the desired firmware. Writing the desired firmware is the step that must never be
doubled: the bridge sends UpdateFirmware again for a newer desired stamp. A desired
firmware found missing is set again only ``republish_after`` seconds after the row's last
write, so a request still on its way to the twin (a slow twin, a leader killed just after
publishing) is not doubled either. The clean-up of a cancelled campaign removes desired
firmware; doing that twice is harmless, so it is idempotent rather than claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from chargetwin.database import Database, DatabaseError
from chargetwin.shadow_client import ShadowClient, ShadowRequestError, ShadowTimeoutError
from fleet.campaigns import (
    CHARGER_STATES,
    COMPLETED,
    DOWNLOADED,
    DOWNLOADING,
    FAILED,
    IN_FLIGHT,
    INSTALLED,
    INSTALLING,
    PAUSED,
    QUEUED,
    RUNNING,
    SCHEDULED,
    SKIPPED,
    TERMINAL,
    Campaign,
    CampaignStore,
    Transition,
    phase_name,
)
from fleet.targets import documents, section, versioned_documents, versions
from twin.stores import ShadowFilter, ShadowStore

log = logging.getLogger(__name__)

# A port in use: the 1.6 ChargePointStatus values, and OCPP 2.0.1's ConnectorStatus
# Occupied (a 2.0.1 port is its EVSE; docs/ocpp201.md, Port identity).
BUSY = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE", "Preparing", "Finishing", "Occupied"})
# (Signed)FirmwareStatusNotification values of 1.6 and 2.0.1 -> the charger's state.
_STATUS_STATES = {
    "DownloadScheduled": SCHEDULED,  # 2.0.1: waiting for its retrieveDateTime
    "Downloading": DOWNLOADING,
    "DownloadPaused": DOWNLOADING,  # 2.0.1
    "Downloaded": DOWNLOADED,
    "SignatureVerified": DOWNLOADED,  # 1.6 security extension, 2.0.1
    "InstallScheduled": DOWNLOADED,  # 2.0.1: waiting for its installDateTime
    "Installing": INSTALLING,
    "InstallRebooting": INSTALLING,  # 2.0.1: rebooting into the new image
    "Installed": INSTALLING,  # installed, rebooting: done once the boot reports the version
}
_PAGE = 500
_MIN_PAGE = 50
_PUBLISH_CONCURRENCY = 64
REPUBLISH_AFTER_S = 10.0
RETRY = "retry"  # an attempt failed; the charger goes back to the queue if retries are left


def progress(
    document: dict[str, Any] | None, version: str, started_at: float, timeout_s: float, now: float
) -> tuple[str, str | None]:
    """What one in-flight charger's shadow says about its attempt: ``(state, reason)``.

    Returns a charger state, :data:`RETRY` (the attempt failed; ``reason`` says how), or
    ``"republish"`` when the desired version is missing (set again: idempotent).
    """
    if document is None:
        return SKIPPED, "the charger has no shadow any more (unregistered?)"
    firmware = section(document, "reported", "firmware")
    if firmware.get("version") == version:
        return INSTALLED, None
    desired = section(document, "desired", "firmware").get("version")
    if desired is None:
        return "republish", None
    if desired != version:
        return SKIPPED, f"desired firmware changed to {desired!r} outside the campaign"
    meta = ((document.get("metadata") or {}).get("desired") or {}).get("firmware") or {}
    # Nothing older than this attempt's start speaks for it: the document may not show
    # this attempt's desired stamp yet (the request still on its way to the twin, read by
    # an engine that did not send it), and then an earlier attempt's refusal would
    # otherwise be taken for this one's. (This compares the fleet host's clock with the
    # bridge's, as the desired stamp already compares the twin's with the bridge's: hosts
    # are assumed to keep time, e.g. by NTP; a refusal stamped before the start by a
    # lagging clock is then caught by the attempt timeout instead.)
    asked_at = max(started_at, float((meta.get("version") or {}).get("timestamp") or 0))
    refusal = section(document, "reported", "refused").get("firmware") or {}
    if refusal.get("value") == version and float(refusal.get("at") or 0) >= asked_at:
        return RETRY, str(refusal.get("status") or "refused")
    requested = firmware.get("requested") or {}
    state, news = "", started_at
    if requested.get("version") == version and float(requested.get("at") or 0) >= asked_at:
        updated = float(firmware.get("updatedAt") or 0)
        news = max(started_at, float(requested["at"]), updated)
        state = SCHEDULED
        if updated >= float(requested["at"]):
            state = _STATUS_STATES.get(str(firmware.get("status")), SCHEDULED)
    if now - news > timeout_s:
        return RETRY, f"no news within {timeout_s:g} s"
    return state, None  # "" when nothing changed


def _totals(counts: dict[tuple[int, str], int]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for (_, state), n in counts.items():
        out[state] += n
    return dict(out)


def firmware_view(document: dict[str, Any]) -> dict[str, Any]:
    """The leaves of a shadow document that :func:`progress` and a clean-up read, in the
    document's own shape (a few hundred bytes, where a document is kilobytes)."""
    state = document.get("state") or {}
    reported = state.get("reported") or {}
    desired_meta = (document.get("metadata") or {}).get("desired") or {}
    return {
        "state": {
            "reported": {
                "firmware": reported.get("firmware"),
                "refused": {"firmware": (reported.get("refused") or {}).get("firmware")},
            },
            "desired": {"firmware": (state.get("desired") or {}).get("firmware")},
        },
        "metadata": {"desired": {"firmware": desired_meta.get("firmware")}},
    }


class _FirmwareViews:
    """Firmware views of a campaign's chargers, each re-read only when its shadow's version
    moved: one query for the versions, one for the changed documents."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._held: dict[str, tuple[int, dict[str, Any]]] = {}

    async def read(self, charger_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The views of ``charger_ids`` that have a shadow; forgets every other charger."""
        now = await versions(self._db, charger_ids)
        stale = [c for c, v in now.items() if self._held.get(c, (None,))[0] != v]
        held = {c: self._held[c] for c in now if c in self._held}
        for charger_id, (version, document) in (await versioned_documents(self._db, stale)).items():
            held[charger_id] = (version, firmware_view(document))
        self._held = held
        return {c: view for c, (_, view) in held.items()}


class CampaignEngine:
    """Drives campaigns; :meth:`running` owns the ticking task for the caller's lifetime."""

    def __init__(
        self,
        store: CampaignStore,
        shadows: ShadowStore,
        shadow_client: ShadowClient,
        *,
        interval: float = 5.0,
        republish_after: float = REPUBLISH_AFTER_S,
    ) -> None:
        self.store = store
        self.shadows = shadows
        self.client = shadow_client
        self.interval = interval
        self.republish_after = republish_after
        self._db: Database = store.db
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._views: dict[str, _FirmwareViews] = {}  # per active campaign

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CampaignEngine]:
        """Tick every ``interval`` until the block ends; the task is stopped on the way out."""
        stop = asyncio.Event()
        task = asyncio.create_task(self._run(stop), name="campaign-engine")
        try:
            yield self
        finally:
            stop.set()
            self._wake.set()
            await task

    def wake(self) -> None:
        """Tick now (after an operator action) rather than at the next interval."""
        self._wake.set()

    async def _run(self, stop: asyncio.Event) -> None:
        log.info("campaign engine started (every %g s)", self.interval)
        while not stop.is_set():
            try:
                await self.tick()
            except (DatabaseError, ShadowRequestError) as exc:
                log.warning("campaign tick failed, next one in %g s: %s", self.interval, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
        log.info("campaign engine stopped")

    async def tick(self) -> None:
        """One step of every active campaign, and the clean-up of cancelled ones."""
        async with self._lock:
            active = await self.store.list((RUNNING, PAUSED))
            self._views = {
                c.campaign_id: self._views.get(c.campaign_id) or _FirmwareViews(self._db)
                for c in active
            }
            for campaign in active:
                await self._drive(campaign)
            for campaign in await self.store.cancelled_with_claims():
                await self._clean_up(campaign)

    # --- one campaign ---------------------------------------------------------------------
    async def _drive(self, campaign: Campaign) -> None:
        await self._track(campaign)
        if campaign.state != RUNNING:
            return
        counts = await self.store.counts(campaign.campaign_id)
        if not await self._check_phases(campaign, counts):
            return
        in_flight = sum(n for (_, state), n in counts.items() if state in IN_FLIGHT)
        await self._start(campaign, campaign.policy.max_concurrent - in_flight)

    async def _track(self, campaign: Campaign) -> None:
        """Read the shadows of in-flight chargers and record what they report."""
        cid, now = campaign.campaign_id, time.time()
        rows = await self.store.chargers(cid, states=IN_FLIGHT, limit=2**31 - 1)
        views = self._views.setdefault(cid, _FirmwareViews(self._db))
        docs = await views.read([r.charger_id for r in rows])
        timeout, retries = campaign.policy.attempt_timeout_s, campaign.policy.retries
        changes, republish = [], []
        notes: dict[str, tuple[int, str]] = {}  # logged once the change is applied
        for row in rows:
            state, reason = progress(
                docs.get(row.charger_id), campaign.version, row.started_at or now, timeout, now
            )
            if state == "republish":
                if now - row.updated_at >= self.republish_after:
                    # Claim the row (same state, revision + 1): only one engine sets it.
                    republish.append(
                        Transition(
                            row.charger_id, row.state, row.state, row.reason, revision=row.revision
                        )
                    )
            elif state == RETRY:
                left = row.attempts <= retries
                new = QUEUED if left else FAILED
                why = f"attempt {row.attempts} failed: {reason}" + ("; retrying" if left else "")
                notes[row.charger_id] = (logging.WARNING, why)
                changes.append(
                    Transition(row.charger_id, row.state, new, why, revision=row.revision)
                )
            elif state and state != row.state:
                if state == INSTALLED:
                    notes[row.charger_id] = (logging.INFO, f"{campaign.version} installed")
                changes.append(
                    Transition(row.charger_id, row.state, state, reason, revision=row.revision)
                )
        applied = await self.store.apply(cid, changes)
        for t, ok in zip(changes, applied, strict=True):
            if ok and t.charger_id in notes:
                level, text = notes[t.charger_id]
                log.log(level, "%s: campaign %s: %s", t.charger_id, cid, text)
        if republish:
            won = await self.store.apply(cid, republish, campaign=campaign)
            claimed = {t.charger_id: t for t, ok in zip(republish, won, strict=True) if ok}
            if claimed:
                log.info(
                    "campaign %s: desired firmware set again on %d charger(s)", cid, len(claimed)
                )
                await self._publish(
                    campaign,
                    {c: (t.new, (t.revision or 0) + 1) for c, t in claimed.items()},
                )

    async def _check_phases(self, campaign: Campaign, counts: dict[tuple[int, str], int]) -> bool:
        """Pause or complete the campaign, or move to the next phase; True to start more."""
        cid, policy = campaign.campaign_id, campaign.policy
        per_phase: dict[int, Counter[str]] = {}
        for (phase, state), n in counts.items():
            per_phase.setdefault(phase, Counter())[state] += n
        for index in range(campaign.phase + 1):
            c = per_phase.get(index, Counter())
            size = sum(c.values()) - c[SKIPPED]
            if size and c[FAILED] * 100 / size > policy.failure_threshold:
                reason = (
                    f"{c[FAILED]} of {size} chargers failed in the {phase_name(index)}, above the "
                    f"failure threshold of {policy.failure_threshold:g}%"
                )
                await self._pause(campaign, reason)
                return False
        while True:
            index = campaign.phase
            c = per_phase.get(index, Counter())
            size = sum(c.values()) - c[SKIPPED]
            needed = math.ceil(size * policy.success_threshold / 100 - 1e-9)
            in_flight = sum(c[s] for s in IN_FLIGHT)
            if c[INSTALLED] >= needed and in_flight == 0:
                if index + 1 < len(campaign.phases):
                    if not await self.store.advance(cid, index, campaign.revision):
                        return False
                    campaign.phase, campaign.revision = index + 1, campaign.revision + 1
                    log.info("campaign %s: %s starts", cid, phase_name(campaign.phase))
                    continue
                left = sum(n for (p, s), n in counts.items() if s not in TERMINAL)
                if left == 0:
                    if await self.store.set_state(
                        cid, COMPLETED, old=(RUNNING,), revision=campaign.revision
                    ):
                        await self.store.release(cid)
                        log.info("campaign %s completed: %s", cid, _totals(counts))
                    return False
            elif in_flight == 0 and c[QUEUED] == 0:
                reason = (
                    f"{c[INSTALLED]} of {size} chargers installed in the {phase_name(index)}, "
                    f"below the success threshold of {policy.success_threshold:g}%"
                )
                await self._pause(campaign, reason)
                return False
            return True

    async def _pause(self, campaign: Campaign, reason: str) -> None:
        if await self.store.set_state(
            campaign.campaign_id, PAUSED, old=(RUNNING,), reason=reason, revision=campaign.revision
        ):
            campaign.state, campaign.revision = PAUSED, campaign.revision + 1
            log.warning("campaign %s paused: %s", campaign.campaign_id, reason)

    async def _start(self, campaign: Campaign, slots: int) -> None:
        """Start up to ``slots`` queued chargers of the phases reached so far."""
        policy = campaign.policy
        if slots <= 0:
            return
        if policy.window is not None and not policy.window.contains(datetime.now(UTC)):
            return
        cid, offset = campaign.campaign_id, 0
        chosen: list[str] = []
        changes: list[Transition] = []
        # Pages sized by the free slots: a charger that finished frees one, and starting
        # it again must not read the summaries of 500 queued chargers.
        size = min(_PAGE, max(_MIN_PAGE, 2 * slots))
        while len(chosen) < slots:
            page = await self.store.chargers(
                cid, states=(QUEUED,), max_phase=campaign.phase, limit=size, offset=offset
            )
            if not page:
                break
            offset += len(page)
            ids = tuple(r.charger_id for r in page)
            summaries = {
                s.charger_id: s
                for s in await self.shadows.list(ShadowFilter(charger_ids=ids, limit=len(ids)))
            }
            for row in page:
                s = summaries.get(row.charger_id)
                if s is None or not s.online:
                    continue  # stays queued until it is online
                rev = row.revision
                if (s.vendor, s.model) != (campaign.vendor, campaign.model):
                    why = f"it now reports {s.vendor} {s.model}, which the image does not fit"
                    changes.append(Transition(row.charger_id, QUEUED, SKIPPED, why, revision=rev))
                elif s.firmware_version == campaign.version:
                    changes.append(Transition(row.charger_id, QUEUED, INSTALLED, revision=rev))
                elif policy.only_idle and BUSY & set(s.statuses.values()):
                    continue
                elif len(chosen) < slots:
                    chosen.append(row.charger_id)
                    changes.append(
                        Transition(
                            row.charger_id, QUEUED, SCHEDULED, row.reason, start=True, revision=rev
                        )
                    )
        # Only while the campaign is as read: a pause or cancel since then wins.
        applied = await self.store.apply(cid, changes, campaign=campaign)
        started = {
            t.charger_id: (SCHEDULED, (t.revision or 0) + 1)
            for t, ok in zip(changes, applied, strict=True)
            if ok and t.start
        }
        if started:
            log.info("campaign %s: starting %d charger(s)", cid, len(started))
            await self._publish(campaign, started)

    async def _publish(self, campaign: Campaign, claimed: dict[str, tuple[str, int]]) -> None:
        """Set ``desired.firmware.version`` on each charger this engine claimed (charger ->
        the state and revision its claim left): one batch, a bounded number of requests in
        flight at a time."""
        cid = campaign.campaign_id
        answers = await self.client.update_many(
            {c: {"desired": {"firmware": {"version": campaign.version}}} for c in claimed},
            concurrency=_PUBLISH_CONCURRENCY,
        )
        refused: list[Transition] = []
        for charger_id, answer in answers.items():
            if isinstance(answer, ShadowTimeoutError):
                log.warning("%s: campaign %s: %s (set again next tick)", charger_id, cid, answer)
            elif isinstance(answer, ShadowRequestError):
                log.warning("%s: campaign %s: the twin refused: %s", charger_id, cid, answer)
                why = f"the twin refused the desired firmware: {answer}"
                state, revision = claimed[charger_id]
                refused.append(Transition(charger_id, state, SKIPPED, why, revision=revision))
        await self.store.apply(cid, refused)

    # --- cancelled campaigns ----------------------------------------------------------------
    async def _clean_up(self, campaign: Campaign) -> None:
        """Remove the desired firmware the campaign set on chargers it did not finish."""
        cid = campaign.campaign_id
        unfinished = [s for s in CHARGER_STATES if s != INSTALLED]
        rows = await self.store.chargers(cid, states=unfinished, desired_set=True, limit=_PAGE)
        if rows:
            docs = await documents(self._db, [r.charger_id for r in rows])
            ours = [
                r.charger_id
                for r in rows
                if section(docs.get(r.charger_id), "desired", "firmware").get("version")
                == campaign.version
            ]
            answers = await self.client.update_many(
                {charger_id: {"desired": {"firmware": None}} for charger_id in ours}
            )
            for charger_id, answer in answers.items():
                if isinstance(answer, ShadowRequestError):
                    log.warning(
                        "%s: campaign %s: desired firmware not removed: %s", charger_id, cid, answer
                    )
            await self.store.forget_desired(cid, [r.charger_id for r in rows])
            log.info("campaign %s: desired firmware removed from %d charger(s)", cid, len(ours))
            return
        await self.store.release(cid)
