"""An OpenAI chat-completions request body read into a ``ChatRequest`` (``rmcore.chat_request``):
every field it carries, the model beside it, and every mistake refused with its ``$.path``."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.pipeline import is_successful
from returns.result import Success

from rmcore.chat_request import OpenAIRequest, decode_openai_chat, decode_openai_request
from rmcore.problems import Problem, ProblemKind
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

USER = {"role": "user", "content": "Weather in Paris?"}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}


def decode(**body: Any) -> ChatRequest:
    """The request ``body`` decodes to (the test fails if it does not)."""
    result = decode_openai_request(json.dumps(body).encode())
    assert is_successful(result), result
    return result.unwrap()


def refusal(body: Any) -> Problem:
    """The problem ``body`` (a JSON value) is refused with."""
    result = decode_openai_request(json.dumps(body).encode())
    assert not is_successful(result), result
    problem = result.failure()
    assert problem.kind is ProblemKind.INVALID_REQUEST
    assert problem.message.startswith(f"{problem.subject}: ")
    return problem


def test_the_issue_s_conversation_decodes_whole() -> None:
    """Four messages, a tool, ``tool_choice auto``, ``stop``, ``top_p``, ``seed``, ``model``: all
    read, the model returned beside the request."""
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            USER,
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
        ],
        "tools": [TOOL],
        "tool_choice": "auto",
        "stop": ["END"],
        "top_p": 0.9,
        "seed": 7,
        "temperature": 0,
        "max_tokens": 200,
        "stream": True,
    }
    decoded = decode_openai_chat(json.dumps(body).encode()).unwrap()
    assert decoded.model == "gpt-4o"
    request = decoded.request
    assert request.messages == (
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather in Paris?"),
        Message(
            role="assistant",
            tool_calls=(ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}'),),
        ),
        Message(role="tool", content="18C", tool_call_id="call_1"),
    )
    assert request.tools == (
        Tool(
            name="get_weather",
            description="The weather in a city",
            parameters=msgspec.Raw(b'{"type": "object", "properties": {"city": {"type": "string"}}}'),
        ),
    )
    assert (request.tool_choice, request.stop, request.top_p, request.seed) == (
        ToolChoice(mode="auto"),
        ("END",),
        0.9,
        7,
    )
    assert (request.temperature, request.max_tokens, request.stream) == (0.0, 200, True)


def test_a_body_without_model_or_options_takes_the_defaults() -> None:
    """Only ``messages`` is required: no model, the default max_tokens, not streamed (OpenAI's
    default), no sampling settings."""
    assert decode_openai_chat(json.dumps({"messages": [USER]}).encode()) == Success(
        OpenAIRequest(
            request=ChatRequest(messages=(Message(role="user", content="Weather in Paris?"),), stream=False)
        )
    )


def test_content_parts_and_images_are_read() -> None:
    """Text parts and ``image_url`` parts (its ``detail`` a hint, dropped) become parts."""
    request = decode(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is it?"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "high"}},
                ],
            }
        ]
    )
    assert request.messages[0].content == (
        TextPart(text="What is it?"),
        ImagePart(url="https://x.test/a.png"),
    )


def test_a_developer_message_is_a_system_message() -> None:
    """``developer``, the newer name of the system role, reads as ``system``."""
    assert decode(messages=[{"role": "developer", "content": "Be brief."}, USER]).system == "Be brief."


def test_an_assistant_message_copied_from_a_reply_is_accepted() -> None:
    """``refusal``, ``function_call`` and ``audio`` at null, as an SDK copies a reply back."""
    message = {"role": "assistant", "content": "Hi", "refusal": None, "function_call": None, "audio": None}
    assert decode(messages=[USER, message]).messages[1] == Message(role="assistant", content="Hi")


def test_stop_may_be_one_string() -> None:
    """``stop: "END"`` is the one stop sequence ``("END",)``."""
    assert decode(messages=[USER], stop="END").stop == ("END",)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ToolChoice(mode="auto")),
        ("none", ToolChoice(mode="none")),
        ("required", ToolChoice(mode="required")),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            ToolChoice(mode="function", name="get_weather"),
        ),
    ],
)
def test_every_tool_choice_is_read(choice: object, expected: ToolChoice) -> None:
    """The three modes and a forced function."""
    assert decode(messages=[USER], tools=[TOOL], tool_choice=choice).tool_choice == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "text"}, ResponseFormat(type="text")),
        ({"type": "json_object"}, ResponseFormat(type="json_object")),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": True},
            },
            ResponseFormat(
                type="json_schema", name="a", schema=msgspec.Raw(b'{"type": "object"}'), strict=True
            ),
        ),
    ],
)
def test_every_response_format_is_read(fmt: object, expected: ResponseFormat) -> None:
    """text, json_object, json_schema with its name, schema (exact bytes) and strictness."""
    assert decode(messages=[USER], response_format=fmt).response_format == expected


def test_max_completion_tokens_is_max_tokens() -> None:
    """The newer name is read too; both may be given when they agree."""
    assert decode(messages=[USER], max_completion_tokens=77).max_tokens == 77
    assert decode(messages=[USER], max_tokens=77, max_completion_tokens=77).max_tokens == 77


def test_harmless_keys_are_accepted() -> None:
    """``user``, ``n: 1``, ``stream_options``, ``parallel_tool_calls: true``, a tool's ``strict``."""
    tool = {"type": "function", "function": {**TOOL["function"], "strict": True}}  # type: ignore[dict-item]
    request = decode(
        messages=[USER],
        user="u-1",
        n=1,
        stream_options={"include_usage": True},
        parallel_tool_calls=True,
        tools=[tool],
    )
    assert request.tools[0].name == "get_weather"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [USER], "logprobs": True}, "$.logprobs: unknown key"),
        ({"messages": [USER], "n": 2}, "$.n: only n = 1 is supported"),
        ({"messages": [USER], "parallel_tool_calls": False}, "$.parallel_tool_calls: false is not supported"),
        ({"messages": []}, "$.messages: expected at least one message"),
        ({}, "$.messages: required"),
        ([], "$: expected an object, got an array"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "$.messages[0].role: expected system, developer"),
        ({"messages": [{"role": "user"}]}, "$.messages[0].content: required"),
        (
            {"messages": [{"role": "user", "content": 3}]},
            "$.messages[0].content: expected a string or an array",
        ),
        ({"messages": [{"role": "user", "content": "x", "name": "ada"}]}, "$.messages[0].name: unknown key"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "$.messages[0].content[0].type: unsupported type",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
            "$.messages[0].content[0].type: unsupported type",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "$.messages[0].tool_call_id: required"),
        (
            {
                "messages": [
                    USER,
                    USER,
                    {
                        "role": "assistant",
                        "tool_calls": [{**CALL, "function": {"name": "f", "arguments": 1}}],
                    },
                ]
            },
            "$.messages[2].tool_calls[0].function.arguments: expected a string, got an integer",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[1]"}}],
                    }
                ]
            },
            "$.messages[0].tool_calls[0].function.arguments: expected the JSON text of an object",
        ),
        (
            {
                "messages": [USER],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}],
            },
            "$.tools[0].function.parameters: expected a JSON schema",
        ),
        ({"messages": [USER], "tool_choice": "any"}, '$.tool_choice: expected "auto"'),
        (
            {
                "messages": [USER],
                "tools": [TOOL],
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
            "$.tool_choice.function.name: no tool named 'nope' in $.tools",
        ),
        (
            {"messages": [USER], "response_format": {"type": "yaml"}},
            "$.response_format.type: unsupported type",
        ),
        (
            {"messages": [USER], "response_format": {"type": "json_schema", "json_schema": {}}},
            "$.response_format.json_schema.name: required",
        ),
        ({"messages": [USER], "temperature": 3}, "$.temperature: expected a number <= 2.0"),
        ({"messages": [USER], "top_p": -1}, "$.top_p: expected a number >= 0"),
        ({"messages": [USER], "max_tokens": 0}, "$.max_tokens: expected an integer >= 1"),
        (
            {"messages": [USER], "max_tokens": 5, "max_completion_tokens": 6},
            "$.max_completion_tokens: differs from $.max_tokens",
        ),
        ({"messages": [USER], "stop": [1]}, "$.stop[0]: expected a string, got an integer"),
        ({"messages": [USER], "seed": 1.5}, "$.seed: expected an integer or null, got a number"),
    ],
)
def test_what_cannot_be_read_is_refused_with_its_path(body: Any, message: str) -> None:
    """The first thing wrong, by its ``$.path``, in words."""
    assert refusal(body).message.startswith(message)


def test_invalid_json_is_refused() -> None:
    """Bytes that are not JSON are refused at ``$``."""
    problem = decode_openai_request(b'{"messages": [').failure()
    assert (problem.subject, problem.message.split(" (")[0]) == ("$", "$: not valid JSON")


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_refused_never_raise(body: bytes) -> None:
    """Whatever the bytes, the answer is a request or an ``invalid_request`` problem."""
    result = decode_openai_request(body)
    assert is_successful(result) or result.failure().kind is ProblemKind.INVALID_REQUEST


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["messages", "role", "content", "tools", "type", "x"]), inner, max_size=3
            )
        ),
        max_leaves=12,
    )
)
def test_any_json_decodes_or_is_refused_with_a_path(value: Any) -> None:
    """Whatever JSON value arrives, a refusal names a ``$`` path."""
    result = decode_openai_request(json.dumps(value).encode())
    if not is_successful(result):
        assert result.failure().subject.startswith("$")
