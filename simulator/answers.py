"""A charger acts on an answer before it handles the central system's next call.

The ocpp library reads messages in one task and hands a CALLRESULT to the task that made
the call through a queue: if the central system's next CALL is already in the socket's
buffer (a BootNotification answer followed at once by GetConfiguration, say), the library
handles that CALL before the caller has even seen its answer. A real charger processes its
input in order, so a simulated one answered GetConfiguration with the HeartbeatInterval
from before the boot answer set it, and the shadow showed a stale value until the next
boot. :class:`AnswersFirst` makes the reading task wait, after queuing the answer to the
call in flight, until that call has returned to its caller and the caller has run up to
its next ``await`` (where it applies the answer).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ocpp.messages import MessageType, unpack

__all__ = ["AnswersFirst"]


class AnswersFirst:
    """Mixed in before the ocpp library's ``ChargePoint`` (1.6 or 2.0.1)."""

    _response_queue: asyncio.Queue[Any]
    _unique_id_generator: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight: str | None = None  # the unique id of our call awaiting its answer
        self._returned = asyncio.Event()
        self._returned.set()
        self._one_call = asyncio.Lock()

    async def call(self, payload: Any, *args: Any, **kwargs: Any) -> Any:
        async with self._one_call:
            unique_id = kwargs.pop("unique_id", None) or str(self._unique_id_generator())
            self._in_flight = unique_id
            self._returned.clear()
            try:
                return await super().call(payload, *args, unique_id=unique_id, **kwargs)  # type: ignore[misc]
            finally:
                # Set before the caller resumes; the reading task wakes a loop turn later,
                # after the caller's code up to its next await has run.
                self._in_flight = None
                self._returned.set()

    async def route_message(self, raw_msg: Any) -> None:
        await super().route_message(raw_msg)  # type: ignore[misc]
        if self._in_flight is None:
            return
        try:
            message = unpack(raw_msg)
        except Exception:  # the library has logged it
            return
        if (
            message.message_type_id in (MessageType.CallResult, MessageType.CallError)
            and message.unique_id == self._in_flight
        ):
            await self._returned.wait()
