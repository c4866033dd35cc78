"""Money: what a request may cost at worst before it is sent, and what it did cost after."""

from __future__ import annotations

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
    empty system message is counted as none (it is not sent).

    It runs once per routed request, on the hot path: plain loops, no lists built."""
    tokens = 0
    for message in request.messages:
        if message.role == "system" and _is_empty(message):
            continue
        size, images = _message_units(message)
        tokens += _unit_tokens(size, images)
    for tool in request.tools:
        size = len(tool.name.encode()) + len((tool.description or "").encode()) + len(tool.parameters or b"")
        tokens += _unit_tokens(size)
    schema = request.response_format.schema if request.response_format is not None else None
    if schema is not None:
        tokens += _unit_tokens(len(schema))
    return tokens


def _unit_tokens(size: int, images: int = 0) -> int:
    """The tokens of one message (or tool, or schema) of ``size`` UTF-8 bytes and ``images``."""
    return -(-size // _BYTES_PER_TOKEN) + _OVERHEAD_TOKENS_PER_MESSAGE + images * _TOKENS_PER_IMAGE


def _message_units(message: Message) -> tuple[int, int]:
    """A message's text size in UTF-8 bytes (its tool calls and call id included) and its images."""
    content = message.content
    if isinstance(content, str):  # the usual case
        size, images = len(content.encode()), 0
    else:
        size = len(message_text(content).encode())
        images = sum(1 for p in content if isinstance(p, ImagePart))
    if message.tool_calls:
        size += sum(len(f"{c.id}{c.name}{c.arguments}".encode()) for c in message.tool_calls)
    if message.tool_call_id:
        size += len(message.tool_call_id.encode())
    return size, images


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
