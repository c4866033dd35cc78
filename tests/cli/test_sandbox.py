"""The sandbox over real loopback HTTP: wire formats, every fault mode, logs, control API, shutdown."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from rmcli.sandbox import MODES_HELP, NAMES, Mode, ModeKind, Outcome, Sandbox, parse_mode, serve
from rmcli.sandbox.schema import example_value, pick_word, pick_word_in

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("error::ResourceWarning"),
]

PROMPT = "Should a team of three adopt microservices for its first product?"


def auth(sandbox: Sandbox, name: str) -> dict[str, str]:
    """The headers each provider expects, with its key."""
    key = sandbox.key(name)
    if name == "aiceo-gateway":
        return {"x-api-key": key}
    if name == "anthropic-direct":
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return {"authorization": f"Bearer {key}"}


def chat_body(name: str, stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A valid chat request in the provider's own shape."""
    messages = [{"role": "user", "content": PROMPT}]
    if name == "aiceo-gateway":
        return {"provider": "glm", "model": "glm-4.7", "messages": messages, "maxTokens": 500, **extra}
    if name == "anthropic-direct":
        body = {"model": "claude-test", "max_tokens": 500, "system": "Be brief.", "messages": messages}
        return {**body, "stream": stream, **extra}
    return {"model": f"{name}-model", "messages": messages, "stream": stream, **extra}


def health_path(sandbox: Sandbox, name: str) -> str:
    return {
        "aiceo-gateway": "/api/glm/status",
        "glm-direct": "/api/paas/v4/models",
        "anthropic-direct": "/v1/models",
        "openai-direct": "/v1/models",
    }[name]


def health_url(sandbox: Sandbox, name: str) -> str:
    return f"http://127.0.0.1:{sandbox.port(name)}{health_path(sandbox, name)}"


async def post(client: httpx.AsyncClient, sandbox: Sandbox, name: str, **extra: Any) -> httpx.Response:
    return await client.post(sandbox.url(name), headers=auth(sandbox, name), json=chat_body(name, **extra))


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event in ``raw``."""
    events: list[tuple[str | None, str]] = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        events.append((name, "\n".join(data)))
    return events


def error_kind(name: str, body: dict[str, Any]) -> object:
    """The part of an error body that says what kind of error it is, in the provider's shape."""
    if name == "anthropic-direct":
        assert body["type"] == "error"
        return body["error"]["type"]
    if name == "aiceo-gateway":
        assert isinstance(body["error"], str)
        return body["success"]
    assert isinstance(body["error"]["message"], str)
    return body["error"]["type"], body["error"]["code"]


async def eventually(check: Callable[[], bool], within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- modes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "shown"),
    [
        ("ok", Mode(ModeKind.OK), "ok"),
        (" DOWN ", Mode(ModeKind.DOWN), "down"),
        ("slow:0.25", Mode(ModeKind.SLOW, seconds=0.25), "slow:0.25"),
        ("slow:2", Mode(ModeKind.SLOW, seconds=2.0), "slow:2"),
        ("status:529", Mode(ModeKind.STATUS, status=529), "status:529"),
        ("ratelimit:3", Mode(ModeKind.RATELIMIT, seconds=3.0), "ratelimit:3"),
        ("truncate", Mode(ModeKind.TRUNCATE), "truncate"),
    ],
)
def test_parse_mode_reads_each_form_and_writes_it_back(text: str, expected: Mode, shown: str) -> None:
    assert parse_mode(text) == expected
    assert str(parse_mode(text)) == shown
    assert parse_mode(shown) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "unknown mode"),
        ("explode", "unknown mode 'explode'"),
        ("slow", "needs a number of seconds"),
        ("slow:abc", "needs a number of seconds"),
        ("slow:-1", "0 or more"),
        ("ratelimit:nan", "finite"),
        ("status:200", "from 400 to 599"),
        ("status:abc", "from 400 to 599"),
        ("hang:3", "takes no argument"),
    ],
)
def test_parse_mode_explains_a_bad_mode(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="bad sandbox mode") as caught:
        parse_mode(text)
    assert why in str(caught.value)
    assert MODES_HELP in str(caught.value)


async def test_set_mode_rejects_unknown_provider_and_bad_mode_and_keeps_the_old_one() -> None:
    with pytest.raises(ValueError, match="unknown sandbox provider in modes: nope"):
        Sandbox({"nope": "ok"})
    with pytest.raises(ValueError, match="bad sandbox mode"):
        Sandbox({"glm-direct": "slow"})
    async with Sandbox({"glm-direct": "slow:0.1"}) as sandbox:
        with pytest.raises(ValueError, match="unknown sandbox provider 'nope'"):
            sandbox.set_mode("nope", "ok")
        with pytest.raises(ValueError, match="unknown mode 'sideways'"):
            sandbox.set_mode("glm-direct", "sideways")
        assert str(sandbox.mode("glm-direct")) == "slow:0.1"
        assert sandbox.names == NAMES


# -- the environment and the formats ---------------------------------------------------------------


async def test_env_points_each_variable_at_its_own_port_and_key() -> None:
    async with Sandbox() as sandbox:
        env = sandbox.env()
        ports = {sandbox.port(name) for name in NAMES}
        assert len(ports) == 4
        assert env["AICEO_GATEWAY_URL"] == f"http://127.0.0.1:{sandbox.port('aiceo-gateway')}/api/glm/submit"
        assert env["GLM_API_URL"].endswith(f":{sandbox.port('glm-direct')}/api/paas/v4/chat/completions")
        assert env["ANTHROPIC_API_URL"].endswith(f":{sandbox.port('anthropic-direct')}/v1/messages")
        assert env["OPENAI_API_URL"].endswith(f":{sandbox.port('openai-direct')}/v1/chat/completions")
        assert env["GLM_API_KEY"] == "sandbox-key-glm-direct" == sandbox.key("glm-direct")
        assert set(env) == {
            "AICEO_GATEWAY_URL",
            "AICEO_GATEWAY_API_KEY",
            "GLM_API_URL",
            "GLM_API_KEY",
            "ANTHROPIC_API_URL",
            "ANTHROPIC_API_KEY",
            "OPENAI_API_URL",
            "OPENAI_API_KEY",
        }
        assert sandbox.base_url("openai-direct") == sandbox.url("openai-direct").removesuffix(
            "/chat/completions"
        )


@pytest.mark.parametrize("name", ["openai-direct", "glm-direct"])
async def test_openai_format_answers_with_a_completion_echoing_the_model(name: str) -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        response = await post(client, sandbox, name)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["object"] == "chat.completion"
        assert body["model"] == f"{name}-model"
        choice = body["choices"][0]
        assert choice["finish_reason"] == "stop"
        assert choice["message"]["role"] == "assistant"
        text = choice["message"]["content"]
        assert name in text and "Should a team of three adopt" in text
        assert body["usage"] == {
            "prompt_tokens": len(PROMPT.split()),
            "completion_tokens": len(text.split()),
            "total_tokens": len(PROMPT.split()) + len(text.split()),
        }
        again = await post(client, sandbox, name)
        assert again.json()["choices"][0]["message"]["content"] == text


@pytest.mark.parametrize("include_usage", [True, False])
async def test_openai_stream_ends_with_done_and_has_usage_only_when_asked(include_usage: bool) -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        whole = (await post(client, sandbox, "openai-direct")).json()
        options = {"stream_options": {"include_usage": True}} if include_usage else {}
        response = await post(client, sandbox, "openai-direct", stream=True, **options)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"
        events = sse_events(response.text)
        assert events[-1] == (None, "[DONE]")
        chunks = [json.loads(data) for _, data in events[:-1]]
        assert all(
            c["object"] == "chat.completion.chunk" and c["model"] == "openai-direct-model" for c in chunks
        )
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        with_choices = [c for c in chunks if c["choices"]]
        deltas = [c["choices"][0]["delta"].get("content", "") for c in with_choices]
        assert 5 <= sum(1 for d in deltas if d) <= 10
        assert "".join(deltas) == whole["choices"][0]["message"]["content"]
        assert with_choices[-1]["choices"][0]["finish_reason"] == "stop"
        if include_usage:
            assert chunks[-1]["choices"] == []
            assert chunks[-1]["usage"] == whole["usage"]
            assert all(c["usage"] is None for c in chunks[:-1])
        else:
            assert all("usage" not in c for c in chunks)


async def test_anthropic_format_answers_a_message_and_streams_the_documented_events() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        response = await post(client, sandbox, "anthropic-direct")
        assert response.status_code == 200
        assert "request-id" in response.headers
        message = response.json()
        assert message["type"] == "message" and message["role"] == "assistant"
        assert message["model"] == "claude-test"
        assert message["stop_reason"] == "end_turn"
        text = message["content"][0]["text"]
        assert message["content"][0]["type"] == "text"
        assert message["usage"] == {
            "input_tokens": len(PROMPT.split()) + 2,  # the top-level system prompt counts too
            "output_tokens": len(text.split()),
        }

        streamed = await post(client, sandbox, "anthropic-direct", stream=True)
        events = sse_events(streamed.text)
        names = [event for event, _ in events]
        datas = [json.loads(data) for _, data in events]
        assert all(data["type"] == event for event, data in zip(names, datas, strict=True))
        deltas = [d for d in datas if d["type"] == "content_block_delta"]
        assert names == [
            "message_start",
            "content_block_start",
            "ping",
            *["content_block_delta"] * len(deltas),
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        assert 5 <= len(deltas) <= 10
        assert all(d["delta"]["type"] == "text_delta" for d in deltas)
        assert "".join(d["delta"]["text"] for d in deltas) == text
        assert datas[0]["message"]["usage"]["input_tokens"] == message["usage"]["input_tokens"]
        assert datas[0]["message"]["content"] == []
        assert datas[-2]["delta"]["stop_reason"] == "end_turn"
        assert datas[-2]["usage"]["output_tokens"] == len(text.split())


async def test_aiceo_gateway_answers_its_envelope_and_reports_status() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        response = await post(client, sandbox, "aiceo-gateway", provider="zai")
        body = response.json()
        assert response.status_code == 200
        assert body["success"] is True
        assert body["response"]["model"] == "glm-4.7"
        assert body["response"]["usage"] == {
            "inputTokens": len(PROMPT.split()),
            "outputTokens": len(body["response"]["content"].split()),
        }
        assert body["metadata"]["provider"] == "zai"
        assert set(body["metadata"]) == {"waitTime", "queueDepth", "requestId", "provider"}

        status = await client.get(
            health_url(sandbox, "aiceo-gateway"), headers=auth(sandbox, "aiceo-gateway")
        )
        info = status.json()
        assert info["status"] == "operational"
        assert info["maxConcurrent"] == 8
        assert {"concurrentRequests", "queueDepth", "quotaInfo"} <= set(info)


@pytest.mark.parametrize("name", NAMES)
async def test_health_endpoint_answers_with_the_right_key(name: str) -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        response = await client.get(health_url(sandbox, name), headers=auth(sandbox, name))
        assert response.status_code == 200
        if name != "aiceo-gateway":
            assert response.json()["data"][0]["id"]


async def test_a_custom_reply_is_used_and_cut_at_max_tokens() -> None:
    def reply(provider: str, request: dict[str, Any]) -> str:
        return f"{provider} says one two three four five six"

    async with Sandbox(reply=reply) as sandbox, httpx.AsyncClient() as client:
        full = (await post(client, sandbox, "openai-direct")).json()
        assert full["choices"][0]["message"]["content"] == "openai-direct says one two three four five six"
        cut = (await post(client, sandbox, "openai-direct", max_tokens=3)).json()
        assert cut["choices"][0]["message"]["content"] == "openai-direct says one"
        assert cut["choices"][0]["finish_reason"] == "length"
        assert cut["usage"]["completion_tokens"] == 3
        streamed = await post(client, sandbox, "anthropic-direct", stream=True, max_tokens=2)
        datas = [json.loads(data) for _, data in sse_events(streamed.text)]
        assert datas[-2]["delta"]["stop_reason"] == "max_tokens"
        assert datas[-2]["usage"]["output_tokens"] == 2


async def test_a_failing_reply_function_answers_500_in_the_provider_shape() -> None:
    def reply(provider: str, request: dict[str, Any]) -> str:
        raise RuntimeError("boom")

    async with Sandbox(reply=reply) as sandbox, httpx.AsyncClient() as client:
        response = await post(client, sandbox, "anthropic-direct")
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "api_error"
        assert sandbox.requests("anthropic-direct")[-1].outcome is Outcome.REPLY_FAILED


# -- the whole chat request: tools, tool results, images, structured output, stop ----------------------

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
}
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": WEATHER_SCHEMA,
        },
    }
]
ANTHROPIC_TOOLS = [
    {"name": "get_weather", "description": "The weather in a city.", "input_schema": WEATHER_SCHEMA}
]
WEATHER_QUESTION = "What is the weather in Paris today?"
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
JPEG_HEAD = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 12).decode()


def openai_tool_body(**extra: Any) -> dict[str, Any]:
    messages = [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": WEATHER_QUESTION},
    ]
    return {"model": "gpt-test", "messages": messages, "tools": OPENAI_TOOLS, **extra}


def openai_follow_up(call_id: str = "call_1", result: str = "18 degrees and sunny") -> list[dict[str, Any]]:
    """A conversation ending with the result of a get_weather call."""
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    return [
        {"role": "user", "content": WEATHER_QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]


def anthropic_tool_body(**extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": WEATHER_QUESTION}]
    return {
        "model": "claude-test",
        "max_tokens": 300,
        "messages": messages,
        "tools": ANTHROPIC_TOOLS,
        **extra,
    }


def anthropic_follow_up(
    tool_use_id: str = "toolu_1", result: str = "18 degrees and sunny"
) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": WEATHER_QUESTION},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": tool_use_id, "name": "get_weather", "input": {"city": "Paris"}}
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "content": result}]},
    ]


async def send(
    client: httpx.AsyncClient, sandbox: Sandbox, name: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(sandbox.url(name), headers=auth(sandbox, name), json=body)


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("What is the weather in Paris today?", "Paris"),
        ("In Paris, is it raining?", "Paris"),
        ("Paris or Lyon. Which is warmer?", "Lyon"),
        ("Tell me, I wonder about Rome's weather", "Rome"),
        ("What now?", "What"),
        ("weather please", "please"),
        ("", "example"),
    ],
)
def test_made_up_strings_are_a_capitalised_word_of_the_user_text(text: str, word: str) -> None:
    assert pick_word(text) == word


def test_a_made_up_string_comes_from_an_earlier_user_text_when_the_last_has_none() -> None:
    assert pick_word_in(["I live in Paris.", "What is the weather there?"]) == "Paris"
    assert pick_word_in(["I live in Paris.", "And in Lyon?"]) == "Lyon"
    assert pick_word_in(["no names here", "What now?"]) == "What"
    assert pick_word_in([]) == "example"


def test_made_up_values_follow_the_schema_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "minimum": 3, "maximum": 10},
            "ratio": {"type": "number", "maximum": 0.5},
            "metric": {"type": "boolean"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "when": {"type": "string", "format": "date"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "place": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]},
            "note": {"type": ["string", "null"]},
            "optional": {"type": "string"},
        },
        "required": ["city", "days", "ratio", "metric", "unit", "when", "tags", "place", "note"],
    }
    assert example_value(schema, "Paris") == {
        "city": "Paris",
        "days": 3,
        "ratio": 0.5,
        "metric": True,
        "unit": "c",
        "when": "2025-01-01",
        "tags": ["Paris"],
        "place": {"lat": 1},
        "note": "Paris",
    }
    assert example_value({"type": "object", "properties": {"a": {"type": "integer"}}}, "x") == {"a": 1}


@pytest.mark.parametrize("name", ["openai-direct", "glm-direct"])
async def test_openai_format_answers_a_tool_request_with_a_tool_call(name: str) -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        body = openai_tool_body(tool_choice="auto", stop=["END"], top_p=0.9, seed=7, temperature=0)
        response = await send(client, sandbox, name, body)
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        message = choice["message"]
        assert message["content"] is None and message["role"] == "assistant"
        [call] = message["tool_calls"]
        assert call["id"].startswith("call_") and call["type"] == "function"
        assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
        assert response.json()["usage"]["completion_tokens"] >= 1
        assert sandbox.requests(name)[-1].body == body  # the log keeps the body as received


async def test_a_tool_call_takes_its_arguments_from_the_whole_conversation() -> None:
    messages = [
        {"role": "system", "content": "You help travellers."},
        {"role": "user", "content": "I am flying to Paris tomorrow."},
        {"role": "assistant", "content": "Have a good trip!"},
        {"role": "user", "content": "What will the weather be like there?"},
    ]
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        body = openai_tool_body(messages=messages, tool_choice="auto", stream=True)
        events = sse_events((await send(client, sandbox, "openai-direct", body)).text)
        chunks = [json.loads(data) for _, data in events[:-1]]
        deltas = [c["choices"][0]["delta"] for c in chunks]
        arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d)
        assert arguments == '{"city": "Paris"}'
        anthropic = anthropic_tool_body(system="You help travellers.", messages=messages[1:])
        message = (await send(client, sandbox, "anthropic-direct", anthropic)).json()
        assert message["content"][0]["input"] == {"city": "Paris"}


async def test_openai_stream_of_a_tool_call_has_its_arguments_in_pieces() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        body = openai_tool_body(stream=True, stream_options={"include_usage": True})
        response = await send(client, sandbox, "openai-direct", body)
        events = sse_events(response.text)
        assert events[-1] == (None, "[DONE]")
        chunks = [json.loads(data) for _, data in events[:-1]]
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        first = deltas[0]
        assert first["role"] == "assistant" and first["content"] is None
        [opening] = first["tool_calls"]
        assert opening["index"] == 0 and opening["id"].startswith("call_") and opening["type"] == "function"
        assert opening["function"] == {"name": "get_weather", "arguments": ""}
        pieces = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:] if "tool_calls" in d]
        assert len(pieces) >= 3
        assert all(d["tool_calls"][0]["index"] == 0 and "id" not in d["tool_calls"][0] for d in deltas[1:-1])
        assert "".join(pieces) == '{"city": "Paris"}'
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finishes == [None] * (len(finishes) - 1) + ["tool_calls"]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1


async def test_openai_tool_choice_decides_between_a_call_and_text() -> None:
    second = {
        "type": "function",
        "function": {
            "name": "book_table",
            "parameters": {
                "type": "object",
                "properties": {"restaurant": {"type": "string"}, "people": {"type": "integer", "minimum": 2}},
                "required": ["restaurant", "people"],
            },
        },
    }
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        tools = [*OPENAI_TOOLS, second]
        forced = {"type": "function", "function": {"name": "book_table"}}
        named = (
            await send(client, sandbox, "openai-direct", openai_tool_body(tools=tools, tool_choice=forced))
        ).json()
        call = named["choices"][0]["message"]["tool_calls"][0]["function"]
        assert call == {"name": "book_table", "arguments": '{"restaurant": "Paris", "people": 2}'}

        none = (await send(client, sandbox, "openai-direct", openai_tool_body(tool_choice="none"))).json()
        assert none["choices"][0]["finish_reason"] == "stop"
        assert "tool_calls" not in none["choices"][0]["message"]
        assert "openai-direct" in none["choices"][0]["message"]["content"]

        follow_up = openai_tool_body(messages=openai_follow_up(), tool_choice="auto")
        answered = (await send(client, sandbox, "openai-direct", follow_up)).json()["choices"][0]
        assert answered["finish_reason"] == "stop"
        assert answered["message"]["content"] == "According to get_weather: 18 degrees and sunny"

        # A forced choice calls again, even after a result: the API guarantees a call.
        required = openai_tool_body(messages=openai_follow_up(), tool_choice="required")
        again = (await send(client, sandbox, "openai-direct", required)).json()["choices"][0]
        assert again["finish_reason"] == "tool_calls"


async def test_openai_tool_result_follow_up_streams_text_that_quotes_it() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        body = openai_tool_body(messages=openai_follow_up(result="rain"), stream=True)
        events = sse_events((await send(client, sandbox, "glm-direct", body)).text)
        chunks = [json.loads(data) for _, data in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == "According to get_weather: rain"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_anthropic_format_answers_a_tool_request_with_a_tool_use_block() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        body = anthropic_tool_body(
            system=[{"type": "text", "text": "Use the tools."}],
            tool_choice={"type": "auto"},
            stop_sequences=["END"],
            top_p=0.9,
        )
        message = (await send(client, sandbox, "anthropic-direct", body)).json()
        assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
        [block] = message["content"]
        assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
        assert (block["name"], block["input"]) == ("get_weather", {"city": "Paris"})
        assert sandbox.requests("anthropic-direct")[-1].body == body

        streamed = await send(client, sandbox, "anthropic-direct", {**body, "stream": True})
        events = sse_events(streamed.text)
        names = [event for event, _ in events]
        datas = [json.loads(data) for _, data in events]
        pieces = [d["delta"] for d in datas if d["type"] == "content_block_delta"]
        assert names == [
            "message_start",
            "content_block_start",
            "ping",
            *["content_block_delta"] * len(pieces),
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        assert datas[1]["content_block"] == {
            "type": "tool_use",
            "id": datas[1]["content_block"]["id"],
            "name": "get_weather",
            "input": {},
        }
        assert len(pieces) >= 3 and all(p["type"] == "input_json_delta" for p in pieces)
        assert json.loads("".join(p["partial_json"] for p in pieces)) == {"city": "Paris"}
        assert datas[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


async def test_anthropic_tool_choice_and_a_tool_result_follow_up() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        none = (
            await send(client, sandbox, "anthropic-direct", anthropic_tool_body(tool_choice={"type": "none"}))
        ).json()
        assert none["stop_reason"] == "end_turn" and none["content"][0]["type"] == "text"

        follow_up = anthropic_tool_body(messages=anthropic_follow_up(), tool_choice={"type": "auto"})
        answered = (await send(client, sandbox, "anthropic-direct", follow_up)).json()
        assert answered["stop_reason"] == "end_turn"
        assert answered["content"] == [
            {"type": "text", "text": "According to get_weather: 18 degrees and sunny"}
        ]

        forced = anthropic_tool_body(
            messages=anthropic_follow_up(), tool_choice={"type": "tool", "name": "get_weather"}
        )
        again = (await send(client, sandbox, "anthropic-direct", forced)).json()
        assert again["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("change", "message", "param", "code"),
    [
        (
            {"messages": [*openai_follow_up()[:2], {"role": "tool", "content": "18"}]},
            "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.",
            "messages.[2].tool_call_id",
            None,
        ),
        (
            {"messages": [openai_follow_up()[0], openai_follow_up()[2]]},
            "messages with role 'tool' must be a response to a preceeding message with 'tool_calls'",
            "messages.[1].role",
            None,
        ),
        (
            {
                "messages": [
                    *openai_follow_up()[:2],
                    {"role": "tool", "tool_call_id": "call_9", "content": "x"},
                ]
            },
            "'tool_call_id' of 'call_9' not found in 'tool_calls' of previous message",
            "messages.[2].tool_call_id",
            None,
        ),
        (
            {"messages": [*openai_follow_up()[:2], {"role": "user", "content": "And?"}]},
            "The following tool_call_ids did not have response messages: call_1",
            "messages.[2].role",
            None,
        ),
        (
            {
                "messages": [
                    openai_follow_up()[0],
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "call_1", "type": "function", "function": {"arguments": "{}"}}],
                    },
                    openai_follow_up()[2],
                ]
            },
            "Missing required parameter: 'messages[1].tool_calls[0].function.name'.",
            "messages[1].tool_calls[0].function.name",
            "missing_required_parameter",
        ),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
            "function 'get_time' is not one of the functions in 'tools'",
            "tool_choice",
            "invalid_value",
        ),
        (
            {"tools": None, "tool_choice": "required"},
            "'tool_choice' is only allowed when 'tools' are specified.",
            "tool_choice",
            None,
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
            "string does not match pattern",
            "tools[0].function.name",
            "invalid_value",
        ),
        (
            {
                "messages": [
                    {
                        "role": "system",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x.io/a.png"}}],
                    }
                ]
            },
            "Image URLs are only allowed for messages with role 'user'",
            "messages[0].content[0].type",
            "invalid_value",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}
                        ],
                    }
                ]
            },
            "but got unsupported MIME type 'image/bmp'.",
            "messages[0].content[0].image_url.url",
            "invalid_value",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
            "Invalid value: 'video'. Supported values are: 'text', 'image_url'",
            "messages[0].content[0].type",
            "invalid_value",
        ),
        (
            {"response_format": {"type": "json_object"}},
            "'messages' must contain the word 'json' in some form",
            "messages",
            None,
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema.name",
            "missing_required_parameter",
        ),
        ({"top_p": 1.5}, "Expected a value <= 1, but got 1.5 instead.", "top_p", "decimal_above_max_value"),
        (
            {"seed": "7"},
            "Invalid type for 'seed': expected an integer, but got a string instead.",
            "seed",
            "invalid_type",
        ),
        ({"stop": ["a", "b", "c", "d", "e"]}, "array too long", "stop", "array_above_max_length"),
        (
            {"stream_options": {"include_usage": True}},
            "only allowed when 'stream' is enabled",
            "stream_options",
            None,
        ),
    ],
)
async def test_openai_refuses_a_malformed_request_as_the_api_does(
    change: dict[str, Any], message: str, param: str, code: str | None
) -> None:
    body = {k: v for k, v in {**openai_tool_body(), **change}.items() if v is not None}
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        response = await send(client, sandbox, "openai-direct", body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert message in error["message"]
        assert (error["param"], error["code"]) == (param, code)
        assert sandbox.requests("openai-direct")[-1].outcome is Outcome.BAD_REQUEST


async def test_glm_has_no_json_word_rule() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        body = {**chat_body("glm-direct"), "response_format": {"type": "json_object"}}
        response = await send(client, sandbox, "glm-direct", body)
        assert response.status_code == 200
        assert "glm-direct" in json.loads(response.json()["choices"][0]["message"]["content"])["answer"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"messages": [{"role": "user", "content": "Hi."}, {"role": "user", "content": "Hello?"}]},
            'messages: roles must alternate between "user" and "assistant", but found multiple "user" roles '
            "in a row",
        ),
        (
            {"messages": [*anthropic_follow_up()[:2], anthropic_follow_up("toolu_2")[2]]},
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1.",
        ),
        (
            {
                "messages": [
                    *anthropic_follow_up()[:2],
                    {
                        "role": "user",
                        "content": [
                            anthropic_follow_up()[2]["content"][0],
                            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "x"},
                        ],
                    },
                ]
            },
            "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_2. Each "
            "`tool_result` block must have a corresponding `tool_use` block in the previous message.",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]}
                ]
            },
            "messages.0.content.0: `tool_use` blocks can only be in `assistant` messages",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
            "messages: text content blocks must be non-empty",
        ),
        (
            {"messages": [{"role": "user", "content": ""}]},
            "messages.0: all messages must have non-empty content except for the optional final assistant "
            "message",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"},
                            }
                        ],
                    }
                ]
            },
            "messages.0.content.0.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png'",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": JPEG_HEAD},
                            }
                        ],
                    }
                ]
            },
            "the image appears to be a image/jpeg image",
        ),
        ({"tools": [{"name": "get_weather"}]}, "tools.0.custom.input_schema: Field required"),
        ({"tool_choice": {"type": "tool", "name": "get_time"}}, "no tool named 'get_time'"),
        ({"tool_choice": {"type": "required"}}, "Input tag 'required' found using 'type' does not match"),
        ({"tool_choice": "auto"}, "tool_choice: Input should be a valid dictionary"),
        ({"stop_sequences": "END"}, "stop_sequences: Input should be a valid list"),
        ({"top_p": 1.5}, "top_p: Input should be less than or equal to 1"),
        ({"system": [{"type": "image"}]}, "system.0.type: Input should be 'text'"),
    ],
)
async def test_anthropic_refuses_a_malformed_conversation_as_the_api_does(
    change: dict[str, Any], message: str
) -> None:
    body = {**anthropic_tool_body(), **change}
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        response = await send(client, sandbox, "anthropic-direct", body)
        assert response.status_code == 400
        assert response.json()["type"] == "error"
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert message in error["message"]


async def test_images_are_counted_and_named_in_the_answer_and_logged_as_sent() -> None:
    openai_parts = [
        {"type": "text", "text": "What is in these pictures?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]
    anthropic_blocks = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}},
        {"type": "text", "text": "What is in this picture?"},
    ]
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        body: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": openai_parts}]}
        text = (await send(client, sandbox, "openai-direct", body)).json()["choices"][0]["message"]["content"]
        assert text.startswith("I received 2 images (image/png, url). This is openai-direct")
        assert 'begins "What is in these pictures?"' in text
        assert sandbox.requests("openai-direct")[-1].body == body

        body = {
            "model": "claude-test",
            "max_tokens": 300,
            "messages": [{"role": "user", "content": anthropic_blocks}],
        }
        streamed = await send(client, sandbox, "anthropic-direct", {**body, "stream": True})
        datas = [json.loads(data) for _, data in sse_events(streamed.text)]
        text = "".join(d["delta"]["text"] for d in datas if d["type"] == "content_block_delta")
        assert text.startswith("I received 1 image (image/png). This is anthropic-direct")
        async with httpx.AsyncClient(base_url=sandbox.control_url) as control:
            log = (await control.get("/log/anthropic-direct")).json()["requests"]
        assert log[-1]["body"] == {**body, "stream": True}


async def test_response_format_is_answered_with_json_in_each_format() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "temperature": {"type": "number"},
            "sunny": {"type": "boolean"},
        },
        "required": ["city", "temperature", "sunny"],
        "additionalProperties": False,
    }
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        as_schema = {
            "type": "json_schema",
            "json_schema": {"name": "weather", "strict": True, "schema": schema},
        }
        body = openai_tool_body(tools=None, response_format=as_schema)
        del body["tools"]
        content = (await send(client, sandbox, "openai-direct", body)).json()["choices"][0]["message"][
            "content"
        ]
        assert json.loads(content) == {"city": "Paris", "temperature": 1, "sunny": True}

        body["messages"][0]["content"] = "Answer in JSON."
        body["response_format"] = {"type": "json_object"}
        content = (await send(client, sandbox, "openai-direct", body)).json()["choices"][0]["message"][
            "content"
        ]
        assert "openai-direct" in json.loads(content)["answer"]

        ask = {
            "model": "claude-test",
            "max_tokens": 300,
            "messages": [{"role": "user", "content": WEATHER_QUESTION}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        }
        message = (await send(client, sandbox, "anthropic-direct", ask)).json()
        assert json.loads(message["content"][0]["text"]) == {"city": "Paris", "temperature": 1, "sunny": True}


async def test_a_stop_sequence_cuts_the_answer_there() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        whole = (await post(client, sandbox, "openai-direct")).json()["choices"][0]["message"]["content"]
        cut = (await post(client, sandbox, "openai-direct", stop=["simulated", "zzz"])).json()["choices"][0]
        assert cut["message"]["content"] == whole[: whole.index("simulated")] == "This is openai-direct, a "
        assert cut["finish_reason"] == "stop"
        events = sse_events(
            (await post(client, sandbox, "openai-direct", stream=True, stop="simulated")).text
        )
        chunks = [json.loads(data) for _, data in events[:-1]]
        assert (
            "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
            == "This is openai-direct, a "
        )

        message = (await post(client, sandbox, "anthropic-direct", stop_sequences=["simulated"])).json()
        assert message["content"][0]["text"] == "This is anthropic-direct, a "
        assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "simulated")
        streamed = await post(client, sandbox, "anthropic-direct", stream=True, stop_sequences=["simulated"])
        datas = [json.loads(data) for _, data in sse_events(streamed.text)]
        assert datas[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "simulated"}
        missing = (await post(client, sandbox, "anthropic-direct", stop_sequences=["nowhere"])).json()
        assert (missing["stop_reason"], missing["stop_sequence"]) == ("end_turn", None)


async def test_the_gateway_ignores_tools_and_response_format_and_refuses_content_parts() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        extra = {"tools": OPENAI_TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}
        body = {**chat_body("aiceo-gateway"), **extra}
        answer = (await send(client, sandbox, "aiceo-gateway", body)).json()
        assert answer["success"] is True
        assert answer["response"]["content"].startswith("This is aiceo-gateway")
        assert sandbox.requests("aiceo-gateway")[-1].body == body

        parts = [
            {"type": "text", "text": "Hi"},
            {"type": "image_url", "image_url": {"url": "https://x.io/a.png"}},
        ]
        refused = await send(
            client,
            sandbox,
            "aiceo-gateway",
            {**chat_body("aiceo-gateway"), "messages": [{"role": "user", "content": parts}]},
        )
        assert refused.status_code == 400
        assert refused.json()["success"] is False
        assert "carries text only" in refused.json()["error"]
        tool_message = {"role": "tool", "tool_call_id": "call_1", "content": "18"}
        refused = await send(
            client, sandbox, "aiceo-gateway", {**chat_body("aiceo-gateway"), "messages": [tool_message]}
        )
        assert refused.status_code == 400 and "unexpected role 'tool'" in refused.json()["error"]


async def test_fault_modes_apply_to_tool_calls_too() -> None:
    async with Sandbox({"anthropic-direct": "truncate"}) as sandbox, httpx.AsyncClient() as client:
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream(
                "POST",
                sandbox.url("anthropic-direct"),
                headers=auth(sandbox, "anthropic-direct"),
                json=anthropic_tool_body(stream=True),
            ) as response:
                async for piece in response.aiter_bytes():
                    received += piece
        assert b'"type":"tool_use"' in received and b"message_stop" not in received
        assert sandbox.requests("anthropic-direct")[0].outcome is Outcome.TRUNCATE


# -- refusals: auth, paths, bodies -------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_a_missing_or_wrong_key_is_refused_with_401_in_the_provider_shape(
    name: str, key: str | None
) -> None:
    expected = {
        "aiceo-gateway": False,
        "glm-direct": ("invalid_request_error", None if key is None else "invalid_api_key"),
        "anthropic-direct": "authentication_error",
        "openai-direct": ("invalid_request_error", None if key is None else "invalid_api_key"),
    }[name]
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        headers = {k: v for k, v in auth(sandbox, name).items() if sandbox.key(name) not in v}
        if key is not None:
            headers["authorization" if "authorization" in auth(sandbox, name) else "x-api-key"] = (
                f"Bearer {key}" if name in ("glm-direct", "openai-direct") else key
            )
        chat = await client.post(sandbox.url(name), headers=headers, json=chat_body(name))
        health = await client.get(health_url(sandbox, name), headers=headers)
        for response in (chat, health):
            assert response.status_code == 401
            assert error_kind(name, response.json()) == expected
            assert sandbox.key(name) not in response.text
        assert [r.outcome for r in sandbox.requests(name)] == [Outcome.UNAUTHORIZED] * 2


async def test_anthropic_accepts_its_key_as_a_bearer_token_too() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        headers = {
            "authorization": f"Bearer {sandbox.key('anthropic-direct')}",
            "anthropic-version": "2023-06-01",
        }
        response = await client.post(
            sandbox.url("anthropic-direct"), headers=headers, json=chat_body("anthropic-direct")
        )
        assert response.status_code == 200


@pytest.mark.parametrize("name", NAMES)
async def test_unknown_path_wrong_method_and_bad_json_are_refused_in_the_provider_shape(name: str) -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        headers = auth(sandbox, name)
        unknown = await client.post(
            f"http://127.0.0.1:{sandbox.port(name)}/nowhere", headers=headers, json={}
        )
        assert unknown.status_code == 404
        error_kind(name, unknown.json())
        wrong_method = await client.get(sandbox.url(name), headers=headers)
        assert wrong_method.status_code == 405
        bad_json = await client.post(
            sandbox.url(name), headers={**headers, "content-type": "application/json"}, content=b"{not json"
        )
        assert bad_json.status_code == 400
        error_kind(name, bad_json.json())
        outcomes = [r.outcome for r in sandbox.requests(name)]
        assert outcomes == [Outcome.NOT_FOUND, Outcome.METHOD_NOT_ALLOWED, Outcome.BAD_REQUEST]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_tokens": None}, "max_tokens: field required"),
        ({"messages": [{"role": "system", "content": "x"}]}, "unexpected role 'system'"),
        ({"messages": []}, "messages: field required"),
    ],
)
async def test_anthropic_refuses_what_the_messages_api_refuses(change: dict[str, Any], message: str) -> None:
    body = {**chat_body("anthropic-direct"), **change}
    body = {k: v for k, v in body.items() if v is not None}
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        response = await client.post(
            sandbox.url("anthropic-direct"), headers=auth(sandbox, "anthropic-direct"), json=body
        )
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert message in error["message"]


async def test_anthropic_requires_the_version_header() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        headers = {"x-api-key": sandbox.key("anthropic-direct")}
        response = await client.post(
            sandbox.url("anthropic-direct"), headers=headers, json=chat_body("anthropic-direct")
        )
        assert response.status_code == 400
        assert "anthropic-version" in response.json()["error"]["message"]


async def test_an_unreadable_request_gets_400_and_the_connection_closes() -> None:
    async with Sandbox() as sandbox:
        reader, writer = await asyncio.open_connection("127.0.0.1", sandbox.port("openai-direct"))
        writer.write(b"NONSENSE\r\n\r\n")
        answer = await reader.read()  # until the server closes
        writer.close()
        await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b'"invalid_request_error"' in answer


# -- connections -----------------------------------------------------------------------------------


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        for stream in (False, True, False):
            assert (await post(client, sandbox, "openai-direct", stream=stream)).status_code == 200
        assert sandbox.connections("openai-direct") == 1


async def test_a_chunked_request_body_is_read() -> None:
    async with Sandbox() as sandbox:
        body = json.dumps(chat_body("glm-direct")).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", sandbox.port("glm-direct"))
        head = (
            "POST /api/paas/v4/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
            f"authorization: Bearer {sandbox.key('glm-direct')}\r\nconnection: close\r\n\r\n"
        )
        writer.write(
            head.encode()
            + b"%x\r\n%s\r\n" % (10, body[:10])
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 10, body[10:])
        )
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["model"] == "glm-direct-model"


async def test_streamed_events_arrive_as_separate_pieces() -> None:
    async with Sandbox(stream_delay_s=0.01) as sandbox, httpx.AsyncClient() as client:
        body = chat_body("anthropic-direct", stream=True)
        headers = auth(sandbox, "anthropic-direct")
        async with client.stream(
            "POST", sandbox.url("anthropic-direct"), headers=headers, json=body
        ) as response:
            pieces = [piece async for piece in response.aiter_raw()]
        assert len(pieces) >= 10


# -- fault modes -----------------------------------------------------------------------------------


async def test_down_refuses_connections_and_ok_listens_again_on_the_same_port() -> None:
    async with Sandbox({"glm-direct": "down"}) as sandbox, httpx.AsyncClient() as client:
        port = sandbox.port("glm-direct")
        with pytest.raises(httpx.ConnectError):
            await post(client, sandbox, "glm-direct")
        with pytest.raises(httpx.ConnectError):
            await client.get(health_url(sandbox, "glm-direct"), headers=auth(sandbox, "glm-direct"))
        sandbox.set_mode("glm-direct", "ok")
        assert (await post(client, sandbox, "glm-direct")).status_code == 200
        assert sandbox.port("glm-direct") == port
        assert sandbox.url("glm-direct") == f"http://127.0.0.1:{port}/api/paas/v4/chat/completions"
        sandbox.set_mode("glm-direct", "down")  # also cuts the client's pooled connection
        with pytest.raises(httpx.ConnectError):
            await post(client, sandbox, "glm-direct")
        sandbox.set_mode("glm-direct", "ok")
        assert (await post(client, sandbox, "glm-direct")).status_code == 200
        assert [r.outcome for r in sandbox.requests("glm-direct")] == [Outcome.OK, Outcome.OK]


async def test_reset_reads_the_request_then_resets_the_connection() -> None:
    async with Sandbox({"openai-direct": "reset"}) as sandbox, httpx.AsyncClient() as client:
        with pytest.raises(httpx.ReadError):
            await post(client, sandbox, "openai-direct")
        with pytest.raises(httpx.ReadError):
            await client.get(health_url(sandbox, "openai-direct"), headers=auth(sandbox, "openai-direct"))
        logged = sandbox.requests("openai-direct")
        assert [(r.outcome, r.status) for r in logged] == [(Outcome.RESET, None)] * 2
        assert logged[0].body == chat_body("openai-direct")


async def test_hang_never_answers_and_its_handler_ends_when_the_client_leaves() -> None:
    async with Sandbox({"anthropic-direct": "hang"}) as sandbox:
        baseline = len(asyncio.all_tasks())
        async with httpx.AsyncClient(timeout=0.3) as client:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await post(client, sandbox, "anthropic-direct")
            with pytest.raises(httpx.ReadTimeout):
                await client.get(
                    health_url(sandbox, "anthropic-direct"), headers=auth(sandbox, "anthropic-direct")
                )
            assert time.monotonic() - started >= 0.6
        assert [r.outcome for r in sandbox.requests("anthropic-direct")] == [Outcome.HANG] * 2
        await eventually(lambda: len(asyncio.all_tasks()) <= baseline)


async def test_slow_waits_then_answers_normally() -> None:
    async with Sandbox({"aiceo-gateway": "slow:0.3"}) as sandbox, httpx.AsyncClient() as client:
        started = time.monotonic()
        response = await post(client, sandbox, "aiceo-gateway")
        assert time.monotonic() - started >= 0.3
        assert response.json()["success"] is True
        assert sandbox.requests("aiceo-gateway")[0].mode == "slow:0.3"


@pytest.mark.parametrize(
    ("name", "status", "expected"),
    [
        ("anthropic-direct", 529, "overloaded_error"),
        ("anthropic-direct", 429, "rate_limit_error"),
        ("anthropic-direct", 500, "api_error"),
        ("anthropic-direct", 403, "permission_error"),
        ("openai-direct", 429, ("requests", "rate_limit_exceeded")),
        ("openai-direct", 500, ("server_error", None)),
        ("openai-direct", 400, ("invalid_request_error", None)),
        ("glm-direct", 503, ("server_error", None)),
        ("aiceo-gateway", 502, False),
    ],
)
async def test_status_answers_the_code_with_the_provider_error_body(
    name: str, status: int, expected: object
) -> None:
    async with Sandbox({name: f"status:{status}"}) as sandbox, httpx.AsyncClient() as client:
        for response in (
            await post(client, sandbox, name),
            await client.get(health_url(sandbox, name), headers=auth(sandbox, name)),
        ):
            assert response.status_code == status
            assert "retry-after" not in response.headers
            assert error_kind(name, response.json()) == expected
        assert [r.status for r in sandbox.requests(name)] == [status, status]


@pytest.mark.parametrize("name", NAMES)
async def test_ratelimit_answers_429_with_retry_after(name: str) -> None:
    async with Sandbox({name: "ratelimit:3"}) as sandbox, httpx.AsyncClient() as client:
        response = await post(client, sandbox, name)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        kind = error_kind(name, response.json())
        assert kind in ("rate_limit_error", ("requests", "rate_limit_exceeded"), False)
        health = await client.get(health_url(sandbox, name), headers=auth(sandbox, name))
        assert health.status_code == 429


@pytest.mark.parametrize(
    ("name", "terminator"), [("openai-direct", "[DONE]"), ("anthropic-direct", "message_stop")]
)
async def test_truncate_cuts_a_stream_before_its_terminating_event(name: str, terminator: str) -> None:
    async with Sandbox({name: "truncate"}) as sandbox, httpx.AsyncClient() as client:
        received = b""
        body = chat_body(name, stream=True, stream_options={"include_usage": True})
        if name == "anthropic-direct":
            del body["stream_options"]
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream(
                "POST", sandbox.url(name), headers=auth(sandbox, name), json=body
            ) as response:
                assert response.status_code == 200
                async for piece in response.aiter_bytes():
                    received += piece
        events = sse_events(received.decode())
        assert len(events) >= 3
        assert terminator not in received.decode()
        assert sandbox.requests(name)[0].outcome is Outcome.TRUNCATE


async def test_truncate_cuts_a_plain_body_short_of_its_content_length_but_spares_health() -> None:
    async with Sandbox({"aiceo-gateway": "truncate"}) as sandbox, httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, sandbox, "aiceo-gateway")
        health = await client.get(
            health_url(sandbox, "aiceo-gateway"), headers=auth(sandbox, "aiceo-gateway")
        )
        assert health.json()["status"] == "operational"


async def test_stall_sends_the_first_event_then_goes_silent() -> None:
    async with Sandbox({"openai-direct": "stall"}) as sandbox:
        timeout = httpx.Timeout(5.0, read=0.3)
        async with httpx.AsyncClient(timeout=timeout) as client:
            received = b""
            headers = auth(sandbox, "openai-direct")
            body = chat_body("openai-direct", stream=True)
            with pytest.raises(httpx.ReadTimeout):
                async with client.stream(
                    "POST", sandbox.url("openai-direct"), headers=headers, json=body
                ) as response:
                    assert response.status_code == 200
                    async for piece in response.aiter_bytes():
                        received += piece
            events = sse_events(received.decode())
            assert len(events) == 1
            assert json.loads(events[0][1])["choices"][0]["delta"]["role"] == "assistant"
            with pytest.raises(httpx.ReadTimeout):
                await post(client, sandbox, "openai-direct")
            health = await client.get(health_url(sandbox, "openai-direct"), headers=headers)
            assert health.status_code == 200
        assert [r.outcome for r in sandbox.requests("openai-direct")] == [
            Outcome.STALL,
            Outcome.STALL,
            Outcome.OK,
        ]


async def test_garbage_answers_200_json_that_is_not_json_but_spares_health() -> None:
    async with Sandbox({"glm-direct": "garbage"}) as sandbox, httpx.AsyncClient() as client:
        for stream in (False, True):
            response = await post(client, sandbox, "glm-direct", stream=stream)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            with pytest.raises(ValueError):
                json.loads(response.content)
        health = await client.get(health_url(sandbox, "glm-direct"), headers=auth(sandbox, "glm-direct"))
        assert health.json()["object"] == "list"


# -- the request log -------------------------------------------------------------------------------


async def test_the_log_records_each_request_without_its_key() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        await post(client, sandbox, "openai-direct", stream=True)
        sandbox.set_mode("openai-direct", "status:500")
        await post(client, sandbox, "openai-direct")
        first, second = sandbox.requests("openai-direct")
        assert (first.method, first.path, first.stream, first.mode, first.outcome, first.status) == (
            "POST",
            "/v1/chat/completions",
            True,
            "ok",
            Outcome.OK,
            200,
        )
        assert first.body == chat_body("openai-direct", stream=True)
        assert first.headers["authorization"] == "<redacted>"
        assert (second.mode, second.outcome, second.status) == ("status:500", Outcome.STATUS, 500)
        assert sandbox.key("openai-direct") not in repr(sandbox.requests("openai-direct"))
        assert sandbox.requests("glm-direct") == []
        assert sandbox.clear_log() == 2
        assert sandbox.requests("openai-direct") == []


# -- the control API -------------------------------------------------------------------------------


async def test_control_api_lists_switches_logs_and_clears() -> None:
    async with Sandbox() as sandbox, httpx.AsyncClient(base_url=sandbox.control_url) as control:
        providers = (await control.get("/providers")).json()["providers"]
        assert [p["name"] for p in providers] == list(NAMES)
        assert providers[1]["url"] == sandbox.url("glm-direct")
        assert {p["mode"] for p in providers} == {"ok"}

        switched = await control.put("/mode/glm-direct", content=b"down")
        assert switched.status_code == 200 and switched.json()["mode"] == "down"
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await post(client, sandbox, "glm-direct")
            assert (await control.get("/providers")).json()["providers"][1]["mode"] == "down"
            assert (await control.put("/mode/glm-direct", json={"mode": "ok"})).status_code == 200
            await post(client, sandbox, "glm-direct")

        log = (await control.get("/log/glm-direct")).json()
        assert log["provider"] == "glm-direct"
        assert [(r["outcome"], r["status"]) for r in log["requests"]] == [("ok", 200)]
        assert log["requests"][0]["headers"]["authorization"] == "<redacted>"
        assert (await control.get("/providers")).json()["providers"][1]["requests"] == 1

        bad = await control.put("/mode/glm-direct", content=b"sideways")
        assert bad.status_code == 400 and "unknown mode" in bad.json()["error"]
        assert (await control.put("/mode/nope", content=b"ok")).status_code == 404
        assert (await control.get("/mode/glm-direct")).status_code == 405
        assert (await control.get("/elsewhere")).status_code == 404

        assert (await control.delete("/log")).json() == {"cleared": 1}
        assert sandbox.requests("glm-direct") == []


# -- serve and shutdown ----------------------------------------------------------------------------


def _free_base_port() -> int:
    """A port P such that P..P+4 are free now."""
    for base in range(23000, 60000, 517):
        socks = []
        try:
            for port in range(base, base + 5):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no five free ports in a row")


async def test_serve_prints_exports_listens_on_the_base_ports_and_stops_when_cancelled() -> None:
    base = _free_base_port()
    lines: list[str] = []
    task = asyncio.create_task(serve({"aiceo-gateway": "down"}, base_port=base, print_env=lines.append))
    await eventually(lambda: len(lines) >= 11)
    exports = dict(line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export "))
    assert exports["AICEO_GATEWAY_URL"] == f"http://127.0.0.1:{base}/api/glm/submit"
    assert exports["GLM_API_URL"] == f"http://127.0.0.1:{base + 1}/api/paas/v4/chat/completions"
    assert exports["ANTHROPIC_API_URL"] == f"http://127.0.0.1:{base + 2}/v1/messages"
    assert exports["OPENAI_API_URL"] == f"http://127.0.0.1:{base + 3}/v1/chat/completions"
    assert exports["OPENAI_API_KEY"] == "sandbox-key-openai-direct"
    assert exports["AI_PROVIDER"] == "aiceo-gateway"
    assert exports["AI_FALLBACK_PROVIDER"] == "glm-direct"
    comments = [line for line in lines if line.startswith("#")]
    assert len(comments) == 1 and f"http://127.0.0.1:{base + 4}" in comments[0]
    async with httpx.AsyncClient() as client:
        headers = {"authorization": f"Bearer {exports['OPENAI_API_KEY']}"}
        answer = await client.post(
            exports["OPENAI_API_URL"], headers=headers, json=chat_body("openai-direct")
        )
        assert answer.status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.post(exports["AICEO_GATEWAY_URL"], json={})
        providers = (await client.get(f"http://127.0.0.1:{base + 4}/providers")).json()["providers"]
        assert providers[0]["mode"] == "down"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for port in range(base, base + 5):
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)


async def test_serve_refuses_a_base_port_without_room() -> None:
    with pytest.raises(ValueError, match="base port 65534"):
        await serve(base_port=65534, print_env=lambda line: None)


async def test_closing_cuts_hanging_and_stalled_requests_and_leaves_nothing_running() -> None:
    before = asyncio.all_tasks()
    sandbox = Sandbox({"anthropic-direct": "hang", "openai-direct": "stall"})
    async with sandbox, httpx.AsyncClient(timeout=30) as client:
        hanging = asyncio.create_task(post(client, sandbox, "anthropic-direct"))
        stalled = asyncio.create_task(post(client, sandbox, "openai-direct", stream=True))
        await eventually(
            lambda: bool(sandbox.requests("anthropic-direct") and sandbox.requests("openai-direct"))
        )
        ports = [sandbox.port(name) for name in NAMES]
        started = time.monotonic()
        await sandbox.aclose()
        results = await asyncio.gather(hanging, stalled, return_exceptions=True)
        assert time.monotonic() - started < 2
        assert all(isinstance(r, httpx.TransportError) for r in results), results
    assert asyncio.all_tasks() == before
    for port in ports:
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)


async def test_a_fixed_port_in_use_is_reported_with_the_provider_name() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"sandbox glm-direct: cannot bind 127.0.0.1:{port}"):
            async with Sandbox(ports={"glm-direct": port}):
                pass


# -- the wire, byte by byte ------------------------------------------------------------------------
# What each fault looks like on the socket, read without an HTTP client library in between, and
# what the server does with requests that no well-behaved client library would send.


def raw_request(
    sandbox: Sandbox,
    name: str,
    payload: dict[str, Any] | None = None,
    *,
    method: str = "POST",
    path: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A request as bytes, with the provider's key; ``connection: close`` unless ``headers`` say otherwise."""
    content = json.dumps(payload).encode() if payload is not None else b""
    fields = {
        "host": "127.0.0.1",
        **auth(sandbox, name),
        "content-type": "application/json",
        "content-length": str(len(content)),
        "connection": "close",
        **(headers or {}),
    }
    target = path or urlsplit(sandbox.url(name)).path
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return (head + "\r\n").encode() + content


async def read_to_end(port: int, data: bytes, within_s: float = 5.0) -> bytes:
    """Send ``data`` on a new connection and read until the server ends it in order (FIN)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), within_s)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (names lower-cased) and raw body of one response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split(" ")[1]), {k.lower(): v for k, v in fields.items()}, body


def dechunk(body: bytes) -> tuple[list[bytes], bool]:
    """The chunks of a chunked body, and whether it ended with the zero-length last chunk.
    Fails if the body stops inside a chunk: a cut stream must stop between chunks."""
    chunks: list[bytes] = []
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n", "nothing may follow the last chunk"
            return chunks, True
        assert len(body) >= size + 2 and body[size : size + 2] == b"\r\n", "a chunk was cut"
        chunks.append(body[:size])
        body = body[size + 2 :]
    return chunks, False


async def test_ok_stream_on_the_wire_is_chunked_one_event_a_chunk_and_ends_with_the_last_chunk() -> None:
    """The reference for the faults below: a whole stream is one chunk per event and ends with the
    zero-length last chunk, and the server honours the client's ``connection: close``."""
    async with Sandbox() as sandbox:
        raw = await read_to_end(
            sandbox.port("openai-direct"),
            raw_request(sandbox, "openai-direct", chat_body("openai-direct", True)),
        )
        status, headers, body = split_response(raw)
        assert (status, headers["transfer-encoding"], headers["connection"]) == (200, "chunked", "close")
        chunks, ended = dechunk(body)
        assert ended
        assert chunks[-1] == b"data: [DONE]\n\n"
        assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") for c in chunks)


async def test_reset_resets_the_connection_before_any_byte_of_the_answer() -> None:
    """``reset`` reads the whole request, then ends the connection with a TCP reset, not an orderly
    close: the client's read fails with ECONNRESET and not one byte of a status line arrives."""
    async with Sandbox({"anthropic-direct": "reset"}) as sandbox:
        reader, writer = await asyncio.open_connection("127.0.0.1", sandbox.port("anthropic-direct"))
        writer.write(raw_request(sandbox, "anthropic-direct", chat_body("anthropic-direct")))
        received = b""
        with pytest.raises(ConnectionResetError):
            while piece := await asyncio.wait_for(reader.read(65536), 5.0):
                received += piece
        assert received == b""
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        assert [r.outcome for r in sandbox.requests("anthropic-direct")] == [Outcome.RESET]


@pytest.mark.parametrize("name", ["openai-direct", "anthropic-direct"])
async def test_truncate_closes_a_chunked_stream_between_chunks_without_the_last_chunk(name: str) -> None:
    """A truncated stream is whole chunks, half of the events, then an orderly close (FIN, so the
    read ends without an error) with no zero-length last chunk and no terminating event: what a
    provider that dies mid-answer looks like to an HTTP parser."""
    async with Sandbox() as sandbox:
        request = raw_request(sandbox, name, chat_body(name, True))
        whole, _ = dechunk(split_response(await read_to_end(sandbox.port(name), request))[2])
        sandbox.set_mode(name, "truncate")
        raw = await read_to_end(sandbox.port(name), request)
        status, headers, body = split_response(raw)
        assert (status, headers["transfer-encoding"], headers["connection"]) == (200, "chunked", "close")
        chunks, ended = dechunk(body)
        assert not ended and not body.endswith(b"0\r\n\r\n")
        assert 3 <= len(chunks) < len(whole)
        assert b"[DONE]" not in body and b"message_stop" not in body


async def test_truncate_closes_a_plain_answer_short_of_its_content_length() -> None:
    """A truncated plain answer announces the Content-Length of the whole answer, sends about half
    of it, and closes in order: the body ends early instead of being a shorter whole."""
    async with Sandbox({"glm-direct": "truncate"}) as sandbox:
        raw = await read_to_end(
            sandbox.port("glm-direct"), raw_request(sandbox, "glm-direct", chat_body("glm-direct"))
        )
        status, headers, body = split_response(raw)
        assert status == 200 and headers["connection"] == "close" and "transfer-encoding" not in headers
        assert 0 < len(body) < int(headers["content-length"]) <= 2 * len(body) + 1
        with pytest.raises(ValueError):
            json.loads(body)


@pytest.mark.parametrize("stream", [True, False])
async def test_stall_sends_a_head_and_a_start_then_nothing_on_an_open_connection(stream: bool) -> None:
    """``stall`` sends the head and the first event (one chunk) or the first quarter of a plain
    body, then nothing at all: the connection stays open and a further read only times out."""
    async with Sandbox({"openai-direct": "stall"}) as sandbox:
        reader, writer = await asyncio.open_connection("127.0.0.1", sandbox.port("openai-direct"))
        writer.write(raw_request(sandbox, "openai-direct", chat_body("openai-direct", stream)))
        received = b""
        with pytest.raises(TimeoutError):
            while True:
                piece = await asyncio.wait_for(reader.read(65536), 0.3)
                assert piece, "the server closed a stalled connection"
                received += piece
        writer.close()
        await writer.wait_closed()
        status, headers, body = split_response(received)
        assert status == 200
        if stream:
            chunks, ended = dechunk(body)
            assert len(chunks) == 1 and not ended
            assert json.loads(chunks[0].removeprefix(b"data: "))["choices"][0]["delta"]["role"] == "assistant"
        else:
            assert 0 < len(body) <= int(headers["content-length"]) // 4


async def test_garbage_on_the_wire_is_a_whole_well_framed_answer_that_is_not_json() -> None:
    """``garbage`` breaks the content, not the framing: a complete answer of exactly its
    Content-Length, announced as JSON, on a connection that can serve another request."""
    async with Sandbox({"anthropic-direct": "garbage"}) as sandbox:
        request = raw_request(sandbox, "anthropic-direct", chat_body("anthropic-direct"))
        raw = await read_to_end(
            sandbox.port("anthropic-direct"), request.replace(b"close", b"keep-alive", 1) + request
        )
        assert raw.count(b"HTTP/1.1 200 OK\r\n") == 2
        _, headers, rest = split_response(raw)
        body = rest[: int(headers["content-length"])]
        assert headers["content-type"] == "application/json" and body.startswith(b"<!doctype html>")
        with pytest.raises(ValueError):
            json.loads(body)


async def test_two_requests_in_one_write_are_answered_in_order_on_one_connection() -> None:
    """Pipelined requests (the second sent before the first is answered) are read one at a time
    and answered in order on the same connection, which closes after the one that asked."""
    async with Sandbox() as sandbox:
        first = raw_request(
            sandbox, "glm-direct", chat_body("glm-direct"), headers={"connection": "keep-alive"}
        )
        second = raw_request(sandbox, "glm-direct", path=health_path(sandbox, "glm-direct"), method="GET")
        raw = await read_to_end(sandbox.port("glm-direct"), first + second)
        status, headers, rest = split_response(raw)
        length = int(headers["content-length"])
        assert status == 200 and json.loads(rest[:length])["object"] == "chat.completion"
        status, headers, body = split_response(rest[length:])
        assert status == 200 and headers["connection"] == "close"
        assert json.loads(body)["object"] == "list"
        assert sandbox.connections("glm-direct") == 1


async def test_a_head_request_gets_headers_without_a_body_and_the_connection_goes_on() -> None:
    """A HEAD request is answered with the status and headers it would get, and no body (which
    would corrupt the connection); the same connection then serves the next request."""
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        headers = auth(sandbox, "openai-direct")
        head = await client.head(sandbox.url("openai-direct"), headers=headers)
        assert head.status_code == 405 and head.content == b""
        assert int(head.headers["content-length"]) > 0
        assert (await post(client, sandbox, "openai-direct")).status_code == 200
        assert sandbox.connections("openai-direct") == 1


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    """A client that sends ``Expect: 100-continue`` (curl does, for larger bodies) and waits is
    told ``100 Continue``, sends its body, and gets the answer."""
    async with Sandbox() as sandbox:
        request = raw_request(
            sandbox, "glm-direct", chat_body("glm-direct"), headers={"expect": "100-continue"}
        )
        head, _, body = request.partition(b"\r\n\r\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", sandbox.port("glm-direct"))
        writer.write(head + b"\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        writer.write(body)
        answer = await asyncio.wait_for(reader.read(), 5.0)
        writer.close()
        await writer.wait_closed()
        assert interim.startswith(b"HTTP/1.1 100 ")
        status, _, rest = split_response(answer)
        assert status == 200 and json.loads(rest)["model"] == "glm-direct-model"


async def test_a_head_over_64_kib_gets_431_and_a_body_announced_over_32_mib_gets_413() -> None:
    """Requests past the size limits are refused in the provider's error shape, then the
    connection closes: a header block over 64 KiB with 431, a Content-Length over 32 MiB with 413
    at once, without waiting for a body that would never be read."""
    async with Sandbox() as sandbox:
        port = sandbox.port("anthropic-direct")
        padded = raw_request(sandbox, "anthropic-direct", {}, headers={"x-padding": "a" * 70_000})
        status, _, body = split_response(await read_to_end(port, padded))
        assert status == 431 and json.loads(body)["type"] == "error"
        announced = raw_request(
            sandbox, "anthropic-direct", headers={"content-length": str(33 * 1024 * 1024)}
        )
        status, headers, body = split_response(await read_to_end(port, announced))
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body)["type"] == "error"
        assert sandbox.requests("anthropic-direct") == []


async def test_a_chunked_body_over_the_limit_gets_413(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunked body, whose length is not announced, is refused with 413 as soon as what has
    arrived passes the limit (lowered here to 1 KiB)."""
    monkeypatch.setattr("rmcli.sandbox.connection.MAX_BODY_BYTES", 1024)
    async with Sandbox() as sandbox:
        head = raw_request(sandbox, "glm-direct", headers={"transfer-encoding": "chunked"})
        head = head.replace(b"content-length: 0\r\n", b"")
        piece = b"x" * 800
        chunked = head + (b"%x\r\n%s\r\n" % (len(piece), piece)) * 2 + b"0\r\n\r\n"
        status, headers, body = split_response(await read_to_end(sandbox.port("glm-direct"), chunked))
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body)["error"]["message"]


async def test_a_client_that_leaves_mid_request_is_let_go_quietly() -> None:
    """A client that closes the connection in the middle of its request body gets no answer and
    leaves no log entry; the provider goes on serving others."""
    async with Sandbox() as sandbox, httpx.AsyncClient() as client:
        request = raw_request(sandbox, "openai-direct", chat_body("openai-direct"))
        reader, writer = await asyncio.open_connection("127.0.0.1", sandbox.port("openai-direct"))
        writer.write(request[:-10])
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        writer.close()
        await writer.wait_closed()
        assert (await post(client, sandbox, "openai-direct")).status_code == 200
        assert [r.outcome for r in sandbox.requests("openai-direct")] == [Outcome.OK]
