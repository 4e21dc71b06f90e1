"""Request and answer on a charger's command topics, for components that send commands.

A command is published on ``.../commands`` as ``{"name", "payload", "clientToken"}``; the
bridge holding the charger's socket answers on ``.../commands/result`` with the same
``clientToken`` (``bridge/README.md``). Like :mod:`chargetwin.shadow_client`, results are
subscribed per charger and counted, so the process receives only the results it waits for,
and one map of futures keyed by token is cleaned up in ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics


class CommandError(Exception):
    """The bridge answered ``status: error`` (``code`` as in the command contract)."""

    def __init__(self, code: int, message: str, ocpp_error: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.ocpp_error = ocpp_error


class CommandTimeoutError(CommandError):
    """No result in time: no bridge holds the charger, or the charger did not answer."""

    def __init__(self, message: str) -> None:
        super().__init__(504, message)


@dataclass(frozen=True, slots=True)
class CommandResult:
    name: str
    response: dict[str, Any]


class CommandClient:
    def __init__(self, mqtt: MqttClient, topics: Topics, *, timeout: float = 35.0) -> None:
        self._mqtt = mqtt
        self._topics = topics
        self.timeout = timeout
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._users: dict[str, int] = defaultdict(int)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def send(
        self, charger_id: str, name: str, payload: dict[str, Any], *, timeout: float | None = None
    ) -> CommandResult:
        """Publish the command and return the charger's answer, or raise :class:`CommandError`."""
        token = uuid.uuid4().hex
        limit = self.timeout if timeout is None else timeout
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        await self._acquire(charger_id)
        try:
            self._mqtt.publish(
                self._topics.command(charger_id),
                {"name": name, "payload": payload, "clientToken": token},
            )
            try:
                answer = await asyncio.wait_for(future, limit)
            except TimeoutError as exc:
                raise CommandTimeoutError(
                    f"no result for {name} on {charger_id} within {limit:g} s"
                ) from exc
        finally:
            self._pending.pop(token, None)
            await self._release(charger_id)
        if answer.get("status") != "ok":
            ocpp_error = answer.get("ocppError")
            raise CommandError(
                int(answer.get("code", 500)),
                str(answer.get("message", "")),
                str(ocpp_error) if ocpp_error is not None else None,
            )
        response = answer.get("response")
        return CommandResult(name, response if isinstance(response, dict) else {})

    def _result_topic(self, charger_id: str) -> str:
        return f"{self._topics.command(charger_id)}/result"

    async def _acquire(self, charger_id: str) -> None:
        async with self._locks[charger_id]:
            self._users[charger_id] += 1
            if self._users[charger_id] == 1:
                await self._mqtt.subscribe_acked(self._result_topic(charger_id), self._on_result)

    async def _release(self, charger_id: str) -> None:
        async with self._locks[charger_id]:
            self._users[charger_id] -= 1
            if self._users[charger_id] == 0:
                del self._users[charger_id]
                self._mqtt.unsubscribe(self._result_topic(charger_id))

    async def _on_result(self, topic: str, payload: bytes) -> None:
        try:
            answer = json.loads(payload)
        except ValueError:
            return
        if not isinstance(answer, dict):
            return
        future = self._pending.get(str(answer.get("clientToken")))
        if future is not None and not future.done():
            future.set_result(answer)
