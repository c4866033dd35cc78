"""What a provider answered (``rmcore.completion``): text, model, usage and why it stopped."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from rmcore.completion import Completion, Usage
from tests.core.helpers import completion

USAGES = st.builds(
    Usage,
    input_tokens=st.integers(min_value=0, max_value=10**9),
    output_tokens=st.integers(min_value=0, max_value=10**9),
    estimated=st.booleans(),
)


def test_no_usage_is_zero_and_reported() -> None:
    """The empty usage counts no tokens and is not an estimate."""
    assert Usage() == Usage(input_tokens=0, output_tokens=0, estimated=False)


def test_adding_usages_adds_the_counts() -> None:
    """Usage of two attempts together is the sum of their tokens."""
    total = Usage(input_tokens=10, output_tokens=5) + Usage(input_tokens=1, output_tokens=2)
    assert total == Usage(input_tokens=11, output_tokens=7)


def test_one_estimate_makes_the_sum_an_estimate() -> None:
    """A sum with any estimated part is itself estimated."""
    assert (Usage(input_tokens=1) + Usage(output_tokens=1, estimated=True)).estimated


@given(USAGES, USAGES, USAGES)
def test_usage_addition_is_associative_and_commutative(a: Usage, b: Usage, c: Usage) -> None:
    """Usages can be summed in any order and grouping with the same total."""
    assert a + b == b + a
    assert (a + b) + c == a + (b + c)


@given(USAGES)
def test_no_usage_is_the_neutral_element(a: Usage) -> None:
    """Adding nothing changes nothing."""
    assert a + Usage() == a == Usage() + a


def test_a_completion_has_no_finish_reason_unless_given() -> None:
    """``finish_reason`` is optional: some replies do not say why they stopped."""
    assert Completion(content="x", model="m", usage=Usage()).finish_reason is None


@given(st.text(), st.text(max_size=30), USAGES, st.none() | st.sampled_from(["stop", "length", "end_turn"]))
def test_a_completion_round_trips_through_json(
    content: str, model: str, usage: Usage, finish_reason: str | None
) -> None:
    """A completion written as JSON (the answer cache) reads back equal."""
    answer = Completion(content=content, model=model, usage=usage, finish_reason=finish_reason)
    assert msgspec.json.decode(msgspec.json.encode(answer), type=Completion) == answer


def test_the_helper_builds_the_completion_it_says() -> None:
    """``helpers.completion`` gives the text, model and token counts asked for."""
    assert completion("hi", "m", input_tokens=3, output_tokens=4) == Completion(
        content="hi", model="m", usage=Usage(input_tokens=3, output_tokens=4)
    )
