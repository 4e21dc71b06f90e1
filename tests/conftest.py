"""Fixtures shared by every test: real brokers, real databases, unique topic prefixes.

- ``mosquitto_url``: the Mosquitto of this machine (``CHARGETWIN_TEST_MQTT_URL``, default
  mqtt://127.0.0.1:1883); tests isolate themselves with a unique topic prefix.
- ``embedded_broker_url``: a fresh embedded amqtt broker on a free port.
- ``database_url``: parametrized over SQLite (a file in tmp_path) and PostgreSQL
  (``CHARGETWIN_TEST_POSTGRES_URL``, default postgresql://postgres@127.0.0.1:5432/test; each
  test gets its own schema). Set the variable to an empty string to skip PostgreSQL.
- ``db``: that database, open.
- Every test fails if it logs an exception or leaves asyncio tasks running.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import psycopg
import pytest
from retained import USED_PREFIXES, clear_retained, noted

from chargetwin.broker import AmqttBroker
from chargetwin.database import Database, connect

POSTGRES_URL = os.environ.get(
    "CHARGETWIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MQTT_URL = os.environ.get("CHARGETWIN_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses, so tests can share one broker."""
    return noted(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session", autouse=True)
def _clear_retained_at_exit() -> Iterator[None]:
    """Leave the shared broker as found: no retained presence of this run's prefixes."""
    yield
    try:
        clear_retained(MQTT_URL, USED_PREFIXES)
    except OSError as exc:  # the broker went away: nothing of ours is left on it anyway
        warnings.warn(f"could not clear retained test messages: {exc}", stacklevel=1)


@pytest.fixture
def mosquitto_url() -> str:
    return MQTT_URL


async def _stop_embedded(broker: AmqttBroker) -> None:
    await broker.stop()
    # amqtt leaves the server side of closed client connections to the garbage collector;
    # collect them here, quietly, instead of in whichever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
async def embedded_broker_url() -> AsyncIterator[str]:
    broker = AmqttBroker(free_port())
    await broker.start()
    yield broker.url
    await _stop_embedded(broker)


@pytest.fixture(params=["mosquitto", "embedded"])
async def broker_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Both brokers the platform supports: a real Mosquitto and the embedded amqtt."""
    if request.param == "mosquitto":
        yield MQTT_URL
        return
    broker = AmqttBroker(free_port())
    await broker.start()
    yield broker.url
    await _stop_embedded(broker)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/chargetwin.db"
        return
    if not POSTGRES_URL:
        pytest.skip("CHARGETWIN_TEST_POSTGRES_URL is empty: PostgreSQL tests disabled")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The database of ``database_url``, open for the test."""
    database = connect(database_url)
    await database.open()
    yield database
    await database.close()


class _ExceptionRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None or record.levelno >= logging.CRITICAL:
            self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_logged_exception(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that makes our code log an exception fails, even if its asserts pass."""
    recorder = _ExceptionRecorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    yield
    root.removeHandler(recorder)
    if "allow_logged_exceptions" in request.keywords:
        return
    ours = [r for r in recorder.records if not r.name.startswith(("amqtt", "gmqtt", "asyncio"))]
    if ours:
        pytest.fail(
            "logged exception(s): " + "; ".join(f"{r.name}: {r.getMessage()}" for r in ours)
        )


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    """Every task a test starts must be finished by its end (every task has an owner)."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    left = [
        t
        for t in asyncio.all_tasks() - before
        if not t.done() and t is not asyncio.current_task() and not _is_library_task(t)
    ]
    if left:
        names = ", ".join(t.get_name() + ":" + repr(t.get_coro()) for t in left)
        for t in left:
            t.cancel()
        pytest.fail(f"tasks left running: {names}")


def _is_library_task(task: asyncio.Task[object]) -> bool:
    # gmqtt and amqtt keep a few housekeeping tasks that end shortly after close.
    coro = repr(task.get_coro())
    return any(lib in coro for lib in ("gmqtt", "amqtt", "websockets", "uvicorn", "psycopg"))
