"""Diagnostics uploads: one-time grants bound to a charger, listing and download by role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import ADMIN_ENV_TOKEN, assert_problem
from pydantic import SecretStr

from api.backends import Backend
from api.diagnostics import DiagnosticsUploads
from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics

Auth = Callable[[str], dict[str, str]]


async def stored_bytes(backend: Backend, charger_id: str, name: str) -> bytes | None:
    """A diagnostics file as the API's file store holds it (data directory or database)."""
    assert backend.operations is not None
    files = backend.operations.files
    stored = await files.stat(f"diagnostics/{charger_id}", name)
    return None if stored is None else b"".join([c async for c in files.read(stored)])


@pytest.fixture
async def backend(db: Database, api_mqtt: MqttClient, topics: Topics, tmp_path: Path) -> Backend:
    backend = Backend.build(
        db, api_mqtt, topics, admin_token=SecretStr(ADMIN_ENV_TOKEN), data_dir=tmp_path
    )
    await backend.create_schema()
    return backend


async def test_a_grant_allows_one_upload_by_its_charger(
    client: httpx.AsyncClient,
    auth: Auth,
    backend: Backend,
    register: Callable[..., Awaitable[dict[str, Any]]],
) -> None:
    await register("CP-D-1")
    assert backend.operations is not None
    uploads = backend.operations.uploads
    token = await uploads.grant("CP-D-1")
    base = f"/api/v1/diagnostics/uploads/CP-D-1/{token}/"

    wrong_charger = f"/api/v1/diagnostics/uploads/CP-D-2/{token}/a.log"
    assert_problem(await client.put(wrong_charger, content=b"x"), 403)
    put = await client.put(base + "log-1.txt", content=b"line 1\n")
    assert put.status_code == 201, put.text
    assert put.json() == {"name": "log-1.txt", "size": 7}
    assert await stored_bytes(backend, "CP-D-1", "log-1.txt") == b"line 1\n"
    assert_problem(await client.put(base + "log-2.txt", content=b"again"), 403)  # spent

    second = await uploads.grant("CP-D-1")
    post = await client.post(
        f"/api/v1/diagnostics/uploads/CP-D-1/{second}/",
        files={"file": ("log-1.txt", b"multipart body", "text/plain")},
    )
    assert post.status_code == 201, post.text
    assert post.json()["name"] == "log-1-1.txt"  # never overwrites

    listing = await client.get("/api/v1/chargers/CP-D-1/diagnostics", headers=auth("viewer"))
    assert sorted(f["name"] for f in listing.json()) == ["log-1-1.txt", "log-1.txt"]
    path = "/api/v1/chargers/CP-D-1/diagnostics/log-1-1.txt"
    assert_problem(await client.get(path, headers=auth("viewer")), 403)
    download = await client.get(path, headers=auth("operator"))
    assert download.status_code == 200 and download.content == b"multipart body"
    missing = "/api/v1/chargers/CP-D-1/diagnostics/..secret"
    assert_problem(await client.get(missing, headers=auth("operator")), 404)


async def test_unknown_and_expired_grants_are_refused(
    client: httpx.AsyncClient, db: Database, backend: Backend
) -> None:
    assert_problem(await client.put("/api/v1/diagnostics/uploads/CP-D-1/nope/a", content=b"x"), 403)
    assert backend.operations is not None
    expired = DiagnosticsUploads(db, backend.operations.files, ttl=-1)
    token = await expired.grant("CP-D-1")
    url = f"/api/v1/diagnostics/uploads/CP-D-1/{token}/a.log"
    assert_problem(await client.put(url, content=b"x"), 403)
    assert await stored_bytes(backend, "CP-D-1", "a.log") is None


async def test_an_id_that_names_the_parent_folder_reaches_no_file_outside(
    client: httpx.AsyncClient, auth: Auth, backend: Backend, db: Database, tmp_path: Path
) -> None:
    """``..`` was a valid id once: registered then, it must still not reach the data folder
    (``diagnostics/..`` is the data folder, with the database in it)."""
    registered = await client.post(
        "/api/v1/chargers", json={"id": "..", "password": "correct-horse"}, headers=auth("admin")
    )
    assert_problem(registered, 422)
    # A registration from before the id alphabet was narrowed.
    await db.execute(
        "INSERT INTO chargers (charger_id, password_hash, site, tags, description, created_at)"
        " VALUES (?, NULL, NULL, '[]', NULL, 0)",
        ("..",),
    )
    (tmp_path / "secret.db").write_bytes(b"password hashes")
    listing = await client.get("/api/v1/chargers/%2E%2E/diagnostics", headers=auth("viewer"))
    assert listing.status_code == 200, listing.text
    assert listing.json() == []
    for name in ("secret.db", "chargetwin.db"):
        download = f"/api/v1/chargers/%2E%2E/diagnostics/{name}"
        assert_problem(await client.get(download, headers=auth("admin")), 404)

    assert backend.operations is not None
    token = await backend.operations.uploads.grant("..")
    upload = f"/api/v1/diagnostics/uploads/%2E%2E/{token}/planted.db"
    assert_problem(await client.put(upload, content=b"x"), 403)
    left = {p.name for p in tmp_path.iterdir()}  # noqa: ASYNC240 (a small folder)
    assert not {n for n in left if n.startswith(("planted", ".upload-"))}
    if backend.operations.files.kind == "database":
        assert await db.fetchall("SELECT folder, name FROM stored_files") == []
        assert await db.fetchall("SELECT blob_id FROM stored_file_chunks") == []
