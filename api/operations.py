"""What the remote-operation routes hold: firmware catalog, commands, uploads, id tags.

Kept apart from :class:`~api.backends.Backend` so the routes of operations (firmware,
commands, diagnostics, id tags) share one object that says where files live (``files``:
the data directory or the database, ``--file-store``) and how chargers reach the API
(``public_url``), without widening the backend for each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request

from api.diagnostics import DiagnosticsUploads
from bridge.stores import IdTagStore
from chargetwin.command_client import CommandClient
from chargetwin.database import Database
from chargetwin.files import FileStore, FileStoreKind, open_file_store
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from twin.catalog import FirmwareCatalog

if TYPE_CHECKING:
    from api.backends import Backend

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


@dataclass
class Operations:
    catalog: FirmwareCatalog
    commands: CommandClient
    uploads: DiagnosticsUploads
    id_tags: IdTagStore
    public_url: str
    data_dir: Path
    files: FileStore
    # The FTP endpoint for diagnostics (api.ftp_uploads): its port once listening (0: none),
    # whether it is FTPS, and the charger models ("VENDOR/MODEL") sent there by default.
    ftp_port: int = 0
    ftp_tls: bool = False
    ftp_models: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        db: Database,
        mqtt: MqttClient,
        topics: Topics,
        *,
        data_dir: Path,
        public_url: str = DEFAULT_PUBLIC_URL,
        command_timeout: float = 35.0,
        file_store: FileStoreKind = "auto",
        ftp_models: tuple[str, ...] = (),
    ) -> Operations:
        files = open_file_store(file_store, db, data_dir)
        return cls(
            catalog=FirmwareCatalog(db),
            commands=CommandClient(mqtt, topics, timeout=command_timeout),
            uploads=DiagnosticsUploads(db, files),
            id_tags=IdTagStore(db),
            public_url=public_url.rstrip("/"),
            data_dir=data_dir,
            files=files,
            ftp_models=ftp_models,
        )

    async def create_schema(self) -> None:
        await self.files.create_schema()
        await self.catalog.create_schema()
        await self.uploads.create_schema()
        await self.id_tags.create_schema()


def operations_of(request: Request) -> Operations:
    backend: Backend = request.app.state.backend
    operations = backend.operations
    assert isinstance(operations, Operations)
    return operations


async def get_operations(request: Request) -> Operations:
    """The dependency; async for the reason :func:`api.backends.get_backend` gives."""
    return operations_of(request)
