"""Fixtures of the rules tests: a real ``influxd``, and both time-series stores on it.

``influx`` is one influxd for the whole session (each test uses its own database);
``series_store`` is parametrized over the embedded SQLite store and InfluxDB, so every
store test runs on both and proves they answer alike. ``mqtt`` is a client of the real
Mosquitto for a recorder to subscribe with, ``probe`` publishes to it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from influx_servers import InfluxServer
from probes import MqttProbe

from chargetwin.mqtt import MqttClient
from rules.influx import InfluxStore
from rules.series import SeriesStore
from rules.sqlite_series import SQLiteSeriesStore


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One real influxd for the session; fails (never skips) when influxd is missing."""
    server = InfluxServer(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def influx_database() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", "influxdb"])
async def series_store(
    request: pytest.FixtureRequest, tmp_path: Path, influx_database: str
) -> AsyncIterator[SeriesStore]:
    store: SeriesStore
    if request.param == "sqlite":
        store = SQLiteSeriesStore(tmp_path / "series.db")
    else:
        server: InfluxServer = request.getfixturevalue("influx")
        store = InfluxStore(server.url, influx_database)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def mqtt(mosquitto_url: str) -> AsyncIterator[MqttClient]:
    client = MqttClient(mosquitto_url, f"test-recorder-{uuid.uuid4().hex[:8]}")
    await client.connect()
    yield client
    await client.disconnect()


@pytest.fixture
async def probe(mosquitto_url: str) -> AsyncIterator[MqttProbe]:
    p = MqttProbe(mosquitto_url)
    await p.connected()
    yield p
    p.close()
