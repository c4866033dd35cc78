"""JSON decoding that never raises (``rmcore.wire.decode``): a reply is the expected shape or
``None``, whatever bytes the provider sent."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.wire.decode import decode_any, decode_as


class Shape(msgspec.Struct, frozen=True):
    """A reply shape: a required string and an optional non-negative count."""

    text: str
    count: int | None = None


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)


def test_a_reply_of_the_expected_shape_is_decoded() -> None:
    """Bytes or text holding the shape decode to it; fields it does not name are ignored."""
    assert decode_as(b'{"text": "hi", "count": 2}', Shape) == Shape(text="hi", count=2)
    assert decode_as('{"text": "hi", "extra": [1]}', Shape) == Shape(text="hi")


@pytest.mark.parametrize(
    "data",
    [
        b'{"count": 2}',
        b'{"text": 5}',
        b"[]",
        b'"text"',
        b"",
        b"{",
        b"not json",
        b'{"text": "a"} trailing',
        b'{"text": "\xff"}',
        b"\xef\xbb",
    ],
)
def test_anything_else_is_none(data: bytes) -> None:
    """A missing field, a wrong type, invalid JSON or invalid UTF-8 is ``None``, not an exception."""
    assert decode_as(data, Shape) is None


def test_absurdly_deep_nesting_is_none() -> None:
    """Nesting deep enough to exhaust the recursion limit is not the documented format: ``None``."""
    assert decode_any(b"[" * 100_000 + b"]" * 100_000) is None
    assert decode_as(b'{"text": "a", "count": ' + b"[" * 100_000, Shape) is None


def test_any_json_decodes_to_plain_values() -> None:
    """``decode_any`` gives dicts, lists, strings, numbers, booleans and ``None``."""
    assert decode_any(b'{"a": [1, 2.5, true, null, "x"]}') == {"a": [1, 2.5, True, None, "x"]}
    assert decode_any("null") is None


def test_a_lone_surrogate_escape_is_not_json_text() -> None:
    """``"\\ud800"`` escapes a half of a character: the reply is not valid JSON, so ``None``."""
    assert decode_any(b'"\\ud800"') is None


def test_text_holding_a_lone_surrogate_is_none() -> None:
    """A ``str`` that cannot be UTF-8 encoded is not JSON: ``None``, never an exception."""
    assert decode_any('"\ud800"') is None
    assert decode_as('{"text": "\ud800"}', Shape) is None


@given(JSON_VALUES)
def test_any_json_value_round_trips(value: Any) -> None:
    """What the standard library writes as JSON decodes back to the same value."""
    assert decode_any(json.dumps(value)) == value
    assert decode_any(json.dumps(value).encode()) == value


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """Any bytes at all decode to a value or to ``None``."""
    decode_any(data)
    assert decode_as(data, Shape) is None or isinstance(decode_as(data, Shape), Shape)


@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text: str) -> None:
    """Any text (of whole characters) decodes to a value or to ``None``."""
    decode_any(text)
    assert decode_as(text, Shape) is None or isinstance(decode_as(text, Shape), Shape)
