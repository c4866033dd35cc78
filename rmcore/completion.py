"""What a provider answered: text, model, token usage and why it stopped."""

from __future__ import annotations

from rmcore.base import Base

__all__ = ["Completion", "Usage"]


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
    event was seen, a body parsed in full)."""

    content: str
    model: str
    usage: Usage
    finish_reason: str | None = None
