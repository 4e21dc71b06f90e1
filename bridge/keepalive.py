"""Websocket keepalive for the whole fleet of one bridge: one timer, not one per socket.

Same rule as websockets' own keepalive (``--ocpp-ping-interval``, ``--ocpp-ping-timeout``):
every connection gets a Ping every ``interval`` seconds, and one whose Pong has not come
``timeout`` seconds after its Ping is failed (close code 1011, "keepalive ping timeout"),
so a charger that vanished without closing its socket goes offline. What differs is the
cost. websockets runs a task per connection that sleeps, pings and waits for the pong
under a timeout: each ping is two wake-ups of its own, spread over the interval as the
connections were. With 2,000 chargers that was 4-5% of a core of an idle bridge (100
pings a second) and about half a millisecond of bridge CPU per charger in a firmware
campaign (``bench.campaigns``). Here one task wakes once every ``tick`` seconds, sends the
pings that are due in that turn and looks at the pongs that came (each ping's future is
only read, never awaited), so pings and timeouts are late by at most ``tick``.

A connection whose writes are paused (the charger does not read what it is sent) gets no
ping while paused; it is failed once it has been due for longer than ``timeout``, as one
whose pong did not come.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

log = logging.getLogger(__name__)

TICK = 1.0


@dataclass(slots=True)
class _Watch:
    due: float  # when the next ping is due (monotonic clock)
    sent: float = 0.0  # when the ping in flight was sent
    pong: asyncio.Future[float] | None = None  # the ping in flight: its pong's future


class FleetKeepalive:
    """Pings every connection :meth:`watch` was given, from one task (:meth:`run`)."""

    def __init__(
        self,
        interval: float,
        timeout: float | None,
        *,
        tick: float = TICK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.timeout = timeout
        self.tick = min(tick, interval)
        self._clock = clock
        self._watched: dict[Connection, _Watch] = {}
        self._failing: set[asyncio.Task[None]] = set()
        self.pings_sent = 0
        self.timed_out = 0

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, connection: Connection) -> None:
        """From the end of the opening handshake."""
        self._watched[connection] = _Watch(self._clock() + self.interval)

    def forget(self, connection: Connection) -> None:
        """When the connection's handler ends."""
        self._watched.pop(connection, None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.ping_due()
            except Exception:  # one bad turn must not end every charger's keepalive
                log.exception("keepalive: a turn failed; trying again in %.1f s", self.tick)

    async def ping_due(self) -> None:
        """One turn: read the pongs, fail the late, ping the due."""
        now = self._clock()
        for connection, watch in list(self._watched.items()):
            if watch.pong is not None:
                if not watch.pong.done():
                    if self.timeout is not None and now - watch.sent > self.timeout:
                        self._fail(connection)
                    continue
                watch.pong = None  # answered (or the connection closed meanwhile)
            if now < watch.due:
                continue
            if connection.state is not State.OPEN:
                continue  # closing: connection_lost forgets it
            if connection.paused:
                if self.timeout is not None and now - watch.due > self.timeout:
                    self._fail(connection)
                continue
            try:
                # Not paused and open: websockets writes the frame and returns at once.
                watch.pong = asyncio.ensure_future(await connection.ping())
            except ConnectionClosed:
                self.forget(connection)
                continue
            except Exception:
                log.exception("keepalive: could not ping a connection; trying again later")
                watch.due = now + self.interval
                continue
            watch.sent = now
            watch.due = now + self.interval
            self.pings_sent += 1

    def _fail(self, connection: Connection) -> None:
        """As websockets' keepalive does: fail the connection with 1011."""
        self.forget(connection)
        self.timed_out += 1
        task = asyncio.get_running_loop().create_task(_fail(connection))
        self._failing.add(task)
        task.add_done_callback(self._failing.discard)


async def _fail(connection: Connection) -> None:
    try:
        async with connection.send_context():
            connection.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("keepalive: could not fail a connection whose pong did not come")
