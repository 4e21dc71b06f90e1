"""The firmware catalog over HTTP, the download endpoint chargers use, and the fit check.

Operators add images by upload (multipart: the API computes the SHA-256 and keeps the file
in the file store as ``firmware/<sha256>``: the data directory or the database, see
:mod:`chargetwin.files`, so every API replica serves it) or by external URL (JSON: the
SHA-256 is given, or computed by downloading it when ``verify`` is true). Chargers download
uploaded images from ``/api/v1/firmware/files/{sha256}`` without a token (they cannot send
one); the content hash makes the address unguessable and the content self-checking.

:func:`desired_firmware_problem` is the API half of "nothing ever sends firmware to a
charger whose vendor / model it doesn't fit" (the bridge checks again before sending).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from starlette.datastructures import UploadFile

from api.auth import Admin, Operator, Viewer
from api.backends import Backend, get_backend
from api.downloads import stored_file_response
from api.operations import Operations, get_operations
from api.problems import Problem, ProblemError, problem_responses, validation_errors
from chargetwin.files import FileTooLargeError, Upload
from chargetwin.json_text import parse_json
from twin.catalog import (
    SOURCE_UPLOAD,
    SOURCE_URL,
    FirmwareExistsError,
    FirmwareImage,
    FirmwareNotFoundError,
    is_sha256,
)
from twin.stores import ShadowFilter

log = logging.getLogger(__name__)

router = APIRouter(prefix="/firmware", tags=["firmware"])

BackendDep = Annotated[Backend, Depends(get_backend)]
OperationsDep = Annotated[Operations, Depends(get_operations)]

MAX_FIRMWARE_BYTES = 512 * 1024 * 1024
FOLDER = "firmware"
"""The file store's folder of uploaded images, each named by its SHA-256."""
_CHUNK = 1024 * 1024
_ALL = 2**31 - 1
_TEXT = r"^[^\x00-\x1f]{1,100}$"


# --- bodies --------------------------------------------------------------------------------
class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class FirmwareFields(_Wire):
    """What every catalog entry says about itself (the form fields of an upload)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    vendor: str = Field(pattern=_TEXT, description="chargePointVendor exactly as booted.")
    model: str = Field(pattern=_TEXT, description="chargePointModel exactly as booted.")
    version: str = Field(
        pattern=r"^[^\x00-\x1f]{1,50}$",
        description="The firmwareVersion the charger reports once the image is installed.",
    )
    notes: str | None = Field(None, max_length=10_000, description="Release notes.")
    signing_certificate: str | None = Field(
        None,
        max_length=5500,
        description="PEM certificate of the firmware signer; with `signature`, OCPP 1.6 "
        "chargers that support it get SignedUpdateFirmware (1.6 security extension) and "
        "OCPP 2.0.1 stations get both in UpdateFirmware's `firmware` object.",
    )
    signature: str | None = Field(
        None,
        max_length=800,
        description="Base64 signature of the image (1.6 SignedUpdateFirmware, 2.0.1 "
        "UpdateFirmware).",
    )


class FirmwareUrlCreate(FirmwareFields):
    """An image hosted elsewhere; chargers download it from ``url`` directly."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "example": {
                "vendor": "ChargeTwin",
                "model": "CT-AC22",
                "version": "1.5.0",
                "url": "https://firmware.example.com/ct-ac22/1.5.0.bin",
                "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "verify": True,
                "notes": "Fixes the RFID reader timeout.",
            }
        },
    )

    url: str = Field(
        # Printable ASCII: chargers get it as is (OCPP 1.6 anyURI); percent-encode the rest.
        pattern=r"^https?://[!-~]+$",
        max_length=2000,
    )
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="SHA-256 of the image. Trusted as given unless `verify` is true.",
    )
    size: int | None = Field(None, ge=0, le=2**40, description="Bytes (at most 1 TiB).")
    verify: bool = Field(
        False, description="Download the image now to compute (and check) its SHA-256 and size."
    )

    @field_validator("url")
    @classmethod
    def _url_with_a_host(cls, url: str) -> str:
        # Chargers are given this URL (with a query added): it must split into its parts.
        try:
            parts = urlsplit(url)
            host, _ = parts.hostname, parts.port  # .port raises for a port out of range
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from exc
        if not host:
            raise ValueError("the URL needs a host")
        return url


class FirmwareOut(_Wire):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "fw_3f2a9c0d1e7b4a55",
                "vendor": "ChargeTwin",
                "model": "CT-AC22",
                "version": "1.5.0",
                "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "size": 1048576,
                "source": "upload",
                "url": None,
                "downloadUrl": "http://127.0.0.1:8000/api/v1/firmware/files/9f86...0a08"
                "?sha256=9f86...0a08&version=1.5.0",
                "notes": "Fixes the RFID reader timeout.",
                "signed": False,
                "signingCertificate": None,
                "signature": None,
                "createdAt": 1767225600.0,
            }
        }
    )

    id: str
    vendor: str
    model: str
    version: str
    sha256: str
    size: int | None
    source: str = Field(description="`upload` (served by this API) or `url` (external).")
    url: str | None
    download_url: str = Field(description="The UpdateFirmware location chargers are given.")
    notes: str | None
    signed: bool
    signing_certificate: str | None
    signature: str | None
    created_at: float


def firmware_out(image: FirmwareImage, public_url: str) -> FirmwareOut:
    return FirmwareOut.model_validate(
        {**image.as_dict(), "downloadUrl": image.location(public_url)}
    )


# --- the fit check used by desired-state changes ---------------------------------------------
async def desired_firmware_problem(
    backend: Backend, document: dict[str, Any], patch: dict[str, Any]
) -> Problem | None:
    """A 422 when the patch asks for a firmware version the catalog has no fitting image of."""
    firmware = patch.get("firmware")
    if not isinstance(firmware, dict) or not isinstance(firmware.get("version"), str):
        return None
    operations = backend.operations
    if operations is None:
        return None
    version = firmware["version"]
    charge_point = (document.get("state", {}).get("reported") or {}).get("chargePoint") or {}
    vendor, model = charge_point.get("vendor"), charge_point.get("model")
    pointer = "/desired/firmware/version"
    if not isinstance(vendor, str) or not isinstance(model, str):
        reason = (
            "the charger has not reported its vendor and model yet (it never booted), so no "
            "firmware can be known to fit it"
        )
    elif await operations.catalog.find(vendor, model, version) is None:
        known = [i.version for i in await operations.catalog.list(vendor=vendor, model=model)]
        reason = (
            f"the firmware catalog has no version {version!r} for {vendor} {model}; nothing "
            "is ever sent to a charger whose vendor / model it doesn't fit"
            + (f" (catalog versions: {', '.join(known[:20])})" if known else "")
        )
    else:
        return None
    return Problem(
        422,
        reason,
        kind="firmware-does-not-fit",
        title="Firmware does not fit the charger",
        errors=[ProblemError(pointer=pointer, message=reason)],
    )


# --- routes ----------------------------------------------------------------------------------
_CREATE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "vendor", "model", "version"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "vendor": {"type": "string"},
                    "model": {"type": "string"},
                    "version": {"type": "string"},
                    "notes": {"type": "string"},
                    "signingCertificate": {"type": "string"},
                    "signature": {"type": "string"},
                },
            }
        },
        "application/json": {"schema": {"$ref": "#/components/schemas/FirmwareUrlCreate"}},
    },
}


OPENAPI_BODIES = (FirmwareUrlCreate,)
"""Bodies read by hand (``_create_url``) that the OpenAPI document must still describe."""


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=FirmwareOut,
    summary="Add a firmware image to the catalog",
    description="Operator. Either upload the image (multipart/form-data: `file`, `vendor`, "
    "`model`, `version`, optional `notes`, `signingCertificate`, `signature`; the SHA-256 "
    f"is computed; at most {MAX_FIRMWARE_BYTES // 2**20} MiB), or register an external URL "
    "(application/json, `FirmwareUrlCreate`). 409 when vendor, model and version exist; "
    "502 when `verify` cannot download the URL; 422 when its SHA-256 differs.",
    openapi_extra={"requestBody": _CREATE_BODY},
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 502),
)
async def create_firmware(
    request: Request, response: Response, operations: OperationsDep, _: Operator
) -> FirmwareOut:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        image = await _create_upload(request, operations)
    elif media_type == "application/json":
        image = await _create_url(request, operations)
    else:
        raise Problem(
            415,
            "send multipart/form-data (an upload) or application/json (an external URL)",
            kind="unsupported-media-type",
        )
    log.info("firmware %s %s %s added (%s)", image.vendor, image.model, image.version, image.source)
    response.headers["Location"] = f"/api/v1/firmware/{image.image_id}"
    return firmware_out(image, operations.public_url)


def _invalid(exc: ValidationError) -> Problem:
    return Problem(
        422,
        "the request does not match the API's schema",
        kind="validation-error",
        title="Invalid request",
        errors=validation_errors([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]),
    )


async def _create_upload(request: Request, operations: Operations) -> FirmwareImage:
    async with request.form(max_files=1, max_fields=20) as form:
        upload = form.get("file")
        fields = {k: v for k, v in form.multi_items() if k != "file" and isinstance(v, str)}
        try:
            meta = FirmwareFields.model_validate(fields)
        except ValidationError as exc:
            raise _invalid(exc) from exc
        if not isinstance(upload, UploadFile):
            raise Problem(
                422,
                "the upload needs a `file` part",
                kind="validation-error",
                errors=[ProblemError(pointer="/file", message="missing")],
            )
        async with operations.files.upload(FOLDER, max_bytes=MAX_FIRMWARE_BYTES) as stored:
            await _store(upload, stored)
            digest, size = stored.sha256, stored.size
            await stored.commit(digest, exists="keep")  # same name, same content
    try:
        return await operations.catalog.add(
            vendor=meta.vendor,
            model=meta.model,
            version=meta.version,
            sha256=digest,
            size=size,
            source=SOURCE_UPLOAD,
            notes=meta.notes,
            signing_certificate=meta.signing_certificate,
            signature=meta.signature,
        )
    except FirmwareExistsError as exc:
        await _forget_file(operations, digest)
        raise Problem(409, str(exc), kind="firmware-exists") from exc


async def _store(upload: UploadFile, stored: Upload) -> None:
    """Copy the upload into the file store, which hashes it on the way."""
    try:
        while chunk := await upload.read(_CHUNK):
            await stored.write(chunk)
    except FileTooLargeError as exc:
        raise Problem(413, f"firmware images are limited to {MAX_FIRMWARE_BYTES} bytes") from exc


async def _create_url(request: Request, operations: Operations) -> FirmwareImage:
    try:
        body = FirmwareUrlCreate.model_validate(parse_json(await request.body()))
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise _invalid(exc) from exc
        raise Problem(400, f"the body is not valid JSON: {exc}", kind="malformed-json") from exc
    sha256 = body.sha256.lower() if body.sha256 else None
    size = body.size
    if body.verify:
        digest, size = await _download_digest(body.url)
        if sha256 is not None and sha256 != digest:
            raise Problem(
                422,
                f"the image at the URL has SHA-256 {digest}, not the {sha256} given",
                kind="firmware-checksum-mismatch",
                errors=[ProblemError(pointer="/sha256", message="does not match the download")],
            )
        sha256 = digest
    if sha256 is None:
        raise Problem(
            422,
            "give the image's sha256, or set verify to true to compute it",
            kind="validation-error",
            errors=[ProblemError(pointer="/sha256", message="required unless verify is true")],
        )
    try:
        return await operations.catalog.add(
            vendor=body.vendor,
            model=body.model,
            version=body.version,
            sha256=sha256,
            size=size,
            source=SOURCE_URL,
            url=body.url,
            notes=body.notes,
            signing_certificate=body.signing_certificate,
            signature=body.signature,
        )
    except FirmwareExistsError as exc:
        raise Problem(409, str(exc), kind="firmware-exists") from exc


async def _download_digest(url: str) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    try:
        async with (
            httpx.AsyncClient(timeout=30.0, follow_redirects=True) as client,
            client.stream("GET", url) as answer,
        ):
            if answer.status_code != 200:
                raise Problem(
                    502, f"downloading {url} answered HTTP {answer.status_code}", kind="bad-url"
                )
            async for chunk in answer.aiter_bytes(_CHUNK):
                size += len(chunk)
                if size > MAX_FIRMWARE_BYTES:
                    raise Problem(
                        413, f"the image exceeds {MAX_FIRMWARE_BYTES} bytes", kind="too-large"
                    )
                sha.update(chunk)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise Problem(502, f"cannot download {url}: {exc}", kind="bad-url") from exc
    return sha.hexdigest(), size


@router.get(
    "",
    response_model=list[FirmwareOut],
    summary="List firmware images",
    description="Viewer. Grouped by vendor and model, newest version first (PEP 440 order "
    "when versions parse, else natural order; see docs/firmware.md).",
    responses=problem_responses(401, 403, 422),
)
async def list_firmware(
    operations: OperationsDep,
    _: Viewer,
    vendor: Annotated[str | None, Query(description="chargePointVendor.")] = None,
    model: Annotated[str | None, Query(description="chargePointModel.")] = None,
) -> list[FirmwareOut]:
    images = await operations.catalog.list(vendor=vendor, model=model)
    return [firmware_out(i, operations.public_url) for i in images]


async def _find(operations: Operations, image_id: str) -> FirmwareImage:
    try:
        return await operations.catalog.get(image_id)
    except FirmwareNotFoundError as exc:
        raise Problem(404, str(exc), kind="firmware-not-found") from exc


@router.get(
    "/{image_id}",
    response_model=FirmwareOut,
    summary="Get a firmware image",
    description="Viewer.",
    responses=problem_responses(401, 403, 404),
)
async def get_firmware(image_id: str, operations: OperationsDep, _: Viewer) -> FirmwareOut:
    return firmware_out(await _find(operations, image_id), operations.public_url)


@router.delete(
    "/{image_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a firmware image",
    description="Admin. 409 while a charger of that vendor and model wants that version "
    "(`desired.firmware.version`); change their desired state first.",
    responses=problem_responses(401, 403, 404, 409),
)
async def delete_firmware(
    image_id: str, backend: BackendDep, operations: OperationsDep, _: Admin
) -> Response:
    image = await _find(operations, image_id)
    wanting = await _chargers_wanting(backend, image)
    if wanting:
        raise Problem(
            409,
            f"{len(wanting)} charger(s) want this image as their desired firmware: "
            + ", ".join(wanting[:20]),
            kind="firmware-in-use",
        )
    await operations.catalog.delete(image_id)
    await _forget_file(operations, image.sha256)
    log.info("firmware %s %s %s removed", image.vendor, image.model, image.version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _chargers_wanting(backend: Backend, image: FirmwareImage) -> list[str]:
    # O(chargers of that model): fine for a delete, a rare admin action.
    summaries = await backend.shadows.list(
        ShadowFilter(vendor=image.vendor, model=image.model, limit=_ALL)
    )
    wanting = []
    for summary in summaries:
        document = await backend.shadows.get_document(summary.charger_id) or {}
        desired = (document.get("state") or {}).get("desired") or {}
        if (desired.get("firmware") or {}).get("version") == image.version:
            wanting.append(summary.charger_id)
    return wanting


async def _forget_file(operations: Operations, sha256: str) -> None:
    """Remove a stored image once no catalog entry uploads it any more."""
    still = [i for i in await operations.catalog.by_sha256(sha256) if i.source == SOURCE_UPLOAD]
    if not still:
        await operations.files.delete(FOLDER, sha256)


@router.head("/files/{sha256}", include_in_schema=False)
@router.get(
    "/files/{sha256}",
    summary="Download a firmware image (chargers)",
    description="No token: chargers cannot send one. The address is the image's SHA-256, "
    "so it cannot be guessed; query parameters (`sha256`, `version`) are for the charger "
    "and ignored here. Supports HEAD and Range requests. Every API replica serves every "
    "uploaded image (docs/firmware.md, File storage).",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The image."},
        **problem_responses(404),
    },
)
async def download_firmware(sha256: str, request: Request, operations: OperationsDep) -> Response:
    digest = sha256.lower()
    stored = await operations.files.stat(FOLDER, digest) if is_sha256(digest) else None
    if stored is None:
        raise Problem(404, "no firmware image with that SHA-256", kind="firmware-not-found")
    return await stored_file_response(
        request,
        operations.files,
        stored,
        filename=f"{digest}.bin",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )
