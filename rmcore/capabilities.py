"""What a request needs a provider to carry, beyond plain text.

Providers differ in what their wire format can carry: the OpenAI and Anthropic kinds carry tools,
images and structured output; the AICEO gateway carries text only. A request that holds one of
these must never reach a provider that would silently drop it, so the engine skips such a target
before anything is sent (``unsupported``), and the shell refuses to start a run that no target
can carry (:func:`rmcore.plan.unsupported`).

Pure: a request in, a set of capabilities out.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from rmcore.requests import ChatRequest, ImagePart

__all__ = ["ALL_CAPABILITIES", "Capability", "in_words", "missing", "needs"]


class Capability(enum.StrEnum):
    """Something a request may hold that not every provider can carry (a policy's
    ``[providers.NAME] supports`` lists them by these values)."""

    TOOLS = "tools"
    """Tool definitions, the assistant's tool calls and the tools' results."""
    IMAGES = "images"
    """Image parts in a message's content."""
    JSON_SCHEMA = "json_schema"
    """A ``response_format`` asking for JSON (``json_object`` or ``json_schema``)."""


ALL_CAPABILITIES: frozenset[Capability] = frozenset(Capability)
"""Everything: what the OpenAI and Anthropic kinds carry."""

_NOTHING: frozenset[Capability] = frozenset()


def needs(request: ChatRequest) -> frozenset[Capability]:
    """What ``request`` needs its provider to carry: ``tools`` when it defines tools or its
    conversation holds a tool call or a tool's result; ``images`` when a message holds an image
    part; ``json_schema`` when it asks for a JSON answer. Empty for a text-only request."""
    tools, images = bool(request.tools), False
    for m in request.messages:  # one pass: this runs on every routed request
        tools = tools or bool(m.tool_calls) or m.role == "tool"
        images = images or (isinstance(m.content, tuple) and any(isinstance(p, ImagePart) for p in m.content))
    json = request.response_format is not None and request.response_format.type != "text"
    if not (tools or images or json):
        return _NOTHING
    found: set[Capability] = {Capability.TOOLS} if tools else set()
    if images:
        found.add(Capability.IMAGES)
    if json:
        found.add(Capability.JSON_SCHEMA)
    return frozenset(found)


def missing(needed: Iterable[Capability], carried: Iterable[Capability]) -> tuple[Capability, ...]:
    """The capabilities of ``needed`` that ``carried`` lacks, in the enum's order (so that a
    message names them the same way every time)."""
    if not needed:  # a text-only request (an empty set; any other iterable is looked through)
        return ()
    wanted, have = set(needed), set(carried)
    return tuple(c for c in Capability if c in wanted and c not in have)


def in_words(capabilities: Iterable[Capability]) -> str:
    """``tools, images``: the capabilities' values in the enum's order, comma separated."""
    chosen = set(capabilities)
    return ", ".join(c.value for c in Capability if c in chosen)
