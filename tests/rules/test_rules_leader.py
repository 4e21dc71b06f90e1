"""Two real ``chargetwin rules`` processes on one Mosquitto, PostgreSQL and influxd.

Both record (one share group); one engine evaluates: every alert fires once, one work order
each; each process keeps its own MQTT client id (no --mqtt-client-id), so neither kicks the
other off the broker; after kill -9 of the leader the standby evaluates within 10 s and
announces nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from brokers import Mosquitto
from influx_servers import InfluxServer
from probes import MqttProbe

pytestmark = pytest.mark.postgres

POSTGRES_URL = os.environ.get(
    "CHARGETWIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

RULES = """groups:
  - name: fast
    interval: 0.5s
    rules:
      - alert: Hot
        query: {measurement: meter_values, field: value, filters: {measurand: Temperature},
                aggregation: max, window: 1h, group_by: [charger, connector]}
        condition: {op: ">", threshold: 70}
        severity: critical
        annotations: {summary: "$charger at $value"}
        actions:
          - {type: work_order, title: "Hot $charger"}
"""
LEADS = "rules engine: this process leads now"
CONNECTED = re.compile(r"MQTT connected to \S+ as (\S+)")


@pytest.fixture
def schema_url() -> Iterator[tuple[str, str]]:
    """A PostgreSQL schema of its own: (database URL for the processes, schema name)."""
    if not POSTGRES_URL:
        pytest.skip("CHARGETWIN_TEST_POSTGRES_URL is empty: PostgreSQL tests disabled")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={schema}')}", schema
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


class RulesProcess:
    def __init__(self, name: str, folder: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "launch.cli", "rules"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def leads(self) -> bool:
        return LEADS in self.text()

    def client_ids(self) -> list[str]:
        return CONNECTED.findall(self.text())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql).fetchall())


def _hot(connector: int = 1) -> dict[str, object]:
    return {
        "connectorId": connector,
        "transactionId": None,
        "timestamp": time.time(),
        "values": [{"measurand": "Temperature", "unit": "Celsius", "value": 85.0,
                    "phase": None, "context": "Sample.Periodic", "location": "Body"}],
    }  # fmt: skip


async def _until(what: str, check: object, timeout: float, logs: list[RulesProcess]) -> float:
    """Poll ``check()`` until true; the seconds it took."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s\n" + _tails(logs))
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def _tails(processes: list[RulesProcess]) -> str:
    return "\n".join(f"--- {p.name}\n{p.text()[-3000:]}" for p in processes)


async def test_two_rules_processes_one_engine_and_failover(
    tmp_path: Path,
    schema_url: tuple[str, str],
    influx: InfluxServer,
    influx_database: str,
    prefix: str,
) -> None:
    database_url, _ = schema_url
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "hot.yaml").write_text(RULES)
    broker = Mosquitto(tmp_path, persistence=False)
    broker.start()
    env = {
        **os.environ,
        "CHARGETWIN_MQTT_URL": broker.url,
        "CHARGETWIN_MQTT_PREFIX": prefix,
        "CHARGETWIN_MQTT_SHARE_GROUP": "g",
        "CHARGETWIN_DATABASE_URL": database_url,
        "CHARGETWIN_INFLUX_URL": influx.url,
        "CHARGETWIN_INFLUX_DATABASE": influx_database,
        "CHARGETWIN_RULES": str(tmp_path / "rules"),
        # One data directory for both, as replicas on one volume: each takes its own slot.
        "CHARGETWIN_DATA_DIR": str(tmp_path / "data"),
        "CHARGETWIN_LOG_LEVEL": "INFO",
    }
    env.pop("CHARGETWIN_MQTT_CLIENT_ID", None)
    processes = [RulesProcess(name, tmp_path, env) for name in ("a", "b")]
    probe = MqttProbe(broker.url)
    try:
        await probe.subscribe(f"{prefix}/alerts/firing")
        await _until(
            "both connected, one leading",
            lambda: all(p.client_ids() for p in processes) and any(p.leads() for p in processes),
            60,
            processes,
        )
        chargers = [f"CP-{n}" for n in range(6)]

        def firing() -> list[str]:
            return [
                json.loads(payload)["labels"]["charger"]
                for topic, payload in probe.seen
                if topic == f"{prefix}/alerts/firing"
            ]

        async def publish_until_firing(names: list[str], timeout: float) -> None:
            # The same point again replaces itself; sent until each charger's alert fired
            # (the share group hands each message to one of the two recorders).
            deadline = time.monotonic() + timeout
            while True:
                await probe.collect(f"{prefix}/alerts/firing", 0, timeout=0)
                missing = [n for n in names if n not in firing()]
                if not missing:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"no firing alert for {missing}\n" + _tails(processes))
                for name in missing:
                    await probe.publish(f"{prefix}/chargers/{name}/telemetry/meterValues", _hot())
                await asyncio.sleep(0.5)

        await publish_until_firing(chargers, 60)
        await asyncio.sleep(3)  # six more evaluations: nothing may fire twice
        await probe.collect(f"{prefix}/alerts/firing", 0, timeout=0)
        assert sorted(firing()) == sorted(chargers)
        open_alerts = _rows(
            database_url, "SELECT labels FROM alerts WHERE state IN ('pending', 'firing')"
        )
        assert sorted(json.loads(str(r[0]))["charger"] for r in open_alerts) == sorted(chargers)
        orders = _rows(database_url, "SELECT charger_id FROM work_orders")
        assert sorted(str(r[0]) for r in orders) == sorted(chargers)

        # Each process connected once, under its own id: neither kicked the other off.
        ids = [p.client_ids() for p in processes]
        assert [len(i) for i in ids] == [1, 1], ids
        assert ids[0][0] != ids[1][0]
        assert all(i.startswith("chargetwin-rules-") for i in ids[0] + ids[1])

        [leader] = [p for p in processes if p.leads()]
        [standby] = [p for p in processes if p is not leader]
        assert "rules engine: standby" in standby.text()
        leader.proc.kill()  # kill -9
        leader.proc.wait(10)
        killed_at = time.time()
        took = await _until("the standby leads", standby.leads, 10, processes)
        await _until(
            "the standby evaluates",
            lambda: bool(
                _rows(database_url, f"SELECT 1 FROM rule_states WHERE last_eval > {killed_at}")
            ),
            10 - took,
            processes,
        )
        evaluated = time.time() - killed_at
        print(f"after kill -9: standby led in {took:.1f} s, evaluated in {evaluated:.1f} s")
        await publish_until_firing(["CP-new"], 30)
        await asyncio.sleep(2)
        await probe.collect(f"{prefix}/alerts/firing", 0, timeout=0)
        # The taken-over alerts are not announced again; the new one once.
        assert sorted(firing()) == sorted([*chargers, "CP-new"])
        assert len(_rows(database_url, "SELECT 1 FROM work_orders")) == len(chargers) + 1
        open_count = _rows(
            database_url, "SELECT COUNT(*) FROM alerts WHERE state IN ('pending', 'firing')"
        )
        assert open_count == [(len(chargers) + 1,)]
        assert standby.stop() == 0, standby.text()[-3000:]
    finally:
        probe.close()
        for p in processes:
            p.stop()
        broker.stop()
