"""Request and answer on a charger's command topics, for components that send commands.

A command is published on ``.../commands`` as ``{"name", "payload", "clientToken"}``; the
bridge holding the charger's socket answers on ``.../commands/result`` with the same
``clientToken`` (``bridge/README.md``); :mod:`chargetwin.correlation` subscribes to a
charger's results only while someone waits on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chargetwin.correlation import Correlator
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
        self._topics = topics
        self.timeout = timeout
        self._requests = Correlator(mqtt)

    async def send(
        self, charger_id: str, name: str, payload: dict[str, Any], *, timeout: float | None = None
    ) -> CommandResult:
        """Publish the command and return the charger's answer, or raise :class:`CommandError`."""
        limit = self.timeout if timeout is None else timeout
        topic = self._topics.command(charger_id)
        try:
            _, answer = await self._requests.ask(
                topic, {"name": name, "payload": payload}, (f"{topic}/result",), limit
            )
        except TimeoutError as exc:
            raise CommandTimeoutError(
                f"no result for {name} on {charger_id} within {limit:g} s"
            ) from exc
        if answer.get("status") != "ok":
            ocpp_error = answer.get("ocppError")
            raise CommandError(
                int(answer.get("code", 500)),
                str(answer.get("message", "")),
                str(ocpp_error) if ocpp_error is not None else None,
            )
        response = answer.get("response")
        return CommandResult(name, response if isinstance(response, dict) else {})
