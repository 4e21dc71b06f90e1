"""Charger times become nanoseconds exactly: no float on the way."""

from __future__ import annotations

import pytest

from rules.points import NS, to_ns


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-06T10:00:00.017Z", 1_796_551_200_017_000_000),
        ("2026-12-06T11:00:00.017+01:00", 1_796_551_200_017_000_000),
        ("2026-12-06T10:00:00.999999Z", 1_796_551_200_999_999_000),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_iso_times_keep_every_digit(text: str, expected: int) -> None:
    assert to_ns(text, 0) == expected  # .017 through a float was .016999936


def test_numbers_and_unreadable_text_as_before() -> None:
    assert to_ns(1.5, 0) == 1_500_000_000
    assert to_ns("not a time", 2.0) == 2 * NS
