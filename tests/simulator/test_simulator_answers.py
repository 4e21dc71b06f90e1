"""A simulated charger acts on an answer before it handles the central system's next call
(simulator.answers), as a charger that reads its input in order does."""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from simulator.answers import AnswersFirst


class BufferedSocket:
    """A websocket whose input is already buffered: ``recv`` returns without yielding
    while it holds messages (as websockets does), so only the charger's own ordering
    decides which runs first, the caller of the answer or the next call's handler."""

    def __init__(self) -> None:
        self.input: collections.deque[str] = collections.deque()
        self.arrived = asyncio.Event()
        self.sent: list[Any] = []
        self.read_answered = asyncio.Event()

    async def recv(self) -> str:
        while not self.input:
            self.arrived.clear()
            await self.arrived.wait()
        return self.input.popleft()

    async def send(self, message: str) -> None:
        frame = json.loads(message)
        self.sent.append(frame)
        if frame[0] == 3 and frame[1] == READ[1]:
            self.read_answered.set()
        if frame[0] == 2 and frame[2] == "BootNotification":
            # The answer and a read of the configuration, back to back in one read.
            answer = {"status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 77}
            self.input += [json.dumps([3, frame[1], answer]), json.dumps(READ)]
            self.arrived.set()


READ = [2, "read-1", "GetConfiguration", {"key": ["HeartbeatInterval"]}]


class Charger(ChargePoint):  # type: ignore[misc]
    interval = "600"

    @on(Action.get_configuration)
    def on_get_configuration(self, **_: Any) -> Any:
        key = {"key": "HeartbeatInterval", "readonly": False, "value": self.interval}
        return call_result.GetConfiguration(configuration_key=[key])

    async def boot(self) -> None:
        answer = await self.call(
            call.BootNotification(charge_point_model="M", charge_point_vendor="V")
        )
        self.interval = str(answer.interval)  # acted on before the next await


class OrderedCharger(AnswersFirst, Charger):
    pass


async def _read_after_boot(kind: type[Charger]) -> str:
    socket = BufferedSocket()
    charger = kind("CP-1", socket, response_timeout=5)
    reader = asyncio.create_task(charger.start())
    try:
        await charger.boot()
        async with asyncio.timeout(5):
            await socket.read_answered.wait()
    finally:
        reader.cancel()
    answer = next(f[2] for f in socket.sent if f[0] == 3 and f[1] == "read-1")
    return str(answer["configurationKey"][0]["value"])


async def test_the_call_behind_an_answer_sees_what_the_answer_set() -> None:
    assert await _read_after_boot(OrderedCharger) == "77"


async def test_without_it_the_library_answers_the_call_first() -> None:
    """What the mixin is for: the ocpp library alone hands the call to its handler
    before the caller of the answer has run (if this ever passes, the library changed and
    the mixin may go)."""
    if await _read_after_boot(Charger) == "77":
        pytest.fail("the ocpp library now orders answers before calls")
