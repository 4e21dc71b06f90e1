"""The OCPP-J websocket server: who may connect, and one live connection per charger id.

At the upgrade (``process_request``) it checks, in order: the path ``/ocpp/{charger_id}``
(404 otherwise, 400 for an id outside the contract), the subprotocol (400 unless the
client offers ``ocpp1.6``, OCPP-J 1.6 section 3.1.2), and HTTP Basic credentials with the
charger id as user (OCPP 1.6 security profile 1; 401 with ``WWW-Authenticate: Basic`` for
missing credentials, an unknown charger or a wrong password, unless auto-registration
lets an unknown charger in).

A second connection for the same id replaces the first: the old socket is closed and its
teardown finished before the new one subscribes and announces presence, so the old one
never publishes "offline" over the new one's "online".
"""

from __future__ import annotations

import base64
import binascii
import http
import logging
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader
from websockets.frames import CloseCode
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from bridge.connections import ChargerConnection, ConnectionOptions
from bridge.handlers import Services
from chargetwin.database import DatabaseError
from chargetwin.mqtt import Handler, MqttClient
from chargetwin.topics import InvalidTopicError, validate_charger_id
from twin.registry import ChargerExistsError, ChargerRegistry

log = logging.getLogger(__name__)

SUBPROTOCOLS = (Subprotocol("ocpp1.6"),)
PATH_PREFIX = "/ocpp/"
WWW_AUTHENTICATE = 'Basic realm="chargetwin", charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Websocket-level knobs (see :class:`bridge.app.BridgeOptions`)."""

    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    max_size: int = 64 * 1024
    close_timeout: float = 5.0
    auto_register: bool = False


def basic_credentials(headers: Headers) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic`` header (RFC 7617), else None."""
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class OcppServer:
    """Accepts chargers, keeps the current connection of each, wires it to MQTT."""

    def __init__(
        self,
        services: Services,
        registry: ChargerRegistry,
        mqtt: MqttClient,
        server_options: ServerOptions,
        connection_options: ConnectionOptions,
    ) -> None:
        self.services = services
        self.registry = registry
        self.mqtt = mqtt
        self.options = server_options
        self.connection_options = connection_options
        self.connections: dict[str, ChargerConnection] = {}
        self._server: Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port) and return the bound port."""
        self._server = await serve(
            self._serve_connection,
            host,
            port,
            subprotocols=list(SUBPROTOCOLS),
            process_request=self._process_request,
            ping_interval=self.options.ping_interval,
            ping_timeout=self.options.ping_timeout,
            max_size=self.options.max_size,
            close_timeout=self.options.close_timeout,
        )
        bound = int(next(iter(self._server.sockets)).getsockname()[1])
        log.info(
            "bridge: OCPP server listening on ws://%s:%d%s{charger_id}", host, bound, PATH_PREFIX
        )
        return bound

    async def stop(self) -> None:
        """Close every charger's socket (1001 going away); each publishes itself offline."""
        if self._server is None:
            return
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None

    # --- the upgrade -----------------------------------------------------------------------
    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = urlsplit(request.path).path
        if not path.startswith(PATH_PREFIX):
            return connection.respond(http.HTTPStatus.NOT_FOUND, "use /ocpp/{charger_id}\n")
        # OCPP-J 1.6 section 3.1.1: the charge point identity is the last path segment,
        # percent-encoded.
        charger_id = unquote(path[len(PATH_PREFIX) :])
        try:
            validate_charger_id(charger_id)
        except InvalidTopicError as exc:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{exc}\n")
        offered = _offered_subprotocols(request.headers)
        if offered is None or not set(offered) & set(SUBPROTOCOLS):
            log.warning("%s: refused: subprotocol %s not supported", charger_id, offered)
            return connection.respond(
                http.HTTPStatus.BAD_REQUEST,
                f"unsupported or missing subprotocol {offered}; offer one of: "
                + ", ".join(SUBPROTOCOLS)
                + "\n",
            )
        return await self._authenticate(connection, request, charger_id)

    async def _authenticate(
        self, connection: ServerConnection, request: Request, charger_id: str
    ) -> Response | None:
        credentials = basic_credentials(request.headers)
        if credentials is None:
            return _unauthorized(connection, charger_id, "HTTP Basic credentials required")
        user, password = credentials
        if user != charger_id:
            return _unauthorized(connection, charger_id, "user must be the charger id")
        try:
            if await self.registry.verify(charger_id, password):
                return None
            if not self.options.auto_register or await self.registry.exists(charger_id):
                return _unauthorized(connection, charger_id, "unknown charger or wrong password")
            try:
                await self.registry.register(charger_id, password)
                log.info("%s: auto-registered", charger_id)
                return None
            except ChargerExistsError:
                # Registered by a concurrent connection: its password decides.
                if await self.registry.verify(charger_id, password):
                    return None
                return _unauthorized(connection, charger_id, "wrong password")
        except DatabaseError:
            log.exception("%s: registry unavailable during the upgrade", charger_id)
            return connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "charger registry unavailable\n"
            )

    # --- a live connection -------------------------------------------------------------------
    async def _serve_connection(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None  # process_request has seen it
        charger_id = unquote(urlsplit(websocket.request.path).path[len(PATH_PREFIX) :])
        connection = ChargerConnection(
            charger_id, websocket, self.services, self.connection_options
        )
        previous = self.connections.get(charger_id)
        self.connections[charger_id] = connection
        try:
            if previous is not None:
                log.info("%s: new connection replaces the previous one", charger_id)
                await previous.close(CloseCode.NORMAL_CLOSURE, "replaced by a new connection")
                await previous.finished.wait()
            if self.connections.get(charger_id) is not connection:
                return  # replaced again while we waited
            await self._run(charger_id, connection)
        finally:
            connection.finished.set()

    async def _run(self, charger_id: str, connection: ChargerConnection) -> None:
        reporter = self.services.reporter
        topics = reporter.topics
        delta_topic = topics.shadow(charger_id, "update", "delta")
        # Subscribe before announcing presence: the twin answers "online" with the delta.
        self.mqtt.subscribe(delta_topic, self._route_delta(charger_id))
        self.mqtt.subscribe(topics.command(charger_id), self._route_command(charger_id))
        reporter.presence(charger_id, True, connection.since)
        log.info("%s: connected", charger_id)
        try:
            await connection.serve()
        finally:
            if self.connections.get(charger_id) is connection:
                del self.connections[charger_id]
                self.mqtt.unsubscribe(delta_topic)
                self.mqtt.unsubscribe(topics.command(charger_id))
                reporter.presence(charger_id, False, connection.closed_at)
                log.info("%s: offline", charger_id)

    def _route_delta(self, charger_id: str) -> Handler:
        async def route(topic: str, payload: bytes) -> None:
            connection = self.connections.get(charger_id)
            if connection is not None:
                connection.on_delta(payload)

        return route

    def _route_command(self, charger_id: str) -> Handler:
        async def route(topic: str, payload: bytes) -> None:
            connection = self.connections.get(charger_id)
            if connection is not None:
                connection.on_command(payload)

        return route


def _offered_subprotocols(headers: Headers) -> list[str] | None:
    try:
        offered: list[str] = []
        for value in headers.get_all("Sec-WebSocket-Protocol"):
            offered.extend(parse_subprotocol(value))
    except InvalidHeader:
        return None
    return offered


def _unauthorized(connection: ServerConnection, charger_id: str, why: str) -> Response:
    log.warning("%s: refused: %s", charger_id, why)
    response = connection.respond(http.HTTPStatus.UNAUTHORIZED, f"{why}\n")
    response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response
