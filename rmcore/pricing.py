"""Money: what a request may cost at worst before it is sent, and what it did cost after."""

from __future__ import annotations

import math

from rmcore.completion import Usage
from rmcore.providers import ProviderSpec
from rmcore.requests import ChatRequest, ImagePart, Message, message_text

__all__ = ["cost_usd", "estimate_prompt_tokens", "worst_case_usd"]

_BYTES_PER_TOKEN = 3
_OVERHEAD_TOKENS_PER_MESSAGE = 8
_TOKENS_PER_IMAGE = 1_000
"""An image's tokens, whatever its size: providers count by pixels (Anthropic about
width x height / 750, so about 1,600 for a 1092 x 1092 image; OpenAI 85 to about 1,100 for
a high-detail tile set) and the core never decodes an image, so one fixed, high-side figure."""


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """A deliberately high estimate of the prompt's tokens: one per three UTF-8 bytes of every
    message's text (tool calls' names and arguments and tool results' ids included) plus a
    per-message overhead, each image as :data:`_TOKENS_PER_IMAGE`, and each tool definition and
    a JSON schema to answer with counted like a message. Tokenisers average nearer four bytes a
    token on prose, so budgets checked with this estimate err on the side of not spending. An
    empty system message is counted as none (it is not sent)."""
    units = [_message_units(m) for m in request.messages if not (m.role == "system" and _is_empty(m))]
    units += [
        (len(t.name.encode()) + len((t.description or "").encode()) + len(t.parameters or b""), 0)
        for t in request.tools
    ]
    schema = request.response_format.schema if request.response_format is not None else None
    if schema is not None:
        units.append((len(schema), 0))
    return sum(
        math.ceil(size / _BYTES_PER_TOKEN) + _OVERHEAD_TOKENS_PER_MESSAGE + images * _TOKENS_PER_IMAGE
        for size, images in units
    )


def _message_units(message: Message) -> tuple[int, int]:
    """A message's text size in UTF-8 bytes (its tool calls and call id included) and its images."""
    parts = () if isinstance(message.content, str) else message.content
    size = len(message_text(message.content).encode())
    size += sum(len(f"{c.id}{c.name}{c.arguments}".encode()) for c in message.tool_calls)
    size += len((message.tool_call_id or "").encode())
    return size, sum(1 for p in parts if isinstance(p, ImagePart))


def _is_empty(message: Message) -> bool:
    return not message.content and not message.tool_calls


def cost_usd(usage: Usage, provider: ProviderSpec) -> float:
    """The cost of ``usage`` at ``provider``'s prices (USD per million tokens)."""
    return (
        usage.input_tokens * provider.input_usd_per_mtok + usage.output_tokens * provider.output_usd_per_mtok
    ) / 1_000_000


def worst_case_usd(request: ChatRequest, provider: ProviderSpec) -> float:
    """The most ``request`` can cost at ``provider``: the prompt estimate plus ``max_tokens``."""
    worst = Usage(input_tokens=estimate_prompt_tokens(request), output_tokens=request.max_tokens)
    return cost_usd(worst, provider)
