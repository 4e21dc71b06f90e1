"""Chargers for the campaign and profile tests: registered, with a shadow the real twin keeps.

The tests play the bridge's part by reporting state through the twin (``shadow/update``
with ``reported``), exactly the topics the bridge publishes on, so the engine reads real
shadow documents from the real store.
"""

from __future__ import annotations

import time
from typing import Any

from api.backends import Backend
from twin.catalog import FirmwareImage

VENDOR, MODEL, OLD, NEW = "ChargeTwin", "CT-AC22", "1.4.2", "1.5.0"
Json = dict[str, Any]


async def add_image(
    backend: Backend, version: str = NEW, vendor: str = VENDOR, model: str = MODEL
) -> FirmwareImage:
    assert backend.operations is not None
    return await backend.operations.catalog.add(
        vendor=vendor,
        model=model,
        version=version,
        sha256="ab" * 32,
        size=1024,
        source="url",
        url=f"https://firmware.example/{vendor}-{model}-{version}.bin",
    )


async def seed(
    backend: Backend,
    charger_id: str,
    *,
    vendor: str | None = VENDOR,
    model: str = MODEL,
    version: str = OLD,
    online: bool = True,
    status: str = "Available",
    site: str | None = None,
    tags: list[str] | None = None,
) -> None:
    """Register a charger and report what a booted charger reports."""
    await backend.registry.register(charger_id, None, site=site, tags=tags)
    reported: Json = {
        "connection": {"online": online},
        "connectors": {"1": {"status": status, "errorCode": "NoError"}},
    }
    if vendor is not None:
        reported["chargePoint"] = {"vendor": vendor, "model": model}
        reported["firmware"] = {"version": version}
    await report(backend, charger_id, reported)


async def report(backend: Backend, charger_id: str, reported: Json) -> None:
    await backend.shadow_client.update(charger_id, {"reported": reported})


async def progress(backend: Backend, charger_id: str, status: str, version: str = NEW) -> None:
    """What the bridge reports while a charger works on an update."""
    now = time.time()
    if status == "requested":
        reported: Json = {
            "firmware": {"requested": {"version": version, "via": "UpdateFirmware", "at": now}}
        }
    elif status == "installed":
        reported = {"firmware": {"version": version, "status": "Installed", "updatedAt": now}}
    elif status in ("DownloadFailed", "InstallationFailed"):
        reported = {
            "firmware": {"status": status, "updatedAt": now},
            "refused": {"firmware": {"value": version, "status": status, "at": now}},
        }
    else:
        reported = {"firmware": {"status": status, "updatedAt": now}}
    await report(backend, charger_id, reported)


async def desired_firmware(backend: Backend, charger_id: str) -> Any:
    document = await backend.shadows.get_document(charger_id) or {}
    return ((document.get("state") or {}).get("desired") or {}).get("firmware")
