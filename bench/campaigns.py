"""Firmware campaign benchmark: a staged rollout over thousands of simulated chargers.

    .venv/bin/python -m bench.campaigns --chargers 2000 --runs 3

Setup (the embedded deployment): ``chargetwin up`` as a child process (embedded broker,
SQLite, the campaign engine in its ``fleet`` component, ``--campaign-interval 1``), and the
simulated fleet (:class:`simulator.Fleet`, real websockets) in this process, so the
platform's CPU time, read from ``/proc/PID/stat``, is the platform's alone.

Per run, on a fresh platform and data dir:

1. **baseline, boot**: the fleet connects (spread over ``--ramp`` seconds) and boots
   (upgrade, auth, BootNotification, GetConfiguration, StatusNotifications, shadow writes)
   until every shadow reports online with its firmware version: platform CPU per charger
   boot. A firmware update includes one
   such reboot, so this is the floor an update cannot go below.
2. **baseline, idle**: platform CPU per second with the fleet connected and nothing to do.
3. **campaign**: upload an image, create a campaign over every charger (canary 1%, a wave
   of 25%, the rest; 500 concurrent updates; only idle chargers), until ``completed``:
   wall time, updates per second, platform CPU per charger updated (UpdateFirmware, image
   download over HTTP, four FirmwareStatusNotifications, reboot and boot, the engine's
   reads and desired-state writes).

Prints medians over ``--runs`` and the machine. Chargers are registered with a cheap
scrypt cost (see :mod:`bench.bridge_load`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from bench.bridge_load import (
    BIN,
    PASSWORD,
    Server,
    cpu_seconds,
    free_port,
    raise_nofile,
    register,
    wait_listening,
)
from bench.machine import describe
from simulator import Fleet, SimulatorOptions
from simulator.options import ChargerModel, SessionTiming

MODEL = ChargerModel("ChargeTwin", "CT-AC22", "1.4.2", 2, 22_000.0, 3)
NEW = "1.5.0"
IMAGE = b"\x7fCTFW" + bytes(range(256)) * 256  # 64 KiB
TOKEN = "bench-campaign-admin-token"
LAST_LOG = Path(tempfile.gettempdir()) / "bench-campaigns-platform.log"  # kept after a run


class Platform:
    """``chargetwin up`` in its own process, with an HTTP client on its API."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.api_port, self.ocpp_port, self.mqtt_port = free_port(), free_port(), free_port()
        cmd = [
            str(BIN / "chargetwin"), "up", f"--data-dir={data_dir}",
            f"--api-port={self.api_port}", f"--ocpp-port={self.ocpp_port}",
            f"--mqtt-port={self.mqtt_port}", "--campaign-interval=1", "--log-level=WARNING",
            f"--admin-token={TOKEN}",
        ]  # fmt: skip
        self.server = Server("chargetwin up", cmd, self.api_port, data_dir / "platform.log")
        self.api = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}/api/v1",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120.0,
        )

    async def start(self) -> None:
        await self.server.start()
        assert self.server.proc is not None
        await wait_listening(self.ocpp_port, self.server.proc, timeout=60)

    async def stop(self) -> None:
        await self.api.aclose()
        await self.server.stop()

    def cpu(self) -> float:
        return cpu_seconds(self.server.pid)

    async def count(self, **params: Any) -> int:
        answer = await self.api.get("/chargers", params={**params, "limit": 1})
        answer.raise_for_status()
        return int(answer.json()["total"])


async def until(check: Any, timeout: float, every: float = 0.5) -> float:
    """Poll ``check()`` until true; the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not reached in {timeout:g} s")
        await asyncio.sleep(every)
    return time.monotonic() - started


async def one_run(chargers: int, ramp_s: float, timeout: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-campaigns-") as tmp:
        data_dir = Path(tmp)
        options = SimulatorOptions(
            chargers=chargers,
            id_prefix="BC-",
            password=PASSWORD,
            sessions=SessionTiming(auto_sessions=False),
            models=(MODEL,),
            seed=1,
            meter_interval_s=60,
            heartbeat_interval_s=600,
            reboot_delay_s=0.5,
            firmware_install_s=0.5,
            reconnect_min_s=0.5,
            reconnect_max_s=5.0,
            ramp_s=ramp_s,
        )
        ids = [options.charger_id(options.first_index + i) for i in range(chargers)]
        await register(data_dir, ids)
        platform = Platform(data_dir)
        await platform.start()
        stop = asyncio.Event()
        fleet = Fleet(replace(options, url=f"ws://127.0.0.1:{platform.ocpp_port}/ocpp"))
        running = asyncio.create_task(fleet.run(stop), name="bench-fleet")
        try:
            return await _measure(platform, fleet, chargers, timeout)
        finally:
            stop.set()
            await running
            await platform.stop()
            shutil.copy(data_dir / "platform.log", LAST_LOG)


async def _measure(platform: Platform, fleet: Fleet, n: int, timeout: float) -> dict[str, float]:
    out: dict[str, float] = {}
    cpu0 = platform.cpu()

    async def booted() -> bool:
        return await platform.count(online="true", firmwareVersion=MODEL.firmware_version) >= n

    out["boot_s"] = await until(booted, timeout)
    cpu1 = platform.cpu()
    out["boot_cpu_ms"] = (cpu1 - cpu0) * 1000 / n
    await asyncio.sleep(2.0)  # the boots' last GetConfiguration answers settle
    idle0, t0 = platform.cpu(), time.monotonic()
    await asyncio.sleep(5.0)
    out["idle_cpu_pct"] = (platform.cpu() - idle0) * 100 / (time.monotonic() - t0)

    uploaded = await platform.api.post(
        "/firmware",
        data={"vendor": MODEL.vendor, "model": MODEL.model, "version": NEW},
        files={"file": ("fw.bin", IMAGE, "application/octet-stream")},
    )
    uploaded.raise_for_status()
    cpu2, started = platform.cpu(), time.monotonic()
    created = await platform.api.post(
        "/campaigns",
        json={
            "name": "bench",
            "firmwareId": uploaded.json()["id"],
            "target": {"vendor": MODEL.vendor, "model": MODEL.model},
            "canary": "1%",
            "waves": ["25%"],
            "maxConcurrent": 500,
            "retries": 2,
            "attemptTimeoutS": 120,
        },
    )
    created.raise_for_status()
    cid = created.json()["id"]
    last: dict[str, Any] = {}

    async def completed() -> bool:
        answer = await platform.api.get(f"/campaigns/{cid}")
        answer.raise_for_status()
        last.update(answer.json())
        if last["state"] == "paused":
            raise RuntimeError(f"the campaign paused: {last['reason']}")
        return bool(last["state"] == "completed")

    await until(completed, timeout, every=0.25)
    out["campaign_s"] = time.monotonic() - started
    out["campaign_cpu_ms"] = (platform.cpu() - cpu2) * 1000 / n
    out["updates_per_s"] = n / out["campaign_s"]
    if last["counts"]["installed"] != n:
        raise RuntimeError(f"not every charger installed: {last['counts']}")
    if any(c.firmware_version != NEW for c in fleet.chargers):
        raise RuntimeError("a simulated charger does not run the new firmware")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--ramp",
        type=float,
        default=None,
        help="Seconds over which the fleet connects "
        "(default: chargers / 100; all at once swamps the embedded broker).",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise_nofile()
    ramp = args.chargers / 100 if args.ramp is None else args.ramp
    runs = []
    for i in range(args.runs):
        result = asyncio.run(one_run(args.chargers, ramp, args.timeout))
        runs.append(result)
        print(f"run {i + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in result.items()), flush=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"\nmachine: {describe()}")
    print(f"{args.chargers} chargers, embedded `chargetwin up` (process), medians of {args.runs}")
    print(f"  baseline boot: all online in {med('boot_s'):.1f} s, "
          f"platform CPU {med('boot_cpu_ms'):.2f} ms per charger boot")  # fmt: skip
    print(f"  baseline idle: platform CPU {med('idle_cpu_pct'):.1f}% of a core, fleet connected")
    print(f"  campaign:      {med('campaign_s'):.1f} s to complete, "
          f"{med('updates_per_s'):.1f} updates/s, "
          f"platform CPU {med('campaign_cpu_ms'):.2f} ms per charger updated "
          f"({med('campaign_cpu_ms') / med('boot_cpu_ms'):.1f}x a boot)")  # fmt: skip


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
