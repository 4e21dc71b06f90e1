"""Two API replicas on one database, each on its own socket and data directory: a firmware
image or diagnostics file received by one is listed and served by the other, as chargers
and operators reach whichever replica the load balancer picks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from api_helpers import ADMIN_ENV_TOKEN, assert_problem, free_port
from pydantic import SecretStr

import api.routes.diagnostics as diagnostics_routes
from api.app import create_app, serve
from api.backends import Backend
from api.tokens import create_token
from chargetwin.database import connect
from chargetwin.files import CHUNK_BYTES
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics

# More than two chunks, not a multiple of the chunk size: ranges cross chunk edges.
IMAGE = bytes(range(256)) * (CHUNK_BYTES * 2 // 256) + b"tail-of-the-image"
SHA = hashlib.sha256(IMAGE).hexdigest()


@dataclass
class Replica:
    backend: Backend
    url: str
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def replica(
    database_url: str, mosquitto_url: str, prefix: str, data_dir: Path, file_store: str
) -> AsyncIterator[Replica]:
    """One API process's worth: its own database pool, MQTT client, data dir and socket."""
    async with contextlib.AsyncExitStack() as stack:
        db = connect(database_url)
        await db.open()
        stack.push_async_callback(db.close)
        mqtt = MqttClient(mosquitto_url, f"test-api-{uuid.uuid4().hex[:8]}")
        await mqtt.connect()
        stack.push_async_callback(mqtt.disconnect)
        port = free_port()
        backend = Backend.build(
            db,
            mqtt,
            Topics(prefix),
            admin_token=SecretStr(ADMIN_ENV_TOKEN),
            data_dir=data_dir,
            public_url=f"http://127.0.0.1:{port}",
            file_store=file_store,  # type: ignore[arg-type]
        )
        await backend.create_schema()
        stop = asyncio.Event()
        task = asyncio.create_task(serve(create_app(backend), "127.0.0.1", port, stop))

        async def _stop() -> None:
            stop.set()
            await task

        stack.push_async_callback(_stop)
        url = f"http://127.0.0.1:{port}"
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
        for _ in range(200):
            try:
                await http.get("/api/v1/health")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        yield Replica(backend, url, http)


@pytest.fixture
async def replicas(
    database_url: str, mosquitto_url: str, prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Replica, Replica]]:
    # PostgreSQL: the default (auto) picks the database. SQLite: auto keeps the data dir,
    # which replicas on two disks cannot share, so the database store is asked for.
    kind = "database" if database_url.startswith("sqlite") else "auto"
    async with (
        replica(database_url, mosquitto_url, prefix, tmp_path / "a", kind) as a,
        replica(database_url, mosquitto_url, prefix, tmp_path / "b", kind) as b,
    ):
        for one in (a, b):
            assert one.backend.operations is not None
            assert one.backend.operations.files.kind == "database"
        yield a, b


async def _headers(replica: Replica, role: str) -> dict[str, str]:
    token = await create_token(replica.backend.db, role, f"{role}-{uuid.uuid4().hex[:6]}")
    return {"Authorization": f"Bearer {token}"}


async def test_firmware_uploaded_to_one_replica_downloads_from_the_other(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = replicas
    operator = await _headers(a, "operator")
    created = await a.http.post(
        "/api/v1/firmware",
        data={"vendor": "ChargeTwin", "model": "CT-AC22", "version": "2.0.0"},
        files={"file": ("fw.bin", IMAGE, "application/octet-stream")},
        headers=operator,
    )
    assert created.status_code == 201, created.text
    assert (created.json()["sha256"], created.json()["size"]) == (SHA, len(IMAGE))
    assert not (tmp_path / "a" / "firmware").exists()  # in the database instead

    path = f"/api/v1/firmware/files/{SHA}"
    whole = await b.http.get(path, params={"sha256": SHA, "version": "2.0.0"})
    assert whole.status_code == 200
    assert whole.content == IMAGE and hashlib.sha256(whole.content).hexdigest() == SHA
    assert whole.headers["content-length"] == str(len(IMAGE))
    assert whole.headers["etag"] == f'"{SHA}"'
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert whole.headers["content-disposition"] == f'attachment; filename="{SHA}.bin"'

    head = await b.http.head(path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(IMAGE))

    edge = CHUNK_BYTES - 5  # a range across the first chunk edge
    part = await b.http.get(path, headers={"Range": f"bytes={edge}-{CHUNK_BYTES + 9}"})
    assert part.status_code == 206
    assert part.content == IMAGE[edge : CHUNK_BYTES + 10]
    assert part.headers["content-range"] == f"bytes {edge}-{CHUNK_BYTES + 9}/{len(IMAGE)}"
    resumed = await b.http.get(path, headers={"Range": f"bytes={2 * CHUNK_BYTES}-"})
    assert resumed.status_code == 206 and resumed.content == IMAGE[2 * CHUNK_BYTES :]
    suffix = await b.http.get(path, headers={"Range": "bytes=-17"})
    assert suffix.status_code == 206 and suffix.content == b"tail-of-the-image"
    beyond = await b.http.get(path, headers={"Range": f"bytes={len(IMAGE)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(IMAGE)}"
    stale = await b.http.get(path, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == IMAGE
    fresh = await b.http.get(path, headers={"Range": "bytes=0-9", "If-Range": f'"{SHA}"'})
    assert fresh.status_code == 206 and fresh.content == IMAGE[:10]

    # The same image uploaded to the other replica again is one stored file.
    again = await b.http.post(
        "/api/v1/firmware",
        data={"vendor": "ChargeTwin", "model": "CT-DC50", "version": "2.0.0"},
        files={"file": ("fw.bin", IMAGE, "application/octet-stream")},
        headers=await _headers(b, "operator"),
    )
    assert again.status_code == 201, again.text
    db = a.backend.db
    assert await db.fetchall("SELECT name FROM stored_files WHERE folder = 'firmware'") == [(SHA,)]
    chunks = await db.fetchall("SELECT COUNT(*) FROM stored_file_chunks")
    assert chunks == [(3,)]  # no copy of the second upload left behind

    admin = await _headers(b, "admin")
    for image_id in (created.json()["id"], again.json()["id"]):
        deleted = await b.http.delete(f"/api/v1/firmware/{image_id}", headers=admin)
        assert deleted.status_code == 204, deleted.text
    assert_problem(await a.http.get(path), 404)
    assert await db.fetchall("SELECT COUNT(*) FROM stored_file_chunks") == [(0,)]


async def test_diagnostics_uploaded_to_one_replica_list_and_download_from_the_other(
    replicas: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas
    registered = await a.http.post(
        "/api/v1/chargers",
        json={"id": "CP-R-1", "password": "correct-horse-battery"},
        headers=await _headers(a, "admin"),
    )
    assert registered.status_code == 201, registered.text
    assert a.backend.operations is not None and b.backend.operations is not None
    log_body = b"boot ok\n" * 200_000  # 1.6 MB: two chunks
    token = await a.backend.operations.uploads.grant("CP-R-1")
    put = await a.http.put(f"/api/v1/diagnostics/uploads/CP-R-1/{token}/diag.log", content=log_body)
    assert put.status_code == 201, put.text
    # The grant is spent for every replica.
    spent = await b.http.put(f"/api/v1/diagnostics/uploads/CP-R-1/{token}/x.log", content=b"x")
    assert_problem(spent, 403)

    # A charger given a location on replica B uploads there; the name is taken: renamed.
    second = await a.backend.operations.uploads.grant("CP-R-1")
    post = await b.http.post(
        f"/api/v1/diagnostics/uploads/CP-R-1/{second}/",
        files={"file": ("diag.log", b"second upload", "text/plain")},
    )
    assert post.status_code == 201, post.text
    assert post.json() == {"name": "diag-1.log", "size": 13}

    viewer, operator = await _headers(a, "viewer"), await _headers(a, "operator")
    for one in (a, b):
        listing = await one.http.get("/api/v1/chargers/CP-R-1/diagnostics", headers=viewer)
        assert listing.status_code == 200, listing.text
        assert [(f["name"], f["size"]) for f in listing.json()] == [
            ("diag-1.log", 13),
            ("diag.log", len(log_body)),
        ]
    got = await b.http.get("/api/v1/chargers/CP-R-1/diagnostics/diag.log", headers=operator)
    assert got.status_code == 200 and got.content == log_body
    assert got.headers["content-disposition"] == 'attachment; filename="diag.log"'
    ranged = await b.http.get(
        "/api/v1/chargers/CP-R-1/diagnostics/diag.log",
        headers={**operator, "Range": "bytes=8-15"},
    )
    assert ranged.status_code == 206 and ranged.content == b"boot ok\n"
    other = await a.http.get("/api/v1/chargers/CP-R-1/diagnostics/diag-1.log", headers=operator)
    assert other.status_code == 200 and other.content == b"second upload"

    # Over the limit: 413, and nothing of the upload stays in the database.
    monkeypatch.setattr(diagnostics_routes, "MAX_UPLOAD_BYTES", CHUNK_BYTES + 10)
    third = await b.backend.operations.uploads.grant("CP-R-1")
    big = await b.http.put(
        f"/api/v1/diagnostics/uploads/CP-R-1/{third}/big.log", content=b"z" * (CHUNK_BYTES + 11)
    )
    assert_problem(big, 413)
    db = b.backend.db
    blobs = await db.fetchall("SELECT DISTINCT blob_id FROM stored_file_chunks ORDER BY blob_id")
    named = await db.fetchall("SELECT blob_id FROM stored_files ORDER BY blob_id")
    assert blobs == named and len(named) == 2
    retry = await b.http.put(f"/api/v1/diagnostics/uploads/CP-R-1/{third}/ok.log", content=b"ok")
    assert retry.status_code == 201, retry.text  # the refused upload did not spend the grant


async def test_switching_to_the_database_store_an_image_is_uploaded_again(
    database_url: str, mosquitto_url: str, prefix: str, tmp_path: Path
) -> None:
    """The finding this store fixes (a data-dir image 404 on another replica), and the way
    docs/firmware.md gives to move an image in: a 409 upload of it still stores it."""
    kind = "database" if database_url.startswith("sqlite") else "auto"
    async with (
        replica(database_url, mosquitto_url, prefix, tmp_path / "old", "data-dir") as old,
        replica(database_url, mosquitto_url, prefix, tmp_path / "new", kind) as new,
    ):
        fields = {"vendor": "ChargeTwin", "model": "CT-AC22", "version": "2.0.0"}
        body = {"file": ("fw.bin", IMAGE, "application/octet-stream")}
        first = await old.http.post(
            "/api/v1/firmware", data=fields, files=body, headers=await _headers(old, "operator")
        )
        assert first.status_code == 201, first.text
        path = f"/api/v1/firmware/files/{SHA}"
        assert (await old.http.get(path)).content == IMAGE
        assert_problem(await new.http.get(path), 404)  # on the other replica's disk only

        again = await new.http.post(
            "/api/v1/firmware", data=fields, files=body, headers=await _headers(new, "operator")
        )
        assert_problem(again, 409)
        served = await new.http.get(path)
        assert served.status_code == 200 and served.content == IMAGE
