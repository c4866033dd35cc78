"""What a chat request asks beyond text, read from the OpenAI or the Anthropic shape.

The two shapes do not overlap (an OpenAI tool is ``{type: "function", function}``, an Anthropic one
``{name, input_schema}``; an OpenAI tool result is a ``tool`` message, an Anthropic one a
``tool_result`` block; an OpenAI image an ``image_url`` part, an Anthropic one an ``image``
block), so one reader serves both. It reads requests that the format has already accepted
(``validation.py``), and never changes them: the request log keeps the bodies as received.

What the sandbox does with it:

- a request with tools whose tool choice is not ``none`` is answered with a call to the forced
  tool, or to the first one; with tool choice ``auto``, only when the conversation does not end
  with tool results (then the model answers in text, using them). A forced choice (OpenAI
  ``required`` or a named function, Anthropic ``any`` or ``tool``) always calls. The arguments
  are made up from the tool's JSON schema and the user texts, the last first (``schema.py``);
- a conversation ending with tool results is answered "According to NAME: RESULT";
- ``response_format`` ``json_object`` is answered ``{"answer": TEXT}``, ``json_schema`` (and
  Anthropic's ``output_format`` / ``output_config.format``) with an object made up from the schema;
- images are counted, and named by their media type (``url`` for one given by URL).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rmcli.sandbox.schema import example_object, pick_word_in

__all__ = ["Chat", "Tool", "ToolCall", "ToolResult", "content_text", "planned_call", "read_chat"]


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the request offers."""

    name: str
    schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool's result the conversation ends with."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The call the sandbox answers with."""

    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        """The arguments as JSON text, as an OpenAI tool call carries them: ``{"city": "Paris"}``."""
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Chat:
    """What the sandbox reads of a chat request beyond its text."""

    user_text: str = ""
    """The last user message that has text."""
    user_texts: tuple[str, ...] = ()
    """Every user message that has text, in order."""
    tools: tuple[Tool, ...] = ()
    choice: str = "auto"
    """``auto``, ``none``, ``required`` (OpenAI ``required``, Anthropic ``any``) or ``named``."""
    forced: str | None = None
    """The tool a ``named`` choice names."""
    results: tuple[ToolResult, ...] = ()
    images: tuple[str, ...] = ()
    """The media type of each image, ``url`` for one given by URL, in order."""
    json_answer: bool = False
    schema: Mapping[str, Any] | None = None
    """The JSON schema the answer must follow (``json_schema``), ``None`` for any JSON object."""
    stops: tuple[str, ...] = field(default=())


def content_text(content: object) -> str:
    """The text of a content: a string, or a list of parts of which text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _messages(request: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = request.get("messages")
    return [m for m in messages if isinstance(m, Mapping)] if isinstance(messages, list) else []


def _blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) else []


def _tools(request: Mapping[str, Any]) -> tuple[Tool, ...]:
    tools = request.get("tools")
    found: list[Tool] = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function")
        if isinstance(function, Mapping):  # OpenAI
            name, schema = function.get("name"), function.get("parameters")
        elif tool.get("type") in (None, "custom"):  # Anthropic (typed ones are server tools)
            name, schema = tool.get("name"), tool.get("input_schema")
        else:
            continue
        if isinstance(name, str) and name:
            found.append(Tool(name, schema if isinstance(schema, Mapping) else {}))
    return tuple(found)


def _choice(request: Mapping[str, Any]) -> tuple[str, str | None]:
    choice = request.get("tool_choice")
    if choice in ("auto", "none", "required"):
        return str(choice), None
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind == "function":  # OpenAI
            function = choice.get("function")
            name = function.get("name") if isinstance(function, Mapping) else None
            return "named", name if isinstance(name, str) else None
        if kind == "tool":  # Anthropic
            name = choice.get("name")
            return "named", name if isinstance(name, str) else None
        if kind in ("auto", "none"):
            return str(kind), None
        if kind == "any":
            return "required", None
    return "auto", None


def _call_names(messages: list[Mapping[str, Any]]) -> dict[str, str]:
    """Each tool call's id and the name of the tool it called, from the assistant messages."""
    names: dict[str, str] = {}
    for message in messages:
        if message.get("role") != "assistant":
            continue
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping) and isinstance(call.get("id"), str):
                names[call["id"]] = str(function.get("name"))
        for block in _blocks(message):
            if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                names[block["id"]] = str(block.get("name"))
    return names


def _results(messages: list[Mapping[str, Any]]) -> tuple[ToolResult, ...]:
    if not messages:
        return ()
    names = _call_names(messages)
    last = messages[-1]
    if last.get("role") == "tool":  # OpenAI: the tool messages after the last other one
        trailing: list[Mapping[str, Any]] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            trailing.insert(0, message)
        return tuple(
            ToolResult(names.get(str(m.get("tool_call_id")), "the tool"), content_text(m.get("content")))
            for m in trailing
        )
    if last.get("role") == "user":  # Anthropic: the tool_result blocks of the last user message
        return tuple(
            ToolResult(names.get(str(b.get("tool_use_id")), "the tool"), content_text(b.get("content")))
            for b in _blocks(last)
            if b.get("type") == "tool_result"
        )
    return ()


def _image_type(block: Mapping[str, Any]) -> str | None:
    if block.get("type") == "image_url":  # OpenAI
        image = block.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else None
        if isinstance(url, str) and url.startswith("data:"):
            return url[len("data:") :].partition(";")[0].partition(",")[0] or "url"
        return "url"
    if block.get("type") == "image":  # Anthropic
        source = block.get("source")
        if isinstance(source, Mapping) and source.get("type") == "base64":
            return str(source.get("media_type"))
        return "url"
    return None


def _json_ask(request: Mapping[str, Any]) -> tuple[bool, Mapping[str, Any] | None]:
    response_format = request.get("response_format")  # OpenAI
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "json_object":
            return True, None
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, Mapping) else None
            return True, schema if isinstance(schema, Mapping) else {}
    config = request.get("output_config")  # Anthropic, and its beta ``output_format`` before it
    for output in (
        config.get("format") if isinstance(config, Mapping) else None,
        request.get("output_format"),
    ):
        if isinstance(output, Mapping) and output.get("type") == "json_schema":
            schema = output.get("schema")
            return True, schema if isinstance(schema, Mapping) else {}
    return False, None


def _stops(request: Mapping[str, Any]) -> tuple[str, ...]:
    stop = request.get("stop", request.get("stop_sequences"))
    if isinstance(stop, str):
        return (stop,) if stop else ()
    return tuple(s for s in stop if isinstance(s, str) and s) if isinstance(stop, list) else ()


def read_chat(request: Mapping[str, Any], *, text_only: bool = False) -> Chat:
    """What ``request`` asks beyond text; with ``text_only`` (a format that carries nothing else,
    and ignores the fields it does not know), only its last user text."""
    messages = _messages(request)
    user_texts = tuple(
        text for m in messages if m.get("role") == "user" and (text := content_text(m.get("content"))).strip()
    )
    user_text = user_texts[-1] if user_texts else ""
    if text_only:
        return Chat(user_text=user_text, user_texts=user_texts)
    choice, forced = _choice(request)
    json_answer, schema = _json_ask(request)
    images = tuple(kind for m in messages for block in _blocks(m) if (kind := _image_type(block)) is not None)
    return Chat(
        user_text=user_text,
        user_texts=user_texts,
        tools=_tools(request),
        choice=choice,
        forced=forced,
        results=_results(messages),
        images=images,
        json_answer=json_answer,
        schema=schema,
        stops=_stops(request),
    )


def planned_call(chat: Chat) -> ToolCall | None:
    """The tool call that answers ``chat``, or ``None`` when it is answered with text."""
    if not chat.tools or chat.choice == "none" or (chat.choice == "auto" and chat.results):
        return None
    tool = next((t for t in chat.tools if t.name == chat.forced), chat.tools[0])
    return ToolCall(tool.name, example_object(tool.schema, pick_word_in(chat.user_texts)))
