"""Wiring and lifecycle: database, MQTT (with a last will), the OCPP server.

The CLI calls :func:`run_bridge`; tests use :class:`Bridge` (``start``/``stop`` and the
bound ``port`` when port 0 is asked for).

Presence across MQTT reconnects: every MQTT connection of the bridge has an *epoch*, the
bridge's clock when it was chosen, strictly increasing per bridge id (also across process
restarts). The connection's last will, its retained status and every presence published
while it lasts carry it. After each (re)connect the bridge announces its status and then
announces every charger it holds again under the new epoch: while it was away the broker
may have published its will and the twin marked those chargers offline; a presence with a
newer epoch than the will's tells the twin the socket was held all along (docs/mqtt.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from bridge.connections import ConnectionOptions
from bridge.credentials import CredentialRotations
from bridge.firmwares import FirmwareSupport
from bridge.handlers import Services
from bridge.limits import FloodLimit
from bridge.reports import Reporter
from bridge.server import OcppServer, ServerOptions
from bridge.stores import BootHistory, IdTagStore, ReportedConfigs, TransactionStore
from bridge.times import now
from bridge.tls import TlsFiles, server_context
from bridge.v201.transactions import TransactionEvents
from chargetwin.audit import AuditLog
from chargetwin.database import Database, connect
from chargetwin.metrics import watch, watch_outbox
from chargetwin.mqtt import MqttClient, client_id_for
from chargetwin.readiness import SubscriberGate
from chargetwin.settings import Settings
from chargetwin.topics import Topics
from twin.catalog import FirmwareCatalog
from twin.passwords import password_key
from twin.registry import ChargerRegistry
from twin.stores import ShadowStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    """Every bridge knob; :meth:`from_settings` takes the operator's from ``Settings``.

    Defaults are the production values; tests shorten the timeouts.
    """

    port: int | None = None  # None: settings.ocpp_port; 0: any free port
    bridge_id: str | None = None  # None: the MQTT client id
    ping_interval: float | None = 20.0  # websocket pings keep presence honest
    ping_timeout: float | None = 20.0
    max_size: int = 64 * 1024  # largest frame; bigger closes with 1009
    close_timeout: float = 5.0
    flood: FloodLimit = field(default_factory=FloodLimit)
    call_timeout: float = 30.0  # OCPP calls the bridge makes on its own (reconciliation)
    command_timeout: float = 30.0  # operator commands; 504 after it
    # After a boot, how long a charger has to report its connectors before it is asked.
    status_grace: float = 5.0
    heartbeat_interval: int = 300  # BootNotification.conf interval
    data_transfer_vendors: frozenset[str] = frozenset()  # DataTransfer Accepted for these
    outbox_limit: int = 10_000
    mqtt_reconnect_delay: float = 1.0
    drain_timeout: float = 5.0  # at stop, wait this long for the broker's PUBACKs
    firmware_retries: int = 3  # UpdateFirmware retries / retryInterval (OCPP 1.6 5.19)
    firmware_retry_interval: int = 60
    tls: TlsFiles | None = None  # None: plain ws:// (security profile 1)
    # How often rotations whose old password outlived its grace are ended (credentials).
    rotation_expiry_interval: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> BridgeOptions:
        """The knobs an operator sets (``--ocpp-*``), then ``overrides`` on top."""
        tls = None
        if settings.ocpp_tls_cert is not None and settings.ocpp_tls_key is not None:
            tls = TlsFiles(
                settings.ocpp_tls_cert, settings.ocpp_tls_key, settings.ocpp_tls_client_ca
            )
        options = cls(
            # 0 switches websockets' keepalive off (None in its API).
            ping_interval=settings.ocpp_ping_interval or None,
            ping_timeout=settings.ocpp_ping_timeout or None,
            max_size=settings.ocpp_max_frame_bytes,
            flood=dataclasses.replace(
                FloodLimit(), rate=settings.ocpp_flood_rate, burst=settings.ocpp_flood_burst
            ),
            command_timeout=settings.ocpp_command_timeout,
            tls=tls,
        )
        return dataclasses.replace(options, **overrides)


class Bridge:
    """One bridge process: ``await start()``, serve, ``await stop()``."""

    def __init__(self, settings: Settings, options: BridgeOptions | None = None) -> None:
        self.settings = settings
        self.options = options or BridgeOptions.from_settings(settings)
        self.topics = Topics(settings.mqtt_prefix)
        self.client_id = client_id_for("bridge", settings.mqtt_client_id)
        self.bridge_id = self.options.bridge_id or self.client_id
        self.port: int | None = None
        self.db: Database | None = None
        self.mqtt: MqttClient | None = None
        self.server: OcppServer | None = None
        self._expiry: asyncio.Task[None] | None = None  # rotations' old passwords
        self.services: Services | None = None
        self.reporter: Reporter | None = None
        # The epoch the next MQTT connection announces; its will carries it already.
        self._next_epoch = now()

    @property
    def mqtt_url(self) -> str:
        # No URL means the embedded broker of `chargetwin up` on --mqtt-port.
        return self.settings.mqtt_url or f"mqtt://127.0.0.1:{self.settings.mqtt_port}"

    async def start(self) -> None:
        """Open the database, connect MQTT with a last will, start serving chargers."""
        options = self.options
        ssl_context = server_context(options.tls) if options.tls is not None else None
        self.db = connect(self.settings.database_target)
        await self.db.open()
        key = self.settings.charger_password_key
        registry = ChargerRegistry(
            self.db,
            password_key=password_key(
                key.get_secret_value() if key else None, self.settings.data_dir
            ),
        )
        transactions = TransactionStore(self.db)
        id_tags = IdTagStore(self.db)
        await registry.create_schema()
        audit = AuditLog(self.db)  # password rotations are written to the API's audit log
        await audit.create_schema()
        await transactions.create_schema()
        transaction_events = TransactionEvents(self.db, transactions)
        await transaction_events.create_schema()
        await id_tags.create_schema()
        catalog = FirmwareCatalog(self.db)
        shadows = ShadowStore(self.db)
        await catalog.create_schema()
        await shadows.create_schema()

        self.mqtt = MqttClient(
            self.mqtt_url,
            self.client_id,
            will=self._will(),
            reconnect_delay=options.mqtt_reconnect_delay,
            outbox_limit=options.outbox_limit,
            gate=SubscriberGate(self.topics, self.settings.mqtt_subscribers.split(",")),
            replay_window=self.settings.mqtt_replay_seconds,
        )
        reporter = self.reporter = Reporter(self.mqtt, self.topics, self.bridge_id)
        self.mqtt.subscribe(self.topics.bridge_announce(self.bridge_id), self._asked_to_announce)
        # After every (re)connect: the will may have fired while we were away.
        self.mqtt.on_connect(self._announce)
        await self.mqtt.connect()

        rotations = CredentialRotations(
            registry, reporter, audit, expiry_interval=options.rotation_expiry_interval
        )
        self._expiry = asyncio.create_task(rotations.run_expiry(), name="password expiry")
        self.services = Services(
            reporter=reporter,
            boot_history=BootHistory(self.db),
            reported_configs=ReportedConfigs(self.db),
            transactions=transactions,
            id_tags=id_tags,
            heartbeat_interval=options.heartbeat_interval,
            data_transfer_vendors=options.data_transfer_vendors,
            credentials=rotations,
            firmware=FirmwareSupport(
                catalog,
                shadows,
                self.settings.api_public_url,
                retries=options.firmware_retries,
                retry_interval=options.firmware_retry_interval,
            ),
        )
        self.server = OcppServer(
            self.services,
            registry,
            self.mqtt,
            ServerOptions(
                ping_interval=options.ping_interval,
                ping_timeout=options.ping_timeout,
                max_size=options.max_size,
                close_timeout=options.close_timeout,
                auto_register=self.settings.auto_register,
                ssl=ssl_context,
            ),
            ConnectionOptions(
                call_timeout=options.call_timeout,
                command_timeout=options.command_timeout,
                flood=options.flood,
                status_grace=options.status_grace,
            ),
            transaction_events,
        )
        port = self.settings.ocpp_port if options.port is None else options.port
        self.port = await self.server.start(self.settings.host, port)
        log.info("bridge %s: serving", self.bridge_id)

    def _will(self) -> tuple[str, dict[str, Any], bool]:
        return (
            self.topics.bridge_status(self.bridge_id),
            {"online": False, "epoch": self._next_epoch},
            True,
        )

    async def _announce(self) -> None:
        """After every MQTT (re)connect: status online and every held charger again, under
        this connection's epoch (the one its will carries); the next connection's will
        gets a later one."""
        if self.reporter is None or self.mqtt is None:
            return
        self.reporter.epoch = epoch = self._next_epoch
        self._next_epoch = max(now(), epoch + 0.001)
        self.mqtt.set_will(*self._will())
        self.reporter.bridge_status(True)
        self._announce_held()

    async def _asked_to_announce(self, topic: str, payload: bytes) -> None:
        """The twin took our chargers offline for want of news from us (our status reached
        it late): tell it again what we hold."""
        self._announce_held()

    def _announce_held(self) -> None:
        if self.reporter is None:
            return
        held = list(self.reporter.held.items())
        for charger_id, since in held:
            self.reporter.announce(charger_id, True, since)
        if held:
            log.info("bridge %s: %d chargers announced again", self.bridge_id, len(held))

    async def stop(self) -> None:
        """Close every charger (each publishes itself offline), then say goodbye on MQTT."""
        if self.server is not None:
            await self.server.stop()
            self.server = None
        expiry, self._expiry = self._expiry, None
        if expiry is not None:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
        if self.mqtt is not None and self.reporter is not None:
            self.reporter.bridge_status(False)
            if not await self.mqtt.drain(self.options.drain_timeout):
                log.warning(
                    "bridge %s: %d messages not acknowledged at stop",
                    self.bridge_id,
                    self.mqtt.waiting,
                )
            await self.mqtt.disconnect()
            self.mqtt = None
        if self.db is not None:
            await self.db.close()
            self.db = None
        log.info("bridge %s: stopped", self.bridge_id)


async def run_bridge(
    settings: Settings, stop: asyncio.Event, options: BridgeOptions | None = None
) -> None:
    """Serve chargers until ``stop`` is set, then close their sockets and publish offline.

    Without ``options`` every knob comes from ``settings`` (the CLI's ``--ocpp-*``).
    """
    bridge = Bridge(settings, options)
    watches = [
        watch(
            "chargers_connected",
            "Chargers with an open OCPP connection to this process.",
            lambda: len(bridge.server.connections) if bridge.server is not None else 0,
        ),
        watch_outbox("bridge", lambda: bridge.mqtt.outbox.waiting if bridge.mqtt else 0),
    ]
    try:
        await bridge.start()
        await stop.wait()
    finally:
        for registration in watches:
            registration.close()
        await bridge.stop()
