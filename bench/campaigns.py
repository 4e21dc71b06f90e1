"""Firmware campaign benchmark: a staged rollout over thousands of simulated chargers.

    .venv/bin/python -m bench.campaigns --chargers 2000 --runs 3

Two deployments (``--deployments``), each on SQLite, ``--campaign-interval 1``, with the
simulated fleet (:class:`simulator.Fleet`, real websockets) in this process, so the
platform's CPU time, read from ``/proc/PID/stat``, is the platform's alone:

* **embedded**: ``chargetwin up`` as one child process (every component, the campaign
  engine in its ``fleet`` component, the embedded broker: Mosquitto as its child when
  installed).
* **split**: one process per component on a private Mosquitto, as a scaled-out site runs
  them: twin, rules, bridge, two ``chargetwin api`` replicas (the bench talks to the
  first) and two ``chargetwin fleet`` processes (one leads and runs the engine, the other
  stands by). Per-process figures show what the leading fleet process (the engine
  itself) costs.

Platform CPU is counted two ways: the ChargeTwin processes (``chargetwin``: the figure
issue 10 quoted), and with the broker (the embedded Mosquitto, or the private one).

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
   reads and desired-state writes), and the same above the idle baseline (minus the idle
   rate times the campaign's wall time: what the campaign itself added, whatever the
   machine's load made its duration).

Prints medians over ``--runs`` and the machine. Chargers are registered with a cheap
scrypt cost (see :mod:`bench.bridge_load`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
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
    ROOT,
    cpu_seconds,
    free_port,
    raise_nofile,
    register,
    wait_listening,
)
from bench.brokers import _SETTINGS as BROKER_SETTINGS
from bench.machine import describe
from simulator import Fleet, SimulatorOptions
from simulator.options import ChargerModel, SessionTiming

MODEL = ChargerModel("ChargeTwin", "CT-AC22", "1.4.2", 2, 22_000.0, 3)
NEW = "1.5.0"
IMAGE = b"\x7fCTFW" + bytes(range(256)) * 256  # 64 KiB
TOKEN = "bench-campaign-admin-token"
LAST_LOG = Path(tempfile.gettempdir()) / "bench-campaigns-platform.log"  # kept after a run


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself, and of its live descendants (an embedded broker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    own = cpu_seconds(pid)
    rest, todo = 0.0, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        with contextlib.suppress(OSError):
            rest += cpu_seconds(child)
        todo += children.get(child, [])
    return own, rest


class Process:
    """One platform process; ``broker``: its CPU counts as the broker's, not ChargeTwin's."""

    def __init__(self, name: str, cmd: list[str], log: Path, *, port: int | None = None,
                 broker: bool = False, env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.name, self.cmd, self.log, self.port, self.broker = name, cmd, log, port, broker
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.cmd, cwd=ROOT, stdout=log, stderr=log, preexec_fn=raise_nofile, env=self.env
            )
        if self.port is not None:
            try:
                await wait_listening(self.port, self.proc, timeout=60)
            except RuntimeError as exc:
                tail = self.log.read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError(f"{self.name}: {exc}; its log:\n" + "\n".join(tail)) from exc

    def cpu(self) -> tuple[float, float]:
        """(ChargeTwin CPU, broker CPU) seconds of this process and its children."""
        assert self.proc is not None
        own, children = tree_cpu(self.proc.pid)
        return (0.0, own + children) if self.broker else (own, children)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Platform:
    """The platform's processes, with an HTTP client on (the first replica of) its API."""

    def __init__(self, data_dir: Path, deployment: str) -> None:
        self.data_dir = data_dir
        self.deployment = deployment
        self.api_port, self.ocpp_port, self.mqtt_port = free_port(), free_port(), free_port()
        # Settings every process shares go through the environment: each command accepts
        # only the options it uses (`chargetwin rules` has no --campaign-interval).
        self.env = {
            **os.environ,
            "CHARGETWIN_DATA_DIR": str(data_dir),
            "CHARGETWIN_CAMPAIGN_INTERVAL": "1",
            "CHARGETWIN_LOG_LEVEL": "WARNING",
            "CHARGETWIN_ADMIN_TOKEN": TOKEN,
        }
        chargetwin = str(BIN / "chargetwin")
        log = data_dir / "platform.log"
        if deployment == "embedded":
            self.processes = [
                Process("chargetwin up", [chargetwin, "up", f"--api-port={self.api_port}",
                        f"--ocpp-port={self.ocpp_port}", f"--mqtt-port={self.mqtt_port}"], log,
                        port=self.ocpp_port),
            ]  # fmt: skip
        elif deployment == "split":
            config = data_dir / "mosquitto.conf"
            config.write_text(
                f"listener {self.mqtt_port} 127.0.0.1\n{BROKER_SETTINGS}user {getpass.getuser()}\n"
            )
            mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            url = [f"--mqtt-url=mqtt://127.0.0.1:{self.mqtt_port}"]
            second_api = free_port()
            self.processes = [
                Process("mosquitto", [mosquitto, "-c", str(config)], log, port=self.mqtt_port,
                        broker=True),
                Process("twin", [chargetwin, "twin", *url], log),
                Process("rules", [chargetwin, "rules", *url], log),
                Process("fleet leader", [chargetwin, "fleet", *url], log),
                Process("fleet standby", [chargetwin, "fleet", *url], log),
                Process("api 1", [chargetwin, "api", f"--api-port={self.api_port}", *url], log,
                        port=self.api_port),
                Process("api 2", [chargetwin, "api", f"--api-port={second_api}", *url],
                        log, port=second_api),
                Process("bridge", [chargetwin, "bridge", f"--ocpp-port={self.ocpp_port}",
                        f"--api-port={self.api_port}", *url], log, port=self.ocpp_port),
            ]  # fmt: skip
        else:
            raise ValueError(f"unknown deployment {deployment!r}")
        for process in self.processes:
            process.env = self.env
        self.api = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}/api/v1",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120.0,
        )

    async def start(self) -> None:
        for process in self.processes:
            await process.start()
            if process.port is None:
                # Twin, rules, fleet: no port to wait on. Schemas are created one process
                # at a time, and the first fleet process is the one that leads.
                await asyncio.sleep(3.0)

    async def stop(self) -> None:
        await self.api.aclose()
        for process in reversed(self.processes):
            await process.stop()

    def cpu(self) -> dict[str, tuple[float, float]]:
        """Per process: (ChargeTwin CPU, broker CPU) seconds so far."""
        return {p.name: p.cpu() for p in self.processes}

    async def count(self, **params: Any) -> int:
        answer = await self.api.get("/chargers", params={**params, "limit": 1})
        answer.raise_for_status()
        return int(answer.json()["total"])


def _spent(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
           ) -> tuple[float, float, dict[str, float]]:  # fmt: skip
    """ChargeTwin CPU, broker CPU, and ChargeTwin CPU per process, between two readings."""
    per = {name: after[name][0] - before[name][0] for name in after}
    broker = sum(after[name][1] - before[name][1] for name in after)
    return sum(per.values()), broker, per


async def until(check: Any, timeout: float, every: float = 0.5) -> float:
    """Poll ``check()`` until true; the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - started
        except httpx.TransportError:
            # A keep-alive connection the server closed just as it was reused (a race
            # that a loaded machine makes likely): the GET is simply asked again.
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not reached in {timeout:g} s")
        await asyncio.sleep(every)


async def one_run(
    deployment: str, chargers: int, ramp_s: float, timeout: float
) -> dict[str, float]:
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
        platform = Platform(data_dir, deployment)
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
            shutil.copy(data_dir / "platform.log", LAST_LOG.with_suffix(f".{deployment}.log"))


async def _measure(platform: Platform, fleet: Fleet, n: int, timeout: float) -> dict[str, float]:
    out: dict[str, float] = {}
    cpu0 = platform.cpu()

    async def booted() -> bool:
        return await platform.count(online="true", firmwareVersion=MODEL.firmware_version) >= n

    out["boot_s"] = await until(booted, timeout)
    own, broker, _ = _spent(cpu0, platform.cpu())
    out["boot_cpu_ms"] = own * 1000 / n
    out["boot_broker_ms"] = broker * 1000 / n
    await asyncio.sleep(2.0)  # the boots' last GetConfiguration answers settle
    idle0, t0 = platform.cpu(), time.monotonic()
    await asyncio.sleep(10.0)
    own, broker, per = _spent(idle0, platform.cpu())
    idle_s = time.monotonic() - t0
    out["idle_cpu_pct"] = own * 100 / idle_s
    out["idle_broker_pct"] = broker * 100 / idle_s
    for name, seconds in per.items():
        out[f"idle_cpu_pct[{name}]"] = seconds * 100 / idle_s

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

    # Once a second, as a dashboard would: every poll is API CPU counted in the figure.
    await until(completed, timeout, every=1.0)
    out["campaign_s"] = time.monotonic() - started
    own, broker, per = _spent(cpu2, platform.cpu())
    out["campaign_cpu_ms"] = own * 1000 / n
    out["campaign_broker_ms"] = broker * 1000 / n
    out["above_idle_ms"] = (own - out["idle_cpu_pct"] / 100 * out["campaign_s"]) * 1000 / n
    for name, seconds in per.items():
        out[f"campaign_cpu_ms[{name}]"] = seconds * 1000 / n
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
        "--deployments",
        default="embedded,split",
        help="Comma-separated: embedded (chargetwin up), split (one process per component, "
        "two API replicas, a standby fleet process).",
    )
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
    results: dict[str, list[dict[str, float]]] = {}
    for deployment in args.deployments.split(","):
        runs = results.setdefault(deployment, [])
        for i in range(args.runs):
            result = asyncio.run(one_run(deployment, args.chargers, ramp, args.timeout))
            runs.append(result)
            print(f"{deployment} run {i + 1}: "
                  + ", ".join(f"{k}={v:.2f}" for k, v in result.items()), flush=True)  # fmt: skip

    print(f"\nmachine: {describe()}")
    print(f"load average at the end: {Path('/proc/loadavg').read_text().strip()}")
    for deployment, runs in results.items():

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        print(f"\n{args.chargers} chargers, {DEPLOYMENTS[deployment]}, medians of {len(runs)}")
        print(f"  baseline boot: all online in {med('boot_s'):.1f} s, platform CPU "
              f"{med('boot_cpu_ms'):.2f} ms per charger boot (+ broker "
              f"{med('boot_broker_ms'):.2f} ms)")  # fmt: skip
        print(f"  baseline idle: platform CPU {med('idle_cpu_pct'):.1f}% of a core "
              f"(+ broker {med('idle_broker_pct'):.1f}%), fleet connected")  # fmt: skip
        for key in sorted(runs[0]):
            if key.startswith("idle_cpu_pct["):
                print(f"      {key[len('idle_cpu_pct[') : -1]:>14}: {med(key):.1f}% of a core")
        print(f"  campaign:      {med('campaign_s'):.1f} s to complete, "
              f"{med('updates_per_s'):.1f} updates/s")  # fmt: skip
        print(f"    platform CPU {med('campaign_cpu_ms'):.2f} ms per charger updated "
              f"({med('campaign_cpu_ms') / med('boot_cpu_ms'):.1f}x a boot; + broker "
              f"{med('campaign_broker_ms'):.2f} ms)")  # fmt: skip
        print(f"    above the idle baseline: {med('above_idle_ms'):.2f} ms per charger updated")
        for key in sorted(runs[0]):
            if key.startswith("campaign_cpu_ms[") and len(runs[0]) > 0:
                name = key[len("campaign_cpu_ms[") : -1]
                print(f"      {name:>14}: {med(key):.2f} ms per charger updated")


DEPLOYMENTS = {
    "embedded": "embedded `chargetwin up` (one process, Mosquitto as its child)",
    "split": "one process per component: twin, rules, bridge, 2 API replicas, "
    "fleet leader + standby, Mosquitto",
}


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
