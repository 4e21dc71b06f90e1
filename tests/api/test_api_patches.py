"""RFC 7396 merge patch: the examples of its Appendix A, and inputs left untouched."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from api.patches import merge_patch

APPENDIX_A = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), APPENDIX_A)
def test_rfc_7396_appendix_a(target: Any, patch: Any, result: Any) -> None:
    before = (copy.deepcopy(target), copy.deepcopy(patch))
    assert merge_patch(target, patch) == result
    assert (target, patch) == before


def test_the_result_shares_nothing_with_the_patch() -> None:
    patch = {"config": {"list": [1, 2]}}
    merged = merge_patch({}, patch)
    merged["config"]["list"].append(3)
    assert patch == {"config": {"list": [1, 2]}}
