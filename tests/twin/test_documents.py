"""Merge, delta and metadata rules of the shadow document (pure logic, no I/O)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chargetwin.json_text import compact
from twin.documents import SECTIONS, ShadowDocument, _WriteIndex, delta, depth_of

KEYS = st.sampled_from(["a", "b", "c"])
SCALARS = st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y", True, False]))
LEAVES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.none())
PATCHES = st.recursive(
    LEAVES, lambda children: st.dictionaries(KEYS, children, max_size=3), max_leaves=6
).filter(lambda p: isinstance(p, dict))
UPDATES = st.lists(
    st.tuples(
        st.sampled_from(["reported", "desired"]),
        PATCHES,
        st.integers(1, 6).map(float),  # few timestamps: ties happen and must not matter
    ),
    max_size=8,
)


def _build(updates: list[tuple[str, Any, float]]) -> ShadowDocument:
    doc = ShadowDocument("cp")
    for section, patch, ts in updates:
        doc.apply({section: patch}, ts)
    return doc


def test_a_delete_below_a_scalar_gives_the_same_document_in_any_order() -> None:
    """``c`` = 0 and ``c.a`` = 0 at the same time (the deeper write wins: ``c`` becomes an
    object), then ``c.a`` deleted later: the writes held are ``c`` = 0 and that delete, so
    ``c`` is 0 whichever arrives first (found by the test below)."""
    updates: list[tuple[str, Any, float]] = [
        ("reported", {"c": 0}, 1.0),
        ("reported", {"c": {"a": None}}, 2.0),
        ("reported", {"c": {"a": 0}}, 1.0),
    ]
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]):
        doc = _build([updates[i] for i in order])
        assert doc.reported == {"c": 0}, order


def test_a_scalar_replaced_by_an_object_does_not_return_when_the_object_empties() -> None:
    """``b`` = 0, then a value below it (``b`` becomes an object), then that value deleted:
    ``b`` is gone (RFC 7396 in order: ``{}``, and empty objects disappear), not 0 again.
    Also when the value below lost a tie to a delete at the same time, in any order."""
    doc = _build(
        [
            ("desired", {"a": 0, "b": 0}, 1.0),
            ("desired", {"a": None, "b": {"a": None, "b": 0}}, 2.0),
            ("desired", {"b": {"b": None}}, 3.0),
        ]
    )
    assert doc.desired == {}
    updates: list[tuple[str, Any, float]] = [
        ("reported", {"a": None, "c": 0}, 1.0),
        ("reported", {"c": {"a": 0}}, 2.0),
        ("reported", {"c": {"a": None}}, 2.0),
    ]
    for order in ([0, 1, 2], [0, 2, 1], [2, 1, 0], [2, 0, 1], [1, 2, 0], [1, 0, 2]):
        doc = _build([updates[i] for i in order])
        assert doc.reported == {}, order
        stored = json.loads(doc.writes_text())
        assert ShadowDocument.restore("cp", 1, 0.0, stored).reported == {}, order


@settings(max_examples=400, deadline=None)
@given(UPDATES, st.randoms(use_true_random=False))
def test_final_document_does_not_depend_on_arrival_order(
    updates: list[tuple[str, Any, float]], rnd: Any
) -> None:
    shuffled = list(updates)
    rnd.shuffle(shuffled)
    a, b = _build(updates), _build(shuffled)
    assert a.to_public() == b.to_public()
    # ... and the stored form restores to the same document.
    restored = ShadowDocument.restore("cp", 0, 0.0, json.loads(json.dumps(a.writes_to_json())))
    assert restored.to_public() == a.to_public()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["reported", "desired"]), PATCHES), max_size=6))
def test_in_order_updates_follow_json_merge_patch(updates: list[tuple[str, Any]]) -> None:
    """With rising timestamps the shadow is RFC 7396 applied in turn.

    Documented differences: objects left empty disappear, and an object patch that sets
    nothing (``{"a": {}}``, ``{"a": {"b": null}}``) leaves a scalar ``a`` as it was.
    """
    doc = ShadowDocument("cp")
    expected: dict[str, Any] = {"reported": {}, "desired": {}}
    for i, (section, patch) in enumerate(updates):
        doc.apply({section: patch}, float(i + 1))
        expected[section] = _prune(_merge_patch(expected[section], _without_empty(patch)))
    assert doc.reported == expected["reported"]
    assert doc.desired == expected["desired"]


@settings(max_examples=300, deadline=None)
@given(UPDATES)
def test_delta_is_exactly_the_desired_leaves_that_differ(
    updates: list[tuple[str, Any, float]],
) -> None:
    doc = _build(updates)
    want = {
        path: value
        for path, value in _leaves(doc.desired)
        if _canon(_lookup(doc.reported, path)) != _canon(value)
    }
    assert dict(_leaves(doc.delta())) == want


@settings(max_examples=200, deadline=None)
@given(UPDATES)
def test_every_leaf_has_metadata_with_its_timestamp(
    updates: list[tuple[str, Any, float]],
) -> None:
    doc = _build(updates)
    for name in ("reported", "desired"):
        section = doc.sections[name]
        for path, value in _leaves(section.state):
            meta = _lookup(section.metadata, path)
            if isinstance(value, list):
                assert meta == [{"timestamp": section.writes[path][0]}] * len(value) or (
                    isinstance(meta, list) and len(meta) == len(value)
                )
            else:
                assert isinstance(meta, dict) and set(meta) == {"timestamp"}


def test_older_write_never_overwrites_newer() -> None:
    doc = ShadowDocument("cp")
    doc.apply({"reported": {"connectors": {"1": {"status": "Charging"}}}}, 20.0)
    assert not doc.apply({"reported": {"connectors": {"1": {"status": "Available"}}}}, 10.0)
    assert doc.reported["connectors"]["1"]["status"] == "Charging"
    assert doc.sections["reported"].metadata["connectors"]["1"]["status"] == {"timestamp": 20.0}


def test_older_write_below_a_newer_replacement_is_wiped() -> None:
    doc = ShadowDocument("cp")
    doc.apply({"reported": {"config": None}}, 20.0)
    doc.apply({"reported": {"config": {"A": "1"}}}, 10.0)
    assert doc.reported == {}


def test_null_deletes_and_empty_objects_disappear() -> None:
    doc = ShadowDocument("cp")
    doc.apply({"desired": {"config": {"A": "1"}, "availability": {"1": "Inoperative"}}}, 1.0)
    doc.apply({"desired": {"config": {"A": None}}}, 2.0)
    assert doc.desired == {"availability": {"1": "Inoperative"}}
    assert "config" not in doc.sections["desired"].metadata


def test_whole_section_null_clears_it() -> None:
    doc = ShadowDocument("cp")
    doc.apply({"desired": {"config": {"A": "1"}}}, 1.0)
    doc.apply({"desired": None}, 2.0)
    assert doc.desired == {}
    doc.apply({"desired": {"config": {"B": "2"}}}, 1.5)  # older than the clear: wiped
    assert doc.desired == {}


def test_arrays_are_replaced_whole() -> None:
    doc = ShadowDocument("cp")
    doc.apply({"reported": {"phases": [1, 2, 3]}}, 1.0)
    doc.apply({"reported": {"phases": [4]}}, 2.0)
    assert doc.reported == {"phases": [4]}
    assert doc.sections["reported"].metadata["phases"] == [{"timestamp": 2.0}]


def test_delta_compares_types_and_arrays_whole() -> None:
    assert delta(
        {"a": 1, "b": [1, 2], "c": {"d": "x"}}, {"a": True, "b": [1], "c": {"d": "x"}}
    ) == {
        "a": 1,
        "b": [1, 2],
    }


def test_same_value_with_newer_timestamp_refreshes_metadata() -> None:
    doc = ShadowDocument("cp")
    doc.apply({"reported": {"a": 1}}, 1.0)
    assert doc.apply({"reported": {"a": 1}}, 2.0)
    assert doc.sections["reported"].metadata["a"] == {"timestamp": 2.0}


def test_depth_of() -> None:
    assert depth_of(1) == 0
    assert depth_of({"a": {"b": [1]}}) == 3


# --- reference helpers ------------------------------------------------------------------
def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2, except that a patch with nothing to set leaves a scalar alone."""
    if isinstance(patch, dict):
        if not isinstance(target, dict):
            replaced = _prune(_merge_patch({}, patch))
            return target if replaced == {} and target is not None else replaced
        target = dict(target)
        for key, value in patch.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = _merge_patch(target.get(key), value)
        return target
    return patch


def _without_empty(patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = {k: _without_empty(v) for k, v in patch.items()}
    return {k: v for k, v in out.items() if v != {}}


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v != {}}
    return value


def _leaves(state: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in state.items():
        if isinstance(value, dict):
            out += _leaves(value, (*prefix, key))
        else:
            out.append(((*prefix, key), value))
    return out


def _lookup(state: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(state, dict) or key not in state:
            return None
        state = state[key]
    return state


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@settings(max_examples=400, deadline=None)
@given(UPDATES, st.lists(st.booleans(), min_size=8, max_size=8))
def test_the_text_kept_per_key_is_the_whole_document_encoded(
    updates: list[tuple[str, Any, float]], rollbacks: list[bool]
) -> None:
    """After every update (some rolled back, as an oversized one is, and tombstones
    pruned), the text built from the keys that did not change equals encoding it all, and
    the write counts by path equal counting afresh."""
    doc = ShadowDocument("cp")
    for (section, patch, ts), rollback in zip(updates, rollbacks, strict=False):
        snapshot = doc.snapshot()
        doc.version += 1
        doc.apply({section: patch}, ts)
        if rollback:
            doc.rollback(snapshot)
        for part in doc.sections.values():
            part.prune_tombstones(ts - 2.0)
        for part in doc.sections.values():
            assert part.state_text() == compact(part.state)
            assert part.metadata_text() == compact(part.metadata)
            # The counts kept in step with the writes equal counting them afresh.
            kept, fresh = part._write_index(), _WriteIndex(part.writes)
            assert (kept.below, kept.tops) == (fresh.below, fresh.tops)
        encoded = doc.encoded()  # a rolled back version's text: its keys may be reordered
        assert json.loads(encoded.state) == {"reported": doc.reported, "desired": doc.desired}
        metadata = {name: s.metadata for name, s in doc.sections.items()}
        assert json.loads(encoded.metadata) == metadata
        stored = json.loads(doc.writes_text())
        expected = doc.writes_to_json()
        assert stored.keys() == expected.keys()
        for name in SECTIONS:
            assert sorted(map(json.dumps, stored[name])) == sorted(map(json.dumps, expected[name]))
        restored = ShadowDocument.restore("cp", doc.version, 0.0, stored)
        assert restored.to_public()["state"] == doc.to_public()["state"]


def test_deletes_are_forgotten_past_the_horizon_only_late_ones_included() -> None:
    doc = ShadowDocument("cp")
    doc.apply({"reported": {"kept": 1}}, 0.5)
    for ts in range(1, 21):
        doc.apply({"reported": {f"gone{ts}": None}}, float(ts))
    section = doc.sections["reported"]

    def deletes() -> list[float]:
        return sorted(ts for ts, value in section.writes.values() if value is None)

    section.prune_tombstones(0.0)  # none that old: nothing goes
    assert deletes() == [float(ts) for ts in range(1, 21)]
    section.prune_tombstones(10.5)
    assert deletes() == [float(ts) for ts in range(11, 21)]
    # Sixteen more (so there are more deletes than leaves to explain them), and one that
    # arrived late, older than every delete seen so far: it goes at the next prune.
    for ts in range(21, 37):
        doc.apply({"reported": {f"gone{ts}": None}}, float(ts))
    section.prune_tombstones(10.5)  # the oldest delete is younger: nothing scanned or gone
    assert len(deletes()) == 26
    doc.apply({"reported": {"late": None}}, 3.0)
    section.prune_tombstones(10.5)
    assert deletes() == [float(ts) for ts in range(11, 37)]
    section.prune_tombstones(30.5)
    assert deletes() == [float(ts) for ts in range(31, 37)]
    assert doc.reported == {"kept": 1}
