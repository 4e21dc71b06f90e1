"""Bench fleets that booted before: chargers that may talk without a BootNotification.

The bridge answers a charger's calls only once a BootNotification of it was accepted, on
its connection or earlier (OCPP 1.6 section 4.2, bridge/README.md "Accepted first"). Benches
that measure MeterValues or StatusNotifications open sockets and send them at once, like
chargers reconnecting after a network drop: their shadows must show an earlier accepted
boot, as the twin would have left it.
"""

from __future__ import annotations

import time
from pathlib import Path

from chargetwin.database import connect
from twin.documents import ShadowDocument
from twin.stores import ShadowStore


async def mark_booted(data_dir: Path, ids: list[str], vendor: str = "Bench") -> None:
    """Give each of ``ids`` a shadow holding ``reported.chargePoint`` (an accepted boot)."""
    db = connect(f"sqlite:///{data_dir / 'chargetwin.db'}")
    await db.open()
    try:
        store = ShadowStore(db)
        await store.create_schema()
        at = time.time()
        documents = []
        for charger_id in ids:
            document = ShadowDocument(charger_id)
            document.apply({"reported": {"chargePoint": {"vendor": vendor, "model": "Raw"}}}, at)
            document.version = 1
            documents.append((document, 0))
        await store.save_many(documents)
    finally:
        await db.close()
