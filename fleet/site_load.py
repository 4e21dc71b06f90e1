"""A site's load over time from its recorded meter values: kW per step (15 minutes by
default), the peak and when, as a grid operator bills it (the mean power of each
interval, not the highest instant).

Pure: the API reads the points (``meter_values``, measurand ``Power.Active.Import``,
tagged with the site by the recorder) and this module buckets them. Per step, each
connector's load is the mean of its samples in the step (none: 0), and the site's load is
the sum over connectors. Connector 0 (the whole charger) is left out when the charger also
reports per connector, so nothing is counted twice.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

MAX_STEPS = 5000
_STEP = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}


def parse_step(text: str) -> int:
    """``15m``, ``1h``, ``1d`` as seconds; ValueError saying what is accepted."""
    match = _STEP.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid step {text!r}: a number and m, h or d (15m, 1h, 1d)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


Series = Mapping[tuple[tuple[str, str], ...], Sequence[tuple[int, float | str]]]


def load_curve(series: Series, start: float, end: float, step_s: int) -> dict[str, Any]:
    """``{"steps": [{"at", "kW"}], "peak": {"at", "kW"} | None}`` over ``[start, end)``.

    ``series`` maps labels (``charger``, ``connector``, ``unit``) to ``(ns, value)``
    points, as :meth:`rules.series.SeriesReader.points` answers them."""
    count = math.ceil((end - start) / step_s)
    if count > MAX_STEPS:
        raise ValueError(f"{count} steps asked; at most {MAX_STEPS} (a longer step)")
    per_connector = [dict(labels) for labels in series]
    with_ports = {
        tags.get("charger") for tags in per_connector if tags.get("connector", "0") != "0"
    }
    # One connector may report in W and in kW (two series): its samples are pooled.
    buckets: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for labels, points in series.items():
        tags = dict(labels)
        charger, connector = tags.get("charger", ""), tags.get("connector", "0")
        if connector == "0" and charger in with_ports:
            continue
        scale = 1.0 if tags.get("unit") == "kW" else 0.001
        for ns, value in points:
            if isinstance(value, str):
                continue
            index = int((ns / 1e9 - start) // step_s)
            if 0 <= index < count:
                buckets[(charger, connector, index)].append(float(value) * scale)
    sums: dict[int, float] = defaultdict(float)
    for (_, _, index), values in buckets.items():
        sums[index] += sum(values) / len(values)
    steps = [{"at": start + i * step_s, "kW": round(sums.get(i, 0.0), 3)} for i in range(count)]
    peak = max(steps, key=lambda s: s["kW"], default=None)
    return {"steps": steps, "peak": peak if peak and peak["kW"] > 0 else None}
