"""What a running API holds: the database, the MQTT connection and the stores on them.

Routes reach it through :func:`get_backend`; tests and the one-process ``chargetwin up``
build it from a database and an MQTT client they already own, ``chargetwin api`` opens
its own with :func:`open_backend`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from pydantic import SecretStr

from api.operations import DEFAULT_PUBLIC_URL, Operations
from api.tokens import TokenStore
from chargetwin.audit import AuditLog
from chargetwin.database import Database, connect
from chargetwin.files import FileStoreKind
from chargetwin.mqtt import MqttClient, client_id_for
from chargetwin.settings import Settings
from chargetwin.shadow_client import ShadowClient
from chargetwin.topics import Topics
from fleet.app import wake_request
from fleet.campaigns import CampaignStore
from fleet.maintenance import Maintenance
from fleet.profiles import ProfileStore
from fleet.sites import SiteStore
from rules.series import SeriesStore
from rules.sqlite_series import SQLiteSeriesStore
from twin.passwords import password_key
from twin.registry import ChargerRegistry
from twin.stores import ShadowStore


@dataclass
class Backend:
    db: Database
    mqtt: MqttClient
    registry: ChargerRegistry
    shadows: ShadowStore
    shadow_client: ShadowClient
    tokens: TokenStore
    audit: AuditLog
    admin_token: SecretStr | None = None
    operations: Operations | None = None  # firmware, commands, diagnostics, id tags
    # work orders, maintenance windows, inspections and their scheduler
    maintenance: Maintenance | None = None
    # a fresh (unopened) time-series store per use: status history, meter values
    series: Callable[[], SeriesStore] | None = None
    campaigns: CampaignStore | None = None  # firmware campaigns (engine: fleet.rollouts)
    profiles: ProfileStore | None = None  # configuration profiles
    topics: Topics | None = None  # for requests published to bridges (e.g. rotations)
    sites: SiteStore | None = None  # sites' desired energy and reports (engine: fleet.energy)

    @classmethod
    def build(
        cls,
        db: Database,
        mqtt: MqttClient,
        topics: Topics,
        *,
        admin_token: SecretStr | None = None,
        twin_timeout: float = 5.0,
        data_dir: Path = Path("./data"),
        public_url: str = DEFAULT_PUBLIC_URL,
        command_timeout: float = 35.0,
        series: Callable[[], SeriesStore] | None = None,
        maintenance_interval: float = 30.0,
        password_key: bytes | None = None,
        file_store: FileStoreKind = "auto",
        ftp_models: tuple[str, ...] = (),
    ) -> Backend:
        # Without a key (tests that only read) new passwords get scrypt hashes.
        registry = ChargerRegistry(db, password_key=password_key)
        shadow_client = ShadowClient(mqtt, topics, timeout=twin_timeout)
        return cls(
            db=db,
            mqtt=mqtt,
            registry=registry,
            shadows=ShadowStore(db),
            shadow_client=shadow_client,
            tokens=TokenStore(db),
            audit=AuditLog(db),
            admin_token=admin_token,
            operations=Operations.build(
                db,
                mqtt,
                topics,
                data_dir=data_dir,
                public_url=public_url,
                command_timeout=command_timeout,
                file_store=file_store,
                ftp_models=ftp_models,
            ),
            maintenance=Maintenance.build(
                db, registry, shadow_client, interval=maintenance_interval
            ),
            series=series or (lambda: SQLiteSeriesStore(data_dir / "series.db")),
            campaigns=CampaignStore(db),
            profiles=ProfileStore(db),
            topics=topics,
            sites=SiteStore(db),
        )

    def wake_fleet(self, engine: str) -> None:
        """Ask the leading fleet process to run ``engine`` now, after an operator action.

        A wake-up is a hint (QoS 0): the engine also runs every interval and reads what
        it acts on from the database, so a lost one costs at most one interval."""
        if self.topics is not None:
            self.mqtt.publish(self.topics.fleet_wake(), wake_request(engine), qos=0)

    async def create_schema(self) -> None:
        """Create the tables the API reads and writes (idempotent)."""
        await self.registry.create_schema()
        await self.shadows.create_schema()
        await self.tokens.create_schema()
        await self.audit.create_schema()
        if self.operations is not None:
            await self.operations.create_schema()
        if self.maintenance is not None:
            await self.maintenance.create_schema()
        if self.campaigns is not None:
            await self.campaigns.create_schema()
        if self.profiles is not None:
            await self.profiles.create_schema()
        if self.sites is not None:
            await self.sites.create_schema()


@contextlib.asynccontextmanager
async def open_backend(
    settings: Settings, *, db: Database | None = None, mqtt: MqttClient | None = None
) -> AsyncIterator[Backend]:
    """A ready backend; opens (and later closes) the database and MQTT it was not given.

    It runs no engine: the ``fleet`` component does (:mod:`fleet.app`)."""
    from rules.app import open_series_store

    async with contextlib.AsyncExitStack() as stack:
        if db is None:
            db = connect(settings.database_target)
            await db.open()
            stack.push_async_callback(db.close)
        if mqtt is None:
            mqtt_url = settings.mqtt_url or f"mqtt://127.0.0.1:{settings.mqtt_port}"
            mqtt = MqttClient(mqtt_url, client_id_for("api", settings.mqtt_client_id))
            await mqtt.connect()
            stack.push_async_callback(mqtt.disconnect)
        backend = Backend.build(
            db,
            mqtt,
            Topics(settings.mqtt_prefix),
            admin_token=settings.admin_token,
            data_dir=settings.data_dir,
            public_url=settings.api_public_url,
            command_timeout=settings.command_timeout,
            series=lambda: open_series_store(settings),
            maintenance_interval=settings.maintenance_interval,
            file_store=settings.file_store,
            ftp_models=tuple(settings.ftp_models),
            password_key=password_key(
                settings.charger_password_key.get_secret_value()
                if settings.charger_password_key
                else None,
                settings.data_dir,
            ),
        )
        await backend.create_schema()
        yield backend


def backend_of(request: Request) -> Backend:
    backend = request.app.state.backend
    assert isinstance(backend, Backend)
    return backend


async def get_backend(request: Request) -> Backend:
    """The dependency. Async on purpose: FastAPI runs a plain ``def`` dependency in its
    thread pool, a trip to another thread on every request for an attribute read."""
    return backend_of(request)
