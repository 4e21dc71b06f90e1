"""A database that cannot be reached or is locked is a 503 with Retry-After, not a 500.

Real parts: PostgreSQL behind a TCP proxy of the test's own that is stopped (the server
"goes away": every connection cut, new ones refused), a backend terminated by the server,
and an SQLite file another connection holds locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from api_helpers import ADMIN_ENV_TOKEN, assert_problem
from pydantic import SecretStr

from api.app import create_app
from api.backends import Backend
from chargetwin.database import PostgresDatabase, SQLiteDatabase
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN = {"Authorization": f"Bearer {ADMIN_ENV_TOKEN}"}


class TcpProxy:
    """Forwards a local port to PostgreSQL until :meth:`stop` cuts every connection."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def api_mqtt(mosquitto_url: str) -> AsyncIterator[MqttClient]:
    client = MqttClient(mosquitto_url, f"test-api-{uuid.uuid4().hex[:8]}")
    await client.connect()
    yield client
    await client.disconnect()


@pytest.fixture
async def schema_url() -> AsyncIterator[str]:
    """A schema of its own in the test PostgreSQL; its URL (search_path set)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


async def _client(backend: Backend) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(backend))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _assert_unavailable(response: httpx.Response) -> None:
    problem = assert_problem(response, 503)
    assert problem["type"] == "urn:chargetwin:problem:store-unavailable"
    assert int(response.headers["retry-after"]) > 0


async def test_postgresql_gone_is_a_503_with_retry_after_and_one_log_line(
    schema_url: str, api_mqtt: MqttClient, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    db = PostgresDatabase(_through(schema_url, proxy.port))
    await db.open()
    try:
        backend = Backend.build(
            db, api_mqtt, Topics(prefix), admin_token=SecretStr(ADMIN_ENV_TOKEN)
        )
        await backend.create_schema()
        async with await _client(backend) as client:
            assert (await client.get("/api/v1/chargers", headers=ADMIN)).status_code == 200
            await proxy.stop()  # the server is gone: connections cut, new ones refused
            with caplog.at_level(logging.WARNING, logger="api.problems"):
                response = await client.get("/api/v1/chargers", headers=ADMIN)
            _assert_unavailable(response)
            lines = [r for r in caplog.records if r.name == "api.problems"]
            assert len(lines) == 1 and lines[0].exc_info is None
            assert "database unavailable" in lines[0].getMessage()
    finally:
        await proxy.stop()
        await db.close()


async def test_a_terminated_postgresql_backend_is_a_503(
    schema_url: str, api_mqtt: MqttClient, prefix: str
) -> None:
    db = PostgresDatabase(schema_url, min_size=1, max_size=1)
    await db.open()
    try:
        backend = Backend.build(
            db, api_mqtt, Topics(prefix), admin_token=SecretStr(ADMIN_ENV_TOKEN)
        )
        await backend.create_schema()
        async with await _client(backend) as client:
            assert (await client.get("/api/v1/chargers", headers=ADMIN)).status_code == 200
            (pid,) = await db.fetchone("SELECT pg_backend_pid()") or (0,)
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            _assert_unavailable(await client.get("/api/v1/chargers", headers=ADMIN))
            # The pool replaces the connection: the next request is served again.
            assert (await client.get("/api/v1/chargers", headers=ADMIN)).status_code == 200
    finally:
        await db.close()


async def test_a_locked_sqlite_database_is_a_503(
    tmp_path: Path, api_mqtt: MqttClient, prefix: str
) -> None:
    path = tmp_path / "chargetwin.db"
    db = SQLiteDatabase(f"sqlite:///{path}")
    await db.open()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        backend = Backend.build(
            db, api_mqtt, Topics(prefix), admin_token=SecretStr(ADMIN_ENV_TOKEN)
        )
        await backend.create_schema()
        async with await _client(backend) as client:
            holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than 5 s
            body = {"id": "CP-LOCKED", "password": "correct-horse-battery"}
            response = await client.post("/api/v1/chargers", json=body, headers=ADMIN)
            _assert_unavailable(response)
            holder.execute("ROLLBACK")
            response = await client.post("/api/v1/chargers", json=body, headers=ADMIN)
            assert response.status_code == 201, response.text
    finally:
        holder.close()
        await db.close()
