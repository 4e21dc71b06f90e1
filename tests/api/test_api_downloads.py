"""Byte ranges of stored-file downloads (RFC 9110 section 14): pure parsing."""

from __future__ import annotations

import pytest

from api.downloads import UnsatisfiableRangeError, byte_range


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
