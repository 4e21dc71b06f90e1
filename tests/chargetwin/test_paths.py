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


@pytest.mark.parametrize("resolved", [False, True])
def test_links_below_the_folder_are_followed_before_the_answer(
    tmp_path: Path, resolved: bool
) -> None:
    """The walk for symbolic links below the folder (the fast proof) and the full resolve
    agree, with the folder's resolution given or not."""
    real = tmp_path / "real"
    (real / "firmware").mkdir(parents=True)
    (real / "firmware" / "image.bin").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (real / "firmware" / "out").symlink_to(outside)
    (real / "firmware" / "deep").symlink_to(outside / "x" / "y")
    (real / "firmware" / "in").symlink_to(real / "firmware" / "image.bin")
    (real / "firmware" / "loop").symlink_to(real / "firmware" / "loop")
    folder = tmp_path / "data"
    folder.symlink_to(real)  # the folder itself may be a link
    kwargs = {"resolved_folder": folder.resolve()} if resolved else {}
    assert inside(folder, "firmware", "image.bin", **kwargs) == folder / "firmware/image.bin"
    assert inside(folder, "firmware", "missing", "x", **kwargs) == folder / "firmware/missing/x"
    assert inside(folder, "firmware", "in", **kwargs) == folder / "firmware" / "in"
    for name in ("out", "deep"):
        with pytest.raises(UnsafePathError):
            inside(folder, "firmware", name, **kwargs)
        with pytest.raises(UnsafePathError):
            inside(folder, "firmware", name, "below", **kwargs)
    with pytest.raises((UnsafePathError, RuntimeError, OSError)):
        inside(folder, "firmware", "loop", **kwargs)
