"""The Anthropic Messages shapes the gateway speaks on ``POST /v1/messages``: the request read
into a ``ChatRequest`` (every fault with its ``$.path``), the ``message`` answer, the stream's
event sequence (``message_start``, ``content_block_*``, ``message_delta``, ``message_stop``) and
``{type: "error", error: {type, message}}``.

What is read: ``model``, ``max_tokens``, ``messages`` (user and assistant; content a string or
``text``, ``image`` (``base64`` or ``url`` source), ``tool_use`` and ``tool_result`` blocks),
``system`` (a string or text blocks), ``stop_sequences``, ``temperature``, ``top_p``, ``stream``,
``tools`` (``{name, description, input_schema}``), ``tool_choice`` (``auto``, ``any``, ``tool``,
``none``). Accepted and dropped, as hints that change nothing a provider must do: ``metadata``
and every block's ``cache_control``. Anything else (``top_k``, ``thinking``, ...) is refused with
its path: an answer different from what the caller asked for must not come back as if it were.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from returns.result import Failure, Result, Success

from rmcore.completion import Completion
from rmcore.problems import Problem, ProblemKind
from rmcore.requests import ChatRequest, ImagePart, Message, Part, TextPart, Tool, ToolCall, ToolChoice

__all__ = ["AnthropicStream", "decode_messages", "error_body", "error_type", "message_body"]

_encode = msgspec.json.Encoder().encode


# --- errors --------------------------------------------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    """An error response's body: ``{type: "error", error: {type, message}}`` (Anthropic's shape
    has no code: the kind of failure is in the message)."""
    return _encode(_error(status, message if code is None else f"{message} ({code})"))


# --- the request ---------------------------------------------------------------------------------


class _Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A part of the request body as sent: unknown keys are errors, with their path."""


class _Text(_Wire, frozen=True, tag="text"):
    text: str
    cache_control: dict[str, Any] | None = None
    citations: None = None


class _Base64(_Wire, frozen=True, tag="base64"):
    media_type: str
    data: str


class _Url(_Wire, frozen=True, tag="url"):
    url: str


class _Image(_Wire, frozen=True, tag="image"):
    source: _Base64 | _Url
    cache_control: dict[str, Any] | None = None


class _ToolUse(_Wire, frozen=True, tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class _ToolResult(_Wire, frozen=True, tag="tool_result"):
    tool_use_id: str
    content: str | list[_Text] = ""
    is_error: bool | None = None
    cache_control: dict[str, Any] | None = None


_Block = _Text | _Image | _ToolUse | _ToolResult


class _Message(_Wire, frozen=True):
    role: Literal["user", "assistant"]
    content: str | list[_Block]


class _Tool(_Wire, frozen=True):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    type: Literal["custom"] | None = None
    cache_control: dict[str, Any] | None = None


class _ToolChoice(_Wire, frozen=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _Body(_Wire, frozen=True):
    model: str
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    messages: list[_Message]
    system: str | list[_Text] | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    stream: bool | None = None
    tools: list[_Tool] | None = None
    tool_choice: _ToolChoice | None = None
    metadata: dict[str, Any] | None = None


def _invalid(path: str, message: str) -> Problem:
    return Problem(kind=ProblemKind.INVALID_REQUEST, message=f"{path}: {message}", subject=path)


_AT = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>[^`]*)`)?$")


def decode_messages(body: bytes) -> Result[tuple[ChatRequest, str], Problem]:
    """``body`` (an Anthropic Messages request, JSON) as a ``ChatRequest`` and the ``model`` it
    names; or the ``invalid_request`` problem whose ``subject`` is the ``$.path`` at fault."""
    try:
        wire = msgspec.json.decode(body, type=_Body)
    except msgspec.ValidationError as error:
        found = _AT.match(str(error))
        path = (found and found["path"]) or "$"
        return Failure(_invalid(path, found["what"] if found else str(error)))
    except (msgspec.DecodeError, UnicodeError, RecursionError) as error:
        return Failure(_invalid("$", f"not valid JSON ({error})"))
    if not wire.messages:
        return Failure(_invalid("$.messages", "expected at least one message"))
    if wire.tool_choice is not None:
        names = [t.name for t in wire.tools or ()]
        if wire.tool_choice.disable_parallel_tool_use:
            return Failure(_invalid("$.tool_choice.disable_parallel_tool_use", "true is not supported"))
        if wire.tool_choice.type == "tool" and wire.tool_choice.name not in names:
            return Failure(
                _invalid("$.tool_choice.name", f"no tool named {wire.tool_choice.name!r} in $.tools")
            )
    messages: list[Message] = []
    if wire.system:
        text = wire.system if isinstance(wire.system, str) else "\n\n".join(t.text for t in wire.system)
        messages.append(Message(role="system", content=text))
    for i, message in enumerate(wire.messages):
        match _turn(message, f"$.messages[{i}]"):
            case Failure() as problem:
                return problem
            case Success(turn):
                messages.extend(turn)
    request = ChatRequest(
        messages=tuple(messages),
        max_tokens=wire.max_tokens,
        temperature=wire.temperature,
        top_p=wire.top_p,
        stop=tuple(wire.stop_sequences or ()),
        tools=tuple(
            Tool(name=t.name, description=t.description, parameters=msgspec.Raw(_encode(t.input_schema)))
            for t in wire.tools or ()
        ),
        tool_choice=_tool_choice(wire.tool_choice),
        stream=bool(wire.stream),
    )
    return Success((request, wire.model))


def _tool_choice(wire: _ToolChoice | None) -> ToolChoice | None:
    if wire is None:
        return None
    if wire.type == "tool":
        return ToolChoice(mode="function", name=wire.name)
    return ToolChoice(mode={"auto": "auto", "any": "required", "none": "none"}[wire.type])  # type: ignore[arg-type]


def _turn(wire: _Message, path: str) -> Result[list[Message], Problem]:
    """One Anthropic message as the core's messages: a user turn's tool results become tool
    messages (in order, around its text and images); an assistant turn's ``tool_use`` blocks its
    tool calls."""
    if isinstance(wire.content, str):
        return Success([Message(role=wire.role, content=wire.content)])
    if wire.role == "assistant":
        texts: list[str] = []
        calls: list[ToolCall] = []
        for j, block in enumerate(wire.content):
            if isinstance(block, _Text):
                texts.append(block.text)
            elif isinstance(block, _ToolUse):
                calls.append(ToolCall(id=block.id, name=block.name, arguments=_encode(block.input).decode()))
            else:
                return Failure(_invalid(f"{path}.content[{j}]", "not allowed in an assistant message"))
        return Success([Message(role="assistant", content="".join(texts), tool_calls=tuple(calls))])
    turn: list[Message] = []
    parts: list[Part] = []
    for j, block in enumerate(wire.content):
        if isinstance(block, _Text):
            parts.append(TextPart(text=block.text))
        elif isinstance(block, _Image):
            source = block.source
            url = source.url if isinstance(source, _Url) else f"data:{source.media_type};base64,{source.data}"
            parts.append(ImagePart(url=url))
        elif isinstance(block, _ToolResult):
            if parts:
                turn.append(Message(role="user", content=tuple(parts)))
                parts = []
            content = (
                block.content if isinstance(block.content, str) else "\n".join(t.text for t in block.content)
            )
            turn.append(Message(role="tool", content=content, tool_call_id=block.tool_use_id))
        else:
            return Failure(
                _invalid(f"{path}.content[{j}]", "tool_use is allowed in an assistant message only")
            )
    if parts:
        only_text = len(parts) == 1 and isinstance(parts[0], TextPart)
        turn.append(Message(role="user", content=parts[0].text if only_text else tuple(parts)))  # type: ignore[union-attr]
    return Success(turn)


# --- the answer ----------------------------------------------------------------------------------


def new_id() -> str:
    """A message id in Anthropic's style."""
    return f"msg_{os.urandom(12).hex()}"


def stop_reason(completion: Completion) -> str:
    """Anthropic's stop reason for the core's finish reason."""
    if completion.tool_calls:
        return "tool_use"
    return {"length": "max_tokens", "content_filter": "refusal"}.get(
        completion.finish_reason or "stop", "end_turn"
    )


def _tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's ``input`` is (text that is not a JSON
    object is kept whole under ``arguments``)."""
    try:
        found = msgspec.json.decode(arguments or "{}")
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return {"arguments": arguments}
    return found if isinstance(found, dict) else {"arguments": arguments}


def _usage(completion: Completion) -> dict[str, int]:
    return {"input_tokens": completion.usage.input_tokens, "output_tokens": completion.usage.output_tokens}


def message_body(completion: Completion, message_id: str, model: str) -> bytes:
    """A whole answer: the ``message`` object. ``model`` is the route the client asked for."""
    content: list[dict[str, Any]] = []
    if completion.content or not completion.tool_calls:
        content.append({"type": "text", "text": completion.content})
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
        for c in completion.tool_calls
    ]
    return _encode(
        {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason(completion),
            "stop_sequence": None,
            "usage": _usage(completion),
        }
    )


def _event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: ".encode() + _encode(data) + b"\n\n"


class AnthropicStream:
    """Anthropic's stream as ``rmcli.serve.relay`` writes it (``relay.StreamShape``): the text in
    block 0 (opened with its first piece), then one ``tool_use`` block per call, then
    ``message_delta`` (stop reason, usage) and ``message_stop``; a failure after text went out
    is an ``error`` event, never a ``message_stop``."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id, self.model = message_id, model
        self._text_open = False

    def opening(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event({"type": "message_start", "message": message}) + _event({"type": "ping"})

    def text(self, pieces: Sequence[str]) -> bytes:
        events = b""
        if not self._text_open:
            self._text_open = True
            events = _event(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            )
        return events + b"".join(
            _event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
            for p in pieces
        )

    def closing(self, completion: Completion) -> bytes:
        events = []
        if self._text_open:
            events.append(_event({"type": "content_block_stop", "index": 0}))
        first = 1 if self._text_open else 0
        for index, call in enumerate(completion.tool_calls, start=first):
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            delta = {
                "type": "input_json_delta",
                "partial_json": _encode(_tool_input(call.arguments)).decode(),
            }
            events += [
                _event({"type": "content_block_start", "index": index, "content_block": block}),
                _event({"type": "content_block_delta", "index": index, "delta": delta}),
                _event({"type": "content_block_stop", "index": index}),
            ]
        ending: dict[str, Any] = {"stop_reason": stop_reason(completion), "stop_sequence": None}
        events.append(_event({"type": "message_delta", "delta": ending, "usage": _usage(completion)}))
        events.append(_event({"type": "message_stop"}))
        return b"".join(events)

    def error_event(self, status: int, message: str, code: str) -> bytes:
        return _event(_error(status, f"{message} ({code})"))

    def error_body(self, status: int, message: str, code: str) -> bytes:
        return error_body(status, message, code)
