"""Firmware-sized files through the file stores: upload and download throughput.

    .venv/bin/python -m bench.file_stores [--mib 128] [--runs 3]
        [--database-url postgresql://postgres@127.0.0.1:5432/test]

Per run and store: an upload of a ``--mib`` MiB image (written in 64 KiB pieces, the way a
request body arrives) and its download over real HTTP from an API on a real socket
(``GET /api/v1/firmware/files/{sha256}``, what a charger does), plus a 1 MiB Range from
the middle. Baseline of the same run: the data-directory store (a local file). The
database store runs on ``--database-url`` in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg

from api.app import create_app, serve
from api.backends import Backend
from bench.machine import describe, median
from chargetwin.database import Database, connect
from chargetwin.files import FileStoreKind
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics

PIECE = 64 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _schema(url: str) -> AsyncIterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.asynccontextmanager
async def _api(
    db: Database, data_dir: Path, kind: FileStoreKind
) -> AsyncIterator[tuple[Backend, str]]:
    # No broker: file routes use none, and the client is never connected.
    backend = Backend.build(
        db, MqttClient("mqtt://127.0.0.1:1", "bench-files"), Topics("bench"),
        data_dir=data_dir, file_store=kind,
    )  # fmt: skip
    await backend.create_schema()
    port = _free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(create_app(backend), "127.0.0.1", port, stop))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as probe:
        for _ in range(200):
            try:
                await probe.get(f"{url}/api/v1/health")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    try:
        yield backend, url
    finally:
        stop.set()
        await task


async def _run(backend: Backend, url: str, image: bytes, sha: str) -> dict[str, float]:
    assert backend.operations is not None
    files = backend.operations.files
    await files.delete("firmware", sha)
    started = time.perf_counter()
    async with files.upload("firmware", max_bytes=len(image)) as upload:
        view = memoryview(image)
        for at in range(0, len(image), PIECE):
            await upload.write(bytes(view[at : at + PIECE]))
        await upload.commit(sha)
    write_s = time.perf_counter() - started
    async with httpx.AsyncClient(timeout=600) as client:
        digest = hashlib.sha256()
        started = time.perf_counter()
        async with client.stream("GET", f"{url}/api/v1/firmware/files/{sha}") as answer:
            assert answer.status_code == 200, answer.status_code
            async for chunk in answer.aiter_bytes():
                digest.update(chunk)
        read_s = time.perf_counter() - started
        assert digest.hexdigest() == sha
        middle = len(image) // 2
        started = time.perf_counter()
        part = await client.get(
            f"{url}/api/v1/firmware/files/{sha}",
            headers={"Range": f"bytes={middle}-{middle + 2**20 - 1}"},
        )
        range_s = time.perf_counter() - started
        assert part.status_code == 206 and part.content == image[middle : middle + 2**20]
    mib = len(image) / 2**20
    return {
        "upload MiB/s": mib / write_s,
        "download MiB/s": mib / read_s,
        "1 MiB range ms": range_s * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "CHARGETWIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    print(describe())
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    image = os.urandom(args.mib * 2**20)  # firmware is compressed: incompressible bytes
    sha = hashlib.sha256(image).hexdigest()
    results: dict[str, list[dict[str, float]]] = {"data-dir (baseline)": [], "database": []}
    with tempfile.TemporaryDirectory() as tmp:
        async with _schema(args.database_url) as url:
            db = connect(url)
            await db.open()
            try:
                async with (
                    _api(db, Path(tmp), "data-dir") as baseline,
                    _api(db, Path(tmp), "database") as database,
                ):
                    for _ in range(args.runs):
                        results["data-dir (baseline)"].append(await _run(*baseline, image, sha))
                        results["database"].append(await _run(*database, image, sha))
            finally:
                await db.close()
    print(f"{args.mib} MiB image, {args.runs} runs, medians:")
    for store, runs in results.items():
        figures = ", ".join(f"{k} {median([r[k] for r in runs]):.1f}" for k in runs[0])
        print(f"  {store:20} {figures}")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
