"""Append-only spool files: where accepted points wait while the store is unreachable.

Segments are ``{data_dir}/spool/segment-{n:012d}.jsonl``, one point per line
(``[measurement, tags, fields, time_ns]``), fsynced on every append, shipped oldest first
and deleted only after the store took every point of them. A crash mid-replay sends a
segment again, which is harmless: a point with the series and time of a stored one
replaces it. A point the store refuses is not kept here: the recorder puts it in its dead
letter (:mod:`rules.dead_letters`) and the segment goes all the same, so a poisoned point
cannot hold the replay up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from rules.points import Point

log = logging.getLogger(__name__)


class Spool:
    """Single writer (the recorder), segments rotated at ``segment_bytes``."""

    def __init__(self, folder: Path, *, max_bytes: int, segment_bytes: int = 16 << 20) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = asyncio.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        self._segments = sorted(folder.glob("segment-*.jsonl"))
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in self._segments), default=0)
        self._active: Path | None = None
        self.bytes = sum(p.stat().st_size for p in self._segments)

    @property
    def has_data(self) -> bool:
        return bool(self._segments)

    @property
    def full(self) -> bool:
        return self.bytes >= self.max_bytes

    async def append(self, points: Sequence[Point]) -> None:
        """Append and fsync: when this returns the points survive a crash."""
        data = "".join(json.dumps(p.as_json(), separators=(",", ":")) + "\n" for p in points)
        async with self._lock:
            if self._active is None or self._active.stat().st_size >= self.segment_bytes:
                self._active = self.folder / f"segment-{self._next:012d}.jsonl"
                self._next += 1
                self._segments.append(self._active)
            await asyncio.to_thread(append_synced, self._active, data.encode())
            self.bytes += len(data.encode())

    async def oldest(self) -> tuple[Path, list[Point]] | None:
        """The oldest segment and its points; closes the active one so nothing is added."""
        async with self._lock:
            if not self._segments:
                return None
            path = self._segments[0]
            if path == self._active:
                self._active = None
        points = await asyncio.to_thread(_read_sync, path)
        return path, points

    async def remove(self, path: Path) -> None:
        async with self._lock:
            size = await asyncio.to_thread(remove_sized, path)
            self._segments.remove(path)
            self.bytes = max(0, self.bytes - size)


def append_synced(path: Path, data: bytes) -> None:
    """Append and fsync: on disk before the caller acknowledges anything."""
    with path.open("ab") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def remove_sized(path: Path) -> int:
    """Delete a file; its size, so a byte budget can be given back."""
    size = path.stat().st_size if path.exists() else 0
    path.unlink(missing_ok=True)
    return size


def _read_sync(path: Path) -> list[Point]:
    out = []
    with path.open("rb") as file:
        for number, line in enumerate(file, 1):
            try:
                out.append(Point.from_json(json.loads(line)))
            except (ValueError, TypeError) as exc:
                # A torn last line after a power loss: the point was never acknowledged.
                log.warning("spool %s line %d unreadable, skipped: %s", path, number, exc)
    return out
