"""The official SDKs, pointed at the sandbox, complete chats and raise their own errors: faithfulness.

If the sandbox's wire formats drifted from the real ones (a missing field, a misnamed event, a
stream that does not end the documented way), these SDKs would fail to parse it.
"""

from __future__ import annotations

import anthropic
import openai
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
