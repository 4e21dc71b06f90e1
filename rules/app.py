"""Running the rules component: the recorder in every process, the engine in one.

Recorders scale out: every ``rules`` process records telemetry, on the MQTT shared
subscription when ``--mqtt-share-group`` is set. The engine (scheduled evaluation, alerts,
notifications, rule actions) runs in the one process that leads (:mod:`chargetwin.leadership`,
lock ``rules-engine`` in the shared database); the others stand by and the first to see
the lock free (within a second of the leader's death, kill -9 included) loads the open
alerts from the store and evaluates from then on. The store keeps one open alert per label
set even if two engines overlap (:mod:`rules.alerts`).

Each process holds an instance slot in ``--data-dir`` (:class:`chargetwin.mqtt.InstanceSlot`):
it names the process's MQTT client id (the same after a restart, so the persistent
session and what the broker kept for it come back) and its own spool and dead letter, so
processes sharing a data directory never write each other's files.

Start order: stores, the site directory, then MQTT with the recorder's subscriptions and
the announcement that they exist (:mod:`chargetwin.readiness`), retention of the embedded
store, then leadership of the engine. Stop order: stop evaluating (the evaluation in
flight finishes), stop retention, announce offline, make the open batch durable, then
close the connections and stores. The subscriptions stay in the broker's persistent
session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from chargetwin.database import connect
from chargetwin.leadership import Leadership, lock_for
from chargetwin.metrics import watch, watch_outbox
from chargetwin.mqtt import INSTANCES_FOLDER, InstanceSlot, MqttClient, client_id_for
from chargetwin.readiness import ServiceAnnouncer
from chargetwin.settings import Settings
from chargetwin.shadow_client import ShadowClient
from chargetwin.topics import Topics
from rules.actions import Actions
from rules.alerts import AlertStore
from rules.dead_letters import DeadLetters
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

LEADERSHIP = "rules-engine"


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
        # A client id stable across restarts and a persistent session: telemetry published
        # while the recorder restarts waits in the broker. The bridge waits for the
        # announcement after a broker restart (chargetwin.readiness).
        slot = InstanceSlot.claim(settings.data_dir / INSTANCES_FOLDER, "rules")
        stack.callback(slot.release)
        client_id = client_id_for("rules", settings.mqtt_client_id, slot=slot)
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
        # Slot 0 keeps the folders of a single process; other slots have their own.
        suffix = f"-{slot.number}" if slot.number else ""
        spool = Spool(settings.data_dir / f"spool{suffix}", max_bytes=settings.spool_max_bytes)
        dead_letters = DeadLetters(settings.data_dir / f"dead-letter{suffix}")
        sites = SiteDirectory(db)
        await sites.start()
        stack.push_async_callback(sites.stop)
        recorder = Recorder(store, spool, topics, sites=sites, dead_letters=dead_letters)
        await mqtt.connect()
        stack.push_async_callback(mqtt.disconnect)
        await notifier.start()
        stack.push_async_callback(notifier.stop)
        await recorder.start(mqtt, settings.mqtt_share_group)
        stack.push_async_callback(recorder.stop)
        await announcer.start(mqtt)  # every subscription is acknowledged by now
        stack.push_async_callback(announcer.stop, mqtt)
        leading: Engine | None = None  # the engine while this process leads
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
                "Loaded rules by health (ok, nodata, error, unknown); only the process "
                "leading the engine reports them.",
                lambda: (
                    dict(Counter(str(s.get("health")) for s in leading.states.values()))
                    if leading is not None
                    else {}
                ),
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

        async def evaluate(job_stop: asyncio.Event) -> None:
            """The leader's job: a fresh engine on the stored open alerts, on schedule."""
            nonlocal leading
            engine = Engine(store, AlertStore(db), ruleset, notifier=notifier, actions=actions)
            await engine.load()
            scheduler = AsyncIOScheduler()
            engine.schedule(scheduler)
            scheduler.start()
            leading = engine
            try:
                await job_stop.wait()
            finally:
                leading = None
                scheduler.shutdown(wait=False)
                await engine.close()

        # No unsubscribing at the stop: the persistent session keeps the subscriptions, so
        # the broker holds what is published while we are away. A message that arrives
        # during the stop is written on its own (Recorder.accept) or, unacknowledged when
        # the connection closes, delivered again at the next start.
        leadership = Leadership(lock_for(settings.database_target, LEADERSHIP), "rules engine")
        await leadership.run(evaluate, stop)
