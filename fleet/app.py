"""The ``fleet`` component: the campaign engine and the maintenance scheduler, run by the
one leading process (:mod:`chargetwin.leadership`); every other ``fleet`` process waits
as a standby and takes over within seconds when the leader dies.

Why engines apart from the API: API replicas scale out behind a load balancer, and an
engine in each would run every campaign step and every window edge once per replica.
The API writes the stores and publishes a wake-up on ``{prefix}/fleet/wake``; the leader
runs the engine it names at once instead of at its next interval. A wake-up lost (no
leader at the moment, a standby taking over) only costs one interval: the engines read
everything they act on from the database each tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass

from chargetwin.audit import AuditLog
from chargetwin.database import Database, connect
from chargetwin.leadership import Leadership, lock_for
from chargetwin.metrics import CAMPAIGN_CHARGERS
from chargetwin.mqtt import MqttClient, client_id_for
from chargetwin.settings import Settings
from chargetwin.shadow_client import ShadowClient
from chargetwin.topics import Topics
from fleet.campaigns import CampaignStore
from fleet.energy import EnergyEngine
from fleet.maintenance import Maintenance
from fleet.rollouts import CampaignEngine
from fleet.site_requests import SiteRequests
from fleet.sites import SiteStore
from twin.registry import ChargerRegistry
from twin.stores import ShadowStore

log = logging.getLogger(__name__)

LEADERSHIP = "fleet-engines"
ENGINES = ("campaigns", "maintenance", "energy")


@dataclass
class FleetEngines:
    """The engines a leading fleet process runs, built on one database and MQTT client."""

    campaigns: CampaignEngine
    maintenance: Maintenance
    energy: EnergyEngine
    site_requests: SiteRequests

    @classmethod
    def build(
        cls, db: Database, mqtt: MqttClient, topics: Topics, settings: Settings
    ) -> FleetEngines:
        # The engines read the registry (sites, chargers) and never set a password, so the
        # fleet process needs no charger password key.
        registry = ChargerRegistry(db)
        shadow_client = ShadowClient(mqtt, topics)
        campaigns = CampaignEngine(
            CampaignStore(db),
            ShadowStore(db),
            shadow_client,
            interval=settings.campaign_interval,
        )
        maintenance = Maintenance.build(
            db, registry, shadow_client, interval=settings.maintenance_interval
        )
        energy = EnergyEngine(
            SiteStore(db),
            shadow_client,
            mqtt,
            topics,
            interval=settings.energy_interval,
        )
        site_requests = SiteRequests(energy.sites, AuditLog(db), mqtt, topics, energy.wake)
        return cls(campaigns, maintenance, energy, site_requests)

    async def create_schema(self) -> None:
        await self.campaigns.store.create_schema()
        await self.maintenance.create_schema()
        await self.energy.sites.create_schema()
        await self.site_requests.audit.create_schema()

    def wake(self, engine: str) -> None:
        if engine == "campaigns":
            self.campaigns.wake()
        elif engine == "maintenance":
            self.maintenance.scheduler.wake()
        elif engine == "energy":
            self.energy.wake()

    async def run(self, stop: asyncio.Event) -> None:
        """Run every engine until ``stop`` is set (the leader's job)."""
        async with (
            self.campaigns.running(),
            self.maintenance.scheduler.running(),
            self.energy.running(),
            self.site_requests.running(),
        ):
            while not stop.is_set():
                await self._count_campaign_chargers()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.campaigns.interval)
        CAMPAIGN_CHARGERS.clear()

    async def _count_campaign_chargers(self) -> None:
        """The campaign-chargers gauge: chargers of running or paused campaigns per state."""
        try:
            rows = await self.campaigns.store.db.fetchall(
                "SELECT cc.state, COUNT(*) FROM campaign_chargers cc"
                " JOIN campaigns c ON c.campaign_id = cc.campaign_id"
                " WHERE c.state IN ('running', 'paused') GROUP BY cc.state"
            )
        except Exception as exc:  # a metric must not stop the engines
            log.warning("fleet: campaign chargers not counted: %s", exc)
            return
        CAMPAIGN_CHARGERS.clear()
        for state, count in rows:
            CAMPAIGN_CHARGERS.labels(str(state)).set(int(count))


def wake_request(engine: str) -> bytes:
    """The payload that asks the leader to run ``engine`` now."""
    if engine not in ENGINES:
        raise ValueError(f"unknown fleet engine {engine!r}; one of {', '.join(ENGINES)}")
    return json.dumps({"engine": engine}).encode()


async def run_fleet(
    settings: Settings,
    stop: asyncio.Event,
    *,
    db: Database | None = None,
    mqtt: MqttClient | None = None,
) -> None:
    """Lead (or stand by to lead) the fleet engines until ``stop`` is set."""
    topics = Topics(settings.mqtt_prefix)
    async with contextlib.AsyncExitStack() as stack:
        if db is None:
            db = connect(settings.database_target)
            await db.open()
            stack.push_async_callback(db.close)
        if mqtt is None:
            mqtt = MqttClient(settings.broker_url, client_id_for("fleet", settings.mqtt_client_id))
            await mqtt.connect()
            stack.push_async_callback(mqtt.disconnect)
        engines = FleetEngines.build(db, mqtt, topics, settings)
        await engines.create_schema()

        async def on_wake(topic: str, payload: bytes) -> None:
            try:
                engine = json.loads(payload).get("engine")
            except (ValueError, AttributeError):
                log.warning("fleet: ignored a malformed wake-up on %s", topic)
                return
            engines.wake(str(engine))

        await mqtt.subscribe_acked(topics.fleet_wake(), on_wake, qos=0)
        leadership = Leadership(lock_for(settings.database_target, LEADERSHIP), "fleet")
        await leadership.run(engines.run, stop)
