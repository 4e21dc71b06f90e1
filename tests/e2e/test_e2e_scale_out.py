"""Scale-out on one machine: every component replicated, ``kill -9`` of one process of each kind.

The scenario is :func:`bench.scale_out.run` (the operator's ``python -m bench.scale_out``
runs it with 500 chargers), here with a fleet small enough for CI on two cores: a private
Mosquitto, a private PostgreSQL database and a private ``influxd``; HAProxy (or, without
it, the module's asyncio balancer) in front of 2 bridges and 2 API processes; 2 twin
workers and 2 recorders on shared subscriptions; a fleet leader and a standby; all of
them ``chargetwin`` processes. Simulated chargers charge through the balancer while a
firmware campaign runs and one process of each kind is killed with SIGKILL and started
again. The scenario runs once per module; each test below checks one promise of
docs/deployment.md against the chargers' own ledger, so a broken promise fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.scale_out import (
    KINDS,
    NEW,
    POSTGRES_URL,
    Broker,
    Database,
    Options,
    Process,
    Results,
    free_port,
    report,
    run,
)

pytestmark = pytest.mark.postgres

OPTIONS = Options(
    chargers=16,
    meter_interval=3,
    load_s=6.0,
    campaign_concurrency=2,
    settle_s=60.0,
)


@pytest.fixture(scope="module")
def scale_out(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """The whole scenario, once for the module (a few minutes on two busy cores)."""
    if not POSTGRES_URL:
        pytest.skip("CHARGETWIN_TEST_POSTGRES_URL is empty: PostgreSQL tests disabled")
    root = tmp_path_factory.mktemp("scale-out")
    results = asyncio.run(run(root, OPTIONS, say=lambda line: print(line, flush=True)))
    print(report(results, OPTIONS))
    return results


def test_one_process_of_each_kind_was_killed_and_served_again(scale_out: Results) -> None:
    assert sorted(name.split("-")[0] for name in scale_out.restarts) == sorted(KINDS)
    assert scale_out.acked > 0 and scale_out.sessions > 0


def test_every_shadow_equals_what_its_charger_last_reported(scale_out: Results) -> None:
    assert scale_out.shadow_wrong == {}


def test_no_acknowledged_meter_value_is_missing_in_influxdb(scale_out: Results) -> None:
    assert scale_out.acked_meter > 0
    assert scale_out.missing_meter == {}


def test_no_shadow_version_went_backwards(scale_out: Results) -> None:
    assert scale_out.versions_fell == [], "a version read through the API fell"
    assert scale_out.version_conflicts == [], "one version announced with two states"
    assert scale_out.stored_below_announced == [], "a stored version below one announced"


def test_commands_reach_chargers_on_either_bridge(scale_out: Results) -> None:
    assert len(scale_out.bridges_seen) == 2, scale_out.commands
    apis = {api for _, _, api, _, _ in scale_out.commands}
    assert apis == {"api-1", "api-2"}, scale_out.commands
    for charger_id, bridge, api, status, received in scale_out.commands:
        assert (status, received) == (200, "TriggerMessage"), (charger_id, bridge, api)


def test_a_campaign_started_before_the_kills_completes(scale_out: Results) -> None:
    assert scale_out.campaign_targets > 0
    # It was under way when its engine's leader was killed.
    assert scale_out.fleet_leader_killed
    state, installed = scale_out.campaign_at_kill["fleet"]
    assert state == "running" and installed < scale_out.campaign_targets
    assert scale_out.campaign.get("state") == "completed", scale_out.campaign
    # Every charger of the model was taken (its shadow showed the old version), and each
    # one is installed.
    assert scale_out.campaign_chargers == scale_out.campaign_targets
    assert scale_out.campaign["counts"]["installed"] == scale_out.campaign_chargers
    assert scale_out.firmware_wrong == [], f"chargers not on {NEW}"


# --- the pieces on their own ----------------------------------------------------------------
@contextlib.contextmanager
def _echo_servers(count: int) -> Iterator[list[int]]:
    """``count`` TCP servers answering each line with their own number."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
        "while True:\n"
        "    c,_=s.accept(); c.recv(100); c.sendall(sys.argv[2].encode()); c.close()\n"
    )
    ports = [free_port() for _ in range(count)]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(port), str(i)])
        for i, port in enumerate(ports)
    ]
    try:
        yield ports
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(5)


def _ask(port: int) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"?\n")
                return sock.recv(100).decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_fallback_balancer_spreads_connections_and_skips_a_dead_backend() -> None:
    """Without haproxy the scenario balances with ``python -m bench.scale_out proxy``."""
    dead = free_port()  # nothing listens there
    with _echo_servers(2) as (first, second):
        port = free_port()
        backends = [str(first), str(dead), str(second)]
        proxy = subprocess.Popen(
            [sys.executable, "-m", "bench.scale_out", "proxy", str(port), *backends],
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            answers = [_ask(port) for _ in range(6)]
        finally:
            proxy.terminate()
            proxy.wait(10)
    assert sorted(set(answers)) == ["0", "1"], answers


def test_twin_workers_started_together_on_a_fresh_database_all_serve(
    tmp_path: Path,
) -> None:
    if not POSTGRES_URL:
        pytest.skip("CHARGETWIN_TEST_POSTGRES_URL is empty: PostgreSQL tests disabled")
    broker, database = Broker(tmp_path), Database()
    broker.start()
    database.create()
    workers = []
    try:
        for i in (1, 2, 3):
            env = {
                "PATH": "/usr/bin:/bin",
                "CHARGETWIN_MQTT_URL": broker.url,
                "CHARGETWIN_DATABASE_URL": database.url,
                "CHARGETWIN_MQTT_SHARE_GROUP": "chargetwin",
                "CHARGETWIN_MQTT_CLIENT_ID": f"race-twin-{i}",
                "CHARGETWIN_DATA_DIR": str(tmp_path / f"twin-{i}"),
                "CHARGETWIN_LOG_LEVEL": "INFO",
            }
            workers.append(Process(f"twin-{i}", "twin", env, tmp_path / f"twin-{i}"))
        offsets = [worker.start() for worker in workers]
        for worker, offset in zip(workers, offsets, strict=True):
            worker.wait_ready(offset)
    finally:
        for worker in workers:
            worker.stop()
        database.drop()
        broker.stop()
