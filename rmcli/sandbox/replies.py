"""What the sandbox providers say: a deterministic reply, its token counts, and its stream deltas.

Token counts are words (whitespace-separated), which is close enough to real tokenizers for
budgets and usage accounting to be exercised, and exactly predictable in tests.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from rmcli.sandbox.chat import Chat, read_chat
from rmcli.sandbox.schema import example_value, pick_word_in

__all__ = [
    "TEXT_ONLY",
    "ReplyFunction",
    "count_words",
    "cut_at_stop",
    "cut_to_words",
    "default_reply",
    "last_user_text",
    "request_text",
    "split_deltas",
    "split_pieces",
]

TEXT_ONLY = frozenset({"aiceo-gateway"})
"""The providers whose format carries text only: ``default_reply`` ignores the fields they do not
know (tools, ``response_format``), as the gateway itself does."""

ReplyFunction = Callable[[str, dict[str, Any]], str]
"""``reply(provider_name, request_json) -> text``: what a sandbox provider answers."""

MAX_DELTAS = 8
"""A streamed reply is cut into at most this many deltas (fewer only when it has fewer words)."""

_QUOTED_WORDS = 8
_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")


def _content_text(content: object) -> str:
    """The text of a message's content: a string, or a list of parts of which text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _messages(request: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = request.get("messages")
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, Mapping)]


def last_user_text(request: Mapping[str, Any]) -> str:
    """The text of the last user message of a chat request (OpenAI, Anthropic or AICEO shape)."""
    messages = _messages(request)
    for message in reversed(messages):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return _content_text(messages[-1].get("content")) if messages else ""


def request_text(request: Mapping[str, Any]) -> str:
    """All the prompt text of a chat request: the top-level system (Anthropic) and every message."""
    texts = [_content_text(request.get("system"))]
    texts.extend(_content_text(m.get("content")) for m in _messages(request))
    return "\n".join(t for t in texts if t)


def count_words(text: str) -> int:
    """The sandbox's token count: the number of whitespace-separated words."""
    return len(text.split())


_ANALYSIS_PROMPT = re.compile(r"from the (.+?) perspective")


def default_reply(provider: str, request: dict[str, Any]) -> str:
    """A short paragraph naming the provider and quoting the start of the user's prompt.

    Deterministic (the same prompt always gets the same words) and it states a confidence, derived
    from a hash of the prompt, so that an analysis run against the sandbox has one to read.

    Beyond text (``chat.py``): a conversation that ends with tool results is answered "According
    to NAME: RESULT"; an analysis or synthesis prompt gets its JSON object as before; else a
    ``response_format`` (or Anthropic ``output_format``) asking for JSON gets a JSON object; and a
    request with images gets the paragraph after "I received N image(s) (TYPES). ".
    """
    chat = read_chat(request, text_only=provider in TEXT_ONLY)
    if chat.results:
        return " ".join(f"According to {result.name}: {result.text}" for result in chat.results)
    text = last_user_text(request)
    words = text.split()
    quote = " ".join(words[:_QUOTED_WORDS]) + (" ..." if len(words) > _QUOTED_WORDS else "")
    digest = hashlib.sha256(f"{provider}\n{' '.join(words)}".encode()).digest()
    confidence = 0.6 + (digest[0] % 31) / 100
    if '"blindSpots"' in text:
        # The synthesis of an analysis asks the chair for its decision as one JSON object.
        return json.dumps(
            {
                "decision": ("go", "conditional", "no-go")[digest[1] % 3],
                "recommendation": f"A simulated decision of the rmgr sandbox ({provider}), deterministic "
                "for a given prompt: weigh the perspectives' answers, then run a small pilot first.",
                "confidence": round(confidence, 2),
                "consensus": ["A pilot lowers the risk of the change."],
                "conflicts": ["How much effort the change takes: estimates differ."],
                "blindSpots": ["What it costs to undo the change."],
                "conditions": ["The pilot shows a clear gain."],
            }
        )
    asked = _ANALYSIS_PROMPT.search(text)
    if asked is not None and '"confidence"' in text:
        # An analysis prompt asks for one JSON object: answer in that form, as a model would.
        field = asked.group(1)
        verdict = (
            "Proceed with a small pilot first, then decide with its results."
            if digest[1] % 3
            else "Proceed only if a small pilot shows a clear gain."
        )
        return json.dumps(
            {
                "findings": f"From the {field} point of view ({provider}, simulated): the main risk is "
                "the effort it takes; the main opportunity is what it teaches the team.",
                "recommendation": verdict,
                "confidence": round(confidence, 2),
                "reasoning": "A simulated answer of the rmgr sandbox: deterministic for a given prompt, "
                "so that tests can compare runs.",
            }
        )
    paragraph = (
        f"This is {provider}, a simulated provider of the rmgr sandbox, answering the prompt that "
        f'begins "{quote}". The answer is generated locally and is deterministic: the same prompt '
        f"always gets the same words, so that tests can compare them. Confidence: {confidence:.2f}"
    )
    if chat.json_answer:
        return _json_answer(chat, paragraph)
    if chat.images:
        count = len(chat.images)
        received = f"I received {count} image{'s' if count != 1 else ''} ({', '.join(chat.images)}). "
        return received + paragraph
    return paragraph


def _json_answer(chat: Chat, paragraph: str) -> str:
    """The JSON object answering a request for JSON: ``{"answer": paragraph}``, or an object made up
    from the schema (``schema.py``)."""
    if chat.schema is None:
        return json.dumps({"answer": paragraph})
    return json.dumps(example_value({"type": "object", **chat.schema}, pick_word_in(chat.user_texts)))


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str | None]:
    """``text`` up to the first of ``stops`` that occurs in it (the stop itself left out), and that
    stop; ``text`` whole and ``None`` when none occurs."""
    found = [(text.find(stop), stop) for stop in stops if stop and stop in text]
    if not found:
        return text, None
    index, stop = min(found)
    return text[:index], stop


def split_pieces(text: str, count: int = 4) -> list[str]:
    """``text`` cut into at most ``count`` pieces of about the same length (a tool call's arguments,
    streamed in several pieces as the providers do)."""
    count = max(1, min(count, len(text)))
    return [text[i * len(text) // count : (i + 1) * len(text) // count] for i in range(count)]


def split_deltas(text: str) -> list[str]:
    """``text`` cut at word boundaries into at most ``MAX_DELTAS`` pieces that join back to it."""
    pieces = [p for p in _BOUNDARY.split(text) if p]
    count = min(MAX_DELTAS, len(pieces))
    return ["".join(pieces[i * len(pieces) // count : (i + 1) * len(pieces) // count]) for i in range(count)]


def cut_to_words(text: str, limit: int) -> str:
    """The first ``limit`` words of ``text``, spacing kept (a reply cut short by ``max_tokens``)."""
    pieces = [p for p in _BOUNDARY.split(text) if p]
    kept: list[str] = []
    words = 0
    for piece in pieces:
        if piece.strip():
            words += 1
        if words > limit:
            break
        kept.append(piece)
    return "".join(kept).rstrip()
