"""One socket write per event-loop turn for an MQTT connection.

gmqtt writes every packet to its transport at once, and asyncio's socket transport sends
each write with its own ``send()`` system call when its buffer is empty. A bridge that
answers a few thousand MeterValues per second publishes as many messages: profiled under
load, the ``send()`` calls to the broker were the largest single cost of the bridge
process (38% of its samples). Packets written in one turn of the event loop (the frames
of every charger whose socket was readable) are joined here and sent once, at the start
of the next turn: the delay is one loop turn, never a timer.

Order is kept (one buffer, flushed in order), and nothing is held across a close: closing
flushes first, so a DISCONNECT written just before is still sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["CoalescedWrites", "coalesce_writes"]


class CoalescedWrites:
    """A transport proxy: ``write`` buffers, one flush per loop turn; the rest delegates."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, abort, get_extra_info, ...
        return getattr(self.transport, name)


def coalesce_writes(connection: Any) -> None:
    """Put :class:`CoalescedWrites` between a gmqtt connection (and its protocol) and the
    socket. gmqtt (0.7, 0.8) keeps the transport in ``_transport`` on both objects; a
    connection made by a reconnect is wrapped again by the caller's on-connect."""
    protocol = getattr(connection, "_protocol", None)
    transport = getattr(connection, "_transport", None)
    if transport is None or isinstance(transport, CoalescedWrites):
        return
    proxy = CoalescedWrites(transport)
    connection._transport = proxy
    if protocol is not None and getattr(protocol, "_transport", None) is transport:
        protocol._transport = proxy
