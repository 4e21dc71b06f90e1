"""Paths built from outside names stay inside their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargetwin.paths import UnsafePathError, inside


def test_plain_names_are_joined(tmp_path: Path) -> None:
    assert inside(tmp_path, "CP-1") == tmp_path / "CP-1"
    assert inside(tmp_path, "CP-1", "log.txt") == tmp_path / "CP-1" / "log.txt"
    assert inside(tmp_path, "a..b") == tmp_path / "a..b"  # dots inside a name are fine


@pytest.mark.parametrize(
    "parts",
    [
        (),
        ("",),
        (".",),
        ("..",),
        ("CP-1", ".."),
        ("../x",),
        ("a/b",),
        ("a\\b",),
        ("/etc",),
        ("a\0b",),
    ],
)
def test_names_that_leave_the_folder_are_refused(tmp_path: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(UnsafePathError):
        inside(tmp_path, *parts)


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "diagnostics"
    folder.mkdir()
    (folder / "escape").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        inside(folder, "escape", "chargetwin.db")
