"""Diagnostics files: the upload endpoint chargers reach, and the operators' listing.

Chargers upload to the location ``get-diagnostics`` gave them
(``/api/v1/diagnostics/uploads/{charger_id}/{token}/``) by HTTP PUT of the file body to
that location plus the file name, or by multipart POST (field ``file``): the two habits
chargers have. No bearer token; the one-time grant in the path authorizes one upload
(:mod:`api.diagnostics`). Operators list and fetch the files under ``/chargers/{id}``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.datastructures import UploadFile

from api.auth import Operator, Viewer
from api.backends import Backend, get_backend
from api.diagnostics import MAX_UPLOAD_BYTES, DiagnosticsUploads, safe_file_name
from api.operations import Operations, get_operations
from api.problems import Problem, problem_responses
from api.routes.chargers import find_charger
from chargetwin.paths import UnsafePathError, inside
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
    folder.mkdir(parents=True, exist_ok=True)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "POST" and media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=5) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise Problem(422, "the multipart body needs a `file` part", kind="no-file")
            name = name or upload.filename
            temp, size = await _copy(_chunks_of(upload), folder)
    else:
        temp, size = await _copy(request.stream(), folder)
    try:
        final = _free_name(folder, safe_file_name(name or "") or _default_name(charger_id))
        if not await store.spend(charger_id, token, final):
            raise Problem(403, _REFUSED, kind="upload-refused")
        temp.replace(inside(folder, final))
    finally:
        temp.unlink(missing_ok=True)
    log.info("%s: diagnostics %s uploaded (%d bytes)", charger_id, final, size)
    return UploadOut(name=final, size=size)


async def _chunks_of(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


async def _copy(chunks: AsyncIterator[bytes], folder: Path) -> tuple[Path, int]:
    fd, name = tempfile.mkstemp(dir=folder, prefix=".upload-")
    temp = Path(name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise Problem(
                        413,
                        f"diagnostics uploads are limited to {MAX_UPLOAD_BYTES} bytes",
                        kind="body-too-large",
                    )
                out.write(chunk)
    except BaseException:
        _discard(temp)
        raise
    return temp, size


def _default_name(charger_id: str) -> str:
    return f"{charger_id}-diagnostics-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.log"


def _free_name(folder: Path, name: str) -> str:
    """``name``, or ``name`` with a counter when a file of that name is already there."""
    stem, dot, ext = name.rpartition(".") if "." in name[1:] else (name, "", "")
    candidate, n = name, 1
    while inside(folder, candidate).exists():
        candidate = f"{stem}-{n}{dot}{ext}"
        n += 1
    return candidate


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
        for f in operations.uploads.list(charger_id)
    ]


@files.get(
    "/{file_name}",
    response_class=FileResponse,
    summary="Download a diagnostics file",
    description="Operator (diagnostics may hold configuration and id tags).",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file."},
        **problem_responses(401, 403, 404),
    },
)
async def download_file(
    charger_id: str, file_name: str, backend: BackendDep, operations: OperationsDep, _: Operator
) -> FileResponse:
    await find_charger(backend, charger_id)
    path = operations.uploads.path_of(charger_id, file_name)
    if path is None:
        raise Problem(404, f"no diagnostics file {file_name!r}", kind="file-not-found")
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)


router.include_router(uploads)
router.include_router(files)


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)
