"""The asyncio MQTT client every ChargeTwin service uses, on gmqtt.

Why a wrapper: gmqtt reconnects by itself but does not subscribe again when the broker
lost the session (a restarted embedded broker, Mosquitto without persistence), routes all
messages to one callback, and logs instead of raising. This class keeps the subscriptions
and re-sends them on every connect, routes each message to the handler of the filter that
matched it (``+``, ``#`` and ``$share/GROUP/`` understood), and answers the broker's
PUBACK only once the handler has finished, so a message is acknowledged after its work is
durable (at-least-once end to end). gmqtt acknowledges on receipt unless constructed with
``optimistic_acknowledgement=False``; a message still in its handler when the process dies
is therefore the broker's to send again.

Publishing goes through an outbox (:mod:`chargetwin.outbox`) that loses nothing across
reconnects and reports each message's PUBACK to the request being answered, if any
(:mod:`chargetwin.deliveries`). A publisher given a :class:`~chargetwin.readiness.SubscriberGate`
holds its messages after every connect until the subscribers it needs are back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from gmqtt import Client as GmqttClient
from gmqtt import Message
from gmqtt.mqtt.constants import MQTTv311

from chargetwin import deliveries
from chargetwin.coalesced_writes import coalesce_writes
from chargetwin.json_text import compact_bytes
from chargetwin.outbox import Delivery, Outbox
from chargetwin.readiness import SubscriberGate

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[None]]
Payload = bytes | str | dict[str, Any] | list[Any] | None

_PUBACK_SUCCESS = 0
_PUBACK_UNSPECIFIED_ERROR = 0x80
# A subscriber's new session announced up to this long before we noticed our own
# disconnection still counts as lost with the same broker restart.
_SESSION_LOSS_SLACK = 30.0
_GATE_WARNING_AFTER = 5.0
# How long a message of a persistent session waits for its handler to be registered.
_HANDLER_WAIT = 30.0
_DISCONNECT_TIMEOUT = 5.0


class MqttError(RuntimeError):
    """The broker could not be reached or refused us."""


class _Unacknowledged(Exception):
    """A received message must stay unacknowledged (we are stopping without its handler)."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        tls = parts.scheme in ("mqtts", "ssl")
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise MqttError(f"bad MQTT URL {url!r}: use mqtt://host:1883 or mqtts://host:8883")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 section 4.7 matching, with a ``$share/GROUP/`` prefix ignored."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts):
            return False
        if part != "+" and part != t_parts[i]:
            return False
    return len(f_parts) == len(t_parts)


def encode(payload: Payload) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return compact_bytes(payload)


class MqttClient:
    """One connection to the broker with handlers per topic filter.

    Use as ``async with MqttClient(url, "twin") as mqtt:``; ``subscribe`` before or after
    connecting, ``publish`` at any time (QoS 1 messages wait in gmqtt's queue while the
    connection is down and are sent again after it).
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        clean_session: bool = True,
        will: tuple[str, Payload, bool] | None = None,
        keepalive: int = 30,
        reconnect_delay: float = 1.0,
        outbox_limit: int = 10_000,
        gate: SubscriberGate | None = None,
        replay_window: float = 0.0,
        confirm_timeout: float = 10.0,
    ) -> None:
        self.address = BrokerAddress.parse(url)
        self.client_id = client_id
        self._clean_session = clean_session
        self._keepalive = keepalive
        self._handlers: dict[str, tuple[int, Handler]] = {}
        self._handler_added = asyncio.Event()
        self._on_connect_hooks: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._connected = asyncio.Event()
        self._lost_at: float | None = None  # wall-clock time the last connection was lost
        self.session_present = False  # the broker's CONNACK flag of the current connection
        self.connections = 0  # connections made so far (CONNACKs): tells them apart
        self._gate = gate
        self._closing = False
        self._gone = asyncio.Event()  # set once disconnect() closed the connection
        self._tasks: set[asyncio.Task[None]] = set()
        will_message = None
        if will is not None:
            topic, payload, retain = will
            will_message = Message(topic, encode(payload), qos=1, retain=retain)
        # optimistic_acknowledgement=False: gmqtt's default answers PUBACK as a message
        # arrives, before its handler ran; a kill -9 then lost what the handler held (the
        # recorder's open batch). Deferred, gmqtt sends the PUBACK when _on_message returns.
        self._client = GmqttClient(
            client_id,
            clean_session=clean_session,
            will_message=will_message,
            optimistic_acknowledgement=False,
        )
        self._client.set_config({"reconnect_retries": -1, "reconnect_delay": reconnect_delay})
        if self.address.username:
            self._client.set_auth_credentials(self.address.username, self.address.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self.outbox = Outbox(
            self._client,
            self._can_send,
            limit=outbox_limit,
            replay_window=replay_window,
            confirm_timeout=confirm_timeout,
        )
        self._expiry: asyncio.Task[None] | None = None
        self.on_connect(self.outbox.flush)
        self._suback: dict[int, asyncio.Future[None]] = {}
        self._resubscribed: list[asyncio.Future[None]] = []
        if gate is not None:
            self._handlers[gate.topic_filter] = (1, gate.on_status)
            gate.on_open = self._gate_opened

    # --- lifecycle ---------------------------------------------------------------------
    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, retrying until ``timeout``; raise :class:`MqttError` when it passes."""
        ctx: ssl.SSLContext | bool = ssl.create_default_context() if self.address.tls else False
        deadline = asyncio.get_running_loop().time() + timeout
        delay = 0.1
        while True:
            try:
                await self._client.connect(
                    self.address.host,
                    self.address.port,
                    ssl=ctx,
                    keepalive=self._keepalive,
                    version=MQTTv311,
                )
                break
            except Exception as exc:  # gmqtt raises OSError, TimeoutError and bare errors
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise MqttError(
                        f"cannot reach MQTT broker {self.address.host}:{self.address.port}: {exc}"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        await asyncio.wait_for(self._connected.wait(), timeout)
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().create_task(
                self._expire_deliveries(), name=f"mqtt-expiry-{self.client_id}"
            )
        # Return only once the broker confirmed every subscription: a request published
        # by someone else right after we "started" must not fall between the chairs.
        pending = self._resubscribed
        await asyncio.wait_for(asyncio.gather(*pending), timeout)

    async def disconnect(self) -> None:
        self._closing = True
        self._handler_added.set()  # messages waiting for a handler give up (unacknowledged)
        expiry, self._expiry = self._expiry, None
        if expiry is not None:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
        for task in list(self._tasks):
            task.cancel()
        # Bounded: a stop must not wait forever on a broker that stopped answering.
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_DISCONNECT_TIMEOUT):
                    await self._client.disconnect()
        finally:
            self._connected.clear()
            self._gone.set()  # messages kept unacknowledged may return now: no PUBACK goes

    async def __aenter__(self) -> MqttClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_subscribed(self) -> None:
        """Wait until the broker acknowledged the subscriptions sent at the last connect."""
        await asyncio.gather(*self._resubscribed)

    def _can_send(self) -> bool:
        return self._connected.is_set() and (self._gate is None or self._gate.is_open)

    def set_will(self, topic: str, payload: Payload, retain: bool) -> None:
        """The last will sent with the next (re)connect (this connection keeps its own)."""
        self._client._will_message = Message(topic, encode(payload), qos=1, retain=retain)

    def on_connect(self, hook: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``hook`` after every (re)connect, once subscriptions are re-sent."""
        self._on_connect_hooks.append(hook)

    # --- subscriptions -----------------------------------------------------------------
    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Route messages matching ``topic_filter`` to ``handler`` (kept across reconnects)."""
        self._handlers[topic_filter] = (qos, handler)
        self._handler_added.set()
        if self.is_connected:
            self._client.subscribe(topic_filter, qos=qos)

    async def subscribe_acked(
        self, topic_filter: str, handler: Handler, qos: int = 1, timeout: float = 5.0
    ) -> None:
        """Subscribe and wait for the broker's SUBACK, so a request published next is seen."""
        self._handlers[topic_filter] = (qos, handler)
        self._handler_added.set()
        await self.wait_connected()
        mid = self._client.subscribe(topic_filter, qos=qos)
        future = self._suback[mid] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._suback.pop(mid, None)

    def unsubscribe(self, topic_filter: str) -> None:
        if self._handlers.pop(topic_filter, None) is not None and self.is_connected:
            self._client.unsubscribe(topic_filter)

    # --- publishing ----------------------------------------------------------------------
    def publish(
        self, topic: str, payload: Payload, *, qos: int = 1, retain: bool = False
    ) -> Delivery | None:
        """QoS 1 (the default) goes through the outbox: held while the broker is away and
        sent again if the broker never acknowledged it, so nothing published is lost.

        Returns the message's delivery (True at the broker's PUBACK), which the request
        being answered, if any, also waits for (:func:`chargetwin.deliveries.confirmed`)."""
        if qos == 1:
            delivery = self.outbox.publish(topic, encode(payload), retain=retain)
            deliveries.track(delivery)
            return delivery
        self._client.publish(topic, encode(payload), qos=qos, retain=retain)
        return None

    @property
    def waiting(self) -> int:
        """QoS 1 messages the broker has not acknowledged yet."""
        return self.outbox.waiting

    async def drain(self, timeout: float) -> bool:
        """Wait until the broker acknowledged everything published; False on timeout."""
        return await self.outbox.drain(timeout)

    # --- gmqtt callbacks -------------------------------------------------------------------
    def _on_connect(self, client: Any, flags: int, rc: int, properties: Any) -> None:
        loop = asyncio.get_running_loop()
        self.session_present = bool(flags)
        if self._gate is not None:
            self._gate.reset()
            if not self._gate.is_open:
                self._spawn(self._warn_while_gated())
        self.connections += 1
        coalesce_writes(getattr(self._client, "_connection", None))
        self._resubscribed = []
        for topic_filter, (qos, _) in self._handlers.items():
            mid = self._client.subscribe(topic_filter, qos=qos)
            future = self._suback[mid] = loop.create_future()
            self._resubscribed.append(future)
        self._connected.set()
        log.info(
            "MQTT connected to %s:%s as %s", self.address.host, self.address.port, self.client_id
        )
        for hook in self._on_connect_hooks:
            self._spawn(hook())

    async def _expire_deliveries(self) -> None:
        """Whoever waits for a PUBACK gives up after the outbox's ``confirm_timeout``."""
        while True:
            await asyncio.sleep(min(1.0, self.outbox.confirm_timeout / 4))
            self.outbox.expire(time.monotonic())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _gate_opened(self) -> None:
        """The subscribers are back: replay what a broker that lost them never delivered,
        then send what waited."""
        assert self._gate is not None
        if self._lost_at is not None and self._gate.lost_sessions_since(
            self._lost_at - _SESSION_LOSS_SLACK
        ):
            replayed = self.outbox.replay_recent()
            if replayed:
                log.warning(
                    "MQTT: the broker lost its subscribers' sessions; %d messages it had "
                    "acknowledged just before are sent again",
                    replayed,
                )
        self._spawn(self.outbox.flush())

    async def _warn_while_gated(self) -> None:
        """Every few seconds while the gate stays shut on this connection: say so, and
        subscribe to the statuses again, so the broker sends the retained ones once more
        (MQTT 3.1.1 section 3.8.4): an announcement missed for any reason must not hold
        every message (and every charger's answer) until the next reconnect."""
        assert self._gate is not None
        connection = self.connections
        while not self._closing and self.connections == connection and self.is_connected:
            try:
                async with asyncio.timeout(_GATE_WARNING_AFTER):
                    await self._gate.wait_open()
                return
            except TimeoutError:
                pass
            if self.connections != connection or not self.is_connected or self._closing:
                return  # the next connection has its own
            log.warning(
                "MQTT: holding %d messages until %s announce their subscriptions on %s",
                self.outbox.waiting,
                ", ".join(self._gate.missing),
                self._gate.topic_filter,
            )
            self._client.subscribe(self._gate.topic_filter, qos=1)

    async def reconnect(self) -> None:
        """Drop this connection and make a new one (subscriptions and hooks run again)."""
        if not self._closing:
            # delay=True: gmqtt's own reconnect, scheduled as the old socket closes, finds
            # ours under way and stands back (with no delay it could open a second one).
            await self._client.reconnect(delay=True)

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        future = self._suback.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _on_disconnect(self, client: Any, packet: Any, exc: Exception | None = None) -> None:
        if self._connected.is_set():
            self._lost_at = time.time()
        if self._connected.is_set() and not self._closing:
            log.warning(
                "MQTT connection to %s:%s lost; reconnecting", self.address.host, self.address.port
            )
        self._connected.clear()

    async def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        """gmqtt sends the PUBACK of a QoS 1 message when this returns (never before: see
        ``optimistic_acknowledgement``), so it must return a code and never raise: gmqtt
        reads the result in a done-callback, where an exception is only logged."""
        handler = self._route(topic)
        if handler is None and not self._clean_session:
            try:
                handler = await self._handler_to_come(topic)
            except _Unacknowledged:
                return await self._unacknowledged()
        if handler is None:
            return _PUBACK_SUCCESS
        try:
            await handler(topic, payload)
        except asyncio.CancelledError:
            # Cancelled (the loop is closing): no PUBACK, the broker sends it again.
            return await self._unacknowledged()
        except Exception:
            # The handler's own errors must never kill the connection; the message is
            # acknowledged anyway, as redelivery would only fail the same way again.
            log.exception("handler for %s failed", topic)
            return _PUBACK_UNSPECIFIED_ERROR
        return _PUBACK_SUCCESS

    async def _unacknowledged(self) -> int:
        """Keep a message unacknowledged: return only once our connection is closed, so
        the PUBACK gmqtt then writes goes nowhere and the broker keeps the message."""
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(_DISCONNECT_TIMEOUT):  # a loop shutting down
                await self._gone.wait()
        return _PUBACK_UNSPECIFIED_ERROR

    async def _handler_to_come(self, topic: str) -> Handler | None:
        """A persistent session gets what the broker kept for it right after CONNACK, maybe
        before the application subscribed again (the recorder subscribes once connected):
        wait for its handler instead of acknowledging the message unhandled (it was lost
        that way after a kill -9)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _HANDLER_WAIT
        while (remaining := deadline - loop.time()) > 0:
            if self._closing:
                # Not acknowledged: the broker keeps it in the session for the next start.
                raise _Unacknowledged
            self._handler_added.clear()
            handler = self._route(topic)  # after the clear: a subscribe now is not missed
            if handler is not None:
                return handler
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._handler_added.wait()
        log.warning(
            "MQTT: no handler for %s after %g s; acknowledged unhandled", topic, _HANDLER_WAIT
        )
        return None

    def _route(self, topic: str) -> Handler | None:
        for topic_filter, (_, handler) in self._handlers.items():
            if topic_matches(topic_filter, topic):
                return handler
        return None

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("MQTT on-connect hook failed", exc_info=task.exception())


_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")
MAX_INSTANCES = 64
INSTANCES_FOLDER = "instances"  # in --data-dir: the slots of the components


def host_name() -> str:
    """This host's name, as it may appear in a client id."""
    return _UNSAFE_ID.sub("_", socket.gethostname()) or "host"


class InstanceSlot:
    """A numbered place that one process of a component holds in the data directory.

    Why: a component with a persistent session (twin, rules) needs a client id that a
    restart takes back, and that no other running process of the component uses (the
    broker disconnects the older of two clients with one id, and they take turns). The
    slot is a file ``{folder}/{component}-{n}`` holding a name made at its first claim
    (``{host}-{8 hex}``), locked with ``flock`` while the process lives: a process takes
    the lowest free slot, so a restarted one gets its old name back and a second one on
    the same data directory the next. The kernel drops the lock when the process dies
    (kill -9 included). Folders on different hosts or volumes hold different names.
    """

    def __init__(self, folder: Path, component: str, number: int, name: str, fd: int) -> None:
        self.folder = folder
        self.component = component
        self.number = number
        self.name = name
        self._fd: int | None = fd

    @classmethod
    def claim(cls, folder: Path, component: str, *, limit: int = MAX_INSTANCES) -> InstanceSlot:
        """The lowest slot no running process holds; ``RuntimeError`` when all are held."""
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(limit):
            fd = os.open(folder / f"{component}-{number}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                name = _slot_name(fd)
            except BaseException:
                os.close(fd)
                raise
            return cls(folder, component, number, name, fd)
        raise RuntimeError(
            f"all {limit} {component} instance slots in {folder} are held by running processes"
        )

    def release(self) -> None:
        """Give the slot up (closing the descriptor drops the lock); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _slot_name(fd: int) -> str:
    """The name kept in a slot file, written (and fsynced) on its first claim."""
    kept = os.pread(fd, 256, 0).decode("ascii", "replace").strip()
    if kept and not _UNSAFE_ID.search(kept):
        return kept
    name = f"{host_name()}-{uuid.uuid4().hex[:8]}"
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{name}\n".encode(), 0)
    os.fsync(fd)
    return name


def client_id_for(
    component: str, base: str | None = None, *, slot: InstanceSlot | None = None
) -> str:
    """The MQTT client id of one process of ``component``: the one rule of every component.

    * ``base`` given (``--mqtt-client-id``): ``{base}-{component}``, as the operator named
      it; give each process of a component its own base.
    * ``slot`` given (a component that keeps a persistent session: twin, rules):
      ``chargetwin-{component}-{slot name}``, the same after a restart and never the id
      of another running process (:class:`InstanceSlot`).
    * neither (bridge, fleet, api: nothing to keep across restarts):
      ``chargetwin-{component}-{host}-{8 random hex}``, new at every start.
    """
    if base:
        return f"{base}-{component}"
    if slot is not None:
        return f"chargetwin-{component}-{slot.name}"
    return f"chargetwin-{component}-{host_name()}-{uuid.uuid4().hex[:8]}"
