"""Freed heap memory goes back to the system (bridge.heap): a bridge under hostile input
otherwise keeps the peak of its worker threads' malloc arenas for good."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from bridge import Bridge
from bridge.heap import trim_heap


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def churn_in_a_thread() -> list[bytes]:
    """What big frames do to a worker thread's arena: many 20 KiB blocks, every other one
    freed, so the arena cannot shrink from its top (the rest are returned, still held)."""
    kept: list[bytes] = []

    def work() -> None:
        blocks = [bytes(20_000) + bytes([i % 256]) for i in range(6_000)]  # ~120 MB
        kept.extend(blocks[::2])

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return kept


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_trimming_gives_freed_memory_back() -> None:
    kept = churn_in_a_thread()
    before = rss_kib()
    if not trim_heap():
        pytest.skip("no malloc_trim in this C library")
    assert before - rss_kib() > 20_000, (before, rss_kib())
    assert len(kept) == 3_000


async def test_the_server_owns_its_trimming_task(bridge: Bridge) -> None:
    assert bridge.server is not None
    task = bridge.server._trimmer
    assert task is not None and not task.done()
    await bridge.stop()
    assert task.cancelled()
    await asyncio.sleep(0)
