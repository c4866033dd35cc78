"""A conversation flattened to the ``[{role, content}]`` text messages of the AICEO gateway.

The gateway carries text only: system, user and assistant messages with a string each. A
text-only conversation goes over whole, each message's text as it is (text parts joined by
newlines). It cannot carry tools, tool calls, tool results, images or a ``response_format``, and
the router never sends it a request that has them (``rmcore.capabilities`` says what each kind
carries; such a target is skipped). Given one anyway, this returns what it can rather than fail:
images and tool calls are left out, and so are tool messages; the request's ``stop``, ``top_p``
and ``seed``, which the envelope has no field for, are not sent either.
"""

from __future__ import annotations

import msgspec

from rmcore.requests import ChatRequest

__all__ = ["ChatMessage", "chat_messages"]


class ChatMessage(msgspec.Struct, frozen=True):
    """One chat message as sent on the wire."""

    role: str
    content: str


def chat_messages(request: ChatRequest) -> tuple[ChatMessage, ...]:
    """The request's system, user and assistant messages, in order, as text; an empty system
    message is left out (there is nothing to send)."""
    return tuple(
        ChatMessage(role=m.role, content=m.text)
        for m in request.messages
        if m.role != "tool" and not (m.role == "system" and not m.text)
    )
