"""A :class:`ChatRequest` as the body of an OpenAI chat-completions request: every field as given.

The request value was modelled on this format, so the translation is one to one: messages with
their parts (``{type: text, text}``, ``{type: image_url, image_url: {url}}``), an assistant's
``tool_calls`` as ``{id, type: function, function: {name, arguments}}`` (its ``content`` null when
it has none), a tool message's ``tool_call_id``, ``tools``, ``tool_choice``, ``response_format``,
``stop``, ``temperature``, ``top_p``, ``seed``, ``max_tokens``. A simple request (a string content
per message, no tools) is the body the format always had. :func:`rmcore.chat_request.decode_openai_request`
reads such a body back into the same request.
"""

from __future__ import annotations

import msgspec

from rmcore.requests import ChatRequest, ImagePart, Message, Part, ResponseFormat, Tool, ToolChoice

__all__ = ["DEFAULT_SCHEMA_NAME", "openai_body"]

DEFAULT_SCHEMA_NAME = "response"
"""The ``json_schema.name`` sent for a JSON schema given without a name (the format requires one)."""


class _Out(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A part of the body as sent: a field left at its default is left out."""


class _TextOut(_Out, frozen=True, tag="text"):
    text: str


class _ImageUrlOut(_Out, frozen=True):
    url: str


class _ImageOut(_Out, frozen=True, tag="image_url"):
    image_url: _ImageUrlOut


class _FunctionCallOut(_Out, frozen=True):
    name: str
    arguments: str


class _ToolCallOut(_Out, frozen=True, kw_only=True):
    id: str
    type: str  # always "function"; a default would be left out of the body
    function: _FunctionCallOut


class _MessageOut(_Out, frozen=True, kw_only=True):
    role: str
    content: str | tuple[_TextOut | _ImageOut, ...] | None
    tool_calls: tuple[_ToolCallOut, ...] = ()
    tool_call_id: str | None = None


class _FunctionOut(_Out, frozen=True, kw_only=True):
    name: str
    description: str | None = None
    parameters: msgspec.Raw | None = None


class _ToolOut(_Out, frozen=True, kw_only=True):
    type: str
    function: _FunctionOut


class _NamedFunctionOut(_Out, frozen=True):
    name: str


class _NamedChoiceOut(_Out, frozen=True, kw_only=True):
    type: str
    function: _NamedFunctionOut


class _JsonSchemaOut(_Out, frozen=True, kw_only=True):
    name: str
    schema: msgspec.Raw | None = None
    strict: bool | None = None


class _FormatOut(_Out, frozen=True, kw_only=True):
    type: str
    json_schema: _JsonSchemaOut | None = None


class _StreamOptions(_Out, frozen=True):
    include_usage: bool


class _Body(_Out, frozen=True, kw_only=True):
    model: str
    messages: tuple[_MessageOut, ...]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[_ToolOut, ...] = ()
    tool_choice: str | _NamedChoiceOut | None = None
    response_format: _FormatOut | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None


def openai_body(model: str, request: ChatRequest) -> bytes:
    """The JSON body asking ``model`` for ``request``. A streamed request asks for
    ``stream_options.include_usage``, so that the last chunk carries the token counts."""
    body = _Body(
        model=model,
        messages=tuple(_message(m) for m in request.messages),
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop=request.stop,
        tools=tuple(_tool(t) for t in request.tools),
        # A choice among no tools is refused by the API ("only allowed when tools are specified").
        tool_choice=_tool_choice(request.tool_choice) if request.tools else None,
        response_format=_response_format(request.response_format),
        stream=request.stream,
        stream_options=_StreamOptions(include_usage=True) if request.stream else None,
    )
    return msgspec.json.encode(body)


def _message(message: Message) -> _MessageOut:
    calls = tuple(
        _ToolCallOut(id=c.id, type="function", function=_FunctionCallOut(name=c.name, arguments=c.arguments))
        for c in message.tool_calls
    )
    content: str | tuple[_TextOut | _ImageOut, ...] | None = _content(message.content)
    if calls and not content:
        content = None  # an assistant message that only calls tools: its content is null
    return _MessageOut(
        role=message.role, content=content, tool_calls=calls, tool_call_id=message.tool_call_id
    )


def _content(content: str | tuple[Part, ...]) -> str | tuple[_TextOut | _ImageOut, ...]:
    if isinstance(content, str):
        return content
    return tuple(
        _ImageOut(image_url=_ImageUrlOut(url=p.url)) if isinstance(p, ImagePart) else _TextOut(text=p.text)
        for p in content
    )


def _tool(tool: Tool) -> _ToolOut:
    return _ToolOut(
        type="function",
        function=_FunctionOut(name=tool.name, description=tool.description, parameters=tool.parameters),
    )


def _tool_choice(choice: ToolChoice | None) -> str | _NamedChoiceOut | None:
    if choice is None:
        return None
    if choice.mode == "function":
        return _NamedChoiceOut(type="function", function=_NamedFunctionOut(name=choice.name or ""))
    return choice.mode


def _response_format(fmt: ResponseFormat | None) -> _FormatOut | None:
    if fmt is None:
        return None
    if fmt.type != "json_schema":
        return _FormatOut(type=fmt.type)
    schema = _JsonSchemaOut(name=fmt.name or DEFAULT_SCHEMA_NAME, schema=fmt.schema, strict=fmt.strict)
    return _FormatOut(type="json_schema", json_schema=schema)
