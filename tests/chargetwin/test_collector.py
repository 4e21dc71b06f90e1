"""The garbage collector settings of a service process (chargetwin.collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from chargetwin.collector import OLDEST_GENERATION_THRESHOLD, tune_for_long_running


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_startup_objects_are_frozen_and_full_collections_made_rare(
    restored_collector: None,
) -> None:
    young, middle, oldest = gc.get_threshold()
    kept = type("Kept", (), {})()  # a tracked object alive at "startup"
    tune_for_long_running()
    assert gc.get_freeze_count() > 0
    assert not any(obj is kept for obj in gc.get_objects(generation=2))  # frozen, not scanned
    assert gc.get_threshold() == (young, middle, OLDEST_GENERATION_THRESHOLD)
    assert oldest < OLDEST_GENERATION_THRESHOLD
