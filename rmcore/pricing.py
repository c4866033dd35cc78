"""Money: what a request may cost at worst before it is sent, and what it did cost after."""

from __future__ import annotations

import math

from rmcore.completion import Usage
from rmcore.providers import ProviderSpec
from rmcore.requests import ChatRequest

__all__ = ["cost_usd", "estimate_prompt_tokens", "worst_case_usd"]

_BYTES_PER_TOKEN = 3
_OVERHEAD_TOKENS_PER_MESSAGE = 8


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """A deliberately high estimate of the prompt's tokens: one per three UTF-8 bytes plus a
    per-message overhead. Tokenisers average nearer four bytes a token on prose, so budgets
    checked with this estimate err on the side of not spending."""
    texts = [request.prompt] + ([request.system] if request.system else [])
    return sum(math.ceil(len(t.encode()) / _BYTES_PER_TOKEN) + _OVERHEAD_TOKENS_PER_MESSAGE for t in texts)


def cost_usd(usage: Usage, provider: ProviderSpec) -> float:
    """The cost of ``usage`` at ``provider``'s prices (USD per million tokens)."""
    return (
        usage.input_tokens * provider.input_usd_per_mtok + usage.output_tokens * provider.output_usd_per_mtok
    ) / 1_000_000


def worst_case_usd(request: ChatRequest, provider: ProviderSpec) -> float:
    """The most ``request`` can cost at ``provider``: the prompt estimate plus ``max_tokens``."""
    worst = Usage(input_tokens=estimate_prompt_tokens(request), output_tokens=request.max_tokens)
    return cost_usd(worst, provider)
