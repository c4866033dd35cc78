"""The providers' wire formats, written from their public documentation, independently of rmcore.wire.

Being a second, separate implementation is the point: the product's wire code is checked against
this one, and this one is checked against the official SDKs (tests/cli/test_sandbox_sdk.py).

Three formats:
- OpenAI chat completions (openai-direct, and glm-direct, which is OpenAI-compatible): errors
  ``{"error": {"message", "type", "param", "code"}}``; streams of ``data: {chunk}`` events ending
  with ``data: [DONE]``, with a usage chunk (empty ``choices``) before it only when the request
  asks ``stream_options.include_usage``.
- Anthropic Messages: errors ``{"type": "error", "error": {"type", "message"}}``; streams of named
  events message_start, content_block_start, ping, content_block_delta (text_delta)...,
  content_block_stop, message_delta (stop reason, output tokens), message_stop.
- The AICEO gateway: ``{success, response: {content, model, usage}, metadata}``, never streamed.

A tool call answer (``chat.py`` decides when) is, in OpenAI's format, ``message.tool_calls`` with
``finish_reason`` ``tool_calls``; streamed, a first delta with the call's index, id, type, name and
empty arguments, then the arguments in several pieces, then a chunk with the finish reason. In
Anthropic's, a ``tool_use`` content block with ``stop_reason`` ``tool_use``; streamed, a
content_block_start with the block (empty ``input``), content_block_delta events with
``input_json_delta`` pieces, content_block_stop, then message_delta with the stop reason. What each
format refuses in a request is in ``validation.py``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from rmcli.sandbox.chat import ToolCall
from rmcli.sandbox.replies import split_deltas, split_pieces
from rmcli.sandbox.validation import Problem, aiceo_problem, anthropic_problem, openai_problem

__all__ = [
    "AiceoFormat",
    "Answer",
    "AnthropicFormat",
    "OpenAIFormat",
    "Route",
    "ServerState",
    "StreamingFormat",
    "WireFormat",
    "builtin_formats",
    "encode_json",
]


def encode_json(value: object) -> bytes:
    """Compact UTF-8 JSON, as the providers send it (msgspec: the same bytes as ``json.dumps`` with
    compact separators and ``ensure_ascii=False``, several times faster)."""
    return msgspec.json.encode(value)


class Route(enum.Enum):
    """What a request asks of a provider."""

    CHAT = "chat"
    HEALTH = "health"


@dataclass(frozen=True, slots=True)
class Answer:
    """One reply, ready to be put in any format."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cut_short: bool
    """The reply was cut at the request's max tokens (OpenAI ``length``, Anthropic ``max_tokens``)."""
    request_id: str
    created: int
    """Unix seconds."""
    tool_call: ToolCall | None = None
    """The answer is this tool call (its text is then empty)."""
    stop_sequence: str | None = None
    """The request's stop sequence the text was cut at."""


@dataclass(frozen=True, slots=True)
class ServerState:
    """What a status endpoint reports about its provider."""

    in_flight: int
    served: int


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class WireFormat(abc.ABC):
    """One provider's endpoints, authentication, errors and answers."""

    kind: str
    request_id_header = "x-request-id"
    carries_tools = True
    """Whether the format has tools, images and structured output (the gateway's has text only)."""

    def __init__(self, chat_path: str, health_path: str, models: tuple[str, ...]) -> None:
        self.chat_path = chat_path
        self.health_path = health_path
        self.models = models
        self._routes = {chat_path: ("POST", Route.CHAT), health_path: ("GET", Route.HEALTH)}

    @property
    def default_model(self) -> str:
        """The model answered when a request names none."""
        return self.models[0]

    @property
    def base_path(self) -> str:
        """The part of the chat path an SDK takes as its base URL (OpenAI: up to ``/chat/completions``)."""
        return self.chat_path.removesuffix("/chat/completions")

    def route(self, method: str, path: str) -> Route | int:
        """The route asked for, or the status that refuses it (404 unknown path, 405 wrong method)."""
        found = self._routes.get(path)
        if found is None:
            return 404
        return found[1] if found[0] == method else 405

    @abc.abstractmethod
    def auth_problem(self, headers: Mapping[str, str], key: str) -> str | None:
        """Why the request's credentials are refused (401), or ``None``. Never quotes the key."""

    def header_problem(self, headers: Mapping[str, str]) -> str | None:
        """Why the request's other headers are refused (400), or ``None``."""
        return None

    @abc.abstractmethod
    def body_problem(self, body: Mapping[str, Any]) -> Problem | None:
        """Why a chat request body is refused (400), or ``None``."""

    @abc.abstractmethod
    def max_tokens(self, body: Mapping[str, Any]) -> int | None:
        """The request's cap on output tokens, if it sets one."""

    def model(self, body: Mapping[str, Any]) -> str:
        """The model to answer as: the requested one, echoed."""
        model = body.get("model")
        return model if isinstance(model, str) and model else self.default_model

    @abc.abstractmethod
    def error_body(
        self,
        status: int,
        message: str | None,
        request_id: str,
        param: str | None = None,
        code: str | None = None,
    ) -> dict[str, Any]:
        """The provider's error body for ``status``; ``message`` ``None`` gives its usual wording.
        ``param`` and ``code`` name the offending parameter and the error's code, where the format
        has them (OpenAI)."""

    @abc.abstractmethod
    def health_body(self, state: ServerState) -> dict[str, Any]:
        """The body of a successful health (status or model-list) request."""

    @abc.abstractmethod
    def answer_body(self, answer: Answer, body: Mapping[str, Any]) -> dict[str, Any]:
        """A complete, non-streamed answer."""


class StreamingFormat(WireFormat):
    """A format that can also answer as a stream of server-sent events."""

    stream_content_type = "text/event-stream; charset=utf-8"

    def wants_stream(self, body: Mapping[str, Any]) -> bool:
        """Whether the request asks for a streamed answer."""
        return body.get("stream") is True

    def stream_events(self, answer: Answer, body: Mapping[str, Any]) -> list[bytes]:
        """A streamed answer, one encoded server-sent event per item, the terminating one last."""
        if answer.tool_call is not None:
            return self.tool_call_events(answer, body, answer.tool_call)
        return [
            *self.stream_opening(answer, body),
            *(self.stream_text(answer, body, piece) for piece in split_deltas(answer.text)),
            *self.stream_closing(answer, body),
        ]

    @abc.abstractmethod
    def stream_opening(self, answer: Answer, body: Mapping[str, Any]) -> list[bytes]:
        """The events a stream starts with, before any text."""

    @abc.abstractmethod
    def stream_text(self, answer: Answer, body: Mapping[str, Any], piece: str) -> bytes:
        """One event carrying ``piece`` of the text (``huge`` and ``endless`` repeat it at will)."""

    @abc.abstractmethod
    def stream_closing(self, answer: Answer, body: Mapping[str, Any]) -> list[bytes]:
        """The events after the last text: stop reason, usage, the terminating event last."""

    @abc.abstractmethod
    def tool_call_events(self, answer: Answer, body: Mapping[str, Any], call: ToolCall) -> list[bytes]:
        """A streamed tool call answer, its arguments in several pieces, the terminating event last."""


class OpenAIFormat(StreamingFormat):
    """OpenAI chat completions, as spoken by OpenAI and by OpenAI-compatible servers such as GLM."""

    kind = "openai"

    def __init__(
        self, chat_path: str, health_path: str, models: tuple[str, ...], *, json_word_rule: bool = True
    ) -> None:
        super().__init__(chat_path, health_path, models)
        self.json_word_rule = json_word_rule
        """OpenAI's rule that a ``json_object`` request says "json" in its messages (GLM has none)."""

    def auth_problem(self, headers: Mapping[str, str], key: str) -> str | None:
        value = headers.get("authorization", "")
        if not value:
            return "You didn't provide an API key. Send it in an Authorization header: Bearer KEY."
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != key:
            return "Incorrect API key provided."
        return None

    def body_problem(self, body: Mapping[str, Any]) -> Problem | None:
        return openai_problem(body, json_word_rule=self.json_word_rule)

    def max_tokens(self, body: Mapping[str, Any]) -> int | None:
        for field in ("max_completion_tokens", "max_tokens"):
            if _positive_int(body.get(field)):
                value: int = body[field]
                return value
        return None

    def error_body(
        self,
        status: int,
        message: str | None,
        request_id: str,
        param: str | None = None,
        code: str | None = None,
    ) -> dict[str, Any]:
        kind, usual_code, usual = {
            400: ("invalid_request_error", None, "The request is not valid."),
            401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
            403: ("invalid_request_error", None, "You are not allowed to use this model."),
            404: ("invalid_request_error", "model_not_found", "The model does not exist."),
            429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Try again later."),
            500: ("server_error", None, "The server had an error while processing your request."),
            502: ("server_error", None, "Bad gateway."),
            503: ("server_error", None, "The engine is currently overloaded. Try again later."),
            504: ("server_error", None, "Gateway timeout."),
        }.get(status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}."))
        if code is None and (message is None or message == usual):
            code = usual_code  # the usual machine-readable code belongs to the usual failure only
        return {"error": {"message": message or usual, "type": kind, "param": param, "code": code}}

    def health_body(self, state: ServerState) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": 1700000000, "owned_by": "rmgr-sandbox"}
                for model in self.models
            ],
        }

    def _completion_id(self, answer: Answer) -> str:
        return f"chatcmpl-sandbox-{answer.request_id}"

    @staticmethod
    def _finish(answer: Answer) -> str:
        if answer.tool_call is not None:
            return "tool_calls"
        return "length" if answer.cut_short else "stop"

    def _call_id(self, answer: Answer) -> str:
        return f"call_sandbox_{answer.request_id}"

    def answer_body(self, answer: Answer, body: Mapping[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
        if answer.tool_call is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": self._call_id(answer),
                    "type": "function",
                    "function": {"name": answer.tool_call.name, "arguments": answer.tool_call.arguments_json},
                }
            ]
        return {
            "id": self._completion_id(answer),
            "object": "chat.completion",
            "created": answer.created,
            "model": answer.model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self._finish(answer)}
            ],
            "usage": self._usage(answer),
        }

    @staticmethod
    def _usage(answer: Answer) -> dict[str, int]:
        return {
            "prompt_tokens": answer.input_tokens,
            "completion_tokens": answer.output_tokens,
            "total_tokens": answer.input_tokens + answer.output_tokens,
        }

    def _chunk_event(
        self, answer: Answer, body: Mapping[str, Any], choices: list[dict[str, Any]], usage: bool = False
    ) -> bytes:
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        chunk: dict[str, Any] = {
            "id": self._completion_id(answer),
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "choices": choices,
        }
        if include_usage:
            chunk["usage"] = self._usage(answer) if usage else None
        return b"data: " + encode_json(chunk) + b"\n\n"

    @staticmethod
    def _choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    def stream_opening(self, answer: Answer, body: Mapping[str, Any]) -> list[bytes]:
        return [self._chunk_event(answer, body, self._choice({"role": "assistant", "content": ""}))]

    def stream_text(self, answer: Answer, body: Mapping[str, Any], piece: str) -> bytes:
        return self._chunk_event(answer, body, self._choice({"content": piece}))

    def stream_closing(self, answer: Answer, body: Mapping[str, Any]) -> list[bytes]:
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        events = [self._chunk_event(answer, body, self._choice({}, self._finish(answer)))]
        if include_usage:
            events.append(self._chunk_event(answer, body, [], usage=True))
        events.append(b"data: [DONE]\n\n")
        return events

    def tool_call_events(self, answer: Answer, body: Mapping[str, Any], call: ToolCall) -> list[bytes]:
        first = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": self._call_id(answer),
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
            ],
            "refusal": None,
        }
        pieces = [
            self._chunk_event(
                answer, body, self._choice({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
            )
            for p in split_pieces(call.arguments_json)
        ]
        return [
            self._chunk_event(answer, body, self._choice(first)),
            *pieces,
            *self.stream_closing(answer, body),
        ]


class AnthropicFormat(StreamingFormat):
    """Anthropic's Messages API."""

    kind = "anthropic"
    request_id_header = "request-id"

    @property
    def base_path(self) -> str:
        """The Anthropic SDK appends ``/v1/messages`` to a bare origin."""
        return self.chat_path.removesuffix("/v1/messages")

    def auth_problem(self, headers: Mapping[str, str], key: str) -> str | None:
        # The documented header is x-api-key; recent official SDKs send the same key as a bearer
        # token instead, which the API accepts too.
        value = headers.get("x-api-key")
        if value:
            return None if value.strip() == key else "invalid x-api-key"
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return None if token.strip() == key else "invalid bearer token"
        return "x-api-key header is required"

    def header_problem(self, headers: Mapping[str, str]) -> str | None:
        if not headers.get("anthropic-version"):
            return "anthropic-version: header is required"
        return None

    def body_problem(self, body: Mapping[str, Any]) -> Problem | None:
        return anthropic_problem(body)

    def max_tokens(self, body: Mapping[str, Any]) -> int | None:
        value = body.get("max_tokens")
        return value if isinstance(value, int) and _positive_int(value) else None

    def error_body(
        self,
        status: int,
        message: str | None,
        request_id: str,
        param: str | None = None,
        code: str | None = None,
    ) -> dict[str, Any]:
        kind, usual = {
            400: ("invalid_request_error", "The request is not valid."),
            401: ("authentication_error", "invalid x-api-key"),
            403: ("permission_error", "Your API key does not have permission to use the specified resource."),
            404: ("not_found_error", "The requested resource could not be found."),
            413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
            429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
            500: ("api_error", "Internal server error"),
            529: ("overloaded_error", "Overloaded"),
        }.get(status, ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}"))
        return {
            "type": "error",
            "error": {"type": kind, "message": message or usual},
            "request_id": f"req_sandbox_{request_id}",
        }

    def health_body(self, state: ServerState) -> dict[str, Any]:
        data = [
            {
                "type": "model",
                "id": model,
                "display_name": f"{model} (sandbox)",
                "created_at": "2025-01-01T00:00:00Z",
            }
            for model in self.models
        ]
        return {"data": data, "has_more": False, "first_id": self.models[0], "last_id": self.models[-1]}

    @staticmethod
    def _stop_reason(answer: Answer) -> str:
        if answer.tool_call is not None:
            return "tool_use"
        if answer.cut_short:
            return "max_tokens"
        return "stop_sequence" if answer.stop_sequence is not None else "end_turn"

    def _message(self, answer: Answer, content: list[dict[str, Any]], done: bool) -> dict[str, Any]:
        return {
            "id": f"msg_sandbox_{answer.request_id}",
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": content,
            "stop_reason": self._stop_reason(answer) if done else None,
            "stop_sequence": answer.stop_sequence if done else None,
            "usage": {
                "input_tokens": answer.input_tokens,
                "output_tokens": answer.output_tokens if done else 1,
            },
        }

    def _tool_use(self, answer: Answer, call: ToolCall, arguments: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "tool_use",
            "id": f"toolu_sandbox_{answer.request_id}",
            "name": call.name,
            "input": arguments,
        }

    def answer_body(self, answer: Answer, body: Mapping[str, Any]) -> dict[str, Any]:
        if answer.tool_call is not None:
            block = self._tool_use(answer, answer.tool_call, answer.tool_call.arguments)
            return self._message(answer, [block], done=True)
        return self._message(answer, [{"type": "text", "text": answer.text}], done=True)

    @staticmethod
    def _event(data: dict[str, Any]) -> bytes:
        return f"event: {data['type']}\ndata: ".encode() + encode_json(data) + b"\n\n"

    def stream_opening(self, answer: Answer, body: Mapping[str, Any]) -> list[bytes]:
        return [
            self._event({"type": "message_start", "message": self._message(answer, [], done=False)}),
            self._event(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            ),
            self._event({"type": "ping"}),
        ]

    def stream_text(self, answer: Answer, body: Mapping[str, Any], piece: str) -> bytes:
        return self._event(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        )

    def stream_closing(self, answer: Answer, body: Mapping[str, Any]) -> list[bytes]:
        return [
            self._event({"type": "content_block_stop", "index": 0}),
            self._event(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self._stop_reason(answer),
                        "stop_sequence": answer.stop_sequence,
                    },
                    "usage": {"output_tokens": answer.output_tokens},
                }
            ),
            self._event({"type": "message_stop"}),
        ]

    def tool_call_events(self, answer: Answer, body: Mapping[str, Any], call: ToolCall) -> list[bytes]:
        block = self._tool_use(answer, call, {})
        pieces = [
            self._event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": p},
                }
            )
            for p in split_pieces(call.arguments_json)
        ]
        return [
            self._event({"type": "message_start", "message": self._message(answer, [], done=False)}),
            self._event({"type": "content_block_start", "index": 0, "content_block": block}),
            self._event({"type": "ping"}),
            *pieces,
            *self.stream_closing(answer, body),
        ]


class AiceoFormat(WireFormat):
    """The AICEO gateway: a queueing proxy in front of GLM with its own envelope; never streams."""

    kind = "aiceo"
    carries_tools = False
    MAX_CONCURRENT = 8
    QUOTA = 2400

    @property
    def base_path(self) -> str:
        """The folder of ``/submit`` and ``/status``."""
        return self.chat_path.rpartition("/")[0]

    def auth_problem(self, headers: Mapping[str, str], key: str) -> str | None:
        value = headers.get("x-api-key")
        if not value:
            return "Missing API key: send it in the X-API-Key header"
        return None if value.strip() == key else "Invalid API key"

    def body_problem(self, body: Mapping[str, Any]) -> Problem | None:
        return aiceo_problem(body)

    def max_tokens(self, body: Mapping[str, Any]) -> int | None:
        value = body.get("maxTokens")
        return value if isinstance(value, int) and _positive_int(value) else None

    def error_body(
        self,
        status: int,
        message: str | None,
        request_id: str,
        param: str | None = None,
        code: str | None = None,
    ) -> dict[str, Any]:
        usual = {
            400: "Bad request",
            401: "Invalid API key",
            404: "Not found",
            429: "Quota exceeded: too many requests in the current window",
            500: "Internal gateway error",
            502: "Upstream provider error",
            503: "Gateway unavailable",
            504: "Upstream provider timed out",
        }.get(status, f"HTTP {status}")
        return {
            "success": False,
            "error": message or usual,
            "metadata": {"requestId": f"aiceo-sandbox-{request_id}", "provider": "glm"},
        }

    def health_body(self, state: ServerState) -> dict[str, Any]:
        return {
            "status": "operational",
            "concurrentRequests": state.in_flight,
            "queueDepth": 0,
            "maxConcurrent": self.MAX_CONCURRENT,
            "quotaInfo": {
                "limit": self.QUOTA,
                "used": state.served,
                "remaining": max(0, self.QUOTA - state.served),
                "windowHours": 5,
            },
        }

    def answer_body(self, answer: Answer, body: Mapping[str, Any]) -> dict[str, Any]:
        upstream = body.get("provider")
        return {
            "success": True,
            "response": {
                "content": answer.text,
                "model": answer.model,
                "usage": {"inputTokens": answer.input_tokens, "outputTokens": answer.output_tokens},
            },
            "metadata": {
                "waitTime": 0,
                "queueDepth": 0,
                "requestId": f"aiceo-sandbox-{answer.request_id}",
                "provider": upstream if isinstance(upstream, str) and upstream else "glm",
            },
        }


def builtin_formats() -> dict[str, WireFormat]:
    """The four sandbox providers and the format each speaks, in the order of the built-ins."""
    return {
        "aiceo-gateway": AiceoFormat("/api/glm/submit", "/api/glm/status", ("glm-4.7",)),
        "glm-direct": OpenAIFormat(
            "/api/paas/v4/chat/completions",
            "/api/paas/v4/models",
            ("glm-4.7", "glm-4.5-air"),
            json_word_rule=False,
        ),
        "anthropic-direct": AnthropicFormat(
            "/v1/messages", "/v1/models", ("claude-sonnet-4-5", "claude-haiku-4-5")
        ),
        "openai-direct": OpenAIFormat("/v1/chat/completions", "/v1/models", ("gpt-4-turbo", "gpt-4o-mini")),
    }
