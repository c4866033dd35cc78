"""The ``[{role, content}]`` message list that the OpenAI and AICEO formats share."""

from __future__ import annotations

import msgspec

from rmcore.requests import ChatRequest

__all__ = ["ChatMessage", "chat_messages"]


class ChatMessage(msgspec.Struct, frozen=True):
    """One chat message as sent on the wire."""

    role: str
    content: str


def chat_messages(request: ChatRequest) -> tuple[ChatMessage, ...]:
    """The system message (when the request has a non-empty one), then the user's prompt."""
    user = ChatMessage(role="user", content=request.prompt)
    if not request.system:
        return (user,)
    return (ChatMessage(role="system", content=request.system), user)
