"""Request and answer on a charger's shadow topics, for components that change shadows.

The API, the fleet engines and the rules engine change desired state only by publishing
``shadow/update`` (they never write the shadow store), and wait for ``accepted`` or
``rejected`` with the same ``clientToken`` (:mod:`chargetwin.correlation`), so the process
only receives answers for chargers it is asking about.
"""

from __future__ import annotations

from typing import Any

from chargetwin.correlation import Correlator
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
        self._topics = topics
        self._timeout = timeout
        self._requests = Correlator(mqtt)

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
        answers = tuple(
            self._topics.shadow(charger_id, operation, result)
            for result in ("accepted", "rejected")
        )
        try:
            topic, answer = await self._requests.ask(
                self._topics.shadow(charger_id, operation), request, answers, self._timeout
            )
        except TimeoutError as exc:
            raise ShadowTimeoutError(
                f"no answer from the twin for {charger_id} in {self._timeout:g} s"
            ) from exc
        if topic.endswith("/rejected"):
            raise ShadowRequestError(int(answer.get("code", 500)), str(answer.get("message", "")))
        return answer
