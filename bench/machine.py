"""What a benchmark ran on, printed beside its figures."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path


def describe() -> str:
    cpu = platform.processor() or "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        mem = f"{kib / 2**20:.1f} GiB"
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {mem}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
