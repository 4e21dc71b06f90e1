"""The ``site`` tag: the recorder tags points with the charger's site from the registry.

Real parts throughout: the charger registry in SQLite and PostgreSQL, the real Mosquitto,
both time-series stores; rules group and filter by site like by any other tag.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from probes import MqttProbe

from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from rules.alerts import AlertStore
from rules.engine import Engine
from rules.files import load_rules
from rules.points import Selection
from rules.recorders import Recorder
from rules.series import SeriesStore
from rules.sites import SiteDirectory
from rules.spools import Spool
from rules.sqlite_series import SQLiteSeriesStore
from rules.testing import run_test_file
from twin.registry import ChargerRegistry

T0 = 1_700_000_000.0
EVERYTHING = (0, 2**62)


@pytest.fixture
async def registry(db: Database) -> ChargerRegistry:
    chargers = ChargerRegistry(db)
    await chargers.create_schema()
    return chargers


@pytest.fixture
async def sqlite_series(tmp_path: Path) -> AsyncIterator[SeriesStore]:
    store = SQLiteSeriesStore(tmp_path / "series.db")
    await store.open()
    yield store
    await store.close()


def meter(i: int) -> dict[str, object]:
    return {
        "connectorId": 1,
        "timestamp": T0 + i,
        "values": [
            {"measurand": "Power.Active.Import", "unit": "W", "value": 7000.0 + i},
            {"measurand": "Current.Import", "unit": "A", "phase": "L1", "value": 16.0},
        ],
    }


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await _value(check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def counts_by(store: SeriesStore, measurement: str, field: str, tag: str) -> dict[str, int]:
    selection = Selection(measurement, field, group_by=(tag,))
    return {
        dict(s.labels)[tag]: int(s.value)
        for s in await store.aggregate(selection, "count", *EVERYTHING)
    }


class Recording:
    """A recorder on the real Mosquitto with a site directory, for one test."""

    def __init__(self, store: SeriesStore, sites: SiteDirectory, prefix: str, folder: Path):
        self.store = store
        self.sites = sites
        self.prefix = prefix
        self.recorder = Recorder(
            store, Spool(folder / "spool", max_bytes=1 << 20), Topics(prefix), sites=sites
        )

    async def start(self, mqtt: MqttClient) -> None:
        await self.sites.start()
        await self.recorder.start(mqtt)

    async def stop(self) -> None:
        await self.recorder.stop()
        await self.sites.stop()

    async def meter(self, probe: MqttProbe, charger: str, i: int) -> None:
        await probe.publish(f"{self.prefix}/chargers/{charger}/telemetry/meterValues", meter(i))


async def test_rules_recorder_tags_every_kind_of_point_with_the_site(
    series_store: SeriesStore,
    registry: ChargerRegistry,
    db: Database,
    mqtt: MqttClient,
    probe: MqttProbe,
    prefix: str,
    tmp_path: Path,
) -> None:
    for charger, site in (("CP-1", "north"), ("CP-2", "north"), ("CP-3", "south")):
        await registry.register(charger, None, site=site)
    await registry.register("CP-4", None)  # no site: no site tag
    recording = Recording(series_store, SiteDirectory(db), prefix, tmp_path)
    await recording.start(mqtt)
    try:
        for i, charger in enumerate(("CP-1", "CP-2", "CP-3", "CP-4")):
            await recording.meter(probe, charger, i)
            await probe.publish(
                f"{prefix}/chargers/{charger}/events/status",
                {"connectorId": 1, "status": "Faulted", "errorCode": "GroundFailure",
                 "timestamp": T0 + i},
            )  # fmt: skip
            await probe.publish(
                f"{prefix}/chargers/{charger}/presence", {"online": True, "since": T0 + i}
            )

        async def recorded() -> bool:
            return (
                sum((await counts_by(series_store, "presence", "state", "charger")).values()) == 4
            )

        await eventually(recorded)
        assert await counts_by(series_store, "meter_values", "value", "site") == {
            "north": 4,
            "south": 2,
            "": 2,  # CP-4 has no site: its points read as site ""
        }
        assert await counts_by(series_store, "connector_status", "status", "site") == {
            "north": 2,
            "south": 1,
            "": 1,
        }
        assert await counts_by(series_store, "presence", "state", "site") == {
            "north": 2,
            "south": 1,
            "": 1,
        }
        # Filtered by site, grouped by charger: only the site's chargers.
        north = Selection(
            "meter_values", "value", {"site": ("north",), "measurand": ("Power.Active.Import",)},
            ("site", "charger"),
        )  # fmt: skip
        samples = await series_store.aggregate(north, "max", *EVERYTHING)
        assert [(dict(s.labels), s.value) for s in samples] == [
            ({"site": "north", "charger": "CP-1"}, 7000.0),
            ({"site": "north", "charger": "CP-2"}, 7001.0),
        ]
        # The state held per site (state rules read the newest point per group).
        held = await series_store.last(
            Selection("connector_status", "status", {"site": ("south",)}, ("site", "charger")),
            None,
            2**62,
        )
        assert [(dict(s.labels), s.value) for s in held] == [
            ({"site": "south", "charger": "CP-3"}, "Faulted")
        ]
        # One load at start for twelve messages: the hot path never queries the registry.
        assert recording.sites.loads == 1
    finally:
        await recording.stop()


async def test_rules_site_directory_picks_up_a_changed_site_after_its_refresh(
    sqlite_series: SeriesStore,
    registry: ChargerRegistry,
    db: Database,
    mqtt: MqttClient,
    probe: MqttProbe,
    prefix: str,
    tmp_path: Path,
) -> None:
    await registry.register("CP-1", None, site="north")
    sites = SiteDirectory(db, refresh=0.2)
    recording = Recording(sqlite_series, sites, prefix, tmp_path)
    await recording.start(mqtt)
    try:
        await recording.meter(probe, "CP-1", 0)
        await eventually(lambda: has_site(sqlite_series, "north"))
        await db.execute("UPDATE chargers SET site = ? WHERE charger_id = ?", ("south", "CP-1"))
        loads = sites.loads
        await eventually(lambda: sites.loads >= loads + 2)  # one load after the update
        await recording.meter(probe, "CP-1", 1)
        await eventually(lambda: has_site(sqlite_series, "south"))
        assert await counts_by(sqlite_series, "meter_values", "value", "site") == {
            "north": 2,  # recorded before the change: points keep the site they had
            "south": 2,
        }
    finally:
        await recording.stop()


async def test_rules_site_directory_reloads_once_for_chargers_it_does_not_know(
    sqlite_series: SeriesStore,
    registry: ChargerRegistry,
    db: Database,
    mqtt: MqttClient,
    probe: MqttProbe,
    prefix: str,
    tmp_path: Path,
) -> None:
    sites = SiteDirectory(db, refresh=3600)  # only the reload for unknown ids can run
    recording = Recording(sqlite_series, sites, prefix, tmp_path)
    await recording.start(mqtt)
    try:
        assert sites.loads == 1
        # Registered after the recorder started: its first message (a boot) has its site.
        await registry.register("CP-9", None, site="east")
        await probe.publish(f"{prefix}/chargers/CP-9/events/boot", {"timestamp": T0})
        await eventually(lambda: has_site(sqlite_series, "east", "boots", "count"))
        assert sites.loads == 2
        # Not registered: no site, and no further query within the refresh period however
        # many messages it sends.
        for i in range(20):
            await recording.meter(probe, "CP-STRAY", i)

        async def stray_recorded() -> bool:
            counts = await counts_by(sqlite_series, "meter_values", "value", "site")
            return counts.get("", 0) == 40

        await eventually(stray_recorded)
        assert sites.loads == 2 and sites.failures == 0
    finally:
        await recording.stop()


async def test_rules_recorder_records_without_sites_until_the_registry_exists(
    sqlite_series: SeriesStore,
    db: Database,
    mqtt: MqttClient,
    probe: MqttProbe,
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rules.sites")
    sites = SiteDirectory(db, refresh=0.1)  # no `chargers` table yet: a fresh install
    recording = Recording(sqlite_series, sites, prefix, tmp_path)
    await recording.start(mqtt)
    try:
        await recording.meter(probe, "CP-1", 0)
        await eventually(lambda: has_site(sqlite_series, ""))
        await eventually(lambda: sites.failures >= 4)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "warned once, not at every retry"
        assert "cannot read the charger registry" in warnings[0].getMessage()

        registry = ChargerRegistry(db)
        await registry.create_schema()
        await registry.register("CP-1", None, site="north")
        await eventually(lambda: sites.loads >= 1)
        await recording.meter(probe, "CP-1", 1)
        await eventually(lambda: has_site(sqlite_series, "north"))
        assert await counts_by(sqlite_series, "meter_values", "value", "site") == {
            "": 2,
            "north": 2,
        }
        assert any("readable again" in r.getMessage() for r in caplog.records)
    finally:
        await recording.stop()


SITE_RULES = """groups:
  - name: sites
    rules:
      - alert: SiteRebootStorm
        query: {measurement: boots, field: count, aggregation: sum, window: 15m,
                filters: {site: [north, south]}, group_by: [site]}
        condition: {op: ">=", threshold: 3}
        severity: warning
        labels: {scope: site}
        annotations: {summary: "$value boots at site $site in 15 minutes"}
"""


async def test_rules_alert_per_site_from_recorded_telemetry(
    series_store: SeriesStore,
    registry: ChargerRegistry,
    db: Database,
    mqtt: MqttClient,
    probe: MqttProbe,
    prefix: str,
    tmp_path: Path,
) -> None:
    for charger, site in (("CP-1", "north"), ("CP-2", "north"), ("CP-3", "south")):
        await registry.register(charger, None, site=site)
    await registry.register("CP-4", None, site="west")  # filtered out by the rule
    (tmp_path / "sites.yaml").write_text(SITE_RULES)
    engine = Engine(series_store, AlertStore(db), load_rules([tmp_path / "sites.yaml"]))
    await engine.load()
    recording = Recording(series_store, SiteDirectory(db), prefix, tmp_path)
    await recording.start(mqtt)
    now = time.time()
    try:
        boots = ["CP-1", "CP-2", "CP-1", "CP-3", "CP-3", "CP-4", "CP-4", "CP-4"]
        for i, charger in enumerate(boots):
            await probe.publish(f"{prefix}/chargers/{charger}/events/boot", {"timestamp": now - i})

        async def recorded() -> bool:
            return sum((await counts_by(series_store, "boots", "count", "site")).values()) == 8

        await eventually(recorded)
        await engine.evaluate(now)
        [alert] = engine.firing("SiteRebootStorm")
        assert alert.labels == {
            "alertname": "SiteRebootStorm", "site": "north", "severity": "warning",
            "scope": "site",
        }  # fmt: skip
        assert alert.annotations["summary"] == "3 boots at site north in 15 minutes"
    finally:
        await recording.stop()


async def _value(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else value


async def has_site(
    store: SeriesStore, site: str, measurement: str = "meter_values", field: str = "value"
) -> bool:
    return site in await counts_by(store, measurement, field, "site")


def yaml_blocks(text: str) -> dict[str, str]:
    """The ```yaml blocks of a document that start with ``# file-name``, by file name."""
    blocks = {}
    for block in text.split("```yaml\n")[1:]:
        body = block.split("```", 1)[0]
        first, _, rest = body.partition("\n")
        if first.startswith("# ") and first.endswith(".yaml"):
            blocks[first[2:]] = rest
    return blocks


@pytest.fixture
def docs_example(tmp_path: Path) -> Path:
    """The site example of docs/rules.md, written out as its two files."""
    blocks = yaml_blocks((Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text())
    assert set(blocks) == {"site_sessions.yaml", "site_sessions_test.yaml"}
    for name, text in blocks.items():
        (tmp_path / name).write_text(text)
    return tmp_path / "site_sessions_test.yaml"


async def test_rules_docs_site_example_passes_its_rule_test(docs_example: Path) -> None:
    assert await run_test_file(docs_example) == []
