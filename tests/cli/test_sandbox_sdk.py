"""The official SDKs, pointed at the sandbox, complete chats and raise their own errors: faithfulness.

If the sandbox's wire formats drifted from the real ones (a missing field, a misnamed event, a
stream that does not end the documented way), these SDKs would fail to parse it.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pydantic
import pytest

from rmcli.sandbox import Sandbox

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

PROMPT = "Is a monorepo right for four services and two people?"


def openai_client(sandbox: Sandbox, name: str, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=sandbox.base_url(name), api_key=key or sandbox.key(name), max_retries=0
    )


def anthropic_client(sandbox: Sandbox, key: str | None = None) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=sandbox.base_url("anthropic-direct"),
        api_key=key or sandbox.key("anthropic-direct"),
        max_retries=0,
    )


@pytest.mark.parametrize("name", ["openai-direct", "glm-direct"])
async def test_openai_sdk_completes_a_chat_plain_and_streamed(name: str) -> None:
    async with Sandbox() as sandbox:
        client = openai_client(sandbox, name)
        try:
            messages: list[openai.types.chat.ChatCompletionMessageParam] = [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": PROMPT},
            ]
            completion = await client.chat.completions.create(
                model="sdk-model", messages=messages, max_tokens=400
            )
            text = completion.choices[0].message.content
            assert text is not None and name in text and "Is a monorepo right" in text
            assert completion.model == "sdk-model"
            assert completion.choices[0].finish_reason == "stop"
            assert completion.usage is not None
            assert completion.usage.completion_tokens == len(text.split())
            assert completion.usage.prompt_tokens == len(PROMPT.split()) + 2

            streamed = ""
            async with client.chat.completions.stream(
                model="sdk-model", messages=messages, stream_options={"include_usage": True}
            ) as stream:
                async for event in stream:
                    if event.type == "content.delta":
                        streamed += event.delta
                final = await stream.get_final_completion()
            assert streamed == text
            assert final.choices[0].message.content == text
            assert final.usage is not None
            assert final.usage.total_tokens == completion.usage.total_tokens

            models = await client.models.list()
            assert models.data[0].id == {"openai-direct": "gpt-4-turbo", "glm-direct": "glm-4.7"}[name]
        finally:
            await client.close()
        assert [r.stream for r in sandbox.requests(name)] == [False, True, False]


async def test_anthropic_sdk_completes_a_message_plain_and_streamed() -> None:
    async with Sandbox() as sandbox:
        client = anthropic_client(sandbox)
        try:
            message = await client.messages.create(
                model="claude-sdk",
                max_tokens=400,
                system="Answer briefly.",
                messages=[{"role": "user", "content": PROMPT}],
            )
            block = message.content[0]
            assert block.type == "text"
            assert "anthropic-direct" in block.text
            assert message.model == "claude-sdk"
            assert message.stop_reason == "end_turn"
            assert message.usage.output_tokens == len(block.text.split())

            async with client.messages.stream(
                model="claude-sdk",
                max_tokens=400,
                system="Answer briefly.",
                messages=[{"role": "user", "content": PROMPT}],
            ) as stream:
                pieces = [piece async for piece in stream.text_stream]
                final = await stream.get_final_message()
            assert len(pieces) >= 5
            assert "".join(pieces) == block.text
            assert final.usage.input_tokens == message.usage.input_tokens
            assert final.usage.output_tokens == message.usage.output_tokens
            assert final.stop_reason == "end_turn"

            models = await client.models.list()
            assert models.data[0].id == "claude-sonnet-4-5"
        finally:
            await client.close()


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("status:429", openai.RateLimitError),
        ("ratelimit:2", openai.RateLimitError),
        ("status:500", openai.InternalServerError),
        ("status:401", openai.AuthenticationError),
    ],
)
async def test_openai_sdk_raises_its_own_error_class(mode: str, error: type[openai.APIStatusError]) -> None:
    async with Sandbox({"openai-direct": mode}) as sandbox:
        client = openai_client(sandbox, "openai-direct")
        try:
            with pytest.raises(error) as caught:
                await client.chat.completions.create(
                    model="sdk-model", messages=[{"role": "user", "content": PROMPT}]
                )
        finally:
            await client.close()
        if mode.startswith("ratelimit"):
            assert caught.value.response.headers["retry-after"] == "2"
        if mode == "status:429":
            assert caught.value.code == "rate_limit_exceeded"
        assert len(sandbox.requests("openai-direct")) == 1  # max_retries=0: no retry


@pytest.mark.parametrize(
    ("mode", "error", "kind"),
    [
        ("status:529", anthropic.OverloadedError, "overloaded_error"),
        ("status:429", anthropic.RateLimitError, "rate_limit_error"),
        ("ratelimit:1", anthropic.RateLimitError, "rate_limit_error"),
        ("status:500", anthropic.InternalServerError, "api_error"),
    ],
)
async def test_anthropic_sdk_raises_its_own_error_class(
    mode: str, error: type[anthropic.APIStatusError], kind: str
) -> None:
    async with Sandbox({"anthropic-direct": mode}) as sandbox:
        client = anthropic_client(sandbox)
        try:
            with pytest.raises(error) as caught:
                await client.messages.create(
                    model="claude-sdk", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
                )
        finally:
            await client.close()
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == kind
        assert len(sandbox.requests("anthropic-direct")) == 1


async def test_sdks_refuse_a_wrong_key_with_their_authentication_error() -> None:
    async with Sandbox() as sandbox:
        oai = openai_client(sandbox, "glm-direct", key="not-the-key")
        ant = anthropic_client(sandbox, key="not-the-key")
        try:
            with pytest.raises(openai.AuthenticationError):
                await oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            with pytest.raises(anthropic.AuthenticationError):
                await ant.messages.create(
                    model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
                )
        finally:
            await oai.close()
            await ant.close()


async def test_sdk_streams_see_a_truncated_stream_as_an_error_not_a_complete_answer() -> None:
    async with Sandbox({"anthropic-direct": "truncate", "openai-direct": "truncate"}) as sandbox:
        ant = anthropic_client(sandbox)
        oai = openai_client(sandbox, "openai-direct")
        try:
            # The Anthropic SDK lets its HTTP client's protocol error through; the OpenAI one wraps it.
            with pytest.raises(Exception, match="incomplete chunked read"):
                async with ant.messages.stream(
                    model="claude-sdk", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
                ) as stream:
                    await stream.get_final_message()
            with pytest.raises(openai.APIConnectionError) as caught:
                async with oai.chat.completions.stream(
                    model="m", messages=[{"role": "user", "content": PROMPT}]
                ) as chat_stream:
                    await chat_stream.get_final_completion()
            assert "incomplete chunked read" in str(caught.value.__cause__)
        finally:
            await ant.close()
            await oai.close()


# -- the whole chat request: tools, tool results, images, structured output ------------------------

WEATHER_QUESTION = "What is the weather in Paris today?"
WEATHER_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
}
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


class GetWeather(pydantic.BaseModel):
    """The weather in a city."""

    city: str


class Weather(pydantic.BaseModel):
    city: str
    temperature: float
    sunny: bool


@pytest.mark.parametrize("name", ["openai-direct", "glm-direct"])
async def test_openai_sdk_parses_a_tool_call_plain_and_streamed_and_the_follow_up(name: str) -> None:
    tools: list[openai.types.chat.ChatCompletionToolParam] = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
    ]
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": WEATHER_QUESTION}
    ]
    async with Sandbox() as sandbox:
        client = openai_client(sandbox, name)
        try:
            completion = await client.chat.completions.create(
                model="sdk-model", messages=messages, tools=tools, tool_choice="auto", seed=7, top_p=0.9
            )
            choice = completion.choices[0]
            assert choice.finish_reason == "tool_calls"
            assert choice.message.tool_calls is not None
            call = choice.message.tool_calls[0]
            assert call.type == "function"
            assert call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": "Paris"}

            pieces: list[str] = []
            async with client.chat.completions.stream(
                model="sdk-model", messages=messages, tools=[openai.pydantic_function_tool(GetWeather)]
            ) as stream:
                async for event in stream:
                    if event.type == "tool_calls.function.arguments.delta":
                        pieces.append(event.arguments_delta)
                    elif event.type == "tool_calls.function.arguments.done":
                        assert event.parsed_arguments == GetWeather(city="Paris")
                final = await stream.get_final_completion()
            assert len([p for p in pieces if p]) >= 3
            assert final.choices[0].finish_reason == "tool_calls"
            assert final.choices[0].message.tool_calls is not None
            streamed_call = final.choices[0].message.tool_calls[0]
            assert streamed_call.function.name == "GetWeather"
            assert streamed_call.function.parsed_arguments == GetWeather(city="Paris")

            follow_up: list[openai.types.chat.ChatCompletionMessageParam] = [
                *messages,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": call.function.arguments},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
            ]
            answered = await client.chat.completions.create(
                model="sdk-model", messages=follow_up, tools=tools
            )
            assert answered.choices[0].finish_reason == "stop"
            assert answered.choices[0].message.content == "According to get_weather: 18 degrees and sunny"

            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(
                    model="sdk-model", messages=[messages[0], follow_up[2]], tools=tools
                )
            assert caught.value.param == "messages.[1].role"
        finally:
            await client.close()
        assert sandbox.requests(name)[0].body["tools"] == tools
        assert (sandbox.requests(name)[0].body["seed"], sandbox.requests(name)[0].body["top_p"]) == (7, 0.9)


async def test_openai_sdk_sends_an_image_and_parses_a_json_schema_answer() -> None:
    async with Sandbox() as sandbox:
        client = openai_client(sandbox, "openai-direct")
        try:
            image = await client.chat.completions.create(
                model="sdk-model",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is in this picture?"},
                            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}},
                        ],
                    }
                ],
            )
            text = image.choices[0].message.content
            assert text is not None and text.startswith("I received 1 image (image/png). ")

            parsed = await client.chat.completions.parse(
                model="sdk-model",
                messages=[{"role": "user", "content": WEATHER_QUESTION}],
                response_format=Weather,
            )
            assert parsed.choices[0].message.parsed == Weather(city="Paris", temperature=1, sunny=True)
        finally:
            await client.close()
        sent = sandbox.requests("openai-direct")[-1].body["response_format"]
        assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Weather"


async def test_anthropic_sdk_parses_a_tool_use_plain_and_streamed_and_the_follow_up() -> None:
    tools: list[anthropic.types.ToolParam] = [
        {"name": "get_weather", "description": "The weather in a city.", "input_schema": WEATHER_SCHEMA}
    ]
    question: anthropic.types.MessageParam = {"role": "user", "content": WEATHER_QUESTION}
    async with Sandbox() as sandbox:
        client = anthropic_client(sandbox)
        try:
            message = await client.messages.create(
                model="claude-sdk",
                max_tokens=400,
                system="Use the tools.",
                messages=[question],
                tools=tools,
                tool_choice={"type": "auto"},
                stop_sequences=["END"],
                extra_body={"top_p": 0.9},  # this SDK no longer has the parameter; the API still takes it
            )
            assert message.stop_reason == "tool_use"
            block = message.content[0]
            assert block.type == "tool_use"
            assert (block.name, block.input) == ("get_weather", {"city": "Paris"})

            partials: list[str] = []
            async with client.messages.stream(
                model="claude-sdk",
                max_tokens=400,
                messages=[question],
                tools=tools,
                tool_choice={"type": "any"},
            ) as stream:
                async for event in stream:
                    if event.type == "input_json":
                        partials.append(event.partial_json)
                final = await stream.get_final_message()
            assert len(partials) >= 3
            assert final.stop_reason == "tool_use"
            streamed = final.content[0]
            assert streamed.type == "tool_use" and streamed.input == {"city": "Paris"}

            follow_up: list[anthropic.types.MessageParam] = [
                question,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": block.id, "content": "18 degrees and sunny"}
                    ],
                },
            ]
            async with client.messages.stream(
                model="claude-sdk", max_tokens=400, messages=follow_up, tools=tools
            ) as stream:
                text = "".join([piece async for piece in stream.text_stream])
                answered = await stream.get_final_message()
            assert text == "According to get_weather: 18 degrees and sunny"
            assert answered.stop_reason == "end_turn"

            with pytest.raises(anthropic.BadRequestError) as caught:
                await client.messages.create(
                    model="claude-sdk", max_tokens=400, messages=[question, question], tools=tools
                )
            assert "roles must alternate" in str(caught.value)
        finally:
            await client.close()
        sent = sandbox.requests("anthropic-direct")[-2].body["messages"]
        assert sent[2]["content"][0]["tool_use_id"] == sent[1]["content"][0]["id"] == block.id


async def test_anthropic_sdk_sends_an_image_block() -> None:
    async with Sandbox() as sandbox:
        client = anthropic_client(sandbox)
        try:
            message = await client.messages.create(
                model="claude-sdk",
                max_tokens=400,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX},
                            },
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                            },
                            {"type": "text", "text": "What is in these pictures?"},
                        ],
                    }
                ],
            )
            block = message.content[0]
            assert block.type == "text"
            assert block.text.startswith("I received 2 images (image/png, url). This is anthropic-direct")
        finally:
            await client.close()
