"""Token usage from what a reply reported, estimated where it reported nothing.

A reply without usage still costs money: the missing counts are estimated (and marked
``estimated``) so that budgets and reports never take an unreported answer for a free one.
"""

from __future__ import annotations

import math
from typing import Annotated

import msgspec

from rmcore.completion import Usage
from rmcore.pricing import estimate_prompt_tokens
from rmcore.requests import ChatRequest

__all__ = ["CHARS_PER_OUTPUT_TOKEN", "TokenCount", "estimate_output_tokens", "usage_from"]

CHARS_PER_OUTPUT_TOKEN = 4
"""Tokenisers average about four characters of English prose per token."""


def estimate_output_tokens(text: str) -> int:
    """About one token per four characters of ``text``."""
    return math.ceil(len(text) / CHARS_PER_OUTPUT_TOKEN)


def usage_from(
    input_tokens: int | None,
    output_tokens: int | None,
    content: str,
    request: ChatRequest | None = None,
) -> Usage:
    """The reported counts, with each missing one estimated: output from ``content``, input from
    ``request`` (or 0 when the request is not known, as when parsing a whole body)."""
    estimated = False
    if output_tokens is None:
        output_tokens = estimate_output_tokens(content)
        estimated = True
    if input_tokens is None:
        input_tokens = estimate_prompt_tokens(request) if request is not None else 0
        estimated = True
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, estimated=estimated)


TokenCount = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
"""A token count as a reply may state it: a negative or absurd count makes the reply malformed."""
