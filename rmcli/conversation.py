"""Conversations kept in the state, so that ``rmgr chat`` and ``rmgr ask --continue`` send the
whole conversation so far, as ``llm -c`` does.

A conversation is its messages (``rmcore.requests.Message``), saved whole after every answered
turn under a random id; the one saved last is the one ``--continue`` takes up. Only answered
turns are saved: a turn whose every route failed leaves the conversation as it was, so that the
next try does not carry a question without its answer.
"""

from __future__ import annotations

import secrets

import msgspec

from rmcli.state import State, StoreError
from rmcore.completion import Completion
from rmcore.requests import Message

__all__ = ["Conversation", "answered", "latest", "save"]


class Conversation(msgspec.Struct, frozen=True):
    """A conversation's id and its messages so far (the system message, if any, first)."""

    id: str
    messages: tuple[Message, ...] = ()

    @classmethod
    def new(cls, messages: tuple[Message, ...] = ()) -> Conversation:
        """A conversation under a new random id."""
        return cls(id=secrets.token_hex(8), messages=messages)


def answered(conversation: Conversation, asked: tuple[Message, ...], completion: Completion) -> Conversation:
    """``conversation`` after the turn that sent ``asked`` (the whole request's messages) and got
    ``completion``: those messages and the assistant's answer, its tool calls included."""
    reply = Message(role="assistant", content=completion.content, tool_calls=completion.tool_calls)
    return msgspec.structs.replace(conversation, messages=(*asked, reply))


async def latest(state: State) -> Conversation | None:
    """The conversation saved last, or None when there is none. ``StoreError`` when what is
    stored cannot be read back (written by something else)."""
    found = await state.conversations.latest()
    if found is None:
        return None
    conversation_id, payload = found
    try:
        messages = msgspec.json.decode(payload, type=tuple[Message, ...])
    except msgspec.DecodeError as exc:
        raise StoreError(
            None,
            f"the last conversation ({conversation_id}) in {state.where} cannot be read ({exc}); "
            "start a new one without --continue",
        ) from None
    return Conversation(id=conversation_id, messages=messages)


async def save(state: State, conversation: Conversation, now_ms: int) -> None:
    """Keep ``conversation`` as it is now; it becomes the one ``--continue`` takes up."""
    await state.conversations.save(conversation.id, msgspec.json.encode(conversation.messages), now_ms)
