"""Stored-file downloads: byte ranges (RFC 9110 section 14), and the one-chunk answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import Request
from fastapi.responses import StreamingResponse

from api.downloads import UnsatisfiableRangeError, byte_range, stored_file_response
from api.problems import Problem
from chargetwin.files import DataDirFileStore


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=10-", 100, (10, 100)),
        ("bytes=90-200", 100, (90, 100)),  # past the end: up to the end
        ("bytes=-10", 100, (90, 100)),
        ("bytes=-500", 100, (0, 100)),
        ("BYTES = 5 - 5", 100, (5, 6)),
        ("bytes=9-3", 100, None),  # last below first: invalid, whole file
        ("bytes=0-1,5-6", 100, None),  # several ranges: whole file
        ("items=0-9", 100, None),
        ("bytes=-", 100, None),
        ("bytes=a-b", 100, None),
    ],
)
def test_one_range_is_served_and_anything_else_is_the_whole_file(
    header: str | None, size: int, expected: tuple[int, int] | None
) -> None:
    assert byte_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_a_range_selecting_no_byte_is_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(UnsatisfiableRangeError):
        byte_range(header, size)


def _get(headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


async def test_a_one_chunk_file_is_answered_whole_and_a_vanished_one_is_404(
    tmp_path: Path,
) -> None:
    store = DataDirFileStore(tmp_path)
    folder = tmp_path / "firmware"
    folder.mkdir()
    (folder / "image").write_bytes(b"0123456789")
    stored = await store.stat("firmware", "image")
    assert stored is not None
    whole = await stored_file_response(_get(), store, stored, filename="image.bin")
    assert not isinstance(whole, StreamingResponse)
    assert whole.status_code == 200 and whole.body == b"0123456789"
    assert whole.headers["content-length"] == "10"
    part = await stored_file_response(
        _get({"Range": "bytes=2-4"}), store, stored, filename="image.bin"
    )
    assert part.status_code == 206 and part.body == b"234"
    assert part.headers["content-range"] == "bytes 2-4/10"
    # Removed (or cut short) between the stat and the read: a clear 404, not a cut body.
    (folder / "image").write_bytes(b"01234")
    with pytest.raises(Problem) as cut:
        await stored_file_response(_get(), store, stored, filename="image.bin")
    assert cut.value.status == 404
    (folder / "image").unlink()
    with pytest.raises(Problem) as gone:
        await stored_file_response(_get(), store, stored, filename="image.bin")
    assert gone.value.status == 404
