"""Presence after faults: how fast shadows are right again, and what the series recorded.

    python -m bench.presence_faults [--chargers 200] [--rounds 3]

A private Mosquitto (persistence off, production settings otherwise), the twin, the
recorder on the embedded series store, a ``chargetwin bridge`` child process and N
chargers of hand-written OCPP-J frames. Per round:

- baseline: N chargers connect and boot; seconds until every shadow says online;
- broker restart: Mosquitto stopped and started; seconds from its start until every
  shadow says online under the bridge's new epoch (its re-announcement processed);
- bridge kill -9: seconds until every shadow says offline, and until every charger has an
  offline point in the series.

Prints medians of the rounds, the machine, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.brokers import _SETTINGS
from bench.machine import describe, median
from chargetwin.database import connect as connect_db
from chargetwin.mqtt import MqttClient
from chargetwin.settings import Settings
from chargetwin.topics import Topics
from rules.points import Selection
from rules.recorders import Recorder
from rules.spools import Spool
from rules.sqlite_series import SQLiteSeriesStore
from twin.registry import ChargerRegistry
from twin.service import ShadowService
from twin.stores import ShadowStore

PASSWORD = "bench-presence-password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """A Mosquitto that can be stopped and started on the same port."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n{_SETTINGS}user {getpass.getuser()}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(self.config)], stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


async def _charger(port: int, charger_id: str) -> ClientConnection:
    """Connect and boot; a reader task answers the bridge's calls until the socket ends."""
    token = base64.b64encode(f"{charger_id}:{PASSWORD}".encode()).decode()
    ws = await connect(
        f"ws://127.0.0.1:{port}/ocpp/{charger_id}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Basic {token}"},
        ping_interval=None,
    )
    await ws.send(
        json.dumps(
            [2, "boot", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]
        )
    )
    return ws


async def _answer(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        async for frame in ws:
            message = json.loads(frame)
            if message[0] == 2:
                answer: dict[str, Any] = (
                    {"configurationKey": []}
                    if message[2] == "GetConfiguration"
                    else {"status": "Accepted"}
                )
                await ws.send(json.dumps([3, message[1], answer]))


async def _until(check: Any, timeout: float = 60.0) -> float:
    """Seconds until ``await check()`` is true (polled every 20 ms)."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _round(folder: Path, chargers: int) -> dict[str, float]:
    broker = Broker(folder)
    broker.start()
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    topics = Topics(prefix)
    settings = Settings(mqtt_url=broker.url, mqtt_prefix=prefix, data_dir=folder)
    db = connect_db(settings.database_target)
    await db.open()
    shadows, registry = ShadowStore(db), ChargerRegistry(db)
    await shadows.create_schema()
    await registry.create_schema()
    ids = [f"BP-{i:05d}" for i in range(chargers)]
    for charger_id in ids:
        await registry.register(charger_id, PASSWORD)
    series = SQLiteSeriesStore(folder / "series.db")
    await series.open()
    twin_mqtt = MqttClient(broker.url, f"{prefix}-twin", clean_session=False)
    twin = ShadowService(twin_mqtt, shadows, registry, topics)
    await twin.start()
    await twin_mqtt.connect()
    rules_mqtt = MqttClient(broker.url, f"{prefix}-rules", clean_session=False)
    await rules_mqtt.connect()
    recorder = Recorder(series, Spool(folder / "spool", max_bytes=1 << 24), topics)
    await recorder.start(rules_mqtt)
    port = _free_port()
    with (folder / "bridge.log").open("ab") as log:
        bridge = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "launch.cli", "bridge", "--mqtt-url", broker.url,
            "--mqtt-prefix", prefix, "--mqtt-client-id", f"{prefix}-b", "--ocpp-port",
            str(port), "--data-dir", str(folder),
            "--log-level", "WARNING", stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    sockets: list[ClientConnection] = []
    readers: list[asyncio.Task[None]] = []
    figures: dict[str, float] = {}

    async def online_count() -> int:
        return len(await shadows.online_chargers())

    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            await asyncio.sleep(0.05)
        start = time.monotonic()
        for batch in range(0, chargers, 50):
            opened = await asyncio.gather(*(_charger(port, c) for c in ids[batch : batch + 50]))
            sockets += opened
        readers = [asyncio.create_task(_answer(ws)) for ws in sockets]
        await _until(lambda: _is(online_count(), chargers))
        figures["baseline: all online after connect (s)"] = time.monotonic() - start

        ended = max(e for e in await _epochs(shadows, ids) if e is not None)
        broker.stop()
        broker.start()

        async def announced_again() -> bool:
            # Online, under an epoch newer than the one the broker's restart ended.
            epochs = await _epochs(shadows, ids)
            return all(e is not None and e > ended for e in epochs)

        figures["broker restart: all online again, new epoch (s)"] = await _until(announced_again)

        killed = time.monotonic()
        bridge.send_signal(signal.SIGKILL)
        await _until(lambda: _is(online_count(), 0))
        figures["bridge kill -9: all offline (s)"] = time.monotonic() - killed
        selection = Selection("presence", "state", group_by=("charger",))

        async def all_offline_recorded() -> bool:
            found = await series.last(selection, None, int((time.time() + 60) * 1e9))
            return sum(1 for s in found if s.value == "offline") == chargers

        await _until(all_offline_recorded)
        figures["bridge kill -9: offline point of every charger (s)"] = time.monotonic() - killed
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for reader in readers:
            reader.cancel()
        if bridge.returncode is None:
            bridge.kill()
            await bridge.wait()
        await recorder.stop()
        await rules_mqtt.disconnect()
        await twin.stop()
        await twin_mqtt.disconnect()
        await series.close()
        await db.close()
        broker.stop()
    return figures


async def _epochs(shadows: ShadowStore, ids: list[str]) -> list[float | None]:
    """Per charger, the epoch of its connection when online, else None."""
    out: list[float | None] = []
    for charger_id in ids:
        doc = await shadows.load(charger_id)
        connection = doc.reported.get("connection") if doc is not None else None
        online = isinstance(connection, dict) and connection.get("online") is True
        out.append(connection.get("epoch") if online and isinstance(connection, dict) else None)
    return out


async def _is(value: Any, want: int) -> bool:
    return bool(await value == want)


async def main(chargers: int, rounds: int) -> None:
    results: dict[str, list[float]] = {}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as folder:
            for name, value in (await _round(Path(folder), chargers)).items():
                results.setdefault(name, []).append(value)
    print(f"presence faults, {chargers} chargers, {rounds} rounds (median, min-max)")
    for name, values in results.items():
        print(f"  {name:55s} {median(values):7.2f}  ({min(values):.2f}-{max(values):.2f})")
    print(f"machine: {describe()}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.chargers, args.rounds))
