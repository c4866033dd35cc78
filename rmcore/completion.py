"""What a provider answered: text, tool calls, model, token usage and why it stopped.

Every wire format's reply, whole or streamed, comes back in this one shape; ``finish_reason`` is
normalised (:data:`FINISH_REASONS`, see :func:`normalise_finish_reason`) so that a caller never
needs to know which format answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from rmcore.base import Base
from rmcore.requests import ToolCall

__all__ = ["FINISH_REASONS", "Completion", "Usage", "normalise_finish_reason"]

FINISH_REASONS: Final = ("stop", "length", "tool_calls", "content_filter")
"""The normalised reasons an answer ended: it was finished (or hit a stop sequence), it hit
``max_tokens``, it asks for tool calls, or the provider withheld it."""

_FINISH_REASON_NAMES: Mapping[str, str] = {
    # OpenAI (and compatible servers); ``function_call`` is the deprecated form of ``tool_calls``.
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    # Anthropic stop reasons.
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def normalise_finish_reason(reason: str | None, *, has_tool_calls: bool = True) -> str | None:
    """``reason`` as one of :data:`FINISH_REASONS`, from an OpenAI finish reason or an Anthropic
    stop reason; ``None`` when the provider gave none; any other reason unchanged (lower-cased),
    so that a new one is seen rather than hidden. A reply that stopped for tool calls but holds
    none (``has_tool_calls`` false: its only call carried a JSON answer, see
    ``rmcore.wire.anthropic_request``) simply stopped."""
    if reason is None:
        return None
    lowered = reason.lower()
    normal = _FINISH_REASON_NAMES.get(lowered, lowered)
    return "stop" if normal == "tool_calls" and not has_tool_calls else normal


class Usage(Base, frozen=True):
    """Tokens as the provider counted them (or, where ``estimated``, as we estimated them)."""

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            estimated=self.estimated or other.estimated,
        )


class Completion(Base, frozen=True):
    """A whole, valid answer. Built only when the reply was complete (a stream's terminating
    event was seen, a body parsed in full). ``tool_calls`` are the calls the model asks for, in
    order (``content`` may then be empty); ``finish_reason`` is normalised (:data:`FINISH_REASONS`)."""

    content: str
    model: str
    usage: Usage
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
