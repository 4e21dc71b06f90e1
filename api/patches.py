"""JSON merge patch (RFC 7396), to validate a desired state before the twin applies it.

The twin applies the same patch itself; the API merges only to check the result against
the desired-state schema and answer 422 without a round trip over MQTT.
"""

from __future__ import annotations

import copy
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2 ``MergePatch(Target, Patch)``; neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
