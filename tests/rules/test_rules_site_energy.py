"""A site's energy in the time series, and the pack's alerts on it.

The energy allocator publishes each site's report after a pass
(``{prefix}/sites/{site}/energy/reported``); the recorder keeps it as ``site_energy`` and
``charging_limits`` points; the pack's ``site_energy.yaml`` alerts on a site over its limit
and a charger ignoring its own. Real parts throughout: Mosquitto, the twin, the energy
engine, the recorder, both time-series stores (SQLite and influxd), the rules engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from probes import MqttProbe

from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.shadow_client import ShadowClient
from chargetwin.topics import Topics
from fleet.energy import EnergyEngine
from fleet.sites import SiteStore
from rules.alerts import AlertStore
from rules.engine import Engine
from rules.files import load_rules
from rules.points import NS, Sample, Selection
from rules.recorders import Recorder
from rules.series import SeriesStore
from rules.spools import Spool
from twin.registry import ChargerRegistry
from twin.service import ShadowService
from twin.stores import ShadowStore

PACK = Path(__file__).resolve().parents[2] / "rules" / "pack" / "site_energy.yaml"
T0 = 1_700_000_000.0
END = 2**62


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        for _ in range(100_000):
            if await check():
                return
            await asyncio.sleep(0.05)


async def newest(store: SeriesStore, measurement: str, field: str, *tags: str) -> list[Sample]:
    return await store.last(Selection(measurement, field, group_by=tags), None, END)


def report(at: float) -> dict[str, Any]:
    """An allocator report (docs/sites.md, Reported) as the engine publishes it."""
    return {
        "site": "depot",
        "reported": {
            "limitA": 48.0, "window": "evening peak", "loadA": 51.5, "loadKW": 9.0,
            "unknownLoad": 0, "fixedA": 32.0, "countedA": 48.0, "headroomA": 0.0,
            "paused": ["CP-2/2"], "lastBreach": {"at": at, "amountA": 3.5, "limitA": 48.0},
            "over": True, "ignoring": ["CP-1/1"], "updatedAt": at,
            "connectors": {
                "CP-0/1": {"state": "charging", "limitA": 16.0, "confirmedA": 16.0,
                           "measuredA": 15.0, "countedA": 16.0},
                "CP-1/1": {"state": "refused", "limitA": 16.0, "confirmedA": 16.0,
                           "measuredA": 20.0, "countedA": 32.0},
                "CP-2/1": {"state": "idle", "limitA": 0.0, "confirmedA": 0.0,
                           "measuredA": None, "countedA": 0.0},  # idle, nothing drawn: no point
                "CP-2/2": {"state": "charging", "limitA": 0.0, "confirmedA": None,
                           "measuredA": None, "countedA": 32.0},
            },
        },
    }  # fmt: skip


async def test_rules_recorder_records_a_site_energy_report(
    series_store: SeriesStore, mqtt: MqttClient, probe: MqttProbe, prefix: str, tmp_path: Path
) -> None:
    recorder = Recorder(series_store, Spool(tmp_path / "spool", max_bytes=1 << 20), Topics(prefix))
    await recorder.start(mqtt)
    try:
        topic = Topics(prefix).site_energy_reported("depot")
        # Hostile or broken reports are refused alone (dead letter), the recorder goes on.
        await probe.publish(topic, {"site": "depot", "reported": [1, 2]})
        await probe.publish(topic, b"not json")
        await probe.publish(f"{prefix}/sites/depot/energy/reported/extra", report(T0))  # ignored
        await probe.publish(topic, report(T0))

        async def recorded() -> bool:
            return len(await newest(series_store, "charging_limits", "state", "charger")) == 3

        await eventually(recorded)
        assert recorder.dead_lettered == 2
        fields = {
            name: [(dict(s.labels), s.value, s.time) for s in await newest(
                series_store, "site_energy", name, "site")]
            for name in ("load_a", "limit_a", "headroom_a", "counted_a", "fixed_a", "load_kw",
                         "excess_a", "over", "unknown_load", "paused", "ignoring", "window")
        }  # fmt: skip
        at = int(T0 * NS)
        assert fields == {
            "load_a": [({"site": "depot"}, 51.5, at)],
            "limit_a": [({"site": "depot"}, 48.0, at)],
            "headroom_a": [({"site": "depot"}, 0.0, at)],
            "counted_a": [({"site": "depot"}, 48.0, at)],
            "fixed_a": [({"site": "depot"}, 32.0, at)],
            "load_kw": [({"site": "depot"}, 9.0, at)],
            "excess_a": [({"site": "depot"}, 3.5, at)],
            "over": [({"site": "depot"}, 1.0, at)],
            "unknown_load": [({"site": "depot"}, 0.0, at)],
            "paused": [({"site": "depot"}, 1.0, at)],
            "ignoring": [({"site": "depot"}, 1.0, at)],
            "window": [({"site": "depot"}, "evening peak", at)],
        }
        by_port = ("site", "charger", "connector")
        ports: dict[tuple[str, str], dict[str, Any]] = {}
        for name in ("state", "allowed_a", "offered_a", "drawn_a", "counted_a", "excess_a",
                     "over", "ignoring"):  # fmt: skip
            for sample in await newest(series_store, "charging_limits", name, *by_port):
                labels = dict(sample.labels)
                assert labels["site"] == "depot" and sample.time == at
                ports.setdefault((labels["charger"], labels["connector"]), {})[name] = sample.value
        assert ports == {
            ("CP-0", "1"): {"state": "charging", "allowed_a": 16.0, "offered_a": 16.0,
                            "drawn_a": 15.0, "counted_a": 16.0, "excess_a": -1.0, "over": 0.0,
                            "ignoring": 0.0},
            ("CP-1", "1"): {"state": "refused", "allowed_a": 16.0, "offered_a": 16.0,
                            "drawn_a": 20.0, "counted_a": 32.0, "excess_a": 4.0, "over": 1.0,
                            "ignoring": 1.0},
            # charging, nothing measured or confirmed yet: no excess, so no alert either
            ("CP-2", "2"): {"state": "charging", "offered_a": 0.0, "counted_a": 32.0,
                            "ignoring": 0.0},
        }  # fmt: skip
    finally:
        await recorder.stop()


class Clock:
    """The energy engine's clock, moved by the test: reports carry its time, so the rules
    see minutes pass in a second."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def site_with_allocator(
    db: Database, mosquitto_url: str, prefix: str, clock: Clock
) -> AsyncIterator[tuple[EnergyEngine, ShadowClient, SiteStore, MqttClient, Topics]]:
    """A site of three chargers with a 48 A limit, its twin and its energy engine."""
    topics = Topics(prefix)
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for name in ("twin", "engine", "bridge"):
            client = MqttClient(mosquitto_url, f"test-{name}-{prefix}")
            await client.connect()
            stack.push_async_callback(client.disconnect)
            clients.append(client)
        shadows, registry, sites = ShadowStore(db), ChargerRegistry(db), SiteStore(db)
        for schema in (shadows, registry, sites):
            await schema.create_schema()
        twin = ShadowService(clients[0], shadows, registry, topics)
        await twin.start()
        stack.push_async_callback(twin.stop)
        bridge = ShadowClient(clients[2], topics)
        for charger_id in ("CP-0", "CP-1", "CP-2"):
            await registry.register(charger_id, None, site="depot")
            online = {"connection": {"online": True}, "connectors": {"1": {"status": "Charging"}}}
            await bridge.update(charger_id, {"reported": online})
        _, errors = await sites.patch_energy("depot", {"limitA": 48, "ratedA": 32}, actor="test")
        assert errors == []
        engine = EnergyEngine(
            sites, ShadowClient(clients[1], topics), clients[1], topics, clock=clock,
            interval=3600.0, debounce=0.05,
        )  # fmt: skip
        await stack.enter_async_context(engine.running())
        yield engine, bridge, sites, clients[2], topics


async def test_rules_site_alerts_fire_on_the_allocators_reports_and_resolve(
    series_store: SeriesStore, db: Database, mosquitto_url: str, mqtt: MqttClient, prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Three chargers share 48 A. CP-2 draws 25 A on a confirmed 16 A: the site is 8.5 A
    over and CP-2 ignores its limit. ChargerIgnoresLimit fires after a minute,
    SiteOverLimit after two; both resolve once the draws are back within the limits."""
    clock = Clock(time.time())
    start = clock.now
    rules = Engine(series_store, AlertStore(db), load_rules([PACK]))
    await rules.load()
    recorder = Recorder(series_store, Spool(tmp_path / "spool", max_bytes=1 << 20), Topics(prefix))
    await recorder.start(mqtt)
    try:
        async with site_with_allocator(db, mosquitto_url, prefix, clock) as setup:
            engine, bridge, sites, bridge_mqtt, topics = setup

            async def limit_of(charger_id: str) -> float | None:
                document = await bridge.get(charger_id)
                limit = document["state"].get("desired", {}).get("chargingLimit", {})
                return ((limit.get("connectors") or {}).get("1") or {}).get("limit")

            async def written() -> bool:
                return [await limit_of(c) for c in ("CP-0", "CP-1", "CP-2")] == [16.0] * 3

            await eventually(written)
            for charger_id in ("CP-0", "CP-1", "CP-2"):  # the chargers confirm 16 A
                confirmed = {"unit": "A", "connectors": {"1": {"limit": 16.0, "phases": 3}}}
                await bridge.update(charger_id, {"reported": {"chargingLimit": confirmed}})

            async def draw(amps: dict[str, float], load: float) -> None:
                """Meter values of every charger at the clock's time; wait until the
                engine's report of that time, with that load, is in the series."""
                for charger_id, value in amps.items():
                    message = {"connectorId": 1, "values": [
                        {"measurand": "Current.Import", "phase": "L1", "unit": "A",
                         "value": value}]}  # fmt: skip
                    bridge_mqtt.publish(
                        topics.telemetry(charger_id, "meterValues"), json.dumps(message)
                    )

                async def recorded() -> bool:
                    samples = await newest(series_store, "site_energy", "load_a")
                    return bool(samples) and (samples[0].time, samples[0].value) == (
                        round(clock.now * NS),
                        load,
                    )

                await eventually(recorded)

            firing: dict[float, set[str]] = {}
            for step in range(6):  # 0 s .. 150 s, a report and an evaluation every 30 s
                clock.now = start + 30 * step
                await draw({"CP-0": 15.0, "CP-1": 16.5, "CP-2": 25.0}, 56.5)
                await rules.evaluate(clock.now)
                firing[30 * step] = {f"{a.rule}:{a.labels.get('charger', '')}"
                                     for a in rules.firing()}  # fmt: skip
            assert firing == {
                0: set(), 30: set(),
                60: {"ChargerIgnoresLimit:CP-2"},
                90: {"ChargerIgnoresLimit:CP-2"},
                120: {"ChargerIgnoresLimit:CP-2", "SiteOverLimit:"},
                150: {"ChargerIgnoresLimit:CP-2", "SiteOverLimit:"},
            }  # fmt: skip
            [site_alert] = rules.firing("SiteOverLimit")
            assert site_alert.labels["site"] == "depot" and site_alert.value == 8.5
            [port_alert] = rules.firing("ChargerIgnoresLimit")
            assert dict(port_alert.labels) == {
                "alertname": "ChargerIgnoresLimit", "site": "depot", "charger": "CP-2",
                "connector": "1", "severity": "warning", "scope": "connector",
            }  # fmt: skip
            assert port_alert.value == 9.0
            assert (await sites.report("depot") or {})["ignoring"] == ["CP-2/1"]

            # back within the limits: both resolve at the next evaluation
            clock.now = start + 180
            await draw({"CP-0": 12.0, "CP-1": 12.0, "CP-2": 10.0}, 34.0)
            transitions = await rules.evaluate(clock.now)
            assert rules.firing() == []
            assert sorted((a.rule, a.state) for a in transitions) == [
                ("ChargerIgnoresLimit", "resolved"), ("SiteOverLimit", "resolved"),
            ]  # fmt: skip
            assert engine.passes >= 7
    finally:
        await recorder.stop()
        await rules.close()
