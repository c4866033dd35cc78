"""An OpenAI chat-completions request body (JSON bytes) read into a :class:`ChatRequest`.

This is how a whole request enters from outside (``rmgr ask --request``, the gateway): the
OpenAI shape, which every tool that embeds a model already speaks. Whatever is wrong is refused
with the ``$.path`` of the first thing wrong, e.g. ``$.messages[2].tool_calls[0].function.arguments:
expected a string, got an integer``; nothing is silently left out that would change what the
provider must do.

What is read:

- ``messages``: roles ``system`` (and ``developer``, its newer name, read as ``system``), ``user``,
  ``assistant`` and ``tool``; ``content`` a string or a list of ``{type: text, text}`` and (user
  messages) ``{type: image_url, image_url: {url, detail?}}`` parts; an assistant's ``tool_calls``
  ``[{id, type: function, function: {name, arguments}}]`` (``arguments`` the JSON text of an object,
  or empty; ``content`` may then be null); a tool message's ``tool_call_id``. An assistant message
  copied back from a reply may carry ``refusal``, ``function_call`` or ``audio`` as null.
- ``tools`` ``[{type: function, function: {name, description?, parameters?, strict?}}]``,
  ``tool_choice`` (``auto``, ``none``, ``required`` or ``{type: function, function: {name}}``, a
  name among ``tools``), ``response_format`` (``text``, ``json_object``, ``json_schema`` with
  ``json_schema: {name, schema?, strict?, description?}``), ``stop`` (a string or a list),
  ``temperature`` (0 to 2), ``top_p`` (0 to 1), ``seed``, ``max_tokens`` or
  ``max_completion_tokens`` (both only when equal; neither: the default), ``stream`` (OpenAI's
  default, false).
- ``model``: returned beside the request (:class:`OpenAIRequest`), ``None`` when absent; the
  caller decides whether it overrides the provider's model.

Accepted and dropped, because they change nothing a provider must do: ``user`` (an end-user id
for abuse monitoring), ``n: 1``, ``stream_options`` (the wire formats ask for usage themselves),
``parallel_tool_calls: true`` (every format's default), an image's ``detail`` (a resolution hint),
a tool's ``strict`` and a JSON schema's ``description`` (hints; the schema itself is carried).
Every other key is refused with its path (``$.logprobs: unknown key``), and so are ``n`` other than
1 and ``parallel_tool_calls: false``: an answer different from what the caller asked for must not
come back as if it were.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from returns.result import Failure, Result, Success

from rmcore.base import Base
from rmcore.problems import Problem, ProblemKind
from rmcore.requests import (
    DEFAULT_MAX_TOKENS,
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

__all__ = ["OpenAIRequest", "decode_openai_chat", "decode_openai_request"]


class OpenAIRequest(Base, frozen=True):
    """A decoded OpenAI chat request: the request itself, and the ``model`` it named (or ``None``)."""

    request: ChatRequest
    model: str | None = None


def decode_openai_request(body: bytes) -> Result[ChatRequest, Problem]:
    """``body`` (an OpenAI chat-completions request, JSON) as a :class:`ChatRequest`, its ``model``
    ignored; or the ``invalid_request`` problem whose ``subject`` is the ``$.path`` at fault."""
    return decode_openai_chat(body).map(lambda decoded: decoded.request)


def decode_openai_chat(body: bytes) -> Result[OpenAIRequest, Problem]:
    """``body`` read whole: the request and the ``model`` it named (see the module's docstring)."""
    try:
        wire = msgspec.json.decode(body, type=_Body)
    except msgspec.ValidationError as error:
        return Failure(_invalid(*_reworded(str(error))))
    except (msgspec.DecodeError, UnicodeError, RecursionError) as error:
        return Failure(_invalid("$", f"not valid JSON ({error})"))
    return _request(wire).map(lambda request: OpenAIRequest(request=request, model=wire.model))


def _invalid(path: str, message: str) -> Problem:
    return Problem(kind=ProblemKind.INVALID_REQUEST, message=f"{path}: {message}", subject=path)


# --- the wire shape ------------------------------------------------------------------------------


class _Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A part of the request body as sent: unknown keys are errors, with their path."""


class _TextIn(_Wire, frozen=True, tag="text"):
    text: str


class _ImageUrlIn(_Wire, frozen=True):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class _ImageIn(_Wire, frozen=True, tag="image_url"):
    image_url: _ImageUrlIn


class _FunctionCallIn(_Wire, frozen=True):
    name: str
    arguments: str


class _ToolCallIn(_Wire, frozen=True):
    id: str
    type: Literal["function"]
    function: _FunctionCallIn


class _SystemIn(_Wire, frozen=True, tag_field="role", tag="system"):
    content: str | list[_TextIn]


class _DeveloperIn(_Wire, frozen=True, tag_field="role", tag="developer"):
    content: str | list[_TextIn]


class _UserIn(_Wire, frozen=True, tag_field="role", tag="user"):
    content: str | list[_TextIn | _ImageIn]


class _AssistantIn(_Wire, frozen=True, tag_field="role", tag="assistant"):
    content: str | list[_TextIn] | None = None
    tool_calls: list[_ToolCallIn] | None = None
    refusal: None = None
    function_call: None = None
    audio: None = None


class _ToolMessageIn(_Wire, frozen=True, tag_field="role", tag="tool"):
    content: str | list[_TextIn]
    tool_call_id: str


_MessageIn = _SystemIn | _DeveloperIn | _UserIn | _AssistantIn | _ToolMessageIn


class _FunctionIn(_Wire, frozen=True):
    name: str
    description: str | None = None
    parameters: msgspec.Raw = msgspec.Raw()
    strict: bool | None = None


class _ToolDefIn(_Wire, frozen=True):
    type: Literal["function"]
    function: _FunctionIn


class _NamedFunction(_Wire, frozen=True):
    name: str


class _NamedChoice(_Wire, frozen=True):
    type: Literal["function"]
    function: _NamedFunction


class _TextFormat(_Wire, frozen=True, tag="text"):
    pass


class _JsonObjectFormat(_Wire, frozen=True, tag="json_object"):
    pass


class _JsonSchemaIn(_Wire, frozen=True):
    name: str
    schema: msgspec.Raw = msgspec.Raw()
    strict: bool | None = None
    description: str | None = None


class _JsonSchemaFormat(_Wire, frozen=True, tag="json_schema"):
    json_schema: _JsonSchemaIn


class _StreamOptionsIn(_Wire, frozen=True):
    include_usage: bool | None = None


_Tokens = Annotated[int, msgspec.Meta(ge=1)]


class _Body(_Wire, frozen=True):
    messages: list[_MessageIn]
    model: str | None = None
    tools: list[_ToolDefIn] | None = None
    tool_choice: Literal["auto", "none", "required"] | _NamedChoice | None = None
    response_format: _TextFormat | _JsonObjectFormat | _JsonSchemaFormat | None = None
    stop: str | list[str] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    seed: int | None = None
    max_tokens: _Tokens | None = None
    max_completion_tokens: _Tokens | None = None
    stream: bool | None = None
    stream_options: _StreamOptionsIn | None = None
    user: str | None = None
    n: Literal[1] | None = None
    parallel_tool_calls: bool | None = None


# --- from the wire shape to the request ----------------------------------------------------------


def _request(wire: _Body) -> Result[ChatRequest, Problem]:
    """The request the decoded body describes, once the rules across fields hold."""
    if (problem := _first_problem(wire)) is not None:
        return Failure(problem)
    return Success(
        ChatRequest(
            messages=tuple(_message(m) for m in wire.messages),
            max_tokens=wire.max_completion_tokens or wire.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=wire.temperature,
            top_p=wire.top_p,
            seed=wire.seed,
            stop=(wire.stop,) if isinstance(wire.stop, str) else tuple(wire.stop or ()),
            tools=tuple(_tool(t) for t in wire.tools or ()),
            tool_choice=_tool_choice(wire.tool_choice),
            response_format=_response_format(wire.response_format),
            stream=bool(wire.stream),
        )
    )


def _first_problem(wire: _Body) -> Problem | None:
    """The first rule across fields that ``wire`` breaks, in document order."""
    if not wire.messages:
        return _invalid("$.messages", "expected at least one message")
    for i, message in enumerate(wire.messages):
        if isinstance(message, _AssistantIn):
            for j, call in enumerate(message.tool_calls or ()):
                if not _is_object_text(call.function.arguments, empty_ok=True):
                    where = f"$.messages[{i}].tool_calls[{j}].function.arguments"
                    return _invalid(where, "expected the JSON text of an object")
    names = [t.function.name for t in wire.tools or ()]
    for i, tool in enumerate(wire.tools or ()):
        if (schema := _schema(tool.function.parameters)) is not None and not _is_object_text(bytes(schema)):
            return _invalid(f"$.tools[{i}].function.parameters", "expected a JSON schema (an object)")
    if isinstance(wire.tool_choice, _NamedChoice) and wire.tool_choice.function.name not in names:
        name = wire.tool_choice.function.name
        return _invalid("$.tool_choice.function.name", f"no tool named {name!r} in $.tools")
    fmt = wire.response_format
    schema = _schema(fmt.json_schema.schema) if isinstance(fmt, _JsonSchemaFormat) else None
    if schema is not None and not _is_object_text(bytes(schema)):
        return _invalid("$.response_format.json_schema.schema", "expected a JSON schema (an object)")
    if wire.max_tokens and wire.max_completion_tokens and wire.max_tokens != wire.max_completion_tokens:
        return _invalid("$.max_completion_tokens", "differs from $.max_tokens: give one of them")
    if wire.parallel_tool_calls is False:
        return _invalid("$.parallel_tool_calls", "false is not supported (leave it out)")
    return None


def _schema(raw: msgspec.Raw) -> msgspec.Raw | None:
    """A JSON schema as given (its own bytes, not a view of the whole body), ``None`` when absent
    or ``null``."""
    return None if not raw or bytes(raw).strip() == b"null" else msgspec.Raw(bytes(raw))


def _is_object_text(text: str | bytes, *, empty_ok: bool = False) -> bool:
    """Whether ``text`` is the JSON text of an object (or blank, when ``empty_ok``)."""
    if empty_ok and not text.strip():
        return True
    try:
        return isinstance(msgspec.json.decode(text), dict)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return False


def _message(wire: _MessageIn) -> Message:
    match wire:
        case _SystemIn() | _DeveloperIn():
            return Message(role="system", content=_content(wire.content))
        case _UserIn():
            return Message(role="user", content=_content(wire.content))
        case _AssistantIn():
            calls = tuple(
                ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                for c in wire.tool_calls or ()
            )
            content = "" if wire.content is None else _content(wire.content)
            return Message(role="assistant", content=content, tool_calls=calls)
        case _ToolMessageIn():
            return Message(role="tool", content=_content(wire.content), tool_call_id=wire.tool_call_id)


def _content(wire: str | list[_TextIn] | list[_TextIn | _ImageIn]) -> str | tuple[Part, ...]:
    if isinstance(wire, str):
        return wire
    return tuple(
        TextPart(text=p.text) if isinstance(p, _TextIn) else ImagePart(url=p.image_url.url) for p in wire
    )


def _tool(wire: _ToolDefIn) -> Tool:
    f = wire.function
    return Tool(name=f.name, description=f.description, parameters=_schema(f.parameters))


def _tool_choice(wire: str | _NamedChoice | None) -> ToolChoice | None:
    match wire:
        case None:
            return None
        case _NamedChoice():
            return ToolChoice(mode="function", name=wire.function.name)
        case "auto" | "none" | "required":
            return ToolChoice(mode=wire)
    raise AssertionError(f"unreachable: tool_choice {wire!r}")  # pragma: no cover


def _response_format(
    wire: _TextFormat | _JsonObjectFormat | _JsonSchemaFormat | None,
) -> ResponseFormat | None:
    match wire:
        case None:
            return None
        case _TextFormat():
            return ResponseFormat(type="text")
        case _JsonObjectFormat():
            return ResponseFormat(type="json_object")
        case _JsonSchemaFormat(json_schema=s):
            return ResponseFormat(type="json_schema", name=s.name, schema=_schema(s.schema), strict=s.strict)


# --- msgspec's validation messages, reworded -----------------------------------------------------

_AT = r"(?: - at `(?P<path>[^`]*)`)?$"
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]*)`" + _AT)
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]*)`" + _AT)
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]*)`(?P<bound>[^,-]*?)(?:, got `(?P<got>[^`]*)`)?" + _AT)
_VALUE = re.compile(r"Invalid (?:enum )?value (?P<value>.*?)" + _AT)

_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "array": "an array",
    "object": "an object",
    "null": "null",
}

_VALUE_HINTS = {
    "role": "expected system, developer, user, assistant or tool",
    "type": "unsupported type",
    "n": "only n = 1 is supported (one answer per request)",
    "tool_choice": 'expected "auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
}


def _reworded(message: str) -> tuple[str, str]:
    """msgspec's validation ``message`` as a ``$.path`` and words fit for a person."""
    if m := _UNKNOWN.match(message):
        return _join(m["path"], m["key"]), "unknown key"
    if m := _MISSING.match(message):
        return _join(m["path"], m["key"]), "required"
    if m := _EXPECTED.match(message):
        wanted = " or ".join(_TYPE_WORDS.get(w, w) for w in m["want"].split(" | "))
        got = f", got {_TYPE_WORDS.get(m['got'], m['got'])}" if m["got"] else ""
        return m["path"] or "$", f"expected {wanted}{m['bound'].rstrip()}{got}"
    if m := _VALUE.match(message):
        path = m["path"] or "$"
        last = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
        hint = _VALUE_HINTS.get(last, "unsupported value")
        return path, f"{hint} (got {m['value']})"
    return "$", message


def _join(path: str | None, key: str) -> str:
    return (
        f"{path or '$'}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"{path or '$'}[{key!r}]"
    )
