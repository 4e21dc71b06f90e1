"""Running the twin as a component: open the stores, connect MQTT, serve until stopped.

With a share group, a worker also takes over the sessions of the group's workers that are
gone (:mod:`twin.adoption`) and keeps a short keepalive, so that the broker notices a
worker lost without a word (a host or network failure) within 1.5 keepalives.
"""

from __future__ import annotations

import asyncio
import logging

from chargetwin.database import connect
from chargetwin.metrics import watch, watch_outbox
from chargetwin.mqtt import INSTANCES_FOLDER, InstanceSlot, MqttClient, client_id_for
from chargetwin.readiness import ServiceAnnouncer
from chargetwin.settings import Settings
from chargetwin.topics import Topics
from twin.adoption import SessionAdopter
from twin.registry import ChargerRegistry
from twin.requests import Limits
from twin.service import ShadowService
from twin.stores import ShadowStore

log = logging.getLogger(__name__)

# Seconds; the broker drops a silent worker's connection after 1.5 of them and its peers
# then take its session over (docs/deployment.md, twin workers).
WORKER_KEEPALIVE = 5


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_request_bytes=settings.max_request_bytes,
        max_document_bytes=settings.max_document_bytes,
        max_depth=settings.max_depth,
    )


async def run_twin(settings: Settings, stop: asyncio.Event) -> None:
    """Serve shadows until ``stop`` is set; queued requests are finished first."""
    db = connect(settings.database_target)
    await db.open()
    slot: InstanceSlot | None = None
    try:
        store, registry = ShadowStore(db), ChargerRegistry(db)
        await store.create_schema()
        await registry.create_schema()
        # A stable client id and a persistent session: requests published while the twin
        # restarts wait in the broker instead of being lost. The instance slot keeps the id
        # across restarts and apart from every other running twin (chargetwin.mqtt).
        if not settings.mqtt_client_id:
            slot = InstanceSlot.claim(settings.data_dir / INSTANCES_FOLDER, "twin")
        client_id = client_id_for("twin", settings.mqtt_client_id, slot=slot)
        topics = Topics(settings.mqtt_prefix)
        group = settings.mqtt_share_group
        # Publishers wait for this announcement after a broker restart (chargetwin.readiness);
        # the group's other workers read the client id from it to adopt our session.
        announcer = ServiceAnnouncer(
            topics, "twin", client_id, {"clientId": client_id, "shareGroup": group}
        )
        mqtt = MqttClient(
            settings.broker_url,
            client_id,
            clean_session=False,
            will=announcer.will,
            keepalive=WORKER_KEEPALIVE if group else 30,
        )
        service = ShadowService(
            mqtt,
            store,
            registry,
            topics,
            limits=limits_from(settings),
            share_group=group,
        )
        adopter = None
        if group:
            adopter = SessionAdopter(
                mqtt,
                topics,
                client_id,
                group,
                service.subscriptions,
                lambda: [f for f, _ in service.shared_subscriptions()],
            )
            adopter.start()
        await service.start()
        await mqtt.connect()  # returns once the service's subscriptions are acknowledged
        await announcer.start(mqtt)
        watches = [
            watch_outbox("twin", lambda: mqtt.outbox.waiting),
            watch(
                "shadow_updates_accepted",
                "Shadow updates this process applied (reports and desired changes).",
                lambda: service.updates_accepted,
                kind="counter",
            ),
            watch(
                "shadow_requests_refused",
                "Shadow requests this process refused (invalid desired state, too big, "
                "version conflicts, store errors).",
                lambda: service.requests_refused,
                kind="counter",
            ),
        ]
        try:
            await stop.wait()
        finally:
            for registration in watches:
                registration.close()
            if adopter is not None:
                await adopter.stop()
            # Queued requests first; then "offline", after which a peer may adopt the
            # session (its subscriptions stay: see ShadowService.stop).
            await service.stop()
            await announcer.stop(mqtt)
            await mqtt.disconnect()
    finally:
        if slot is not None:
            slot.release()
        await db.close()
