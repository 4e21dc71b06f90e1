"""Diagnostics files: the upload endpoint chargers reach, and the operators' listing.

Chargers upload to the location ``get-diagnostics`` gave them
(``/api/v1/diagnostics/uploads/{charger_id}/{token}/``) by HTTP PUT of the file body to
that location plus the file name, or by multipart POST (field ``file``): the two habits
chargers have. No bearer token; the one-time grant in the path authorizes one upload
(:mod:`api.diagnostics`). Operators list and fetch the files under ``/chargers/{id}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.datastructures import UploadFile

from api.auth import Operator, Viewer
from api.backends import Backend, get_backend
from api.diagnostics import MAX_UPLOAD_BYTES, DiagnosticsUploads, safe_file_name
from api.downloads import stored_file_response
from api.operations import Operations, get_operations
from api.problems import Problem, problem_responses
from api.routes.chargers import find_charger
from chargetwin.files import FileTooLargeError, Upload
from chargetwin.paths import UnsafePathError
from chargetwin.topics import InvalidTopicError, validate_charger_id

log = logging.getLogger(__name__)

router = APIRouter()
uploads = APIRouter(prefix="/diagnostics/uploads/{charger_id}/{token}", tags=["diagnostics"])
files = APIRouter(prefix="/chargers/{charger_id}/diagnostics", tags=["diagnostics"])

BackendDep = Annotated[Backend, Depends(get_backend)]
OperationsDep = Annotated[Operations, Depends(get_operations)]
_CHUNK = 1024 * 1024


class DiagnosticsFileOut(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        json_schema_extra={
            "example": {
                "name": "CP-0001-diagnostics-20260101T020000Z.log",
                "size": 5120,
                "modifiedAt": 1767232800.0,
            }
        },
    )

    name: str
    size: int = Field(description="Bytes.")
    modified_at: float = Field(description="When it was uploaded, seconds since the epoch.")


class UploadOut(BaseModel):
    name: str
    size: int


# --- chargers upload -------------------------------------------------------------------------
_REFUSED = "this upload location is unknown, expired or already used"


async def _receive(
    request: Request, store: DiagnosticsUploads, charger_id: str, token: str, name: str | None
) -> UploadOut:
    try:
        folder = store.folder(validate_charger_id(charger_id))
    except (InvalidTopicError, UnsafePathError) as exc:
        raise Problem(403, _REFUSED, kind="upload-refused") from exc
    if not await store.check(charger_id, token):
        raise Problem(403, _REFUSED, kind="upload-refused")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    async with store.files.upload(folder, max_bytes=MAX_UPLOAD_BYTES) as upload:
        if request.method == "POST" and media_type == "multipart/form-data":
            async with request.form(max_files=1, max_fields=5) as form:
                part = form.get("file")
                if not isinstance(part, UploadFile):
                    raise Problem(422, "the multipart body needs a `file` part", kind="no-file")
                name = name or part.filename
                await _copy(_chunks_of(part), upload)
        else:
            await _copy(request.stream(), upload)
        wanted = safe_file_name(name or "") or _default_name(charger_id)
        stored = await upload.commit(wanted, exists="rename")  # never overwrites
    if not await store.spend(charger_id, token, stored.name):
        # Another upload spent the grant while this one was stored: take this one back.
        await store.files.delete(folder, stored.name)
        raise Problem(403, _REFUSED, kind="upload-refused")
    log.info("%s: diagnostics %s uploaded (%d bytes)", charger_id, stored.name, stored.size)
    return UploadOut(name=stored.name, size=stored.size)


async def _chunks_of(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


async def _copy(chunks: AsyncIterator[bytes], upload: Upload) -> None:
    try:
        async for chunk in chunks:
            await upload.write(chunk)
    except FileTooLargeError as exc:
        raise Problem(
            413,
            f"diagnostics uploads are limited to {MAX_UPLOAD_BYTES} bytes",
            kind="body-too-large",
        ) from exc


def _default_name(charger_id: str) -> str:
    return f"{charger_id}-diagnostics-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.log"


_UPLOAD_DOC = (
    "No bearer token: the one-time grant in the path (made by the `get-diagnostics` "
    f"command, valid one hour) authorizes one upload. At most {MAX_UPLOAD_BYTES // 2**20} "
    "MiB. 403 for an unknown, expired or spent grant."
)


def _upload_route(path: str, method: str, named: bool) -> None:
    """One route per method and path: PUT or POST, with or without the file name."""
    what = "the file body" if method == "PUT" else "multipart/form-data with a `file` part"
    summary = f"Upload a diagnostics file by {method} (chargers)"

    async def with_name(
        charger_id: str, token: str, file_name: str, request: Request, operations: OperationsDep
    ) -> UploadOut:
        return await _receive(request, operations.uploads, charger_id, token, file_name)

    async def without_name(
        charger_id: str, token: str, request: Request, operations: OperationsDep
    ) -> UploadOut:
        return await _receive(request, operations.uploads, charger_id, token, None)

    endpoint = with_name if named else without_name
    endpoint.__name__ = f"upload_{method.lower()}_{'named' if named else 'unnamed'}"
    uploads.add_api_route(
        path,
        endpoint,
        methods=[method],
        status_code=status.HTTP_201_CREATED,
        response_model=UploadOut,
        summary=summary if named else summary + ", name chosen by the server",
        description=f"{method} {what}. " + _UPLOAD_DOC,
        responses=problem_responses(403, 413, 422),
    )


for _method in ("PUT", "POST"):
    _upload_route("/{file_name}", _method, named=True)
    _upload_route("/", _method, named=False)


# --- operators read --------------------------------------------------------------------------
@files.get(
    "",
    response_model=list[DiagnosticsFileOut],
    summary="List a charger's diagnostics files",
    description="Viewer. Newest first.",
    responses=problem_responses(401, 403, 404),
)
async def list_files(
    charger_id: str, backend: BackendDep, operations: OperationsDep, _: Viewer
) -> list[DiagnosticsFileOut]:
    await find_charger(backend, charger_id)
    return [
        DiagnosticsFileOut(name=f.name, size=f.size, modified_at=f.modified_at)
        for f in await operations.uploads.list(charger_id)
    ]


@files.get(
    "/{file_name}",
    response_class=Response,
    summary="Download a diagnostics file",
    description="Operator (diagnostics may hold configuration and id tags). Supports Range "
    "requests.",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file."},
        **problem_responses(401, 403, 404),
    },
)
async def download_file(
    charger_id: str,
    file_name: str,
    request: Request,
    backend: BackendDep,
    operations: OperationsDep,
    _: Operator,
) -> Response:
    await find_charger(backend, charger_id)
    stored = await operations.uploads.find(charger_id, file_name)
    if stored is None:
        raise Problem(404, f"no diagnostics file {file_name!r}", kind="file-not-found")
    return await stored_file_response(request, operations.files, stored, filename=stored.name)


router.include_router(uploads)
router.include_router(files)
