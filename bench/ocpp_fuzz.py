"""Hostile OCPP-J frames against a real bridge over real websockets.

    .venv/bin/python -m bench.ocpp_fuzz --frames 1000000 [--chargers 64] [--seed 1]

Frames come from :class:`FrameFuzzer`: every OCPP 1.6 charger-to-central-system action,
with payloads generated from the library's own JSON schemas, and mutated (valid as they
are; valid but at the edges: the widest integers, empty strings, strings at their
maximum length, emoji; unrepresentable: integers beyond 64 bits, ``1e400``, ``NaN``, lone
surrogates, U+0000; schema violations: a field missing, of the wrong type, unknown, a bad
enum value, too long, a payload that is no object), plus every malformed-frame class
(not JSON, not an array, bad message type, non-string unique id or action, unique id over
36 characters, deep nesting, unknown and central-system actions, CALLRESULT / CALLERROR
with unusable ids, binary frames, not UTF-8). Each charger keeps one call in flight (it
waits for the answer; OCPP-J 1.6 section 4.1.1), so the rate comes from many chargers.
The flood limit's rate stays at its default (50 frames/s per charger, far above the rate
per charger here); its burst is raised to 1,000 (``--ocpp-flood-burst``) so that a
charger catching up after a stall of the shared machine is not throttled. An answer
``GenericError "rate limit"`` is still counted, as ``throttled``.

The closes the bridge documents are provoked on purpose, each on a charger of its own
(it reconnects afterwards): a frame over 64 KiB (1009), a text frame that is not UTF-8
(1007), a flood past the flood limit's grace (1008). Any other close is a defect.

Printed: answers per class (CALLRESULT, CALLERROR by code), InternalError answers (must
be 0), unanswered calls, closes by code, the bridge's RSS at the start (after every
charger connected and booted) and the end, its log bytes per bad frame, frames/s, the
machine and its load. The bridge runs as ``chargetwin bridge`` with a private Mosquitto
and its own SQLite data dir; no twin.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import string
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ocpp

from bench.bridge_load import PASSWORD, Server, raise_nofile, register, rss_kib, ws_frame
from bench.brokers import bench_broker
from bench.machine import describe

SCHEMAS = Path(ocpp.__file__).parent / "v16" / "schemas"
# OCPP 1.6 (core, firmware management, the security extension): charger -> central system.
CHARGER_ACTIONS = (
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
    "LogStatusNotification",
    "SecurityEventNotification",
    "SignCertificate",
    "SignedFirmwareStatusNotification",
)
ID = "@ID@"  # replaced by each frame's unique id
# Answers a class may get; anything else is counted as unexpected. "result" = CALLRESULT.
SCHEMA_ERRORS = {
    "ProtocolError",
    "TypeConstraintViolation",
    "FormationViolation",
    "PropertyConstraintViolation",
}
EXPECTED: dict[str, set[str]] = {
    "valid": {"result", "throttled"},
    "edge": {"result", "throttled"},
    "range": {"PropertyConstraintViolation", "throttled"},
    "unrepresentable": {
        "throttled",
        "TypeConstraintViolation",
        "FormationViolation",
        "PropertyConstraintViolation",
    },
    "schema": SCHEMA_ERRORS | {"OccurenceConstraintViolation", "throttled"},
    "frame": SCHEMA_ERRORS | {"NotSupported", "NotImplemented", "throttled"},
    "answer": set(),  # CALLRESULT / CALLERROR from the charger: never answered
}
SCHEMA_VALID = ("valid", "edge", "range")
# The bridge's documented integer ranges (bridge/README.md; OCPP 1.6 sections 6.31, 6.45,
# 6.47 give connectorId's lower bounds): schema-valid values outside get the "range" class.
RANGES = {
    "MeterValues": {"connectorId": (0, 255)},
    "StatusNotification": {"connectorId": (0, 255)},
    "StartTransaction": {"connectorId": (1, 255), "reservationId": (-(2**31), 2**31 - 1)},
}


@dataclass(frozen=True, slots=True)
class Fuzzed:
    """One frame: text with :data:`ID` where its unique id goes (or bytes), its class, and
    the unique id its answer carries (``None``: the bridge must not answer)."""

    kind: str
    text: str | bytes
    answer_id: str | None = ID
    binary: bool = False


class FrameFuzzer:
    """Generates hostile frames from the 1.6 schemas (seeded: runs are reproducible)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.schemas = {
            action: json.loads((SCHEMAS / f"{action}.json").read_text())
            for action in CHARGER_ACTIONS
        }
        self.root: dict[str, Any] = {}  # the schema being generated, for its definitions

    # --- values ------------------------------------------------------------------------------
    def instance(self, schema: dict[str, Any], depth: int = 0) -> Any:
        rng = self.rng
        schema = self.resolve(schema)
        kind = schema.get("type")
        if "enum" in schema:
            return rng.choice(schema["enum"])
        if kind == "object":
            properties = schema.get("properties", {})
            required = set(schema.get("required", ()))
            return {
                name: self.instance(sub, depth + 1)
                for name, sub in properties.items()
                if name in required or rng.random() < 0.5
            }
        if kind == "array":
            least = schema.get("minItems", 0)
            return [
                self.instance(schema["items"], depth + 1)
                for _ in range(max(least, rng.randint(0, 3)))
            ]
        if kind == "string":
            if schema.get("format") == "date-time":
                return rng.choice(
                    [
                        "2025-01-01T12:00:00Z",
                        "2025-06-30T23:59:59.999+02:00",
                        "1970-01-01T00:00:00Z",
                    ]
                )
            longest = schema.get("maxLength", 40)
            return "".join(
                rng.choices(
                    string.ascii_letters + string.digits, k=rng.randint(1, min(longest, 20))
                )
            )
        if kind == "integer":
            return rng.randint(0, 1000)
        if kind == "number":
            return round(rng.uniform(0, 100), 1)
        if kind == "boolean":
            return rng.random() < 0.5
        return None

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """``{"$ref": "#/definitions/X"}`` (the security extension's schemas) resolved."""
        reference = schema.get("$ref")
        if not isinstance(reference, str):
            return schema
        found = self.root.get("definitions", {}).get(reference.rsplit("/", 1)[-1])
        return dict(found) if found is not None else schema

    def edge_value(self, schema: dict[str, Any]) -> Any:
        rng = self.rng
        schema = self.resolve(schema)
        kind = schema.get("type")
        if "enum" in schema:
            return rng.choice(schema["enum"])
        if kind == "integer":
            return rng.choice([0, -1, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63)])
        if kind == "number":
            return rng.choice([0.0, -0.0, 1e308, -1e308, 5e-324])
        if kind == "string":
            if schema.get("format") == "date-time":
                return rng.choice(
                    ["", "not a time", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"]
                )
            longest = schema.get("maxLength", 500)
            return rng.choice(["", "\U0001f600" * min(longest, 50), "x" * longest, 'é\t\n"\\/'])
        return self.instance(schema)

    # --- mutations ----------------------------------------------------------------------------
    def call(self, action: str, payload: Any) -> str:
        return json.dumps([2, ID, action, payload])

    def _paths(
        self, schema: dict[str, Any], payload: Any
    ) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
        """(container, key, schema) of every leaf in ``payload`` that its schema describes."""
        found: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
        if isinstance(payload, dict):
            for name, value in payload.items():
                sub = self.resolve(schema.get("properties", {}).get(name, {}))
                found.append((payload, name, sub))
                found.extend(self._paths(sub, value))
        elif isinstance(payload, list):
            for item in payload:
                found.extend(self._paths(schema.get("items", {}), item))
        return found

    def generate(self) -> Fuzzed:
        rng = self.rng
        roll = rng.random()
        action = rng.choice(CHARGER_ACTIONS)
        schema = self.root = self.schemas[action]
        payload = self.instance(schema)
        ranges = RANGES.get(action, {})
        if "connectorId" in ranges:
            payload["connectorId"] = rng.randint(ranges["connectorId"][0], 8)
        if roll < 0.25:
            return Fuzzed("valid", self.call(action, payload))
        leaves = self._paths(schema, payload)
        if roll < 0.40:
            for container, key, sub in rng.sample(leaves, min(len(leaves), 2)):
                container[key] = self.edge_value(sub)
            for name, (lowest, highest) in ranges.items():
                value = payload.get(name)
                if isinstance(value, int) and not lowest <= value <= highest:
                    return Fuzzed("range", self.call(action, payload))
            return Fuzzed("edge", self.call(action, payload))
        if roll < 0.55:
            return self._unrepresentable(action, payload, leaves)
        if roll < 0.80:
            return self._schema_violation(action, schema, payload, leaves)
        if roll < 0.95:
            return self._malformed_frame(action, payload)
        return self._answer_frame(payload)

    def _unrepresentable(self, action: str, payload: Any, leaves: list[Any]) -> Fuzzed:
        rng = self.rng
        marker = "@HOSTILE@"
        hostile = rng.choice(
            [
                "99999999999999999999999",
                "-9223372036854775809",
                "9" * rng.randint(20, 6000),
                "1e400",
                "-1e999",
                "NaN",
                "Infinity",
                "-Infinity",
                '"\\ud800"',
                '"x\\udfffy"',
                '"a\\u0000b"',
            ]
        )
        if leaves:
            container, key, _ = rng.choice(leaves)
            container[key] = marker
        else:
            payload["extra"] = marker
        return Fuzzed("unrepresentable", self.call(action, payload).replace(f'"{marker}"', hostile))

    def _schema_violation(
        self, action: str, schema: dict[str, Any], payload: Any, leaves: list[Any]
    ) -> Fuzzed:
        rng = self.rng
        choice = rng.randrange(6)
        required = schema.get("required", [])
        if choice == 0 and required:
            del payload[rng.choice(required)]
        elif choice == 1 and leaves:
            container, key, sub = rng.choice(leaves)
            wrong = {
                "string": 5,
                "integer": "5",
                "number": "x",
                "boolean": "yes",
                "array": {},
                "object": [],
            }
            container[key] = wrong.get(sub.get("type", "string"))
        elif choice == 2 and any("enum" in sub for _, _, sub in leaves):
            container, key, _ = rng.choice([leaf for leaf in leaves if "enum" in leaf[2]])
            container[key] = "NoSuchValue"
        elif choice == 3 and any("maxLength" in sub for _, _, sub in leaves):
            container, key, sub = rng.choice([leaf for leaf in leaves if "maxLength" in leaf[2]])
            container[key] = "x" * (sub["maxLength"] + 1)
        elif choice == 4:
            return Fuzzed(
                "schema", json.dumps([2, ID, action, rng.choice([[], "x", 1, None, True])])
            )
        else:
            payload[rng.choice(["colour", "x" * 300, "\U0001f600", ""])] = rng.choice(
                [1, "x", None, {}]
            )
        return Fuzzed("schema", self.call(action, payload))

    def _malformed_frame(self, action: str, payload: Any) -> Fuzzed:
        rng = self.rng
        body = json.dumps(payload)
        deep = rng.choice([40, 200, 999, 3000])
        nested = "[" * deep + "]" * deep
        odd = json.dumps(rng.choice([["x"], {"k": 1}, 7, None, True, 1.5]))
        unknown = "".join(rng.choices(string.ascii_letters, k=rng.randint(1, 2000)))
        central = rng.choice(["Reset", "GetConfiguration", "RemoteStartTransaction"])
        long_id = "u" * rng.randint(37, 500)
        cases: list[Fuzzed] = [
            Fuzzed("frame", "this is not json", "-1"),
            Fuzzed("frame", f'[2, "{ID}", "{action}", {body[: rng.randint(0, len(body))]}', "-1"),
            Fuzzed("frame", json.dumps({"not": "an array"}), "-1"),
            Fuzzed("frame", "[]", "-1"),
            Fuzzed("frame", rng.choice(["1", '"x"', "null", "true", "{}"]), "-1"),
            Fuzzed("frame", f'[9, "{ID}", "{action}", {body}]'),
            Fuzzed("frame", f'["2", "{ID}", "{action}", {body}]'),
            Fuzzed("frame", f'[2, "{ID}", "{action}"]'),
            Fuzzed("frame", f'[2, "{ID}", "{action}", {body}, 1]'),
            Fuzzed(
                "frame",
                f'[2, "{ID}", {odd}, {body}]',
            ),
            Fuzzed(
                "frame",
                f'[2, {odd}, "{action}", {body}]',
                "-1",
            ),
            Fuzzed("frame", f'[2, "{long_id}", "{action}", {body}]', long_id),
            Fuzzed(
                "frame",
                f'[2, "{ID}", "DataTransfer", {{"vendorId": "v", "data": {nested}}}]',
            ),
            Fuzzed(
                "frame",
                f'[2, "{ID}", "{unknown}", {{}}]',
            ),
            Fuzzed(
                "frame",
                f'[2, "{ID}", "{central}", {{}}]',
            ),
            Fuzzed("frame", f'[2, "{ID}", "{action}", {body}]'.encode("utf-16"), "-1", binary=True),
            Fuzzed(
                "frame",
                f'[2, "{ID}", "Heartbeat", {{"x": "\xff"}}]'.encode("latin-1"),
                "-1",
                binary=True,
            ),
            Fuzzed("valid", f'[2, "{ID}", "Heartbeat", {{}}]'.encode(), binary=True),
        ]
        return rng.choice(cases)

    def _answer_frame(self, payload: Any) -> Fuzzed:
        rng = self.rng
        unique = json.dumps(rng.choice([str(uuid.uuid4()), ["x"], {"k": 1}, 7, None, "u" * 50]))
        text = rng.choice(
            [
                f"[3, {unique}, {json.dumps(payload)}]",
                f'[4, {unique}, "GenericError", "", {{}}]',
                f"[4, {unique}, 5, null, []]",
                f"[3, {unique}]",
                f'[3, {unique}, {{"v": NaN}}]',
                f'[4, {unique}, "GenericError", "\\ud800", {{}}]',
            ]
        )
        return Fuzzed("answer", text, None)

    def frames(self) -> Iterator[Fuzzed]:
        while True:
            yield self.generate()


# --- the chargers ---------------------------------------------------------------------------
@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, code)
    unexpected: Counter[tuple[str, str]] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)  # "1009 (provoked)" ...
    unanswered: int = 0
    wrong_id: int = 0
    examples: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return sum(self.sent.values())


class FuzzCharger(asyncio.Protocol):
    """A raw OCPP-J client: one frame in flight, answers and close codes noted."""

    def __init__(self, charger_id: str, password: str = PASSWORD) -> None:
        loop = asyncio.get_running_loop()
        self.charger_id = charger_id
        self.password = password
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.answer: asyncio.Future[list[Any]] | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        auth = base64.b64encode(f"{self.charger_id}:{self.password}".encode()).decode()
        transport.write(
            (
                f"GET /ocpp/{self.charger_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: ocpp1.6\r\nAuthorization: Basic {auth}\r\n\r\n"
            ).encode()
        )

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ws_frame(payload, opcode))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self.opened.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionRefusedError(status.decode()))
                return
            self.opened.set_result(None)
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
                self._message(json.loads(payload))
            elif opcode == 0x9:
                self.send(payload, 0xA)
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                if not self.closed.done():
                    self.closed.set_result(code)
                self.send(payload[:2], 0x8)
                if self.transport is not None:
                    self.transport.close()

    def _message(self, message: list[Any]) -> None:
        if message[0] == 2:  # the bridge asks (GetConfiguration after a boot, ...)
            answer: dict[str, Any] = {}
            if message[2] == "GetConfiguration":
                answer["configurationKey"] = []
            self.send(json.dumps([3, message[1], answer]).encode())
        elif self.answer is not None and not self.answer.done():
            self.answer.set_result(message)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed during the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    async def exchange(self, payload: bytes, binary: bool, timeout: float) -> list[Any] | None:
        """Send one frame and wait for the answer (None: the socket closed first)."""
        self.answer = asyncio.get_running_loop().create_future()
        self.send(payload, 0x2 if binary else 0x1)
        waiting: set[asyncio.Future[Any]] = {self.answer, self.closed}
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self.answer in done:
            return self.answer.result()
        if self.closed in done:
            return None
        raise TimeoutError


async def connect(charger_id: str, port: int, password: str = PASSWORD) -> FuzzCharger:
    """A booted charger (its BootNotification answered)."""
    loop = asyncio.get_running_loop()
    _, charger = await loop.create_connection(
        lambda: FuzzCharger(charger_id, password), "127.0.0.1", port
    )
    await charger.opened
    boot = json.dumps(
        [2, "boot", "BootNotification", {"chargePointVendor": "Fuzz", "chargePointModel": "F"}]
    )
    await charger.exchange(boot.encode(), False, 30)
    return charger


class Fuzz:
    """Hands the fuzzer's frames to the chargers (one in flight each) and tallies answers."""

    def __init__(
        self, port: int, ids: list[str], fuzzer: FrameFuzzer, total: int, tally: Tally
    ) -> None:
        self.port, self.ids, self.fuzzer, self.total, self.tally = port, ids, fuzzer, total, tally
        self.frames = fuzzer.frames()
        self.counter = 0

    def _next(self) -> tuple[Fuzzed, bytes, str | None] | None:
        if self.counter >= self.total:
            return None
        self.counter += 1
        fuzzed = next(self.frames)
        unique_id = f"f{self.counter}"
        text = fuzzed.text
        data = (
            text.replace(ID, unique_id).encode("utf-8", "surrogatepass")
            if isinstance(text, str)
            else text.replace(ID.encode(), unique_id.encode())
        )
        answer_id = unique_id if fuzzed.answer_id == ID else fuzzed.answer_id
        return fuzzed, data, answer_id

    async def run_charger(self, charger: FuzzCharger) -> None:
        tally = self.tally
        while (item := self._next()) is not None:
            fuzzed, data, answer_id = item
            tally.sent[fuzzed.kind] += 1
            if answer_id is None:  # not answered: the next frame's answer keeps the order
                charger.send(data)
                continue
            try:
                answer = await charger.exchange(data, fuzzed.binary, 30)
            except TimeoutError:
                tally.unanswered += 1
                tally.examples.setdefault(("unanswered", fuzzed.kind), repr(data[:300]))
                continue
            if answer is None:
                tally.closes[f"{charger.closed.result()} (unexpected, {fuzzed.kind})"] += 1
                tally.examples.setdefault(
                    ("close", fuzzed.kind), data[:300].decode("utf-8", "replace")
                )
                charger = await connect(charger.charger_id, self.port, charger.password)
                continue
            code = "result" if answer[0] == 3 else str(answer[2])
            if code == "GenericError" and answer[3] == "rate limit":
                code = "throttled"
            tally.answers[(fuzzed.kind, code)] += 1
            if answer[1] != answer_id:
                tally.wrong_id += 1
            if code not in EXPECTED[fuzzed.kind]:
                tally.unexpected[(fuzzed.kind, code)] += 1
                tally.examples.setdefault(
                    (fuzzed.kind, code),
                    data[:300].decode("utf-8", "replace") + f" -> {json.dumps(answer)[:200]}",
                )
        charger.transport.close() if charger.transport else None

    async def provoke_closes(self, charger_id: str, every: float, stop: asyncio.Event) -> None:
        """The documented closes, in turn, on a charger of their own."""
        cases = [
            (
                "1009",
                json.dumps(
                    [2, "big", "DataTransfer", {"vendorId": "v", "data": "x" * 70_000}]
                ).encode(),
                0x1,
            ),
            ("1007", b'[2, "u", "Heartbeat", {"x": "\xff"}]', 0x1),
        ]
        turn = 0
        while not stop.is_set():
            charger = await connect(charger_id, self.port)
            expected, payload, opcode = (
                cases[turn % len(cases)] if turn % 3 != 2 else ("1008", b"", 0)
            )
            turn += 1
            if expected == "1008":
                frame = json.dumps([2, "h", "Heartbeat", {}]).encode()
                while not charger.closed.done():
                    for _ in range(20):
                        charger.send(frame)
                    self.tally.sent["flood"] += 20
                    await asyncio.sleep(0.05)
            else:
                charger.send(payload, opcode)
                self.tally.sent["close"] += 1
            code = await asyncio.wait_for(charger.closed, 30)
            label = (
                f"{code} (provoked)" if str(code) == expected else f"{code} (expected {expected})"
            )
            self.tally.closes[label] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def run(args: argparse.Namespace) -> Tally:
    raise_nofile()
    ids = [f"FZ{i:04d}" for i in range(args.chargers)] + ["FZCLOSE"]
    fuzzer = FrameFuzzer(args.seed)
    tally = Tally()
    with bench_broker(), tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        data = Path(tmp)
        await register(data, ids)
        server = Server.bridge(data, f"fuzz-{uuid.uuid4().hex[:8]}", "--ocpp-flood-burst=1000")
        await server.start()
        try:
            chargers = [await connect(charger_id, server.port) for charger_id in ids[:-1]]
            await asyncio.sleep(1)
            rss_start = rss_kib(server.pid)
            log_start = server.log.stat().st_size
            start = f"bridge RSS at the start {rss_start / 1024:.0f} MiB"
            print(f"load before: {load_average()}; {start}", flush=True)
            fuzz = Fuzz(server.port, ids, fuzzer, args.frames, tally)
            stop = asyncio.Event()
            closes = asyncio.create_task(fuzz.provoke_closes(ids[-1], args.close_every, stop))
            started = time.monotonic()
            progress = asyncio.create_task(report_progress(tally, server, started))
            await asyncio.gather(*(fuzz.run_charger(charger) for charger in chargers))
            elapsed = time.monotonic() - started
            stop.set()
            await closes
            progress.cancel()
            await asyncio.sleep(2)
            rss_end = rss_kib(server.pid)
            log_bytes = server.log.stat().st_size - log_start
            with server.log.open("rb") as log_file:
                log_file.seek(log_start)
                log_tail = log_file.read().decode("utf-8", "replace")
        finally:
            await server.stop()
    report(tally, args, elapsed, rss_start, rss_end, log_bytes)
    print("bridge log lines by level and logger: " + log_sources(log_tail))
    return tally


async def report_progress(tally: Tally, server: Server, started: float) -> None:
    while True:
        await asyncio.sleep(30)
        rate = tally.frames / (time.monotonic() - started)
        rss = rss_kib(server.pid) / 1024
        print(
            f"  {tally.frames:,} frames, {rate:,.0f}/s, bridge RSS {rss:.0f} MiB, "
            f"load {load_average()}",
            flush=True,
        )


def report(
    tally: Tally,
    args: argparse.Namespace,
    elapsed: float,
    rss_start: int,
    rss_end: int,
    log_bytes: int,
) -> None:
    print(f"\nmachine: {describe()}; load after: {load_average()}")
    print(
        f"frames: {tally.frames:,} in {elapsed:,.0f} s = {tally.frames / elapsed:,.0f} frames/s"
        f" over {args.chargers} chargers (seed {args.seed})"
    )
    print("sent per class: " + ", ".join(f"{k} {v:,}" for k, v in sorted(tally.sent.items())))
    print("answers per class:")
    for kind in sorted({k for k, _ in tally.answers}):
        codes = {code: n for (k, code), n in tally.answers.items() if k == kind}
        print(f"  {kind}: " + ", ".join(f"{code} {n:,}" for code, n in sorted(codes.items())))
    internal = sum(n for (_, code), n in tally.answers.items() if code == "InternalError")
    internal_valid = sum(
        n
        for (kind, code), n in tally.answers.items()
        if code == "InternalError" and kind in SCHEMA_VALID
    )
    print(f"InternalError answers: {internal:,} (schema-valid input: {internal_valid:,})")
    print(f"unexpected answers: {sum(tally.unexpected.values()):,} {dict(tally.unexpected)}")
    shown = [k for k in tally.examples if k[0] in ("unanswered", "close")] + list(tally.examples)
    for key in list(dict.fromkeys(shown))[:12]:
        example = tally.examples[key]
        print(f"  e.g. {key}: {example}")
    print(f"unanswered calls: {tally.unanswered:,}; answers with another unique id:", end=" ")
    print(f"{tally.wrong_id:,}")
    print(
        "closes: "
        + (", ".join(f"{label} {n:,}" for label, n in sorted(tally.closes.items())) or "none")
    )
    bad = tally.frames - tally.sent["valid"] - tally.sent["edge"]
    print(
        f"bridge RSS: start {rss_start / 1024:.0f} MiB, end {rss_end / 1024:.0f} MiB"
        f" ({rss_end / rss_start:.2f}x)"
    )
    print(f"bridge log: {log_bytes:,} bytes, {log_bytes / max(bad, 1):.1f} bytes per bad frame")


def log_sources(text: str) -> str:
    """``WARNING bridge.protocol 1,234, ...`` for the log lines (format of launch.runner)."""
    sources: Counter[str] = Counter()
    previous, continued = "", []
    for line in text.splitlines():
        parts = line.split(None, 4)
        if len(parts) >= 4 and parts[2] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            sources[f"{parts[2]} {parts[3].rstrip(':')}"] += 1
            previous = line
        else:
            sources["(continuation lines)"] += 1
            if len(continued) < 3:
                continued.append(f"{previous[:160]!r} then {line[:160]!r}")
    summary = ", ".join(f"{name} {n:,}" for name, n in sources.most_common(8)) or "none"
    return "\n  ".join([summary, *continued])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--chargers", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--close-every", type=float, default=5.0, help="seconds between provoked closes"
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
