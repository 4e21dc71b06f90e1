"""File paths built from names that come from outside (charger ids, file names, digests).

Every such path goes through :func:`inside`, which refuses a name that is not one plain
path segment and proves that the resolved result (symbolic links followed) lies in the
folder. A validated id is the first defence; this is the second, so that a name which
slipped past validation (an id registered before the alphabet was narrowed, a stored row)
still cannot reach a file outside its folder.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["UnsafePathError", "inside"]


class UnsafePathError(ValueError):
    """A name that would lead out of its folder, or is not a plain file name."""


def _check_segment(part: str) -> None:
    if part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part:
        raise UnsafePathError(f"{part!r} is not a plain file or folder name")


def inside(folder: Path, *parts: str) -> Path:
    """``folder/part/...``, proven to lie strictly inside ``folder`` once resolved.

    Each part must be one path segment: not empty, not ``.`` or ``..``, without ``/``,
    ``\\`` or NUL. The returned path is the joined one (not the resolved one), so callers
    see the names they gave; raises :class:`UnsafePathError` otherwise.
    """
    if not parts:
        raise UnsafePathError("a path inside a folder needs at least one name")
    for part in parts:
        _check_segment(part)
    path = folder.joinpath(*parts)
    root = folder.resolve()
    resolved = path.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise UnsafePathError(f"{path} is not inside {folder}")
    return path
