"""The recorder's dead letter: messages and points no store can take, kept with the reason.

MQTT is an open contract: anyone allowed on the telemetry topics may publish, so one bad
value must cost nothing but itself. What the recorder refuses (an unreadable payload, a
time beyond what the stores hold, a number that is not finite, a point a store refused)
is appended to ``{folder}/dead-letter-{n:012d}.jsonl``, one JSON object a line::

    {"time": "2026-12-06T18:00:00.000000+00:00", "reason": "...", "topic": "...",
     "payload": "...", "payload_bytes": 123, "point": [measurement, tags, fields, ns]}

``topic`` and ``payload`` are null for a point replayed from the spool (its message is
gone); ``point`` is null for a message that gave no point. Payloads are kept up to
``max_payload`` bytes (invalid UTF-8 as ``\\xNN``); ``payload_bytes`` is the whole size.
Entries are fsynced before the message is acknowledged, like the spool. Files rotate at
``file_bytes`` and the oldest are deleted past ``max_bytes``, so a hostile publisher
cannot fill the disk: it can only push older entries out.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rules.points import Point
from rules.spools import append_synced, remove_sized


class DeadLetters:
    """Append-only, bounded; one writer (the recorder), concurrent adds written together."""

    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int = 64 << 20,
        file_bytes: int = 4 << 20,
        max_payload: int = 16 << 10,
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.file_bytes = file_bytes
        self.max_payload = max_payload
        folder.mkdir(parents=True, exist_ok=True)
        self._files = sorted(folder.glob("dead-letter-*.jsonl"))
        self._next = 1 + max((int(p.stem.rsplit("-", 1)[1]) for p in self._files), default=0)
        self.bytes = sum(p.stat().st_size for p in self._files)
        self._lock = asyncio.Lock()
        # Group commit: lines queued by concurrent adds go out in one write and one fsync.
        self._pending: list[str] = []
        self._queued = 0
        self._durable = 0

    def entry(
        self,
        reason: str,
        *,
        topic: str | None = None,
        payload: bytes | None = None,
        point: Point | None = None,
    ) -> str:
        """One line of the dead letter (without the newline)."""
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(),
            "reason": reason,
            "topic": topic,
            "payload": None,
            "payload_bytes": None,
            "point": None,
        }
        if payload is not None:
            record["payload"] = payload[: self.max_payload].decode("utf-8", "backslashreplace")
            record["payload_bytes"] = len(payload)
        if point is not None:
            record["point"] = _point_json(point)
        return json.dumps(record, separators=(",", ":"))

    async def add(self, lines: list[str]) -> None:
        """Append entries; returns once they are on disk."""
        if not lines:
            return
        last = self._queued + len(lines)
        self._queued = last
        self._pending.extend(lines)
        async with self._lock:
            if self._durable >= last:
                return  # written by the add that held the lock before us
            batch, self._pending = self._pending, []
            data = ("\n".join(batch) + "\n").encode()
            path = self._active()
            try:
                await asyncio.to_thread(append_synced, path, data)
            except BaseException:
                self._pending[:0] = batch  # the next add tries them again
                raise
            self.bytes += len(data)
            self._durable += len(batch)
            while self.bytes > self.max_bytes and len(self._files) > 1:
                oldest = self._files.pop(0)
                self.bytes -= await asyncio.to_thread(remove_sized, oldest)

    def _active(self) -> Path:
        newest = self._files[-1] if self._files else None
        if newest is not None and newest.exists() and newest.stat().st_size < self.file_bytes:
            return newest
        path = self.folder / f"dead-letter-{self._next:012d}.jsonl"
        self._next += 1
        self._files.append(path)
        return path


def _point_json(point: Point) -> Any:
    """The point as JSON where it can be (``[measurement, tags, fields, ns]``), as text
    otherwise (NaN, an int too long to print, a key that is not a string)."""
    try:
        json.dumps(point.as_json(), allow_nan=False)
        return point.as_json()
    except (ValueError, TypeError):
        try:
            return repr(tuple(point))[:4096]
        except ValueError:  # an int beyond Python's printable digits
            return f"<point of measurement {str(point.measurement)[:64]!r}, not printable>"
