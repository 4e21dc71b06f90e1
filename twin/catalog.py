"""The firmware catalog: which images exist for which vendor and model, on the shared database.

The API writes it (operators upload images or register external URLs); the bridge reads it
to turn ``desired.firmware.version`` into an UpdateFirmware location. An image fits a
charger when its vendor and model are exactly the ones the charger sent in its
BootNotification: nothing ever sends firmware to a charger whose vendor / model it does not
fit.

Versions are ordered by :func:`version_key`: PEP 440 (``packaging.version``) when both
versions parse, otherwise a natural sort (digit runs compare as numbers, so ``fw-10`` comes
after ``fw-9``); a parseable version sorts after an unparseable one. "Latest" is the
greatest under that order.
"""

from __future__ import annotations

import builtins
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from packaging.version import InvalidVersion, Version

from chargetwin.database import Database

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS firmware_images (
        image_id TEXT PRIMARY KEY,
        vendor TEXT NOT NULL,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size BIGINT,
        source TEXT NOT NULL,
        url TEXT,
        notes TEXT,
        signing_certificate TEXT,
        signature TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (vendor, model, version)
    )
    """,
    "CREATE INDEX IF NOT EXISTS firmware_images_sha256 ON firmware_images (sha256)",
)

SOURCE_UPLOAD = "upload"
SOURCE_URL = "url"
DOWNLOAD_PATH = "/api/v1/firmware/files/"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COLUMNS = (
    "image_id, vendor, model, version, sha256, size, source, url, notes,"
    " signing_certificate, signature, created_at"
)


class CatalogError(Exception):
    """Base of the catalog's refusals."""


class FirmwareExistsError(CatalogError):
    """An image with this vendor, model and version is already in the catalog."""


class FirmwareNotFoundError(CatalogError):
    """No image with this id."""


def is_sha256(text: str) -> bool:
    return bool(_SHA256.fullmatch(text))


def version_key(version: str) -> tuple[int, Any]:
    """The sort key that defines "latest": PEP 440 when it parses, else natural order."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        parts = re.split(r"(\d+)", version)
        return (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts))


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query (replacing parameters of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """One catalog entry; ``url`` is set for external images, None for uploads."""

    image_id: str
    vendor: str
    model: str
    version: str
    sha256: str
    size: int | None
    source: str
    url: str | None
    notes: str | None
    signing_certificate: str | None
    signature: str | None
    created_at: float

    @property
    def signed(self) -> bool:
        return bool(self.signing_certificate and self.signature)

    def location(self, public_url: str) -> str:
        """Where a charger downloads it, with the simulator's (and our) URL convention.

        OCPP 1.6 UpdateFirmware has no field for the checksum or the version the image
        installs (section 5.19), so both ride in the query: ``?sha256=...&version=...``.
        """
        if self.source == SOURCE_URL and self.url:
            base = self.url
        else:
            base = public_url.rstrip("/") + DOWNLOAD_PATH + self.sha256
        return with_query(base, sha256=self.sha256, version=self.version)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.image_id,
            "vendor": self.vendor,
            "model": self.model,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "source": self.source,
            "url": self.url,
            "notes": self.notes,
            "signed": self.signed,
            "signingCertificate": self.signing_certificate,
            "signature": self.signature,
            "createdAt": self.created_at,
        }


def _image(row: tuple[Any, ...]) -> FirmwareImage:
    return FirmwareImage(
        image_id=str(row[0]),
        vendor=str(row[1]),
        model=str(row[2]),
        version=str(row[3]),
        sha256=str(row[4]),
        size=None if row[5] is None else int(row[5]),
        source=str(row[6]),
        url=row[7],
        notes=row[8],
        signing_certificate=row[9],
        signature=row[10],
        created_at=float(row[11]),
    )


class FirmwareCatalog:
    """The ``firmware_images`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_schema(self) -> None:
        for statement in SCHEMA:
            await self._db.execute(statement)

    async def add(
        self,
        *,
        vendor: str,
        model: str,
        version: str,
        sha256: str,
        size: int | None,
        source: str,
        url: str | None = None,
        notes: str | None = None,
        signing_certificate: str | None = None,
        signature: str | None = None,
    ) -> FirmwareImage:
        """Insert an entry; :class:`FirmwareExistsError` when (vendor, model, version) is taken."""
        if source not in (SOURCE_UPLOAD, SOURCE_URL):
            raise ValueError(f"unknown firmware source {source!r}")
        if not is_sha256(sha256):
            raise ValueError("sha256 must be 64 lower-case hex digits")
        image = FirmwareImage(
            image_id=f"fw_{uuid.uuid4().hex[:16]}",
            vendor=vendor,
            model=model,
            version=version,
            sha256=sha256,
            size=size,
            source=source,
            url=url,
            notes=notes,
            signing_certificate=signing_certificate,
            signature=signature,
            created_at=time.time(),
        )
        inserted = await self._db.execute(
            f"INSERT INTO firmware_images ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (
                image.image_id,
                vendor,
                model,
                version,
                sha256,
                size,
                source,
                url,
                notes,
                signing_certificate,
                signature,
                image.created_at,
            ),
        )
        if inserted != 1:
            raise FirmwareExistsError(f"{vendor} {model} {version} is already in the catalog")
        return image

    async def get(self, image_id: str) -> FirmwareImage:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM firmware_images WHERE image_id = ?", (image_id,)
        )
        if row is None:
            raise FirmwareNotFoundError(f"no firmware image {image_id!r}")
        return _image(row)

    async def find(self, vendor: str, model: str, version: str) -> FirmwareImage | None:
        """The image of exactly this vendor, model and version, if the catalog has it."""
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM firmware_images WHERE vendor = ? AND model = ?"
            " AND version = ?",
            (vendor, model, version),
        )
        return None if row is None else _image(row)

    async def by_sha256(self, sha256: str) -> builtins.list[FirmwareImage]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM firmware_images WHERE sha256 = ?", (sha256,)
        )
        return [_image(r) for r in rows]

    async def list(
        self, *, vendor: str | None = None, model: str | None = None
    ) -> builtins.list[FirmwareImage]:
        """Entries by vendor and model, each group newest version first (:func:`version_key`)."""
        where, params = [], []
        if vendor is not None:
            where.append("vendor = ?")
            params.append(vendor)
        if model is not None:
            where.append("model = ?")
            params.append(model)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM firmware_images{clause}", params)
        images = sorted(
            (_image(r) for r in rows), key=lambda i: version_key(i.version), reverse=True
        )
        return sorted(images, key=lambda i: (i.vendor, i.model))

    async def latest(self, vendor: str, model: str) -> FirmwareImage | None:
        images = await self.list(vendor=vendor, model=model)
        return images[0] if images else None

    async def delete(self, image_id: str) -> FirmwareImage:
        image = await self.get(image_id)
        await self._db.execute("DELETE FROM firmware_images WHERE image_id = ?", (image_id,))
        return image
