"""What the caller asks for and the HTTP request it becomes (``rmcore.requests``): the whole
request value, its simple form (``ask``) and what a cache reads of it (``prompt``, ``system``)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.requests import (
    ChatRequest,
    HttpRequest,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    message_text,
)
from tests.core.request_strategies import chat_requests

SECRET_HEADERS = ["Authorization", "x-api-key", "API-Key", "Proxy-Authorization"]


def test_a_request_streams_up_to_1024_tokens_by_default() -> None:
    """Only the prompt is required: no system text, 1024 tokens, the provider's temperature,
    streamed, from ``ask``."""
    request = ChatRequest.ask("p")
    assert (request.system, request.max_tokens, request.temperature) == (None, 1024, None)
    assert request.stream is True
    assert request.source_id == "ask"


def test_a_temperature_of_zero_is_kept_as_zero() -> None:
    """0.0 is a temperature, not "unset": it is kept, never replaced by the default."""
    assert ChatRequest.ask("p", temperature=0.0).temperature == 0.0


def test_ask_is_a_system_message_then_the_user_s_prompt() -> None:
    """The simple form: ``[system?, user(prompt)]``; other fields as given."""
    request = ChatRequest.ask("Q?", system="Be brief.", max_tokens=9, source_id="x")
    assert request.messages == (
        Message(role="system", content="Be brief."),
        Message(role="user", content="Q?"),
    )
    assert (request.max_tokens, request.source_id) == (9, "x")


def test_an_empty_system_text_is_no_message() -> None:
    """``system=""`` (like ``None``) adds no system message."""
    assert ChatRequest.ask("Q", system="") == ChatRequest.ask("Q")


@given(st.text(), st.none() | st.text())
def test_prompt_and_system_read_back_what_ask_was_given(prompt: str, system: str | None) -> None:
    """``prompt`` and ``system`` (which caches key on) give back the simple form's texts."""
    request = ChatRequest.ask(prompt, system=system)
    assert request.prompt == prompt
    assert request.system == (system or None)


def test_prompt_is_the_last_user_message_and_system_joins_every_system_message() -> None:
    """In a conversation: the last user turn's text; the system texts joined by blank lines."""
    request = ChatRequest(
        messages=(
            Message(role="system", content="One."),
            Message(role="user", content="first"),
            Message(role="assistant", content="answer"),
            Message(role="system", content=(TextPart(text="Two."),)),
            Message(role="user", content=(TextPart(text="second"), ImagePart(url="https://x/i.png"))),
            Message(role="tool", content="result", tool_call_id="c"),
        )
    )
    assert request.prompt == "second"
    assert request.system == "One.\n\nTwo."
    assert ChatRequest(messages=(Message(role="assistant", content="a"),)).prompt == ""
    assert ChatRequest(messages=(Message(role="user", content="a"),)).system is None


def test_the_text_of_parts_leaves_images_out() -> None:
    """Text parts joined by newlines; images are not text."""
    parts = (TextPart(text="a"), ImagePart(url="data:image/png;base64,AA=="), TextPart(text="b"))
    assert message_text(parts) == "a\nb"
    assert Message(role="user", content=parts).text == "a\nb"


def test_parts_are_tagged_by_their_type_on_the_wire() -> None:
    """A part encodes as ``{"type": "text", "text"}`` or ``{"type": "image_url", "url"}`` and
    decodes back by that tag."""
    message = Message(role="user", content=(TextPart(text="hi"), ImagePart(url="https://x/i.png")))
    encoded = msgspec.json.encode(message)
    assert msgspec.json.decode(encoded)["content"] == [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "url": "https://x/i.png"},
    ]
    assert msgspec.json.decode(encoded, type=Message) == message


@given(chat_requests())
def test_messages_survive_encoding(request: ChatRequest) -> None:
    """A conversation's messages (what the state store keeps) decode back equal."""
    messages = request.messages
    assert msgspec.json.decode(msgspec.json.encode(messages), type=tuple[Message, ...]) == messages


def test_values_are_frozen_and_compared_by_value() -> None:
    """Tools, schemas, calls and choices compare by value (a schema by its bytes)."""
    schema = b'{"type":"object"}'
    assert Tool(name="f", parameters=msgspec.Raw(schema)) == Tool(name="f", parameters=msgspec.Raw(schema))
    assert Tool(name="f", parameters=msgspec.Raw(schema)) != Tool(name="f", parameters=msgspec.Raw(b"{}"))
    assert ToolCall(id="1", name="f", arguments="{}") == ToolCall(id="1", name="f", arguments="{}")
    assert ToolChoice(mode="function", name="f") != ToolChoice(mode="auto")
    assert ResponseFormat(type="json_object") == ResponseFormat(type="json_object")
    with pytest.raises(AttributeError):
        ToolCall(id="1", name="f", arguments="{}").name = "g"  # type: ignore[misc]


def test_an_http_request_has_an_empty_body_by_default() -> None:
    """A GET (a health check) carries no body."""
    assert HttpRequest(method="GET", url="http://127.0.0.1:9/", headers=()).body == b""


@pytest.mark.parametrize("name", SECRET_HEADERS)
def test_credentials_are_redacted_whatever_the_header_case(name: str) -> None:
    """Authorization, x-api-key, api-key and proxy-authorization show as ``<redacted>``."""
    request = HttpRequest(method="POST", url="http://h/", headers=((name, "sk-secret"),))
    assert request.redacted_headers() == ((name, "<redacted>"),)


def test_other_headers_are_shown_as_they_are_and_in_order() -> None:
    """Redaction replaces only credential values; names, order and other values are kept."""
    headers = (("Content-Type", "application/json"), ("Authorization", "Bearer k"), ("Accept", "*/*"))
    request = HttpRequest(method="POST", url="http://h/", headers=headers)
    assert request.redacted_headers() == (
        ("Content-Type", "application/json"),
        ("Authorization", "<redacted>"),
        ("Accept", "*/*"),
    )
    assert request.headers == headers


@given(
    st.lists(
        st.tuples(st.sampled_from([*SECRET_HEADERS, "Accept", "X-Trace"]), st.text(min_size=8, max_size=30)),
        max_size=6,
    )
)
def test_no_credential_value_survives_redaction(headers: list[tuple[str, str]]) -> None:
    """Whatever the headers, every credential's value is replaced and every other one kept."""
    redacted = HttpRequest(method="POST", url="http://h/", headers=tuple(headers)).redacted_headers()
    assert [name for name, _ in redacted] == [name for name, _ in headers]
    for (name, value), (_, shown) in zip(headers, redacted, strict=True):
        assert shown == ("<redacted>" if name in SECRET_HEADERS else value)
