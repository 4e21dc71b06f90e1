"""Opening a charger's websocket, and waiting before the next attempt when that fails.

OCPP-J 1.6 section 3 (connection): the charger connects to ``{endpoint}/{chargeBoxId}``
asking for subprotocol ``ocpp1.6``; with security profile 1 (OCPP 1.6 security white paper,
section 2.3) it sends HTTP Basic credentials, user = charge point id. A central system
refuses bad credentials with 401 at the upgrade, which is a configuration problem and not a
network blip, so it is raised as its own exception and retried slowly.

Exceptions raised here::

    Offline                 a message was to be sent while no connection is open
    ConnectError            could not get an open OCPP websocket (network, timeout, HTTP status)
    └── Unauthorized        the central system answered the upgrade with 401
"""

from __future__ import annotations

import base64
import random

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

__all__ = ["Backoff", "ConnectError", "Offline", "Unauthorized", "open_connection"]

SUBPROTOCOL = Subprotocol("ocpp1.6")


class Offline(Exception):
    """A message was to be sent while the charger has no connection; it is dropped."""


class ConnectError(Exception):
    """The websocket could not be opened; ``str()`` says why in one line."""


class Unauthorized(ConnectError):
    """HTTP 401 at the upgrade: wrong password or a charger the central system doesn't know."""


def basic_auth(user: str, password: str) -> str:
    """The Authorization header value of RFC 7617 Basic auth."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


async def open_connection(
    url: str,
    charger_id: str,
    password: str | None,
    *,
    open_timeout: float,
    ping_interval: float | None,
    subprotocol: Subprotocol = SUBPROTOCOL,
) -> ClientConnection:
    """Open ``{url}/{charger_id}`` with ``subprotocol`` (ocpp1.6 unless told) and Basic auth.

    Compression is off: permessage-deflate keeps a zlib context per socket, which costs
    far more memory than the rest of a simulated charger, and chargers rarely ask for it.
    """
    headers = {} if password is None else {"Authorization": basic_auth(charger_id, password)}
    try:
        ws = await connect(
            f"{url.rstrip('/')}/{charger_id}",
            subprotocols=[subprotocol],
            additional_headers=headers,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            compression=None,
            max_queue=8,
            user_agent_header="ChargeTwin-Simulator",
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status == 401:
            raise Unauthorized(f"401 Unauthorized at the upgrade of {url}") from exc
        raise ConnectError(f"HTTP {status} at the upgrade of {url}") from exc
    except InvalidHandshake as exc:
        raise ConnectError(f"handshake failed: {exc}") from exc
    except TimeoutError as exc:
        raise ConnectError(f"no answer within {open_timeout:g} s") from exc
    except OSError as exc:
        raise ConnectError(f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    if ws.subprotocol != subprotocol:
        # OCPP-J 1.6 section 3.1.2: without the agreed subprotocol there is no OCPP session.
        await ws.close()
        raise ConnectError(
            f"central system agreed subprotocol {ws.subprotocol!r}, not {subprotocol}"
        )
    return ws


class Backoff:
    """Exponential backoff with jitter, so a fleet that lost its server doesn't return
    as one thundering herd (delays spread between half and all of the exponential step)."""

    __slots__ = ("_attempt", "_max", "_min", "_rng")

    def __init__(self, minimum: float, maximum: float, rng: random.Random) -> None:
        self._min = minimum
        self._max = maximum
        self._rng = rng
        self._attempt = 0

    def next(self) -> float:
        step = min(self._max, self._min * float(1 << self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return step * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._attempt = 0
