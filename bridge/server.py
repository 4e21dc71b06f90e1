"""The OCPP-J websocket server: who may connect, and one live connection per charger id.

At the upgrade (``process_request``) it checks, in order: the path ``/ocpp/{charger_id}``
(404 otherwise, 400 for an id outside the contract) and HTTP Basic credentials with the
charger id as user (OCPP 1.6 security profile 1; 401 with ``WWW-Authenticate: Basic`` for
missing credentials, an unknown charger or a wrong password, unless auto-registration
lets an unknown charger in). Over TLS (``ssl`` set) the same is security profile 2. When
the TLS context requires client certificates (profile 3, :mod:`bridge.tls`) the
certificate replaces Basic auth: its subject CN must be the charger id, and the id must be
registered (or auto-registration on); either failure answers 403, since no HTTP
credentials could fix it.

The subprotocol is chosen by :func:`select_subprotocol`: the first of the charger's list
that the bridge speaks (``ocpp2.0.1`` is served by :mod:`bridge.v201.connections`,
``ocpp1.6`` by :mod:`bridge.connections`). A charger that offers none the
bridge speaks is not refused with an HTTP status: OCPP-J 1.6 section 3.1.2 and RFC 6455
section 4.2.2 have the server complete the handshake without ``Sec-WebSocket-Protocol``,
so the bridge does, and then closes the socket with 1002 (protocol error) before any OCPP.

A second connection for the same id replaces the first: the old socket is closed and its
teardown finished before the new one announces presence, so the old one never publishes
"offline" over the new one's "online".

Deltas and commands come in on two wildcard subscriptions made before the server listens
(``.../chargers/+/shadow/update/delta``, ``.../chargers/+/commands``) and are routed by
charger id to the connection held here; messages for chargers held by another bridge are
dropped. Per-charger subscriptions cost O(chargers) in gmqtt per SUBACK and UNSUBACK and
per routed message (and a resubscription of every topic after each MQTT reconnect), which
made a 5,000-charger reconnect storm take tens of seconds; the price of the wildcard is
that with several bridges each one receives every charger's deltas and commands, a small
stream next to telemetry.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import http
import logging
import ssl
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from bridge.connections import ChargerConnection, ConnectionOptions
from bridge.errorlog import limit_charger_lines
from bridge.handlers import Services
from bridge.heap import trim_heap_periodically
from bridge.keepalive import FleetKeepalive
from bridge.tls import common_name
from bridge.v201.connections import StationConnection
from bridge.v201.transactions import TransactionEvents
from chargetwin.database import DatabaseError
from chargetwin.mqtt import Handler, MqttClient
from chargetwin.topics import InvalidTopicError, validate_charger_id
from twin.registry import ChargerExistsError, ChargerRegistry, WeakPasswordError

log = logging.getLogger(__name__)


class _ProbeFilter(logging.Filter):
    """A TCP connection that closes before sending any request (a load balancer's TCP
    health check, a port scan) is not an error: websockets logs it as "opening handshake
    failed" with a traceback; this turns it into one DEBUG line of ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "opening handshake failed" or not record.exc_info:
            return True
        error = record.exc_info[1]
        while error is not None and not isinstance(error, EOFError):
            error = error.__cause__
        if error is None:
            return True
        log.debug("bridge: a connection closed before its opening handshake (a TCP probe?)")
        return False


logging.getLogger("websockets.server").addFilter(_ProbeFilter())

# What the bridge speaks, in its order of preference; the charger's own order decides
# (select_subprotocol). Each maps to the OCPP version reported in presence and the shadow.
SUBPROTOCOLS = (Subprotocol("ocpp2.0.1"), Subprotocol("ocpp1.6"))
OCPP201 = Subprotocol("ocpp2.0.1")
NO_SUBPROTOCOL_CLOSE = CloseCode.PROTOCOL_ERROR
# Frames websockets buffers per connection before it stops reading the socket (its default
# is 16). A charger has one CALL in flight (OCPP-J 1.6 section 4.1.1) plus answers to ours,
# so 4 is plenty, and a charger that pipelines hostile 64 KiB frames holds at most 256 KiB
# of the bridge's memory instead of 1 MiB; the rest waits in its own TCP buffers.
MAX_QUEUED_FRAMES = 4
PATH_PREFIX = "/ocpp/"
WWW_AUTHENTICATE = 'Basic realm="chargetwin", charset="UTF-8"'


# A live connection: OCPP 1.6 (bridge.connections) or 2.0.1 (bridge.v201.connections).
Connection = ChargerConnection | StationConnection


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Websocket-level knobs (see :class:`bridge.app.BridgeOptions`)."""

    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    max_size: int = 64 * 1024
    close_timeout: float = 5.0
    auto_register: bool = False
    # Pending TCP connections the kernel keeps (capped by net.core.somaxconn): a reconnect
    # storm overflows the default 100, and an overflowed SYN is retried only after 1 s.
    backlog: int = 4096
    ssl: ssl.SSLContext | None = None  # wss:// (security profile 2, or 3 with client certs)

    @property
    def client_certificates(self) -> bool:
        """Security profile 3: chargers authenticate with a verified certificate."""
        return self.ssl is not None and self.ssl.verify_mode == ssl.CERT_REQUIRED


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


def select_subprotocol(offered: Sequence[str]) -> Subprotocol | None:
    """The first subprotocol in the charger's list that the bridge speaks, else None
    (the handshake then completes without one and the socket is closed, see above)."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return Subprotocol(name)
    return None


class OcppServer:
    """Accepts chargers, keeps the current connection of each, wires it to MQTT."""

    def __init__(
        self,
        services: Services,
        registry: ChargerRegistry,
        mqtt: MqttClient,
        server_options: ServerOptions,
        connection_options: ConnectionOptions,
        transaction_events: TransactionEvents,
    ) -> None:
        # A charger's repeated messages must not fill the disk with log lines.
        limit_charger_lines()
        self.services = services
        self.registry = registry
        self.mqtt = mqtt
        self.options = server_options
        self.connection_options = connection_options
        self.connections: dict[str, Connection] = {}
        # OCPP 2.0.1 transactions (bridge.v201.transactions), shared by 2.0.1 connections.
        self.transaction_events = transaction_events
        self._server: Server | None = None
        # Owned here, from start() to stop(): freed heap memory back to the system.
        self._trimmer: asyncio.Task[None] | None = None
        # Pings for every socket from one task (bridge.keepalive), not one task per socket.
        self.keepalive: FleetKeepalive | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        topics = services.reporter.topics
        self._filters: dict[str, Handler] = {
            topics.shadow("+", "update", "delta"): self._route_delta,
            topics.command("+"): self._route_command,
            topics.shadow("+", "delete", "accepted"): self._route_shadow_deleted,
        }

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port) and return the bound port."""
        # Subscribed (acknowledged) before any charger can connect and announce presence:
        # the twin answers "online" with the delta, which must not be missed.
        for topic_filter, handler in self._filters.items():
            await self.mqtt.subscribe_acked(topic_filter, handler)
        if self.options.ping_interval:
            self.keepalive = FleetKeepalive(self.options.ping_interval, self.options.ping_timeout)
            self._keepalive_task = asyncio.create_task(self.keepalive.run(), name="keepalive")
        self._server = await serve(
            self._serve_connection,
            host,
            port,
            subprotocols=list(SUBPROTOCOLS),  # chosen by select_subprotocol (ChargerWebSocket)
            process_request=self._process_request,
            # websockets' own keepalive (a task per socket) is off: _serve_connection hands
            # each connection to self.keepalive instead.
            ping_interval=None,
            ping_timeout=None,
            max_size=self.options.max_size,
            max_queue=MAX_QUEUED_FRAMES,
            close_timeout=self.options.close_timeout,
            ssl=self.options.ssl,
            backlog=self.options.backlog,
            create_connection=ChargerWebSocket,
        )
        bound = int(next(iter(self._server.sockets)).getsockname()[1])
        self._trimmer = asyncio.create_task(trim_heap_periodically(), name="heap trimmer")
        scheme = "ws" if self.options.ssl is None else "wss"
        profile = 3 if self.options.client_certificates else 2 if self.options.ssl else 1
        log.info(
            "bridge: OCPP server listening on %s://%s:%d%s{charger_id} (security profile %d)",
            scheme,
            host,
            bound,
            PATH_PREFIX,
            profile,
        )
        return bound

    async def stop(self) -> None:
        """Close every charger's socket (1001 going away); each publishes itself offline."""
        if self._server is None:
            return
        for task in (self._trimmer, self._keepalive_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._trimmer = self._keepalive_task = None
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None
        for topic_filter in self._filters:
            self.mqtt.unsubscribe(topic_filter)

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
        if self.options.client_certificates:
            return await self._authenticate_certificate(connection, charger_id)
        return await self._authenticate(connection, request, charger_id)

    async def _authenticate_certificate(
        self, connection: ServerConnection, charger_id: str
    ) -> Response | None:
        # The TLS layer has verified the chain against the charger CA (CERT_REQUIRED);
        # what is left is whether the certificate belongs to this charge point identity.
        name = common_name(connection.transport.get_extra_info("peercert"))
        if name != charger_id:
            return _forbidden(connection, charger_id, f"certificate is for {name!r}")
        try:
            if await self.registry.exists(charger_id):
                return None
            if not self.options.auto_register:
                return _forbidden(connection, charger_id, "unknown charger")
            try:
                await self.registry.register(charger_id, None)
                log.info("%s: auto-registered (client certificate)", charger_id)
            except ChargerExistsError:
                pass  # registered by a concurrent connection: the certificate decides
            return None
        except DatabaseError:
            log.exception("%s: registry unavailable during the upgrade", charger_id)
            return connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "charger registry unavailable\n"
            )

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
            except WeakPasswordError as exc:
                return _unauthorized(connection, charger_id, f"not auto-registered: {exc}")
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
        if self.keepalive is None:
            await self._serve_websocket(websocket)
            return
        self.keepalive.watch(websocket)
        try:
            await self._serve_websocket(websocket)
        finally:
            self.keepalive.forget(websocket)

    async def _serve_websocket(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None  # process_request has seen it
        charger_id = unquote(urlsplit(websocket.request.path).path[len(PATH_PREFIX) :])
        if websocket.subprotocol is None:
            offered = websocket.request.headers.get_all("Sec-WebSocket-Protocol")
            log.warning(
                "%s: refused: no supported subprotocol (offered %.100s; supported %s);"
                " closing with %d",
                charger_id,
                ", ".join(offered) or "none",
                ", ".join(SUBPROTOCOLS),
                NO_SUBPROTOCOL_CLOSE,
            )
            reason = "no supported subprotocol; offer one of: " + ", ".join(SUBPROTOCOLS)
            await websocket.close(NO_SUBPROTOCOL_CLOSE, reason)
            return
        connection: Connection
        if websocket.subprotocol == OCPP201:
            connection = StationConnection(
                charger_id,
                websocket,
                self.services,
                self.connection_options,
                self.transaction_events,
            )
        else:
            connection = ChargerConnection(
                charger_id, websocket, self.services, self.connection_options
            )
        previous = self.connections.get(charger_id)
        self.connections[charger_id] = connection
        try:
            if previous is not None:
                await self._replace(previous)
                del previous  # not kept alive for the whole life of the new connection
            if self.connections.get(charger_id) is not connection:
                return  # replaced again while we waited
            await self._run(charger_id, connection)
        finally:
            connection.finished.set()

    @staticmethod
    async def _replace(previous: Connection) -> None:
        log.info("%s: new connection replaces the previous one", previous.charger_id)
        await previous.close(CloseCode.NORMAL_CLOSURE, "replaced by a new connection")
        await previous.finished.wait()

    async def _run(self, charger_id: str, connection: Connection) -> None:
        reporter = self.services.reporter
        # DEBUG: in a restart storm of 5,000, logging took ~9 % of the bridge's samples
        # (py-spy), about 5 % for these lifecycle lines (connected, online, booted) and the
        # rest for the bench's invalid TriggerMessage answers; "booted" (INFO) says enough.
        log.debug("%s: connected", charger_id)  # online once accepted (bridge.connections)
        try:
            await connection.serve()
        finally:
            if self.connections.get(charger_id) is connection:
                del self.connections[charger_id]
                version = "2.0.1" if isinstance(connection, StationConnection) else "1.6"
                reporter.presence(charger_id, False, connection.closed_at, version)
                code = connection.websocket.close_code
                log.info("%s: offline (close code %s)", charger_id, code)

    async def _route_delta(self, topic: str, payload: bytes) -> None:
        connection = self._connection_for(topic)
        if connection is not None:
            connection.on_delta(payload)

    async def _route_command(self, topic: str, payload: bytes) -> None:
        connection = self._connection_for(topic)
        if connection is not None:
            connection.on_command(payload)

    async def _route_shadow_deleted(self, topic: str, payload: bytes) -> None:
        """The API unregisters a charger by removing its registration, then its shadow: a
        charger this bridge holds whose shadow is deleted and that is no longer registered
        is disconnected (it could not connect again). A shadow deleted while the charger
        stays registered changes nothing here."""
        connection = self._connection_for(topic)
        if connection is None or await self.registry.registered(connection.charger_id):
            return
        log.info("%s: unregistered; closing its connection", connection.charger_id)
        await connection.close(CloseCode.POLICY_VIOLATION, "charger unregistered")

    def _connection_for(self, topic: str) -> Connection | None:
        """The connection of the charger a topic names, when this bridge holds it."""
        try:
            charger_id = self.services.reporter.topics.charger_id_of(topic)
        except InvalidTopicError:
            return None
        return self.connections.get(charger_id)


class ChargerWebSocket(ServerConnection):
    """websockets' server connection, without the reference cycles it leaves behind.

    A closed connection otherwise stays in cycles (its logger adapter names it, the
    parser's end-of-stream error keeps frames that hold it), so only a full garbage
    collection frees it: with 10,000 chargers held that stops the bridge for about a
    second (``chargetwin.collector``). Cut here: the adapter names the connection weakly,
    and once the connection is lost the parser's error loses its traceback (the error
    stays, as the cause websockets gives ConnectionClosed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.logger, logging.LoggerAdapter):
            self.logger.extra = {"websocket": weakref.proxy(self)}
        # The subprotocol choice, set on the handshake protocol as websockets itself does for
        # serve(select_subprotocol=...); that argument would wrap it in a closure holding
        # this connection, a reference cycle. (setattr: mypy refuses to assign a method.)
        setattr(self.protocol, "select_subprotocol", select_subprotocol)  # noqa: B010

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.keepalive_task = None  # none runs (bridge.keepalive pings), in case one did
        parser_exc = self.protocol.parser_exc
        if parser_exc is not None:
            parser_exc.__traceback__ = None


def _forbidden(connection: ServerConnection, charger_id: str, why: str) -> Response:
    log.warning("%s: refused: %s", charger_id, why)
    return connection.respond(http.HTTPStatus.FORBIDDEN, f"{why}\n")


def _unauthorized(connection: ServerConnection, charger_id: str, why: str) -> Response:
    log.warning("%s: refused: %s", charger_id, why)
    response = connection.respond(http.HTTPStatus.UNAUTHORIZED, f"{why}\n")
    response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response
