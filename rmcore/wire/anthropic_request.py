"""A :class:`ChatRequest` as the body of an Anthropic Messages request, translated faithfully.

- System messages are lifted to the top-level ``system``: a string for one, a list of text blocks
  for several (in order; an empty one is left out, and so is anything but text).
- The other messages become blocks: text parts ``{type: text}``, images ``{type: image}`` (a
  ``data:`` URL as a ``base64`` source with its ``media_type``, any other URL as a ``url``
  source), an assistant's tool calls ``{type: tool_use, id, name, input}`` (``input`` the object the
  arguments' JSON text holds, sent byte for byte), and a tool message a ``{type: tool_result,
  tool_use_id, content}`` block in a user message. Consecutive messages of the same role (a tool
  message counts as a user one) are merged into one message holding all their blocks in order, as
  the format requires alternating roles. Empty text blocks are left out (the format refuses them);
  a message that is one text block is sent as a string.
- ``tools`` as ``{name, description, input_schema}`` (an empty object schema when a tool has no
  parameters); ``tool_choice`` ``auto``/``required``/``none``/``function`` as ``{type: auto}``,
  ``{type: any}``, ``{type: none}``, ``{type: tool, name}``; ``stop`` as ``stop_sequences`` (but
  those that are only whitespace, which the format refuses);
  ``top_p`` and ``max_tokens`` as they are; ``temperature`` too, except that Anthropic's scale
  ends at 1 where OpenAI's ends at 2: above 1 it is sent as 1 (both ends mean "most varied"),
  rather than have Anthropic refuse the request.
- ``seed`` has no equivalent and is dropped (the core has no logger: the router notes it).
- ``response_format`` ``json_schema`` (or ``json_object``) is carried by a forced tool, the
  format's documented way to get JSON of a given schema: a tool named after the schema
  (:func:`answer_tool_name`) whose ``input_schema`` is the schema (any object for
  ``json_object``), with ``tool_choice {type: tool, name}``. When the request has tools of its
  own, the answer tool is offered beside them and the model must call one of them (``{type:
  any}``; a named function stays forced). The reply's call of that tool is turned back into the
  answer's text, its input as JSON (see ``rmcore.wire.anthropic``), so the caller gets what an
  OpenAI provider would have sent. A request tool of the same name as the answer tool would be
  taken for it.

An assistant's tool-call arguments that are not the JSON text of an object (a model's broken
output; :func:`rmcore.chat_request.decode_openai_request` refuses them) are sent as
``{"arguments": TEXT}`` so that nothing is lost; blank arguments as ``{}``.
"""

from __future__ import annotations

import base64
import re
import urllib.parse

import msgspec

from rmcore.requests import ChatRequest, ImagePart, Message, Part, ResponseFormat, TextPart, Tool, ToolChoice

__all__ = [
    "DEFAULT_ANSWER_TOOL", "EMPTY_SCHEMA", "MAX_TEMPERATURE", "answer_tool_name", "anthropic_body",
    "sendable_stops",
]

DEFAULT_ANSWER_TOOL = "json_answer"
"""The answer tool's name when the response format names no schema (``json_object``)."""

EMPTY_SCHEMA = b'{"type":"object","properties":{}}'
"""The ``input_schema`` of a tool defined without parameters (the format requires one)."""

MAX_TEMPERATURE = 1.0
"""The top of Anthropic's temperature scale (OpenAI's goes to 2)."""

_ANY_OBJECT = b'{"type":"object"}'
_ANSWER_DESCRIPTION = (
    "Give your final answer by calling this tool: its input is the answer, as JSON valid against this schema."
)
_DATA_URL = re.compile(r"data:(?P<media>[^;,]*)(?P<params>(?:;[^;,]*)*?)(?P<b64>;base64)?,(?P<data>.*)", re.S)


class _Out(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A part of the body as sent: a field left at its default is left out."""


class _TextBlock(_Out, frozen=True, tag="text"):
    text: str


class _Base64Source(_Out, frozen=True, tag="base64"):
    media_type: str
    data: str


class _UrlSource(_Out, frozen=True, tag="url"):
    url: str


class _ImageBlock(_Out, frozen=True, tag="image"):
    source: _Base64Source | _UrlSource


class _ToolUseBlock(_Out, frozen=True, tag="tool_use"):
    id: str
    name: str
    input: msgspec.Raw


class _ToolResultBlock(_Out, frozen=True, tag="tool_result"):
    tool_use_id: str
    content: str | tuple[_TextBlock | _ImageBlock, ...]


_Block = _TextBlock | _ImageBlock | _ToolUseBlock | _ToolResultBlock


class _MessageOut(_Out, frozen=True):
    role: str
    content: str | tuple[_Block, ...]


class _ToolOut(_Out, frozen=True, kw_only=True):
    name: str
    description: str | None = None
    input_schema: msgspec.Raw


class _ToolChoiceOut(_Out, frozen=True, kw_only=True):
    type: str
    name: str | None = None


class _Body(_Out, frozen=True, kw_only=True):
    model: str
    system: str | tuple[_TextBlock, ...] | None = None
    messages: tuple[_MessageOut, ...]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: tuple[str, ...] = ()
    tools: tuple[_ToolOut, ...] = ()
    tool_choice: _ToolChoiceOut | None = None
    stream: bool = False


def answer_tool_name(request: ChatRequest) -> str | None:
    """The name of the tool that carries ``request``'s JSON answer, or ``None`` when it asks for
    none: the schema's name (:data:`DEFAULT_ANSWER_TOOL` when it has none)."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    return fmt.name or DEFAULT_ANSWER_TOOL


def sendable_stops(stops: tuple[str, ...]) -> tuple[str, ...]:
    """The stop sequences the Messages API takes: it refuses one that is only whitespace (the
    whole request, with a 400), so those are left out."""
    return tuple(stop for stop in stops if stop.strip())


def anthropic_body(model: str, request: ChatRequest) -> bytes:
    """The JSON body asking ``model`` for ``request`` (see the module's docstring)."""
    tools, choice = _tools_and_choice(request)
    body = _Body(
        model=model,
        system=_system(request.messages),
        messages=_merged(request.messages),
        max_tokens=request.max_tokens,
        temperature=None if request.temperature is None else min(request.temperature, MAX_TEMPERATURE),
        top_p=request.top_p,
        stop_sequences=sendable_stops(request.stop),
        tools=tools,
        tool_choice=choice,
        stream=request.stream,
        # request.seed: no equivalent in the Messages API; dropped.
    )
    return msgspec.json.encode(body)


def _system(messages: tuple[Message, ...]) -> str | tuple[_TextBlock, ...] | None:
    texts = [m.text for m in messages if m.role == "system" and m.text]
    if not texts:
        return None
    return texts[0] if len(texts) == 1 else tuple(_TextBlock(text=t) for t in texts)


def _merged(messages: tuple[Message, ...]) -> tuple[_MessageOut, ...]:
    """The conversation without its system messages, consecutive same-role messages merged."""
    runs: list[tuple[str, list[_Block]]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if runs and runs[-1][0] == role:
            runs[-1][1].extend(blocks)
        else:
            runs.append((role, blocks))
    return tuple(_MessageOut(role=role, content=_content(blocks)) for role, blocks in runs)


def _content(blocks: list[_Block]) -> str | tuple[_Block, ...]:
    kept = [b for b in blocks if not (isinstance(b, _TextBlock) and not b.text)]
    if not kept:
        return ""
    if len(kept) == 1 and isinstance(kept[0], _TextBlock):
        return kept[0].text
    return tuple(kept)


def _blocks(message: Message) -> list[_Block]:
    if message.role == "tool":
        result = [b for b in _parts(message.content) if not (isinstance(b, _TextBlock) and not b.text)]
        content = message.content if isinstance(message.content, str) else tuple(result)
        return [_ToolResultBlock(tool_use_id=message.tool_call_id or "", content=content)]
    blocks: list[_Block] = list(_parts(message.content))
    blocks += [_ToolUseBlock(id=c.id, name=c.name, input=_input(c.arguments)) for c in message.tool_calls]
    return blocks


def _parts(content: str | tuple[Part, ...]) -> list[_TextBlock | _ImageBlock]:
    if isinstance(content, str):
        return [_TextBlock(text=content)]
    return [_TextBlock(text=p.text) if isinstance(p, TextPart) else _image(p) for p in content]


def _image(part: ImagePart) -> _ImageBlock:
    """A ``data:`` URL as a base64 source with its media type; any other URL as a url source."""
    match = _DATA_URL.fullmatch(part.url)
    if match is None:
        return _ImageBlock(source=_UrlSource(url=part.url))
    data = match["data"]
    if not match["b64"]:
        data = base64.b64encode(urllib.parse.unquote_to_bytes(data)).decode("ascii")
    return _ImageBlock(source=_Base64Source(media_type=match["media"] or "text/plain", data=data))


def _input(arguments: str) -> msgspec.Raw:
    """A tool call's arguments as the object ``input`` (see the module's docstring)."""
    if not arguments.strip():
        return msgspec.Raw(b"{}")
    try:
        if isinstance(msgspec.json.decode(arguments), dict):
            return msgspec.Raw(arguments.encode())
    except (msgspec.DecodeError, RecursionError):
        pass
    return msgspec.Raw(msgspec.json.encode({"arguments": arguments}))


def _tools_and_choice(request: ChatRequest) -> tuple[tuple[_ToolOut, ...], _ToolChoiceOut | None]:
    tools = [_tool(t) for t in request.tools]
    choice = _tool_choice(request.tool_choice) if request.tools else None  # none to choose among
    answer = answer_tool_name(request)
    if answer is None or request.response_format is None:
        return tuple(tools), choice
    tools.append(_answer_tool(answer, request.response_format))
    mode = request.tool_choice.mode if request.tool_choice is not None else "auto"
    if not request.tools or mode == "none":
        choice = _ToolChoiceOut(type="tool", name=answer)
    elif mode != "function":
        choice = _ToolChoiceOut(type="any")
    return tuple(tools), choice


def _tool(tool: Tool) -> _ToolOut:
    schema = tool.parameters if tool.parameters is not None else msgspec.Raw(EMPTY_SCHEMA)
    return _ToolOut(name=tool.name, description=tool.description, input_schema=schema)


def _answer_tool(name: str, fmt: ResponseFormat) -> _ToolOut:
    schema = fmt.schema if fmt.schema is not None else msgspec.Raw(_ANY_OBJECT)
    return _ToolOut(name=name, description=_ANSWER_DESCRIPTION, input_schema=schema)


def _tool_choice(choice: ToolChoice | None) -> _ToolChoiceOut | None:
    if choice is None:
        return None
    match choice.mode:
        case "auto":
            return _ToolChoiceOut(type="auto")
        case "required":
            return _ToolChoiceOut(type="any")
        case "none":
            return _ToolChoiceOut(type="none")
        case "function":
            return _ToolChoiceOut(type="tool", name=choice.name)
