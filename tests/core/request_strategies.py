"""Hypothesis strategies for whole chat requests: well-formed conversations with tools, tool calls,
tool results, images and response formats, as an OpenAI client would send them.

Every request drawn here is one that ``decode_openai_request`` accepts, so that the wire formats'
round-trip properties can start from any of them: system messages first, then turns where each
assistant's tool calls are answered, in order, by tool messages carrying their ids; user content
as a string or text and image parts (base64 ``data:`` URLs and ``https:`` URLs); tool-call
arguments the JSON text of an object; schemas JSON objects.
"""

from __future__ import annotations

import base64
import json

import msgspec
from hypothesis import strategies as st

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

__all__ = ["SCHEMAS", "arguments", "chat_requests", "image_urls", "tools"]

TEXTS = st.text(max_size=12)
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,9}", fullmatch=True)
IDS = st.from_regex(r"call_[A-Za-z0-9]{1,8}", fullmatch=True)
SCHEMAS = st.sampled_from(
    [
        b'{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}',
        b'{"type": "object", "properties": {"n": {"type": "integer"}}}',
        b'{"type":"object","additionalProperties":false,"properties":{}}',
    ]
).map(msgspec.Raw)
"""JSON schemas (objects), with and without spaces: they must travel byte for byte."""

JSON_VALUES = st.none() | st.booleans() | st.integers(-1000, 1000) | TEXTS


def arguments() -> st.SearchStrategy[str]:
    """The JSON text of an object, sometimes spaced, sometimes empty."""
    objects = st.dictionaries(TEXTS, JSON_VALUES, max_size=3)
    return st.one_of(
        objects.map(json.dumps),
        objects.map(lambda o: json.dumps(o, separators=(",", ":"))),
        st.just("{}"),
    )


_SIGNATURES = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "image/gif": b"GIF89a",
    "image/webp": b"RIFF\x00\x00\x00\x00WEBP",
}


def image_urls() -> st.SearchStrategy[str]:
    """A base64 ``data:`` URL of one of the usual image types, its bytes starting with that type's
    signature (as an image's do: a provider that reads it refuses a PNG called JPEG), or an
    ``https:`` URL."""
    data = st.builds(
        lambda media, raw: f"data:{media};base64,{base64.b64encode(_SIGNATURES[media] + raw).decode()}",
        st.sampled_from(sorted(_SIGNATURES)),
        st.binary(max_size=12),
    )
    https = NAMES.map(lambda name: f"https://example.com/{name}.png")
    return data | https


def tools() -> st.SearchStrategy[tuple[Tool, ...]]:
    """Up to three tools of distinct names, with or without a description and a schema."""
    tool = st.builds(Tool, name=NAMES, description=st.none() | TEXTS, parameters=st.none() | SCHEMAS)
    return st.lists(tool, max_size=3, unique_by=lambda t: t.name).map(tuple)


def _text_content() -> st.SearchStrategy[str | tuple[Part, ...]]:
    parts = st.lists(st.builds(TextPart, text=TEXTS), min_size=1, max_size=3).map(tuple)
    return TEXTS | parts


def _user_content(images: bool) -> st.SearchStrategy[str | tuple[Part, ...]]:
    if not images:
        return _text_content()
    part = st.builds(TextPart, text=TEXTS) | st.builds(ImagePart, url=image_urls())
    return TEXTS | st.lists(part, min_size=1, max_size=3).map(tuple)


@st.composite
def _turns(draw: st.DrawFn, *, images: bool, calls: bool) -> tuple[Message, ...]:
    """A user message, then maybe an assistant (with tool calls answered by tool messages)."""
    messages = [Message(role="user", content=draw(_user_content(images)))]
    if not draw(st.booleans()):
        return tuple(messages)
    tool_calls = ()
    if calls:
        made = draw(st.lists(st.builds(ToolCall, id=IDS, name=NAMES, arguments=arguments()), max_size=2))
        tool_calls = tuple({c.id: c for c in made}.values())
    content = "" if tool_calls and draw(st.booleans()) else draw(_text_content())
    messages.append(Message(role="assistant", content=content, tool_calls=tool_calls))
    messages += [Message(role="tool", content=draw(_text_content()), tool_call_id=c.id) for c in tool_calls]
    return tuple(messages)


@st.composite
def chat_requests(
    draw: st.DrawFn, *, images: bool = True, calls: bool = True, response_formats: bool = True
) -> ChatRequest:
    """A whole request: system messages, one to three turns, tools, a tool choice among them, a
    response format, sampling settings. ``images``, ``calls`` (tools, tool calls and results) and
    ``response_formats`` may be turned off for a format that cannot carry them."""
    systems = draw(st.lists(_text_content(), max_size=2))
    messages = tuple(Message(role="system", content=c) for c in systems)
    for turn in draw(st.lists(_turns(images=images, calls=calls), min_size=1, max_size=3)):
        messages += turn
    defined = draw(tools()) if calls else ()
    choices = st.sampled_from([ToolChoice(mode=m) for m in ("auto", "none", "required")])
    if defined:
        choices |= st.sampled_from([ToolChoice(mode="function", name=t.name) for t in defined])
    formats = st.none()
    if response_formats:
        formats |= st.sampled_from([ResponseFormat(type="text"), ResponseFormat(type="json_object")])
        formats |= st.builds(
            ResponseFormat,
            type=st.just("json_schema"),
            name=NAMES,
            schema=st.none() | SCHEMAS,
            strict=st.none() | st.booleans(),
        )
    return ChatRequest(
        messages=messages,
        max_tokens=draw(st.integers(1, 100_000)),
        temperature=draw(st.none() | st.floats(0, 2)),
        top_p=draw(st.none() | st.floats(0, 1)),
        seed=draw(st.none() | st.integers(-(2**53), 2**53)),
        stop=tuple(draw(st.lists(st.text(min_size=1, max_size=5), max_size=4))),
        tools=defined,
        tool_choice=draw(st.none() | choices) if calls else None,
        response_format=draw(formats),
        stream=draw(st.booleans()),
    )
