"""Token usage from what a reply reported, estimated where it reported nothing
(``rmcore.wire.usage``): an unreported answer is never taken for a free one."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.completion import Usage
from rmcore.pricing import estimate_prompt_tokens
from rmcore.wire.usage import CHARS_PER_OUTPUT_TOKEN, TokenCount, estimate_output_tokens, usage_from
from tests.core.helpers import chat_request

REQUEST = chat_request("Should we migrate?", system="You are an architect.")
COUNTS = st.none() | st.integers(min_value=0, max_value=10**9)


class Reported(msgspec.Struct):
    """A reply's usage object, as the wire formats declare it."""

    tokens: TokenCount


def test_reported_counts_are_kept_and_not_marked_estimated() -> None:
    """Counts the provider gave are used as they are."""
    assert usage_from(12, 34, "whatever", REQUEST) == Usage(input_tokens=12, output_tokens=34)


def test_reported_zero_is_a_count_not_a_gap() -> None:
    """A reported 0 is kept: only a missing count is estimated."""
    assert usage_from(0, 0, "some text", REQUEST) == Usage(input_tokens=0, output_tokens=0)


def test_missing_output_is_estimated_from_the_text() -> None:
    """No output count: about one token per four characters of the answer, marked estimated."""
    assert usage_from(12, None, "abcdefghi", REQUEST) == Usage(
        input_tokens=12, output_tokens=3, estimated=True
    )


def test_missing_input_is_estimated_from_the_request() -> None:
    """No input count: the request's prompt estimate, marked estimated."""
    usage = usage_from(None, 5, "", REQUEST)
    assert usage == Usage(input_tokens=estimate_prompt_tokens(REQUEST), output_tokens=5, estimated=True)


def test_missing_input_without_the_request_is_zero_but_still_marked() -> None:
    """Parsing a whole body, the request is unknown: input 0, and the usage says it is estimated."""
    assert usage_from(None, 5, "", None) == Usage(input_tokens=0, output_tokens=5, estimated=True)


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("é" * 8, 2)])
def test_output_estimate_is_a_token_per_four_characters_rounded_up(text: str, tokens: int) -> None:
    """ceil(characters / 4): a started token counts."""
    assert estimate_output_tokens(text) == tokens


@pytest.mark.parametrize("count", [-1, 2**53 + 1])
def test_a_negative_or_absurd_count_is_rejected(count: int) -> None:
    """A reply stating a negative count, or one beyond 2**53, does not decode."""
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode({"tokens": count}), type=Reported)


def test_the_extreme_counts_are_accepted() -> None:
    """0 and 2**53 are valid counts."""
    for count in (0, 2**53):
        assert msgspec.json.decode(msgspec.json.encode({"tokens": count}), type=Reported).tokens == count


@given(COUNTS, COUNTS, st.text(max_size=400))
def test_estimated_exactly_when_a_count_is_missing(
    input_tokens: int | None, output_tokens: int | None, content: str
) -> None:
    """``estimated`` is true if and only if the reply left out a count; reported ones are kept."""
    usage = usage_from(input_tokens, output_tokens, content, REQUEST)
    assert usage.estimated == (input_tokens is None or output_tokens is None)
    if input_tokens is not None:
        assert usage.input_tokens == input_tokens
    if output_tokens is not None:
        assert usage.output_tokens == output_tokens


@given(st.text(min_size=1, max_size=400))
def test_text_that_arrived_is_never_estimated_as_free(content: str) -> None:
    """Any answer text without a reported count costs at least one output token."""
    usage = usage_from(None, None, content, REQUEST)
    assert usage.output_tokens >= 1
    assert usage.output_tokens == math.ceil(len(content) / CHARS_PER_OUTPUT_TOKEN)
    assert usage.input_tokens == estimate_prompt_tokens(REQUEST) > 0
