"""The ``[{role, content}]`` text messages of the AICEO gateway (``rmcore.wire.messages``): a
conversation flattened to its text."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from rmcore.requests import ChatRequest, ImagePart, Message, TextPart, ToolCall
from rmcore.wire.messages import ChatMessage, chat_messages


def test_a_prompt_alone_is_one_user_message() -> None:
    """Without a system text the list holds only the user's prompt."""
    assert chat_messages(ChatRequest.ask("Should we?")) == (
        ChatMessage(role="user", content="Should we?"),
    )


def test_a_system_text_comes_first() -> None:
    """A system text is sent as the first message, before the prompt."""
    assert chat_messages(ChatRequest.ask("Should we?", system="Be brief.")) == (
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Should we?"),
    )


def test_an_empty_system_text_is_not_sent() -> None:
    """An empty system text is left out rather than sent as an empty message."""
    assert chat_messages(ChatRequest.ask("p", system="")) == (ChatMessage(role="user", content="p"),)


def test_a_message_is_written_as_role_and_content() -> None:
    """On the wire a message is exactly ``{"role": ..., "content": ...}``."""
    encoded = msgspec.json.encode(chat_messages(ChatRequest.ask("p", system="s")))
    assert msgspec.json.decode(encoded) == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "p"},
    ]


@given(st.text(), st.none() | st.text())
def test_the_prompt_is_always_the_last_message_and_sent_verbatim(prompt: str, system: str | None) -> None:
    """Whatever the texts, the user's prompt is last and unchanged; a system text, when sent, is
    first and unchanged; there are no other messages."""
    messages = chat_messages(ChatRequest.ask(prompt, system=system))
    assert messages[-1] == ChatMessage(role="user", content=prompt)
    if system:
        assert messages == (ChatMessage(role="system", content=system), messages[-1])
    else:
        assert len(messages) == 1


def test_a_text_conversation_goes_over_whole_in_order() -> None:
    """System, user and assistant turns, each as its text (text parts joined by newlines)."""
    request = ChatRequest(
        messages=(
            Message(role="system", content="Be brief."),
            Message(role="user", content="My name is Ada."),
            Message(role="assistant", content="Hello Ada."),
            Message(role="user", content=(TextPart(text="What is"), TextPart(text="my name?"))),
        )
    )
    assert chat_messages(request) == (
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="My name is Ada."),
        ChatMessage(role="assistant", content="Hello Ada."),
        ChatMessage(role="user", content="What is\nmy name?"),
    )


def test_what_the_gateway_cannot_carry_is_left_out_never_sent_as_something_else() -> None:
    """Never sent such a request by the router; given one, images, tool calls and tool messages
    are left out rather than invented into text."""
    request = ChatRequest(
        messages=(
            Message(role="user", content=(TextPart(text="Look"), ImagePart(url="https://x/i.png"))),
            Message(role="assistant", content="", tool_calls=(ToolCall(id="c", name="f", arguments="{}"),)),
            Message(role="tool", content="result", tool_call_id="c"),
        )
    )
    assert chat_messages(request) == (
        ChatMessage(role="user", content="Look"),
        ChatMessage(role="assistant", content=""),
    )
