"""Money (``rmcore.pricing``): a high estimate of a prompt's tokens, the cost of what was used,
and the worst case a request may cost before it is sent."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.completion import Usage
from rmcore.pricing import cost_usd, estimate_prompt_tokens, worst_case_usd
from rmcore.providers import ProviderSpec
from rmcore.requests import ChatRequest, ImagePart, Message, ResponseFormat, TextPart, Tool, ToolCall
from tests.core.helpers import chat_request, spec
from tests.core.request_strategies import chat_requests

PRICES = st.floats(min_value=0.0, max_value=1_000.0)
TOKENS = st.integers(min_value=0, max_value=10_000_000)
USAGES = st.builds(Usage, input_tokens=TOKENS, output_tokens=TOKENS, estimated=st.booleans())
REQUESTS = st.builds(
    ChatRequest.ask,
    prompt=st.text(max_size=300),
    system=st.none() | st.text(max_size=100),
    max_tokens=st.integers(min_value=1, max_value=200_000),
)


def priced(input_usd: float, output_usd: float) -> ProviderSpec:
    """A provider charging these prices (USD per million tokens in and out)."""
    return spec("p", input_usd_per_mtok=input_usd, output_usd_per_mtok=output_usd)


def test_a_million_tokens_cost_the_price_per_million() -> None:
    """Prices are USD per million tokens: 1M in at $3 and 1M out at $15 cost $18."""
    provider = spec("p", input_usd_per_mtok=3.0, output_usd_per_mtok=15.0)
    assert cost_usd(Usage(input_tokens=1_000_000, output_tokens=1_000_000), provider) == 18.0
    assert cost_usd(Usage(input_tokens=2_000, output_tokens=0), provider) == pytest.approx(0.006)


def test_nothing_used_costs_nothing_and_a_free_provider_costs_nothing() -> None:
    """No tokens cost $0 at any price; any tokens cost $0 at a free (local) provider."""
    assert cost_usd(Usage(), spec("p", 30.0)) == 0.0
    assert cost_usd(Usage(input_tokens=5_000, output_tokens=9_000), spec("local", 0.0)) == 0.0


def test_the_prompt_estimate_is_a_token_per_three_bytes_plus_an_overhead_per_message() -> None:
    """ceil(bytes / 3) + 8 for the prompt, and the same for a system text when there is one."""
    assert estimate_prompt_tokens(ChatRequest.ask("abcdefg")) == 3 + 8
    assert estimate_prompt_tokens(ChatRequest.ask("abcdefg", system="xyz")) == (3 + 8) + (1 + 8)
    assert estimate_prompt_tokens(ChatRequest.ask("")) == 8


def test_an_empty_system_text_is_no_message() -> None:
    """An empty system text adds no per-message overhead: it is not sent."""
    assert estimate_prompt_tokens(ChatRequest.ask("hello", system="")) == estimate_prompt_tokens(
        ChatRequest.ask("hello")
    )


def test_the_estimate_counts_utf8_bytes_not_characters() -> None:
    """Three "é" are six UTF-8 bytes, so two tokens, where three ASCII letters are one."""
    assert estimate_prompt_tokens(ChatRequest.ask("ééé")) == 2 + 8
    assert estimate_prompt_tokens(ChatRequest.ask("eee")) == 1 + 8


def test_every_message_of_a_conversation_is_counted() -> None:
    """Each message's text and overhead, an assistant's calls (id, name, arguments) and a tool
    result's id with its message."""
    request = ChatRequest(
        messages=(
            Message(role="user", content="abc"),
            Message(role="assistant", tool_calls=(ToolCall(id="i", name="f", arguments="{}"),)),
            Message(role="tool", content="r", tool_call_id="i"),
        )
    )
    assert estimate_prompt_tokens(request) == (1 + 8) + (math.ceil(4 / 3) + 8) + (1 + 8)


def test_an_image_counts_a_thousand_tokens() -> None:
    """An image is a fixed 1,000 tokens, besides its message's text."""
    parts = (TextPart(text="abc"), ImagePart(url="data:image/png;base64," + "A" * 3000))
    request = ChatRequest(messages=(Message(role="user", content=parts),))
    assert estimate_prompt_tokens(request) == 1 + 8 + 1_000


def test_tool_definitions_and_a_json_schema_count_like_messages() -> None:
    """A tool's name, description and schema bytes; a response format's schema."""
    schema = msgspec.Raw(b'{"type":"object"}')  # 17 bytes
    tool = Tool(name="fff", description="ddd", parameters=schema)
    plain = estimate_prompt_tokens(ChatRequest.ask("abc"))
    with_tool = estimate_prompt_tokens(ChatRequest.ask("abc", tools=(tool,)))
    assert with_tool - plain == math.ceil((3 + 3 + 17) / 3) + 8
    fmt = ResponseFormat(type="json_schema", name="x", schema=schema)
    assert (
        estimate_prompt_tokens(ChatRequest.ask("abc", response_format=fmt)) - plain == math.ceil(17 / 3) + 8
    )


@given(chat_requests())
def test_a_conversation_costs_at_least_its_prompt_alone(request: ChatRequest) -> None:
    """Counting the whole conversation never estimates less than its last prompt alone."""
    assert estimate_prompt_tokens(request) >= estimate_prompt_tokens(ChatRequest.ask(request.prompt))


def test_the_worst_case_is_the_prompt_estimate_plus_max_tokens_at_the_prices() -> None:
    """worst_case_usd prices the estimated prompt as input and all of ``max_tokens`` as output."""
    request = chat_request("x" * 300, max_tokens=1_000)
    provider = spec("p", input_usd_per_mtok=10.0, output_usd_per_mtok=30.0)
    assert worst_case_usd(request, provider) == pytest.approx((108 * 10.0 + 1_000 * 30.0) / 1e6)


@given(USAGES, PRICES, PRICES)
def test_cost_is_never_negative(usage: Usage, input_usd: float, output_usd: float) -> None:
    """Non-negative counts at non-negative prices never cost less than nothing."""
    assert cost_usd(usage, priced(input_usd, output_usd)) >= 0.0


@given(USAGES, USAGES, PRICES, PRICES)
def test_cost_is_additive_over_usage(a: Usage, b: Usage, input_usd: float, output_usd: float) -> None:
    """The cost of two usages together is the sum of their costs (cost is linear in tokens)."""
    provider = priced(input_usd, output_usd)
    together = cost_usd(a + b, provider)
    apart = cost_usd(a, provider) + cost_usd(b, provider)
    assert together == pytest.approx(apart, rel=1e-9, abs=1e-12)


@given(USAGES, PRICES, PRICES, st.integers(min_value=0, max_value=1_000))
def test_cost_scales_with_the_prices(usage: Usage, input_usd: float, output_usd: float, k: int) -> None:
    """Prices k times higher make the same usage cost k times more."""
    base = cost_usd(usage, priced(input_usd, output_usd))
    scaled = cost_usd(usage, priced(k * input_usd, k * output_usd))
    assert scaled == pytest.approx(k * base, rel=1e-9, abs=1e-12)


@given(REQUESTS, PRICES, PRICES, st.data())
def test_the_worst_case_covers_any_usage_within_the_estimate_and_max_tokens(
    request: ChatRequest, input_usd: float, output_usd: float, data: st.DataObject
) -> None:
    """Whatever the reply uses, up to the prompt estimate in and ``max_tokens`` out, it costs no
    more than the worst case reserved before sending."""
    provider = priced(input_usd, output_usd)
    used = Usage(
        input_tokens=data.draw(st.integers(min_value=0, max_value=estimate_prompt_tokens(request))),
        output_tokens=data.draw(st.integers(min_value=0, max_value=request.max_tokens)),
    )
    assert worst_case_usd(request, provider) >= cost_usd(used, provider)


@given(REQUESTS, PRICES, PRICES, st.integers(min_value=1, max_value=100_000))
def test_more_max_tokens_never_lowers_the_worst_case(
    request: ChatRequest, input_usd: float, output_usd: float, more: int
) -> None:
    """Raising ``max_tokens`` can only raise the worst case."""
    provider = priced(input_usd, output_usd)
    bigger = ChatRequest.ask(request.prompt, system=request.system, max_tokens=request.max_tokens + more)
    assert worst_case_usd(bigger, provider) >= worst_case_usd(request, provider)


@given(st.text(max_size=500), st.none() | st.text(max_size=200))
def test_the_prompt_estimate_errs_high(prompt: str, system: str | None) -> None:
    """The estimate is at least one token per four UTF-8 bytes (what tokenisers average on prose),
    plus one overhead per message sent, so that budgets err on the side of not spending."""
    estimate = estimate_prompt_tokens(ChatRequest.ask(prompt, system=system))
    texts = [prompt] + ([system] if system else [])
    assert estimate >= sum(math.ceil(len(t.encode()) / 4) for t in texts) + 8 * len(texts)
