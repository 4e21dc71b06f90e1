"""Diagnostics uploads: one-time upload grants, and the files chargers send with them.

A charger cannot send a bearer token, so ``get-diagnostics`` gives it a location that
carries a grant instead: ``{public_url}/api/v1/diagnostics/uploads/{charger_id}/{token}/``.
The token is random (128 bits), stored only as its SHA-256, bound to one charger, valid
for :data:`GRANT_TTL_S` and spent by the first successful upload. It rides in the path, not
the query, because chargers append the file name to a location that ends with ``/`` (the
habit OCPP 1.6 section 5.9 leaves to them); a query string would break that.

Files land in the file store (:mod:`chargetwin.files`) in folder
``diagnostics/{charger_id}``: ``DATA_DIR/diagnostics/{charger_id}/`` or the database, so
every API replica lists and serves what any of them received. Both stores refuse a charger
id or file name that is not one plain path segment, so neither can lead out of its folder.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from chargetwin.database import Database
from chargetwin.files import FileStore, StoredFile, check_segment
from chargetwin.paths import UnsafePathError

GRANT_TTL_S = 3600.0
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
UPLOAD_PATH = "/api/v1/diagnostics/uploads/"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS diagnostics_grants (
    token_hash TEXT PRIMARY KEY,
    charger_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION,
    file_name TEXT
)
"""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def safe_file_name(name: str) -> str | None:
    """``name`` when it is a plain file name (no path, no leading dot), else None."""
    return name if _SAFE_NAME.fullmatch(name) and ".." not in name else None


class DiagnosticsUploads:
    """Upload grants in the database, files in ``files`` under ``diagnostics/{charger_id}``."""

    def __init__(self, db: Database, files: FileStore, *, ttl: float = GRANT_TTL_S) -> None:
        self._db = db
        self.files = files
        self.ttl = ttl

    async def create_schema(self) -> None:
        await self._db.execute(SCHEMA)

    async def grant(self, charger_id: str) -> str:
        """A fresh one-time token for one upload by ``charger_id``; old grants are swept."""
        now = time.time()
        token = secrets.token_urlsafe(16)
        await self._db.execute(
            "DELETE FROM diagnostics_grants WHERE expires_at < ?", (now - self.ttl,)
        )
        await self._db.execute(
            "INSERT INTO diagnostics_grants (token_hash, charger_id, created_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (_hash(token), charger_id, now, now + self.ttl),
        )
        return token

    async def check(self, charger_id: str, token: str) -> bool:
        """The token is unspent, unexpired and was given to ``charger_id``."""
        row = await self._db.fetchone(
            "SELECT charger_id, expires_at, used_at FROM diagnostics_grants WHERE token_hash = ?",
            (_hash(token),),
        )
        return row is not None and row[0] == charger_id and row[2] is None and row[1] >= time.time()

    async def spend(self, charger_id: str, token: str, file_name: str) -> bool:
        """Mark the grant used (atomically: two racing uploads cannot both spend it)."""
        changed = await self._db.execute(
            "UPDATE diagnostics_grants SET used_at = ?, file_name = ? WHERE token_hash = ?"
            " AND charger_id = ? AND used_at IS NULL AND expires_at >= ?",
            (time.time(), file_name, _hash(token), charger_id, time.time()),
        )
        return changed == 1

    def folder(self, charger_id: str) -> str:
        """The charger's folder; raises :class:`UnsafePathError` for an id that is no name."""
        return f"diagnostics/{check_segment(charger_id)}"

    async def find(self, charger_id: str, file_name: str) -> StoredFile | None:
        """The stored file, or None when there is no such (safe) name."""
        if safe_file_name(file_name) is None:
            return None
        try:
            return await self.files.stat(self.folder(charger_id), file_name)
        except UnsafePathError:
            return None

    async def list(self, charger_id: str) -> list[StoredFile]:
        """The charger's files, newest first."""
        try:
            folder = self.folder(charger_id)
        except UnsafePathError:
            return []  # an id registered before ids were restricted: it has no folder
        return await self.files.list(folder)
