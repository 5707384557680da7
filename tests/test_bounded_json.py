"""bounded_json: JSON from a peer, refused when it nests deeper than allowed.

Both paths are checked: few brackets (straight to ``json.loads``) and many (scanned first).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antiphon.protocols import bounded_json
from antiphon.protocols.bounded_json import JSONTooDeep

MEDIA = (
    '{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"2",'
    '"timestamp":"5","payload":"' + "/v7+" * 40 + '"},"streamSid":"MZ1"}'
)


def depth(value: Any) -> int:
    """The nesting depth of a parsed value (0 for a scalar)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_a_media_message_parses() -> None:
    assert bounded_json.loads(MEDIA, max_depth=8) == json.loads(MEDIA)
    assert bounded_json.loads(MEDIA.encode(), max_depth=2)["media"]["chunk"] == "2"


@pytest.mark.parametrize("max_depth", [1, 2, 8])
def test_the_limit_is_inclusive(max_depth: int) -> None:
    assert depth(bounded_json.loads(nested(max_depth), max_depth=max_depth)) == max_depth
    with pytest.raises(JSONTooDeep):
        bounded_json.loads(nested(max_depth + 1), max_depth=max_depth)


def test_a_deep_bomb_is_refused_before_parsing() -> None:
    with pytest.raises(JSONTooDeep):
        bounded_json.loads("[" * 200_000, max_depth=8)  # json.loads would recurse


def test_brackets_in_strings_do_not_count() -> None:
    text = json.dumps({"a": "[[[[[[[[[[{{{{{{{{", "b": ['x"]]]]\\"[[[']})
    assert bounded_json.loads(text, max_depth=2) == json.loads(text)


def test_many_brackets_side_by_side_are_shallow() -> None:
    text = json.dumps([[1], [2], {"a": [3]}] * 20)
    assert bounded_json.loads(text, max_depth=3) == json.loads(text)
    with pytest.raises(JSONTooDeep):
        bounded_json.loads(text, max_depth=2)


def test_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        bounded_json.loads("{", max_depth=8)
    with pytest.raises(ValueError):
        bounded_json.loads("[" * 5 + "x", max_depth=2)  # scanned, then refused as deep


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)


@given(values, st.integers(min_value=1, max_value=6))
def test_agrees_with_json_and_the_parsed_depth(value: Any, max_depth: int) -> None:
    text = json.dumps(value)
    if depth(value) <= max_depth:
        assert bounded_json.loads(text, max_depth=max_depth) == json.loads(text)
    else:
        with pytest.raises(JSONTooDeep):
            bounded_json.loads(text, max_depth=max_depth)
