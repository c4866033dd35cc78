"""A whole request as an Anthropic Messages body (``rmcore.wire.anthropic_request``): system
lifted, same-role messages merged, tools, tool calls and results, images, stop sequences, the
JSON answer carried by a forced tool, and a round trip through a reader of the body (written
here, the inverse translation) that keeps everything the format can carry."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
from hypothesis import given, settings

from rmcore.requests import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from rmcore.wire.anthropic_request import EMPTY_SCHEMA, MAX_TEMPERATURE, anthropic_body
from tests.core.request_strategies import chat_requests

WEATHER = Tool(
    name="get_weather",
    description="The weather in a city",
    parameters=msgspec.Raw(b'{"type": "object", "properties": {"city": {"type": "string"}}}'),
)
CALL = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
CONVERSATION = ChatRequest(
    messages=(
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather in Paris?"),
        Message(role="assistant", tool_calls=(CALL,)),
        Message(role="tool", content="18C, sunny", tool_call_id="call_1"),
    ),
    tools=(WEATHER,),
    tool_choice=ToolChoice(mode="auto"),
    stop=("END",),
    top_p=0.9,
    seed=7,
    temperature=0.0,
    max_tokens=300,
    stream=True,
)


def body_of(request: ChatRequest) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(anthropic_body("claude-test", request))
    return decoded


# --- the translation, by example -----------------------------------------------------------------


def test_the_issue_s_conversation_is_translated() -> None:
    """Top-level system; roles user/assistant/user; the call as a ``tool_use`` block (``input`` an
    object), its result as a ``tool_result`` block with the same id; tools with ``input_schema``,
    ``tool_choice {type: auto}``, ``stop_sequences``, ``top_p``; no seed."""
    assert body_of(CONVERSATION) == {
        "model": "claude-test",
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"}],
            },
        ],
        "max_tokens": 300,
        "temperature": 0.0,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "tools": [
            {
                "name": "get_weather",
                "description": "The weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        "tool_choice": {"type": "auto"},
        "stream": True,
    }


def test_the_arguments_text_is_the_input_byte_for_byte() -> None:
    """The call's arguments are embedded as given (an object's JSON text), not re-encoded."""
    assert b'"input":{"city": "Paris"}' in anthropic_body("m", CONVERSATION)


def test_a_simple_request_is_the_body_the_format_always_had() -> None:
    """A system text and a prompt, not streamed: model, system, one user message, max_tokens."""
    assert body_of(ChatRequest.ask("Q", system="S", stream=False)) == {
        "model": "claude-test",
        "system": "S",
        "messages": [{"role": "user", "content": "Q"}],
        "max_tokens": 1024,
    }


def test_several_system_messages_are_text_blocks_in_order() -> None:
    """Two system messages, wherever they stand, are the top-level ``system`` as two blocks."""
    request = ChatRequest(
        messages=(
            Message(role="system", content="One."),
            Message(role="user", content="Q"),
            Message(role="system", content="Two."),
        )
    )
    body = body_of(request)
    assert body["system"] == [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]
    assert body["messages"] == [{"role": "user", "content": "Q"}]


def test_consecutive_same_role_messages_are_merged() -> None:
    """Two user messages are one with two text blocks; tool results and the user's next words are
    one user message, the results first; an empty text block is left out."""
    request = ChatRequest(
        messages=(
            Message(role="user", content="a"),
            Message(role="user", content=(TextPart(text="b"), TextPart(text=""))),
            Message(
                role="assistant", content="", tool_calls=(CALL, ToolCall(id="call_2", name="f", arguments=""))
            ),
            Message(role="tool", content="r1", tool_call_id="call_1"),
            Message(role="tool", content=(TextPart(text="r2"),), tool_call_id="call_2"),
            Message(role="user", content="thanks"),
        )
    )
    assert body_of(request)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "f", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "r1"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "r2"}]},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]


def test_images_are_image_blocks() -> None:
    """A base64 data URL is a base64 source with its media type; a percent-encoded one is encoded
    to base64; an https URL is a url source."""
    request = ChatRequest(
        messages=(
            Message(
                role="user",
                content=(
                    ImagePart(url="data:image/png;base64,iVBORw0KGgo="),
                    ImagePart(url="data:image/svg+xml,%3Csvg%2F%3E"),
                    ImagePart(url="https://example.com/cat.jpg"),
                    TextPart(text="Which is a cat?"),
                ),
            ),
        )
    )
    assert body_of(request)["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/svg+xml",
                "data": base64.b64encode(b"<svg/>").decode(),
            },
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "Which is a cat?"},
    ]


def test_every_tool_choice_has_its_equivalent() -> None:
    """auto, required (``any``), none, and a forced function (``tool`` with its name)."""
    choices = {
        "auto": {"type": "auto"},
        "required": {"type": "any"},
        "none": {"type": "none"},
    }
    for mode, expected in choices.items():
        request = ChatRequest.ask("q", tools=(WEATHER,), tool_choice=ToolChoice(mode=mode))  # type: ignore[arg-type]
        assert body_of(request)["tool_choice"] == expected
    forced = ChatRequest.ask(
        "q", tools=(WEATHER,), tool_choice=ToolChoice(mode="function", name="get_weather")
    )
    assert body_of(forced)["tool_choice"] == {"type": "tool", "name": "get_weather"}


def test_a_tool_without_parameters_has_an_empty_object_schema() -> None:
    """The format requires ``input_schema``: a tool without parameters takes no input."""
    body = body_of(ChatRequest.ask("q", tools=(Tool(name="now"),)))
    assert body["tools"] == [{"name": "now", "input_schema": json.loads(EMPTY_SCHEMA)}]


def test_broken_arguments_are_kept_inside_an_object() -> None:
    """Arguments that are not an object's JSON (a model's broken output) travel as
    ``{"arguments": TEXT}`` rather than being lost."""
    call = ToolCall(id="c", name="f", arguments='{"city": "Par')
    request = ChatRequest(
        messages=(Message(role="user", content="q"), Message(role="assistant", tool_calls=(call,)))
    )
    block = body_of(request)["messages"][1]["content"][0]
    assert block["input"] == {"arguments": '{"city": "Par'}


def test_a_json_schema_is_carried_by_a_forced_tool() -> None:
    """``response_format`` json_schema: a tool named after the schema, its schema as input_schema,
    forced with ``tool_choice {type: tool, name}``."""
    schema = b'{"type":"object","properties":{"answer":{"type":"string"}}}'
    request = ChatRequest.ask(
        "q", response_format=ResponseFormat(type="json_schema", name="verdict", schema=msgspec.Raw(schema))
    )
    body = body_of(request)
    assert [t["name"] for t in body["tools"]] == ["verdict"]
    assert body["tools"][0]["input_schema"] == json.loads(schema)
    assert body["tool_choice"] == {"type": "tool", "name": "verdict"}


def test_a_json_object_is_any_object_from_the_default_answer_tool() -> None:
    """``json_object`` names no schema: the answer tool is ``json_answer``, input any object."""
    body = body_of(ChatRequest.ask("q", response_format=ResponseFormat(type="json_object")))
    assert body["tools"] == [
        {
            "name": "json_answer",
            "description": body["tools"][0]["description"],
            "input_schema": {"type": "object"},
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "json_answer"}


def test_with_tools_of_its_own_the_model_must_call_one_of_them_or_answer() -> None:
    """The answer tool stands beside the request's tools; auto becomes ``any``, a forced function
    stays forced, none forces the answer."""
    fmt = ResponseFormat(type="json_object")
    auto = body_of(ChatRequest.ask("q", tools=(WEATHER,), response_format=fmt))
    assert [t["name"] for t in auto["tools"]] == ["get_weather", "json_answer"]
    assert auto["tool_choice"] == {"type": "any"}
    forced = ChatRequest.ask(
        "q",
        tools=(WEATHER,),
        tool_choice=ToolChoice(mode="function", name="get_weather"),
        response_format=fmt,
    )
    assert body_of(forced)["tool_choice"] == {"type": "tool", "name": "get_weather"}
    none = ChatRequest.ask("q", tools=(WEATHER,), tool_choice=ToolChoice(mode="none"), response_format=fmt)
    assert body_of(none)["tool_choice"] == {"type": "tool", "name": "json_answer"}


def test_a_text_response_format_asks_for_nothing() -> None:
    """``response_format: text`` is the default: no answer tool."""
    assert "tools" not in body_of(ChatRequest.ask("q", response_format=ResponseFormat(type="text")))


# --- the round trip ------------------------------------------------------------------------------


def read_body(body: bytes) -> ChatRequest:
    """The inverse translation: an Anthropic Messages body back into a request (as a fake
    provider reads it). Tool results become tool messages, the other blocks of a user message one
    user message after them; an assistant's text blocks its content, its tool_use blocks its calls."""
    obj = json.loads(body)
    system = obj.get("system")
    texts = [system] if isinstance(system, str) else [b["text"] for b in system or ()]
    messages = [Message(role="system", content=t) for t in texts]
    for message in obj["messages"]:
        messages += _read_message(message["role"], message["content"])
    choice = obj.get("tool_choice")
    modes = {"auto": "auto", "any": "required", "none": "none", "tool": "function"}
    return ChatRequest(
        messages=tuple(messages),
        max_tokens=obj["max_tokens"],
        temperature=obj.get("temperature"),
        top_p=obj.get("top_p"),
        stop=tuple(obj.get("stop_sequences", ())),
        tools=tuple(_read_tool(t) for t in obj.get("tools", ())),
        tool_choice=None
        if choice is None
        else ToolChoice(mode=modes[choice["type"]], name=choice.get("name")),  # type: ignore[arg-type]
        stream=obj.get("stream", False),
    )


def _read_message(role: str, content: str | list[dict[str, Any]]) -> list[Message]:
    if isinstance(content, str):
        return [Message(role=role, content=content)]  # type: ignore[arg-type]
    results = [
        Message(role="tool", content=_read_parts(b["content"]), tool_call_id=b["tool_use_id"])
        for b in content
        if b["type"] == "tool_result"
    ]
    parts = tuple(_read_part(b) for b in content if b["type"] in ("text", "image"))
    calls = tuple(
        ToolCall(id=b["id"], name=b["name"], arguments=json.dumps(b["input"]))
        for b in content
        if b["type"] == "tool_use"
    )
    if role == "assistant":
        return [Message(role="assistant", content=parts, tool_calls=calls)]
    return results + ([Message(role="user", content=parts)] if parts else [])


def _read_parts(content: str | list[dict[str, Any]]) -> str | tuple[Part, ...]:
    return content if isinstance(content, str) else tuple(_read_part(b) for b in content)


def _read_part(block: dict[str, Any]) -> Part:
    if block["type"] == "text":
        return TextPart(text=block["text"])
    source = block["source"]
    if source["type"] == "url":
        return ImagePart(url=source["url"])
    return ImagePart(url=f"data:{source['media_type']};base64,{source['data']}")


def _read_tool(tool: dict[str, Any]) -> Tool:
    schema = msgspec.json.encode(tool["input_schema"])
    return Tool(
        name=tool["name"],
        description=tool.get("description"),
        parameters=None if schema == EMPTY_SCHEMA else msgspec.Raw(schema),
    )


def carried(request: ChatRequest) -> tuple[object, ...]:
    """What the Messages format can carry of ``request``: the system texts in order; the turns
    (same-role messages merged, a tool message on the user's side) with their non-empty texts and
    images in order, an assistant's calls (arguments as the object they hold), results by id; tools
    by name, description and schema (as JSON values); tool choice, stop (but whitespace), max_tokens,
    temperature, top_p, stream. Not its seed, nor where a system message stood, nor whether a text
    was a string or a part."""
    systems = tuple(m.text for m in request.messages if m.role == "system" and m.text)
    turns: list[tuple[str, list[object]]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        side = "assistant" if m.role == "assistant" else "user"
        if m.role == "tool":
            texts = m.content if isinstance(m.content, str) else tuple(p for p in m.content if _kept(p))
            items: list[object] = [("result", m.tool_call_id, texts)]
        else:
            items = [_item(p) for p in _as_parts(m.content) if _kept(p)]
            items += [("call", c.id, c.name, json.loads(c.arguments or "{}")) for c in m.tool_calls]
        if turns and turns[-1][0] == side:
            turns[-1][1].extend(items)
        else:
            turns.append((side, items))
    # An assistant's texts and calls are separate fields of the request: order between them is not kept.
    ordered = [
        (side, sorted(items, key=lambda i: i[0] == "call") if side == "assistant" else items)
        for side, items in turns
    ]  # type: ignore[index]
    tools = tuple(
        (t.name, t.description, None if t.parameters is None else msgspec.json.decode(t.parameters))
        for t in request.tools
    )
    return (
        systems,
        ordered,
        tools,
        request.tool_choice if request.tools else None,  # a choice among no tools is not sent
        tuple(s for s in request.stop if s.strip()),  # only whitespace: refused by the format
        request.max_tokens,
        None if request.temperature is None else min(request.temperature, MAX_TEMPERATURE),
        request.top_p,
        request.stream,
    )


def _kept(part: Part) -> bool:
    return not (isinstance(part, TextPart) and not part.text)


def _as_parts(content: str | tuple[Part, ...]) -> tuple[Part, ...]:
    return (TextPart(text=content),) if isinstance(content, str) else content


def _item(part: Part) -> object:
    return ("text", part.text) if isinstance(part, TextPart) else ("image", part.url)


@settings(max_examples=200, deadline=None)
@given(chat_requests(response_formats=False))
def test_the_round_trip_keeps_everything_the_format_can_carry(request: ChatRequest) -> None:
    """request -> Messages body -> :func:`read_body` -> a request that carries the same (see
    :func:`carried`): everything but the seed, merged same-role messages equal once merged."""
    assert carried(read_body(anthropic_body("claude-test", request))) == carried(request)
