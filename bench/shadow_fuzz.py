"""Hostile shadow updates over MQTT and desired patches over HTTP, against `chargetwin up`.

    python -m bench.shadow_fuzz --requests 100000 [--http-share 0.2] [--seed 1]

A seeded generator makes JSON no well-behaved client sends: nesting thousands deep, numbers
beyond 64 bits or beyond a double, ``NaN`` and ``Infinity``, lone surrogates in keys and
values, invalid UTF-8, keys of 10,000 characters, nulls and arrays where objects belong,
wrong types, stale and absurd versions, bad clientTokens, timestamps from 1970 to 10^300.
Shadow updates go to ``chargers/{id}/shadow/update`` on the real broker and are answered
by the real twin service; desired patches go to ``PATCH /api/v1/chargers/{id}/shadow/
desired``. The figure: every request answered, none with a server error (MQTT code 500 or
HTTP 5xx), no error in the platform's log, and an ordinary update still accepted after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.brokers import bench_broker
from bench.machine import describe
from bench.platforms import Platform, running_platform, server_errors_in_log
from chargetwin.mqtt import MqttClient

MQTT_CHARGERS = 16
HTTP_CHARGERS = 8
WINDOW = 64  # MQTT requests in flight at most
HTTP_CONCURRENCY = 8
ANSWER_TIMEOUT = 30.0

# --- the generator ----------------------------------------------------------------------------
_WEIRD_STRINGS = (
    "",
    "\ud800",  # a lone surrogate: valid JSON escape, not valid Unicode
    "a\udfffb",
    "\x00",
    "\u202e",
    "💥",
    "null",
    "NaN",
    "x" * 10_000,
    "../../etc/passwd",
    "$share/+/#",
)
_WEIRD_NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    2**63,
    -(2**63) - 1,
    10**40,
    1e308,
    -0.0,
    5e-324,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
)


def _key(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(("status", "HeartbeatInterval", "1", "0", "config", "a", "version"))
    if roll < 0.8:
        return rng.choice(_WEIRD_STRINGS)
    return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 30)))


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON-shaped value of any type, biased towards the strange."""
    roll = rng.random()
    if depth > 6 or roll < 0.3:
        return rng.choice((None, rng.choice(_WEIRD_NUMBERS), rng.choice(_WEIRD_STRINGS), "ok"))
    if roll < 0.45:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {_key(rng): hostile_value(rng, depth + 1) for _ in range(rng.randrange(0, 6))}


def _dumps(value: Any) -> bytes:
    # allow_nan and ensure_ascii: NaN/Infinity literals and \ud800 escapes, as hostile
    # clients write them.
    return json.dumps(value, allow_nan=True).encode()


def _deep(depth: int, opener: str, closer: str, inner: str = "1") -> bytes:
    return (opener * depth + inner + closer * depth).encode()


def _token(rng: random.Random, serial: str) -> Any:
    roll = rng.random()
    if roll < 0.7:
        return serial
    return rng.choice((None, 5, "t" * 65, ["x"], {"a": 1}, "\ud800", "", True))


def shadow_payload(rng: random.Random, serial: str) -> bytes:
    """One hostile shadow update request (the bytes of an MQTT payload)."""
    kind = rng.randrange(16)
    token = _token(rng, serial)
    if kind == 0:  # a plausible update
        section = rng.choice(("reported", "desired"))
        return _dumps({"state": {section: hostile_value(rng)}, "clientToken": token})
    if kind == 1:  # plausible and well-formed, so the document grows and versions move
        status = rng.choice(("Available", "Charging", "Faulted"))
        body: dict[str, Any] = {
            "state": {"reported": {"connectors": {str(rng.randrange(3)): {"status": status}}}},
            "clientToken": token,
        }
        if rng.random() < 0.5:
            body["version"] = rng.choice((0, 1, rng.randrange(1000), 2**64, -1, 1.5, "3"))
        return _dumps(body)
    if kind == 2:  # nested deep: inside the limit, just past it, and far past it
        depth = rng.choice((7, 9, 50, 1_000, 100_000))
        inner = _deep(depth, '{"a":', "}").decode()
        return f'{{"state":{{"reported":{inner}}}}}'.encode()
    if kind == 3:
        return _deep(rng.choice((1_000, 100_000)), rng.choice(("[", '{"a":')), "]")
    if kind == 4:  # numbers no double or 64-bit integer holds
        number = rng.choice(("1e999", "-1e999", "9" * 400, "1" * 5_000, "NaN", "-Infinity"))
        where = rng.choice(("version", "timestamp", "leaf"))
        if where == "leaf":
            return f'{{"state":{{"reported":{{"n":{number}}}}}}}'.encode()
        return f'{{"state":{{"reported":{{"n":1}}}},"{where}":{number}}}'.encode()
    if kind == 5:  # lone surrogates and other strange text in keys and values
        text = rng.choice(_WEIRD_STRINGS)
        return _dumps({"state": {"reported": {text: text, "config": {text: text}}}})
    if kind == 6:  # invalid UTF-8, truncated JSON, junk
        return rng.choice(
            (b'{"state":{"reported":{"a":"\xff\xfe"}}}', b'{"state":', b"\x00\x01", b"", b"  ")
        ) + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 8)))
    if kind == 7:  # long keys, and requests over the size limit
        size = rng.choice((10_000, 70_000, 200_000))
        return _dumps({"state": {"reported": {"k" * size: 1}}})
    if kind == 8:  # nulls everywhere
        return _dumps(
            rng.choice(
                (
                    {"state": None},
                    {"state": {"reported": None}},
                    {"state": {"desired": None}},
                    {"state": {"reported": {"connectors": None}}},
                    None,
                )
            )
        )
    if kind == 9:  # arrays where objects belong
        return _dumps(
            rng.choice(([], [1, 2], {"state": []}, {"state": {"reported": [1]}}, {"state": [{}]}))
        )
    if kind == 10:  # wrong types in every top-level field
        return _dumps(
            {
                "state": rng.choice(({"reported": {"a": 1}}, "x", 1, True)),
                "version": rng.choice(("1", True, None, [], 1.0, -5, 10**30)),
                "timestamp": rng.choice(("x", -1, 0, 1e300, 4e9, time.time() + 10**6, [])),
                "clientToken": token,
            }
        )
    if kind == 11:  # unknown fields and sections
        return _dumps({"state": {"reported": {}, "delta": {"a": 1}}, "extra": 1})
    if kind == 12:  # desired state the schema refuses (422) or accepts
        desired = rng.choice(
            (
                {"config": {"HeartbeatInterval": rng.choice(("60", 60, None, "\ud800"))}},
                {"availability": {str(rng.randrange(5)): rng.choice(("Operative", "Broken"))}},
                {"firmware": {"version": rng.choice(("1.0", "", None, 1))}},
                {"config": {"k" * 60: "v"}},
            )
        )
        return _dumps({"state": {"desired": desired}, "clientToken": token})
    if kind == 13:  # many keys at once (document size)
        return _dumps({"state": {"reported": {f"k{i}": "v" * 100 for i in range(600)}}})
    if kind == 14:  # timestamps from every era
        stamp = rng.choice((1, 1e-300, 1.7e9, time.time() + 301, 253402300800, 1e300))
        return _dumps({"state": {"reported": {"t": 1}}, "timestamp": stamp})
    return _dumps(hostile_value(rng))


def desired_patch(rng: random.Random) -> tuple[bytes, dict[str, str]]:
    """One hostile PATCH of the desired state: body and headers."""
    headers = {"Content-Type": rng.choice(["application/merge-patch+json"] * 8 + ["text/plain"])}
    if rng.random() < 0.2:
        headers["If-Match"] = rng.choice(('"0"', '"1"', '"999999999999999999"', "*", "x", '"-1"'))
    kind = rng.randrange(8)
    if kind == 0:
        body = _dumps({"config": {"HeartbeatInterval": str(rng.randrange(10, 1000))}})
    elif kind == 1:
        body = _dumps({rng.choice(("config", "availability", "firmware")): hostile_value(rng)})
    elif kind == 2:
        body = _deep(rng.choice((10, 1_000, 100_000)), '{"config":', "}", "{}")
    elif kind == 3:
        text = rng.choice(_WEIRD_STRINGS)
        body = _dumps({"config": {rng.choice(("HeartbeatInterval", text)): text}})
    elif kind == 4:
        body = rng.choice((b"NaN", b'{"config":{"a":NaN}}', b"1e999", b"[]", b"null", b"{"))
    elif kind == 5:
        body = b'{"config":{"HeartbeatInterval":"\xff"}}'
    elif kind == 6:
        body = _dumps({"availability": {str(rng.randrange(1200)): "Inoperative"}})
    else:
        body = _dumps(hostile_value(rng))
    return body, headers


# --- the run ----------------------------------------------------------------------------------
@dataclass
class FuzzCounts:
    mqtt_sent: int = 0
    mqtt_answers: Counter[str] = field(default_factory=Counter)
    http_answers: Counter[int] = field(default_factory=Counter)
    unanswered: int = 0
    seconds: float = 0.0
    log_errors: list[str] = field(default_factory=list)
    examples_500: list[str] = field(default_factory=list)
    healthy_after: bool = False

    @property
    def server_errors(self) -> int:
        return self.mqtt_answers["500"] + sum(
            n for code, n in self.http_answers.items() if code >= 500
        )

    @property
    def internal_errors(self) -> int:
        """Answers that say the platform failed (500), as opposed to a 504: the twin's
        answer came later than the API waits, which load alone can cause."""
        return self.mqtt_answers["500"] + self.http_answers[500]

    @property
    def clean(self) -> bool:
        return (
            not self.server_errors
            and not self.unanswered
            and not self.log_errors
            and self.healthy_after
        )


class _MqttFuzzer:
    """Publishes hostile updates with at most ``WINDOW`` unanswered; counts the answers."""

    def __init__(self, platform: Platform, chargers: list[str], counts: FuzzCounts) -> None:
        self.platform = platform
        self.chargers = chargers
        self.counts = counts
        self.client = MqttClient(platform.mqtt_url, f"shadow-fuzz-{uuid.uuid4().hex[:8]}")
        self.outstanding = 0
        self.progress = asyncio.Event()

    async def _on_answer(self, topic: str, payload: bytes) -> None:
        if topic.split("/")[-4] not in self.chargers:
            return  # the API's own requests, for the chargers fuzzed over HTTP
        if topic.endswith("/accepted"):
            code = "accepted"
        else:
            try:
                code = str(json.loads(payload).get("code"))
            except (ValueError, AttributeError):
                code = "unparseable"
            if code == "500" and len(self.counts.examples_500) < 5:
                self.counts.examples_500.append(f"{topic}: {payload[:300]!r}")
        self.counts.mqtt_answers[code] += 1
        self.outstanding -= 1
        self.progress.set()

    async def run(self, rng: random.Random, n: int) -> None:
        prefix = self.platform.prefix
        await self.client.connect()
        try:
            for result in ("accepted", "rejected"):
                await self.client.subscribe_acked(
                    f"{prefix}/chargers/+/shadow/update/{result}", self._on_answer
                )
            for i in range(n):
                while self.outstanding >= WINDOW:
                    self.progress.clear()
                    try:
                        await asyncio.wait_for(self.progress.wait(), ANSWER_TIMEOUT)
                    except TimeoutError:
                        # Requests that got no answer at all: count them and go on.
                        self.counts.unanswered += self.outstanding
                        self.outstanding = 0
                charger_id = rng.choice(self.chargers)
                payload = shadow_payload(rng, f"m{i}")
                self.outstanding += 1
                self.counts.mqtt_sent += 1
                self.client.publish(f"{prefix}/chargers/{charger_id}/shadow/update", payload)
            deadline = time.monotonic() + ANSWER_TIMEOUT
            while self.outstanding > 0 and time.monotonic() < deadline:
                self.progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.progress.wait(), 1)
            self.counts.unanswered += max(self.outstanding, 0)
        finally:
            await self.client.disconnect()


async def _http_fuzz(
    platform: Platform, chargers: list[str], rng: random.Random, n: int, counts: FuzzCounts
) -> None:
    requests = [(rng.choice(chargers), *desired_patch(rng)) for _ in range(n)]
    queue: asyncio.Queue[tuple[str, bytes, dict[str, str]]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    timeout = httpx.Timeout(ANSWER_TIMEOUT)
    async with httpx.AsyncClient(base_url=platform.api, timeout=timeout, trust_env=False) as http:

        async def worker() -> None:
            while not queue.empty():
                charger_id, body, headers = queue.get_nowait()
                try:
                    response = await http.patch(
                        f"/api/v1/chargers/{charger_id}/shadow/desired",
                        content=body,
                        headers={**platform.headers, **headers},
                    )
                except httpx.HTTPError:
                    counts.unanswered += 1
                    continue
                counts.http_answers[response.status_code] += 1
                if response.status_code >= 500 and len(counts.examples_500) < 10:
                    counts.examples_500.append(f"PATCH {body[:200]!r}: {response.text[:300]}")

        async with asyncio.TaskGroup() as group:
            for _ in range(HTTP_CONCURRENCY):
                group.create_task(worker())


async def _register(platform: Platform, chargers: list[str]) -> None:
    async with httpx.AsyncClient(base_url=platform.api, trust_env=False) as http:
        for charger_id in chargers:
            response = await http.post(
                "/api/v1/chargers",
                json={"id": charger_id, "password": "fuzz-password-0001"},
                headers=platform.headers,
            )
            response.raise_for_status()


async def _still_works(platform: Platform, charger_id: str) -> bool:
    """An ordinary desired patch after the storm is accepted."""
    async with httpx.AsyncClient(base_url=platform.api, timeout=30, trust_env=False) as http:
        response = await http.patch(
            f"/api/v1/chargers/{charger_id}/shadow/desired",
            json={"config": {"HeartbeatInterval": "123"}},
            headers={**platform.headers, "Content-Type": "application/merge-patch+json"},
        )
        return response.status_code == 200


async def fuzz(
    mqtt_url: str,
    work: Path,
    *,
    requests: int,
    http_share: float,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> FuzzCounts:
    counts = FuzzCounts()
    rng = random.Random(seed)
    # One unregistered id among the MQTT targets: its requests are answered 404.
    mqtt_chargers = [f"FZ-M{i:03d}" for i in range(MQTT_CHARGERS)]
    http_chargers = [f"FZ-H{i:03d}" for i in range(HTTP_CHARGERS)]
    n_http = int(requests * http_share)
    async with running_platform(mqtt_url, work / "data") as platform:
        await _register(platform, mqtt_chargers + http_chargers)
        started = time.monotonic()
        mqtt = _MqttFuzzer(platform, [*mqtt_chargers, "FZ-UNREGISTERED"], counts)
        async with asyncio.TaskGroup() as group:
            group.create_task(mqtt.run(random.Random(rng.random()), requests - n_http))
            group.create_task(
                _http_fuzz(platform, http_chargers, random.Random(rng.random()), n_http, counts)
            )
        counts.seconds = time.monotonic() - started
        counts.healthy_after = await _still_works(platform, http_chargers[0])
        counts.log_errors = server_errors_in_log(platform.log)
    return counts


def report_lines(counts: FuzzCounts) -> list[str]:
    total = counts.mqtt_sent + sum(counts.http_answers.values())
    rate = total / counts.seconds if counts.seconds else 0.0
    mqtt = ", ".join(f"{k}: {v}" for k, v in sorted(counts.mqtt_answers.items()))
    http = ", ".join(f"{k}: {v}" for k, v in sorted(counts.http_answers.items()))
    return [
        f"requests: {total} in {counts.seconds:.1f} s ({rate:.0f}/s)",
        f"MQTT shadow updates: {counts.mqtt_sent} sent; answers {mqtt}",
        f"HTTP desired patches: {sum(counts.http_answers.values())}; answers {http}",
        f"unanswered: {counts.unanswered}",
        f"server errors: {counts.server_errors}",
        *(f"  {e}" for e in counts.examples_500),
        f"errors in the platform's log: {len(counts.log_errors)}",
        *(f"  {line}" for line in counts.log_errors[:10]),
        f"an ordinary patch accepted afterwards: {counts.healthy_after}",
    ]


async def main(args: argparse.Namespace) -> int:
    print(f"machine: {describe()}")
    print(f"load before: {os.getloadavg()}")
    with bench_broker() as mqtt_url, tempfile.TemporaryDirectory() as tmp:
        counts = await fuzz(
            mqtt_url, Path(tmp), requests=args.requests, http_share=args.http_share, seed=args.seed
        )
    print(f"shadow fuzzing, seed {args.seed}:")
    for line in report_lines(counts):
        print(line)
    print(f"load after: {os.getloadavg()}")
    return 0 if counts.clean else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--http-share", type=float, default=0.2, help="share sent over HTTP")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
