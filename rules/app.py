"""Running the rules component: the recorder, the engine on its schedule, notifications.

Start order: stores, then the engine (it takes back open alerts), the site directory,
then MQTT with the recorder's subscriptions and the announcement that they exist
(:mod:`chargetwin.readiness`), then retention of the embedded store. Stop order: stop
evaluating, stop retention, announce offline, make the open batch durable, then close the
connections and stores. The subscriptions stay in the broker's persistent session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from chargetwin.database import connect
from chargetwin.metrics import watch, watch_outbox
from chargetwin.mqtt import MqttClient, client_id_for
from chargetwin.readiness import ServiceAnnouncer
from chargetwin.settings import Settings
from chargetwin.shadow_client import ShadowClient
from chargetwin.topics import Topics
from rules.actions import Actions
from rules.alerts import AlertStore
from rules.engine import Engine
from rules.files import bundled_pack, load_rules
from rules.influx import InfluxStore
from rules.notifiers import Notifier
from rules.recorders import Recorder
from rules.retention import RetentionPolicy, SeriesRetention
from rules.series import SeriesStore
from rules.sites import SiteDirectory
from rules.spools import Spool
from rules.sqlite_series import SQLiteSeriesStore

log = logging.getLogger(__name__)


def open_series_store(settings: Settings) -> SeriesStore:
    """InfluxDB when ``--influx-url`` is set, else the embedded SQLite store."""
    if settings.influx_url:
        password = settings.influx_password.get_secret_value() if settings.influx_password else None
        return InfluxStore(
            settings.influx_url,
            settings.influx_database,
            username=settings.influx_username,
            password=password,
        )
    return SQLiteSeriesStore(settings.data_dir / "series.db")


async def run_rules(settings: Settings, stop: asyncio.Event) -> None:
    """Record telemetry and evaluate the rules until ``stop`` is set."""
    topics = Topics(settings.mqtt_prefix)
    store = open_series_store(settings)
    db = connect(settings.database_target)
    async with contextlib.AsyncExitStack() as stack:
        await store.open()
        stack.push_async_callback(store.close)
        await db.open()
        stack.push_async_callback(db.close)
        ruleset = load_rules([settings.rules or bundled_pack()])
        log.info(
            "rules: %d rules from %d files (%d refused) on the %s store",
            len(ruleset.rules),
            len(ruleset.files),
            len({f.file for f in ruleset.findings}),
            store.name,
        )
        # A stable client id and a persistent session: telemetry published while the
        # recorder restarts waits in the broker. The bridge waits for the announcement
        # after a broker restart (chargetwin.readiness).
        client_id = client_id_for("rules", settings.mqtt_client_id or "chargetwin")
        announcer = ServiceAnnouncer(topics, "rules", client_id)
        mqtt = MqttClient(settings.broker_url, client_id, clean_session=False, will=announcer.will)
        notifier = Notifier(mqtt=mqtt, prefix=topics.prefix, webhooks=settings.rules_webhooks)
        actions = Actions(
            db,
            mqtt=mqtt,
            topics=topics,
            shadow_client=ShadowClient(mqtt, topics),
            dry_run=settings.rules_dry_run,
        )
        engine = Engine(store, AlertStore(db), ruleset, notifier=notifier, actions=actions)
        await engine.load()
        spool = Spool(settings.data_dir / "spool", max_bytes=settings.spool_max_bytes)
        sites = SiteDirectory(db)
        await sites.start()
        stack.push_async_callback(sites.stop)
        recorder = Recorder(store, spool, topics, sites=sites)
        await mqtt.connect()
        stack.push_async_callback(mqtt.disconnect)
        await notifier.start()
        stack.push_async_callback(notifier.stop)
        await recorder.start(mqtt, settings.mqtt_share_group)
        stack.push_async_callback(recorder.stop)
        await announcer.start(mqtt)  # every subscription is acknowledged by now
        stack.push_async_callback(announcer.stop, mqtt)
        for registration in (
            watch_outbox("rules", lambda: mqtt.outbox.waiting),
            watch(
                "recorder_points_written",
                "Points the recorder wrote to the time-series store.",
                lambda: recorder.written,
                kind="counter",
            ),
            watch(
                "recorder_points_dead_lettered",
                "Points and messages the recorder refused, kept in the dead letter.",
                lambda: recorder.dead_lettered,
                kind="counter",
            ),
            watch(
                "spool_bytes",
                "Telemetry spooled on disk while the time-series store is unreachable.",
                lambda: spool.bytes,
            ),
            watch(
                "rules",
                "Loaded rules by health (ok, nodata, error, unknown).",
                lambda: dict(Counter(str(s.get("health")) for s in engine.states.values())),
                label="health",
            ),
        ):
            stack.callback(registration.close)
        if isinstance(store, SQLiteSeriesStore):
            policy = RetentionPolicy.from_days(
                settings.series_retention_days, settings.meter_values_retention_days
            )
            retention = SeriesRetention(store, policy)
            await retention.start()
            stack.push_async_callback(retention.stop)
        scheduler = AsyncIOScheduler()
        engine.schedule(scheduler)
        scheduler.start()
        try:
            await stop.wait()
        finally:
            # No unsubscribing: the persistent session keeps the subscriptions, so the
            # broker holds what is published while we are away. A message that arrives
            # during the stop is written on its own (Recorder.accept) or, unacknowledged
            # when the connection closes, delivered again at the next start.
            scheduler.shutdown(wait=False)
