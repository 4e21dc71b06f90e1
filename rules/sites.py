"""Which site each charger belongs to: the recorder's ``site`` tag, from the charger registry.

The site is kept in the charger registry (table ``chargers``, column ``site``, in the
shared database). The recorder tags every point with it, so a lookup must never cost a
query: the whole ``charger → site`` map is held in memory and reloaded every ``refresh``
seconds. A charger the last load did not know (registered since) triggers one reload
sooner, at most once per ``refresh`` period, so telemetry of an id that is not registered
cannot turn into a query per message; the messages of that moment wait for the reload
(at most ``wait`` seconds), so a new charger's first points (its boot) carry its site.

When the registry cannot be read — the table does not exist yet (nothing registered on a
fresh install), or the database is down — points go on being recorded with the sites of
the last good load (none before the first), a warning is logged once, and the next
reload tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from chargetwin.database import Database, DatabaseError

log = logging.getLogger(__name__)


class SiteDirectory:
    """``charger id → site`` (None: registered without a site), cached from the registry."""

    def __init__(self, db: Database, *, refresh: float = 60.0, wait: float = 1.0) -> None:
        self._db = db
        self.refresh = refresh
        self.wait = wait
        self._sites: dict[str, str | None] = {}
        self._failing = False
        self._demanded_at = -float("inf")  # monotonic time of the last reload for an unknown id
        self._reload: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.loads = 0  # successful loads and failed ones: for tests and logs
        self.failures = 0

    async def start(self) -> None:
        """Load once (so the first messages are tagged), then reload every ``refresh`` s."""
        await self.load()
        self._refresher = asyncio.get_running_loop().create_task(
            self._refresh_loop(), name="site-directory-refresh"
        )

    async def stop(self) -> None:
        for task in (self._refresher, self._reload):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresher = self._reload = None

    async def site_of(self, charger: str) -> str | None:
        """The charger's site; None when it has none or is not (yet) known."""
        sites = self._sites
        if charger in sites:
            return sites[charger]
        return await self._after_reload(charger) if charger else None

    async def _after_reload(self, charger: str) -> str | None:
        task = self._reload
        if task is None or task.done():
            now = time.monotonic()
            if now - self._demanded_at < self.refresh:
                return None
            self._demanded_at = now
            task = self._reload = asyncio.get_running_loop().create_task(
                self.load(), name="site-directory-reload"
            )
        # Shielded: a message that stops waiting must not cancel the reload the others wait on.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), self.wait)
        return self._sites.get(charger)

    async def load(self) -> None:
        """Read the registry; on failure keep the sites of the last good load."""
        try:
            rows = await self._db.fetchall("SELECT charger_id, site FROM chargers")
        except DatabaseError as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "site directory: cannot read the charger registry (%s); points are "
                    "recorded with the sites known so far (%d chargers), retrying every %g s",
                    exc,
                    len(self._sites),
                    self.refresh,
                )
            return
        self._sites = {str(charger): str(site) if site else None for charger, site in rows}
        self.loads += 1
        if self._failing:
            self._failing = False
            log.info("site directory: charger registry readable again")
        log.debug("site directory: %d chargers", len(self._sites))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            await self.load()
