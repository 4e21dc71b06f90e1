"""The embedded MQTT broker (amqtt) of the one-process deployment.

Like Mosquitto 2 without configuration it listens on the loopback address only and lets
local clients in without credentials; anything wider must use a real broker with a
password file and ACLs (see ``mosquitto/``). amqtt speaks MQTT 3.1.1 without shared
subscriptions, which the one-process deployment does not need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

log = logging.getLogger(__name__)


class BrokerStartError(RuntimeError):
    """The embedded broker could not listen (usually: the port is taken)."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedBroker:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        if not port_is_free(self.host, self.port):
            raise BrokerStartError(
                f"cannot start the embedded MQTT broker: {self.host}:{self.port} is in use "
                "(pass --mqtt-url mqtt://HOST:PORT to use that broker, or --mqtt-port)"
            )
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        # amqtt logs every packet at INFO; keep our logs readable.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(config)
        try:
            await self._broker.start()
        except Exception as exc:
            raise BrokerStartError(f"embedded MQTT broker failed to start: {exc}") from exc
        log.info("embedded MQTT broker listening on %s", self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._broker.shutdown(), 10)
            self._broker = None
