"""What the caller asks for, and the HTTP request the wire formats turn it into.

A :class:`ChatRequest` is the whole chat request, independent of any provider's format: a
conversation of messages (system, user, assistant, tool), each holding text or parts (text and
images), the assistant's tool calls and the tools' results, plus the tools the model may call, how
it must answer (``tool_choice``, ``response_format``) and the sampling settings. Each wire format
translates it as faithfully as it can (``rmcore.wire``); a format that cannot carry part of it is
never sent it (``rmcore.capabilities``).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from rmcore.base import Base

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "ChatRequest",
    "HttpRequest",
    "ImagePart",
    "Message",
    "Part",
    "ResponseFormat",
    "Role",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "message_text",
]

DEFAULT_MAX_TOKENS = 1024

Role = Literal["system", "user", "assistant", "tool"]


class TextPart(Base, frozen=True, tag="text"):
    """A piece of text in a message's content (``{"type": "text", "text": ...}``)."""

    text: str


class ImagePart(Base, frozen=True, tag="image_url"):
    """An image in a message's content: a ``data:`` URL (``data:image/png;base64,...``) or an
    ``https:`` URL the provider fetches itself."""

    url: str


Part = TextPart | ImagePart


class ToolCall(Base, frozen=True):
    """A call the model asked for: the call's id (a tool result answers it by that id), the
    function's name and its arguments as JSON text, exactly as the model produced it (it may not
    even be valid JSON; the caller judges)."""

    id: str
    name: str
    arguments: str


class Message(Base, frozen=True):
    """One turn of the conversation. ``tool_calls`` only on an assistant message (whose
    ``content`` may then be empty); ``tool_call_id`` only on a tool message, naming the call whose
    result its ``content`` is."""

    role: Role
    content: str | tuple[Part, ...] = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The message's text: its content when a string, else its text parts joined by newlines
        (images left out)."""
        return message_text(self.content)


class Tool(Base, frozen=True):
    """A function the model may call. ``parameters`` is its JSON schema, kept as the exact JSON
    bytes it was given (``msgspec.Raw``: compared by bytes, sent unchanged). ``Raw`` cannot be
    hashed, so neither can a request holding a tool with parameters."""

    name: str
    description: str | None = None
    parameters: msgspec.Raw | None = None


class ToolChoice(Base, frozen=True):
    """Whether and which tool the model must call: ``auto`` (it decides), ``none`` (no call),
    ``required`` (some call), ``function`` (the one ``name``d)."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


class ResponseFormat(Base, frozen=True):
    """The shape the answer must take: plain ``text``, any JSON object (``json_object``), or JSON
    valid against ``schema`` (``json_schema``, named ``name``, ``strict`` as the caller set it)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: msgspec.Raw | None = None
    strict: bool | None = None


class ChatRequest(Base, frozen=True):
    """One completion request, independent of any provider's format.

    ``temperature`` of ``None`` leaves the provider's default; ``0.0`` is sent as 0, never replaced
    (so are ``top_p`` and ``seed``). ``source_id`` tells an AICEO gateway what asked (the seed sends
    ``<perspective>-analysis``). :meth:`ask` builds the simple form, a system text and a prompt.
    """

    messages: tuple[Message, ...]
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    stream: bool = True
    source_id: str = "ask"

    @classmethod
    def ask(cls, prompt: str, *, system: str | None = None, **fields: Any) -> ChatRequest:
        """The simple request: a system message (when ``system`` is non-empty), then the user's
        ``prompt``; ``fields`` are the other fields (``max_tokens=...``)."""
        user = Message(role="user", content=prompt)
        messages = (Message(role="system", content=system), user) if system else (user,)
        return cls(messages=messages, **fields)

    @property
    def prompt(self) -> str:
        """The text of the last user message ("" when there is none)."""
        return next((m.text for m in reversed(self.messages) if m.role == "user"), "")

    @property
    def system(self) -> str | None:
        """The system messages' text joined by blank lines; ``None`` when there is none."""
        texts = [m.text for m in self.messages if m.role == "system"]
        return "\n\n".join(texts) if texts else None


def message_text(content: str | tuple[Part, ...]) -> str:
    """The text of a message's ``content``: itself when a string, else its text parts joined by
    newlines (images left out)."""
    if isinstance(content, str):
        return content
    return "\n".join(p.text for p in content if isinstance(p, TextPart))


class HttpRequest(Base, frozen=True):
    """A complete HTTP request, ready for any client to send: method, URL, headers, body bytes.

    ``headers`` may hold a secret (an API key). ``redacted_headers`` is what may be shown.
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def redacted_headers(self) -> tuple[tuple[str, str], ...]:
        """The headers with every credential replaced by ``<redacted>``."""
        secret = {"authorization", "x-api-key", "api-key", "proxy-authorization"}
        return tuple((k, "<redacted>" if k.lower() in secret else v) for k, v in self.headers)
