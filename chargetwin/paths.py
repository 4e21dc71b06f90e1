"""File paths built from names that come from outside (charger ids, file names, digests).

Every such path goes through :func:`inside`, which refuses a name that is not one plain
path segment and proves that the resolved result (symbolic links followed) lies in the
folder. A validated id is the first defence; this is the second, so that a name which
slipped past validation (an id registered before the alphabet was narrowed, a stored row)
still cannot reach a file outside its folder.
"""

from __future__ import annotations

import stat
from pathlib import Path

__all__ = ["UnsafePathError", "inside"]


class UnsafePathError(ValueError):
    """A name that would lead out of its folder, or is not a plain file name."""


def _check_segment(part: str) -> None:
    if part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part:
        raise UnsafePathError(f"{part!r} is not a plain file or folder name")


def inside(folder: Path, *parts: str, resolved_folder: Path | None = None) -> Path:
    """``folder/part/...``, proven to lie strictly inside ``folder`` once resolved.

    Each part must be one path segment: not empty, not ``.`` or ``..``, without ``/``,
    ``\\`` or NUL. The returned path is the joined one (not the resolved one), so callers
    see the names they gave; raises :class:`UnsafePathError` otherwise.
    ``resolved_folder``: ``folder.resolve()``, when the caller keeps it (a store that
    serves many files from one folder).
    """
    if not parts:
        raise UnsafePathError("a path inside a folder needs at least one name")
    for part in parts:
        _check_segment(part)
    path = folder.joinpath(*parts)
    root = folder.resolve() if resolved_folder is None else resolved_folder
    if not _links_below(root, parts):
        # Plain segments and no symbolic link among them: the path resolves to
        # root/parts, inside root. (A full resolve walks every segment of the root too,
        # in Python: most of a small download's cost.)
        return path
    resolved = path.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise UnsafePathError(f"{path} is not inside {folder}")
    return path


def _links_below(root: Path, parts: tuple[str, ...]) -> bool:
    """Whether one of ``root/parts...`` is a symbolic link (a missing one ends the walk:
    nothing below it exists, so the rest resolves as written)."""
    current = root
    for part in parts:
        current = current / part
        try:
            mode = current.lstat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return True  # unreadable (permissions, say): the full resolve decides
        if stat.S_ISLNK(mode):
            return True
    return False
