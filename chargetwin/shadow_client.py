"""Request and answer on a charger's shadow topics, for components that change shadows.

The API and the rules engine change desired state only by publishing ``shadow/update``
(they never write the shadow store), and wait for ``accepted`` or ``rejected`` with the
same ``clientToken``. Subscriptions are per charger and counted, so the process only
receives answers for chargers it is asking about.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from typing import Any

from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics


class ShadowRequestError(Exception):
    """The twin refused the request (``code`` as on the ``rejected`` topic)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ShadowTimeoutError(ShadowRequestError):
    """No answer from the twin in time (is the twin service running?)."""

    def __init__(self, message: str) -> None:
        super().__init__(504, message)


class ShadowClient:
    def __init__(self, mqtt: MqttClient, topics: Topics, *, timeout: float = 5.0) -> None:
        self._mqtt = mqtt
        self._topics = topics
        self._timeout = timeout
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._users: dict[tuple[str, str], int] = defaultdict(int)
        self._locks: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    async def update(
        self, charger_id: str, state: dict[str, Any], *, version: int | None = None
    ) -> dict[str, Any]:
        """Publish ``{"state": state}``; return the ``accepted`` answer or raise."""
        request: dict[str, Any] = {"state": state}
        if version is not None:
            request["version"] = version
        return await self._request(charger_id, "update", request)

    async def get(self, charger_id: str) -> dict[str, Any]:
        return await self._request(charger_id, "get", {})

    async def delete(self, charger_id: str) -> dict[str, Any]:
        """Delete the shadow; answers ``{"version", "timestamp"}`` or raises (404: none)."""
        return await self._request(charger_id, "delete", {})

    async def _request(
        self, charger_id: str, operation: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        token = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        await self._acquire(charger_id, operation)
        try:
            self._mqtt.publish(
                self._topics.shadow(charger_id, operation), {**request, "clientToken": token}
            )
            try:
                return await asyncio.wait_for(future, self._timeout)
            except TimeoutError as exc:
                raise ShadowTimeoutError(
                    f"no answer from the twin for {charger_id} in {self._timeout:g} s"
                ) from exc
        finally:
            self._pending.pop(token, None)
            await self._release(charger_id, operation)

    async def _acquire(self, charger_id: str, operation: str) -> None:
        key = (charger_id, operation)
        async with self._locks[key]:
            self._users[key] += 1
            if self._users[key] == 1:
                for result in ("accepted", "rejected"):
                    await self._mqtt.subscribe_acked(
                        self._topics.shadow(charger_id, operation, result), self._on_answer
                    )

    async def _release(self, charger_id: str, operation: str) -> None:
        key = (charger_id, operation)
        async with self._locks[key]:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                for result in ("accepted", "rejected"):
                    self._mqtt.unsubscribe(self._topics.shadow(charger_id, operation, result))

    async def _on_answer(self, topic: str, payload: bytes) -> None:
        try:
            answer = json.loads(payload)
        except ValueError:
            return
        if not isinstance(answer, dict):
            return
        future = self._pending.get(str(answer.get("clientToken")))
        if future is None or future.done():
            return
        if topic.endswith("/rejected"):
            future.set_exception(
                ShadowRequestError(int(answer.get("code", 500)), str(answer.get("message", "")))
            )
        else:
            future.set_result(answer)
