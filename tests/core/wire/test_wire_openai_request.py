"""A whole request as an OpenAI chat-completions body (``rmcore.wire.openai_request``): every
field as given, and the round trip back through the request decoder keeps all of it."""

from __future__ import annotations

import json

import msgspec
from hypothesis import given, settings
from returns.result import Success

from rmcore.chat_request import OpenAIRequest, decode_openai_chat
from rmcore.requests import (
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from rmcore.wire.openai_request import openai_body
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


def body_of(request: ChatRequest) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(openai_body("gpt-test", request))
    return decoded


def test_a_conversation_is_sent_exactly_as_given() -> None:
    """Messages, the assistant's tool call (content null), the tool result with its id, tools,
    tool choice, stop, top_p, seed and a temperature of 0 all reach the body as they are."""
    assert body_of(CONVERSATION) == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "content": "18C, sunny", "tool_call_id": "call_1"},
        ],
        "max_tokens": 300,
        "temperature": 0.0,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["END"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_a_schema_travels_byte_for_byte() -> None:
    """A tool's JSON schema is embedded as the exact bytes given, spaces and key order included."""
    assert b'"parameters":{"type": "object", "properties": {"city": {"type": "string"}}}' in openai_body(
        "m", CONVERSATION
    )


def test_parts_are_sent_as_typed_content_parts() -> None:
    """Text and image parts become ``{type: text}`` and ``{type: image_url, image_url: {url}}``."""
    request = ChatRequest(
        messages=(
            Message(
                role="user",
                content=(TextPart(text="What is this?"), ImagePart(url="data:image/png;base64,iVBO")),
            ),
        ),
        stream=False,
    )
    assert body_of(request)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
            ],
        }
    ]


def test_a_named_tool_choice_and_a_json_schema_are_sent_in_the_format_s_shape() -> None:
    """A forced function is ``{type: function, function: {name}}``; a JSON schema response format
    is ``{type: json_schema, json_schema: {name, schema, strict}}``."""
    request = ChatRequest.ask(
        "q",
        tools=(WEATHER,),
        tool_choice=ToolChoice(mode="function", name="get_weather"),
        response_format=ResponseFormat(
            type="json_schema", name="answer", schema=msgspec.Raw(b'{"type":"object"}'), strict=True
        ),
    )
    body = body_of(request)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }


def test_a_simple_request_is_the_body_the_format_always_had() -> None:
    """A system text and a prompt, not streamed: no field beyond model, messages and max_tokens."""
    assert body_of(ChatRequest.ask("Q", system="S", stream=False)) == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        "max_tokens": 1024,
    }


@settings(max_examples=150, deadline=None)
@given(chat_requests())
def test_the_round_trip_through_the_request_decoder_keeps_everything(request: ChatRequest) -> None:
    """request -> OpenAI body -> ``decode_openai_chat`` (the reader of that very shape) -> the same
    request: every field is carried, nothing is added, the model comes back beside it (a tool
    choice among no tools is not sent: the API refuses it)."""
    sent = request if request.tools else msgspec.structs.replace(request, tool_choice=None)
    assert decode_openai_chat(openai_body("gpt-test", request)) == Success(
        OpenAIRequest(request=sent, model="gpt-test")
    )
