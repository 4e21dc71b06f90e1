"""The bridge benchmarks' load generator and process plumbing.

The chargers here are raw OCPP-J websocket clients on ``asyncio.Protocol``: the upgrade is
written by hand and every frame is pre-built (masked with a zero key, RFC 6455 section 5.3
allows any key), so one load process can drive thousands of chargers and far more frames
than a charger library could, and the figures measure the server, not the client.

The server under test runs as its own process: ``chargetwin bridge`` (with Mosquitto, its
own SQLite data dir and a unique topic prefix) or the bare ``ocpp`` library baseline
(:mod:`bench.ocpp_baseline`). MQTT arrivals are counted by ``mosquitto_sub`` (C, cheap).

Passwords: every charger is registered before the bridge starts, with a scrypt hash in the
registry's own self-describing format but a low cost (N=2**8 instead of 2**14), so the
bridge runs its real verification path (database lookup, scrypt off the event loop, then
its in-memory cache) without 40 ms of scrypt per charger swamping a 10,000-charger run. At
production cost a cold bridge spends ~40 ms of CPU per charger's first connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.brokers import broker_url
from chargetwin.database import connect
from twin.passwords import PasswordHasher, load_or_create_key, scrypt_hash
from twin.registry import ChargerRegistry

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "bench-password-00001"


# --- frames ----------------------------------------------------------------------------------
def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client-to-server websocket frame, FIN set, masked with a zero key."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def call_frame(unique_id: str, action: str, payload: dict[str, Any]) -> bytes:
    return ws_frame(json.dumps([2, unique_id, action, payload], separators=(",", ":")).encode())


def meter_values_frame(connector: int = 1, transaction: int = 1) -> bytes:
    """A realistic periodic sample: energy, power, current, voltage, SoC (one MeterValue)."""
    sampled = [
        {"value": "12345.6", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
        {"value": "31.2", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
        {"value": "230.1", "measurand": "Voltage", "unit": "V", "phase": "L1-N"},
        {"value": "56", "measurand": "SoC", "unit": "Percent", "location": "EV"},
    ]
    payload = {
        "connectorId": connector,
        "transactionId": transaction,
        "meterValue": [{"timestamp": "2025-01-01T12:00:00Z", "sampledValue": sampled}],
    }
    return call_frame("mv", "MeterValues", payload)


def status_frame(status: str) -> bytes:
    # No timestamp: the bridge stamps receipt time, so every report is newer than the last.
    return call_frame(
        "sn", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": status}
    )


BOOT_FRAME = call_frame(
    "boot", "BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "Raw"}
)


# --- a raw charger ----------------------------------------------------------------------------
class RawCharger(asyncio.Protocol):
    """One charger's socket: hand-made upgrade, frame parsing, answers counted."""

    subprotocol = "ocpp1.6"  # what the upgrade asks for; a 2.0.1 bench overrides it

    def __init__(self, charger_id: str, on_answer: Callable[[RawCharger, bytes], None]) -> None:
        self.charger_id = charger_id
        self.on_answer = on_answer
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self.sent_at = 0.0  # for latency: when the outstanding call was sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def upgrade(self, host: str, port: int, path_prefix: str = "/ocpp/") -> None:
        assert self.transport is not None
        auth = base64.b64encode(f"{self.charger_id}:{PASSWORD}".encode()).decode()
        self.transport.write(
            (
                f"GET {path_prefix}{self.charger_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {self.subprotocol}\r\n"
                f"Authorization: Basic {auth}\r\n\r\n"
            ).encode()
        )

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self.opened.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if b" 101 " in status:
                self.opened.set_result(None)
            else:
                self.opened.set_exception(ConnectionRefusedError(status.decode()))
                return
        while len(buffer) >= 2:
            length, offset = buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, offset = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < offset + length:
                return
            opcode = buffer[0] & 0x0F
            payload = bytes(buffer[offset : offset + length])
            del buffer[: offset + length]
            if opcode == 0x1:
                if payload.startswith(b"[2,"):
                    self._answer_call(payload)
                else:
                    self.on_answer(self, payload)
            elif opcode == 0x9:
                self.send(ws_frame(payload, 0xA))  # pong
            elif opcode == 0x8 and self.transport is not None:
                self.transport.close()

    def _answer_call(self, payload: bytes) -> None:
        """The bridge asks GetConfiguration after a boot (an empty configuration) and
        TriggerMessage StatusNotification (Accepted, as a charger that supports it says).
        Answering ``{}`` to the trigger, as this did, is an invalid TriggerMessage.conf: the
        bridge took its slow validation path and logged a line per charger, a cost no real
        charger causes (~4 % of the bridge's CPU in a restart storm of 5,000)."""
        _, unique_id, action, _ = json.loads(payload)
        answers: dict[str, dict[str, object]] = {
            "GetConfiguration": {"configurationKey": []},
            "TriggerMessage": {"status": "Accepted"},
        }
        answer = answers.get(action, {})
        self.send(ws_frame(json.dumps([3, unique_id, answer]).encode()))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed during the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_charger(
    charger_id: str,
    port: int,
    on_answer: Callable[[RawCharger, bytes], None],
    source: str = "127.0.0.1",
    kind: type[RawCharger] = RawCharger,
) -> RawCharger:
    loop = asyncio.get_running_loop()
    _, charger = await loop.create_connection(
        lambda: kind(charger_id, on_answer), "127.0.0.1", port, local_addr=(source, 0)
    )
    charger.upgrade("127.0.0.1", port)
    await charger.opened
    return charger


async def open_fleet(
    ids: list[str],
    port: int,
    on_answer: Callable[[RawCharger, bytes], None],
    concurrency: int = 200,
    kind: type[RawCharger] = RawCharger,
) -> list[RawCharger]:
    """Connect every id (``concurrency`` upgrades at a time, over 127.0.0.1-127.0.0.8)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int, charger_id: str) -> RawCharger:
        async with semaphore:
            source = f"127.0.0.{1 + index % 8}"
            return await open_charger(charger_id, port, on_answer, source, kind)

    return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(ids))))


# --- registration ------------------------------------------------------------------------------
# How the bench stores the chargers' passwords: "keyed" is what the API stores today (HMAC
# with the data dir's key, the bridge's default); "scrypt14" is what it stored before (scrypt
# at the former default cost, ~40 ms per check); "scrypt8" the cheap scrypt earlier benches used.
HASH_SCHEMES = ("keyed", "scrypt14", "scrypt8")


def stored_hashes(data_dir: Path, count: int, scheme: str) -> list[str]:
    if scheme == "keyed":
        hasher = PasswordHasher(load_or_create_key(data_dir))
        return [hasher.hash(PASSWORD) for _ in range(count)]
    cost = {"scrypt14": 14, "scrypt8": 8}[scheme]
    return [scrypt_hash(PASSWORD, cost)] * count  # one salt for all: a bench, not a deployment


async def register(data_dir: Path, ids: list[str], scheme: str = "keyed") -> None:
    """Register ``ids`` in the bridge's database, or store their hashes again in ``scheme``
    (as an older version would have left them)."""
    db = connect(f"sqlite:///{data_dir / 'chargetwin.db'}")
    await db.open()
    try:
        await ChargerRegistry(db).create_schema()
        hashes = stored_hashes(data_dir, len(ids), scheme)
        now = time.time()
        sql = (
            "INSERT INTO chargers (charger_id, password_hash, tags, created_at)"
            " VALUES (?, ?, '[]', ?) ON CONFLICT (charger_id)"
            " DO UPDATE SET password_hash = excluded.password_hash"
        )
        await db.execute_batch(
            [
                (sql, (charger_id, hashed, now))
                for charger_id, hashed in zip(ids, hashes, strict=True)
            ]
        )
    finally:
        await db.close()


# --- processes -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_listening(port: int, proc: asyncio.subprocess.Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class Server:
    """The server under test as a child process: the bridge or the baseline."""

    def __init__(self, name: str, cmd: list[str], port: int, log: Path) -> None:
        self.name, self.cmd, self.port, self.log = name, cmd, port, log
        self.data_dir = log.parent
        self.proc: asyncio.subprocess.Process | None = None

    @classmethod
    def bridge(cls, data_dir: Path, prefix: str, *extra: str) -> Server:
        port = free_port()
        cmd = [
            str(BIN / "chargetwin"), "bridge", f"--ocpp-port={port}", f"--mqtt-url={broker_url()}",
            f"--mqtt-prefix={prefix}", f"--data-dir={data_dir}", "--mqtt-subscribers=", *extra,
        ]  # fmt: skip
        return cls("bridge", cmd, port, data_dir / "bridge.log")

    @classmethod
    def baseline(cls, data_dir: Path, module: str = "bench.ocpp_baseline") -> Server:
        port = free_port()
        cmd = [sys.executable, "-m", module, str(port)]
        return cls("ocpp library", cmd, port, data_dir / "baseline.log")

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.cmd, cwd=ROOT, stdout=log, stderr=log, preexec_fn=raise_nofile
            )
        try:
            await wait_listening(self.port, self.proc)
        except RuntimeError as exc:
            tail = self.log.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"{self.name}: {exc}; its log ends:\n" + "\n".join(tail)) from exc

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile() -> None:
    """As many file descriptors as the hard limit allows (10,000 chargers need 10,000)."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- MQTT arrivals ------------------------------------------------------------------------------
class MqttCounter:
    """``mosquitto_sub`` on some filters: counts lines, hands each topic to ``on_topic``."""

    def __init__(
        self, prefix: str, filters: list[str], on_topic: Callable[[str], None] | None = None
    ) -> None:
        self.prefix = prefix
        self.filters = filters
        self.on_topic = on_topic
        self.count = 0
        self.last_at = 0.0
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._probe = f"{prefix}/bench-probe/{uuid.uuid4().hex[:6]}"
        self._probed = asyncio.Event()
        self._arrived = asyncio.Event()

    async def start(self) -> None:
        address = urlsplit(broker_url())
        host, port = address.hostname or "127.0.0.1", str(address.port or 1883)
        args = ["mosquitto_sub", "-h", host, "-p", port, "-q", "0", "-F", "%t"]
        for topic_filter in [*self.filters, self._probe]:
            args += ["-t", topic_filter]
        self.proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())
        while not self._probed.is_set():  # subscribed once a probe comes back
            pub = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-h", host, "-p", port, "-t", self._probe, "-m", "x"
            )
            await pub.wait()
            try:
                await asyncio.wait_for(self._probed.wait(), 0.5)
            except TimeoutError:
                continue
        self.count = 0

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        probe = self._probe
        partial = b""
        while True:
            chunk = await self.proc.stdout.read(1 << 16)
            if not chunk:
                return
            self.last_at = time.perf_counter()
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for raw in lines:
                topic = raw.decode()
                if topic == probe:
                    self._probed.set()
                    continue
                self.count += 1
                if self.on_topic is not None:
                    self.on_topic(topic)
            self._arrived.set()

    async def reached(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` messages arrived; False when ``timeout`` passed first."""
        deadline = time.perf_counter() + timeout
        while self.count < count:
            self._arrived.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return True

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader
