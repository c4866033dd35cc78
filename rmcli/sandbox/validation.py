"""What each provider refuses in a chat request body (400), worded as its API words it.

Written from the providers' documentation and the errors they are seen to return, independently of
rmcore.wire: a request the product builds wrongly (a tool result without its call, roles that do
not alternate, an image in the wrong place) is refused here as the real API would refuse it.

OpenAI (and GLM) errors carry the offending parameter (``param``) and, for the newer checks, a
code (``missing_required_parameter``, ``invalid_type``, ``invalid_value``...); Anthropic's carry a
path at the start of the message (``messages.2.content.0: ...``); the AICEO gateway's are free text.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Problem", "aiceo_problem", "anthropic_problem", "messages_problem", "openai_problem"]


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a request is refused: the error's message, and (OpenAI) its ``param`` and ``code``."""

    message: str
    param: str | None = None
    code: str | None = None


_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_SIGNATURES: tuple[tuple[Callable[[bytes], bool], str], ...] = (
    (lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"), "image/png"),
    (lambda b: b.startswith(b"\xff\xd8\xff"), "image/jpeg"),
    (lambda b: b.startswith((b"GIF87a", b"GIF89a")), "image/gif"),
    (lambda b: b.startswith(b"RIFF") and b[8:12] == b"WEBP", "image/webp"),
)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sniffed(data: bytes) -> str | None:
    """The media type the bytes of an image say, when they start with a known signature."""
    return next((kind for matches, kind in _SIGNATURES if matches(data)), None)


def _decoded(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def messages_problem(body: Mapping[str, Any], roles: frozenset[str]) -> Problem | None:
    """The checks every format makes of ``messages``: a non-empty list of objects with a known
    role and a content."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return Problem("messages: field required (a non-empty list)", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            return Problem(f"messages.{index}: must be an object", f"messages.{index}")
        role = message.get("role")
        if role not in roles:
            return Problem(f"messages.{index}.role: unexpected role {role!r}", f"messages.{index}.role")
        if "content" not in message:
            return Problem(f"messages.{index}.content: field required", f"messages.{index}.content")
    return None


# -- OpenAI chat completions -----------------------------------------------------------------------

_OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool")
_OPENAI_PARTS = ("text", "image_url", "input_audio", "refusal", "audio", "file")
_OPENAI_PARTS_BY_ROLE = {
    "user": ("text", "image_url", "input_audio", "file"),
    "system": ("text",),
    "developer": ("text",),
    "tool": ("text",),
    "assistant": ("text", "refusal"),
}
_OPENAI_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_OPENAI_RANGES = (
    ("temperature", 0, 2),
    ("top_p", 0, 1),
    ("frequency_penalty", -2, 2),
    ("presence_penalty", -2, 2),
)
_DATA_URL_EXAMPLE = "'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _listed(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _missing(path: str) -> Problem:
    return Problem(f"Missing required parameter: '{path}'.", path, "missing_required_parameter")


def _wrong_type(path: str, expected: str, value: object) -> Problem:
    return Problem(
        f"Invalid type for '{path}': expected {expected}, but got {_json_type(value)} instead.",
        path,
        "invalid_type",
    )


def _wrong_value(path: str, value: object, allowed: tuple[str, ...]) -> Problem:
    return Problem(
        f"Invalid value: '{value}'. Supported values are: {_listed(allowed)}.", path, "invalid_value"
    )


def _empty_array(path: str) -> Problem:
    return Problem(
        f"Invalid '{path}': empty array. Expected an array with minimum length 1, but got an empty array "
        "instead.",
        path,
        "empty_array",
    )


def _openai_name(path: str, name: object) -> Problem | None:
    if name is None:
        return _missing(path)
    if not isinstance(name, str):
        return _wrong_type(path, "a string", name)
    if len(name) > 64:
        return Problem(
            f"Invalid '{path}': string too long. Expected a string with maximum length 64, but got a "
            f"string with length {len(name)} instead.",
            path,
            "string_above_max_length",
        )
    if not _OPENAI_NAME.fullmatch(name):
        return Problem(
            f"Invalid '{path}': string does not match pattern. Expected a string that matches the "
            "pattern '^[a-zA-Z0-9_-]+$'.",
            path,
            "invalid_value",
        )
    return None


def _openai_image_url(path: str, url: str) -> Problem | None:
    if url.startswith("data:"):
        header, comma, data = url.partition(",")
        media_type = header[len("data:") :].partition(";")[0]
        expected = (
            f"Invalid '{path}'. Expected a base64-encoded data URL with an image MIME type "
            f"(e.g. {_DATA_URL_EXAMPLE})"
        )
        if not comma or not header.endswith(";base64"):
            return Problem(f"{expected}, but got a value without the base64 prefix.", path, "invalid_value")
        if media_type not in _IMAGE_TYPES:
            return Problem(
                f"{expected}, but got unsupported MIME type '{media_type}'.", path, "invalid_value"
            )
        if not data or _decoded(data) is None:
            return Problem(f"{expected}, but got an invalid base64 value.", path, "invalid_value")
        return None
    scheme, sep, rest = url.partition("://")
    if scheme in ("http", "https") and sep and rest:
        return None
    return Problem(
        f"Invalid '{path}'. Expected a valid URL, but got a value with an invalid format.",
        path,
        "invalid_value",
    )


def _openai_part(path: str, role: str, part: object) -> Problem | None:
    if not isinstance(part, Mapping):
        return _wrong_type(path, "an object", part)
    kind = part.get("type")
    if kind is None:
        return _missing(f"{path}.type")
    if kind not in _OPENAI_PARTS:
        return _wrong_value(f"{path}.type", kind, _OPENAI_PARTS)
    if kind == "image_url" and role != "user":
        return Problem(
            f"Invalid '{path}.type': Image URLs are only allowed for messages with role 'user', but this "
            f"message with role '{role}' contains an image URL.",
            f"{path}.type",
            "invalid_value",
        )
    if kind not in _OPENAI_PARTS_BY_ROLE[role]:
        return _wrong_value(f"{path}.type", kind, _OPENAI_PARTS_BY_ROLE[role])
    if kind in ("text", "refusal"):
        value = part.get(kind)
        if value is None:
            return _missing(f"{path}.{kind}")
        return None if isinstance(value, str) else _wrong_type(f"{path}.{kind}", "a string", value)
    if kind == "image_url":
        image = part.get("image_url")
        if not isinstance(image, Mapping):
            return (
                _missing(f"{path}.image_url")
                if image is None
                else _wrong_type(f"{path}.image_url", "an object", image)
            )
        url = image.get("url")
        if not isinstance(url, str):
            return (
                _missing(f"{path}.image_url.url")
                if url is None
                else _wrong_type(f"{path}.image_url.url", "a string", url)
            )
        detail = image.get("detail")
        if detail is not None and detail not in ("auto", "low", "high"):
            return _wrong_value(f"{path}.image_url.detail", detail, ("auto", "low", "high"))
        return _openai_image_url(f"{path}.image_url.url", url)
    return None


def _openai_content(path: str, role: str, message: Mapping[str, Any]) -> Problem | None:
    content = message.get("content")
    if content is None:
        if role == "assistant" and message.get("tool_calls"):
            return None
        if role == "assistant":
            return Problem("Invalid value for 'content': expected a string, got null.", f"{path}.content")
        return (
            _missing(f"{path}.content")
            if "content" not in message
            else _wrong_type(f"{path}.content", "one of a string or array of objects", content)
        )
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return _wrong_type(f"{path}.content", "one of a string or array of objects", content)
    if not content:
        return _empty_array(f"{path}.content")
    for index, part in enumerate(content):
        problem = _openai_part(f"{path}.content[{index}]", role, part)
        if problem is not None:
            return problem
    return None


def _openai_tool_calls(path: str, message: Mapping[str, Any]) -> list[str] | Problem:
    """The ids of an assistant message's tool calls, or why they are refused."""
    calls = message.get("tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, list):
        return _wrong_type(f"{path}.tool_calls", "an array", calls)
    if not calls:
        return _empty_array(f"{path}.tool_calls")
    ids: list[str] = []
    for index, call in enumerate(calls):
        here = f"{path}.tool_calls[{index}]"
        if not isinstance(call, Mapping):
            return _wrong_type(here, "an object", call)
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            return (
                _missing(f"{here}.id") if call_id is None else _wrong_type(f"{here}.id", "a string", call_id)
            )
        kind = call.get("type")
        if kind is None:
            return _missing(f"{here}.type")
        if kind != "function":
            return _wrong_value(f"{here}.type", kind, ("function",))
        function = call.get("function")
        if not isinstance(function, Mapping):
            return (
                _missing(f"{here}.function")
                if function is None
                else _wrong_type(f"{here}.function", "an object", function)
            )
        name = function.get("name")
        if not isinstance(name, str) or not name:
            return (
                _missing(f"{here}.function.name")
                if not name
                else _wrong_type(f"{here}.function.name", "a string", name)
            )
        arguments = function.get("arguments")
        if arguments is None:
            return _missing(f"{here}.function.arguments")
        if not isinstance(arguments, str):
            return _wrong_type(f"{here}.function.arguments", "a string", arguments)
        ids.append(call_id)
    return ids


def _unanswered(ids: list[str], index: int) -> Problem:
    return Problem(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}",
        f"messages.[{index}].role",
    )


def _openai_messages(messages: object) -> Problem | None:
    if messages is None:
        return _missing("messages")
    if not isinstance(messages, list):
        return _wrong_type("messages", "an array", messages)
    if not messages:
        return _empty_array("messages")
    calls: list[str] | None = None  # the tool call ids tool messages may answer now
    unanswered: list[str] = []
    for index, message in enumerate(messages):
        path = f"messages[{index}]"
        if not isinstance(message, Mapping):
            return _wrong_type(path, "an object", message)
        role = message.get("role")
        if role is None:
            return _missing(f"{path}.role")
        if role not in _OPENAI_ROLES:
            return _wrong_value(f"{path}.role", role, _OPENAI_ROLES)
        if role != "tool":
            if unanswered:
                return _unanswered(unanswered, index)
            calls = None
        problem = _openai_content(path, role, message)
        if problem is not None:
            return problem
        if role == "assistant":
            ids = _openai_tool_calls(path, message)
            if isinstance(ids, Problem):
                return ids
            calls, unanswered = (ids, list(ids)) if ids else (None, [])
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                return Problem(
                    "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.",
                    f"messages.[{index}].tool_call_id",
                )
            if calls is None:
                return Problem(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            if call_id not in calls:
                return Problem(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of previous "
                    "message.",
                    f"messages.[{index}].tool_call_id",
                )
            if call_id in unanswered:
                unanswered.remove(call_id)
    if unanswered:
        return _unanswered(unanswered, len(messages) - 1)
    return None


def _openai_tools(body: Mapping[str, Any]) -> list[str] | Problem:
    """The names of the request's functions, or why its tools are refused."""
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        return _wrong_type("tools", "an array", tools)
    if not tools:
        return _empty_array("tools")
    names: list[str] = []
    for index, tool in enumerate(tools):
        path = f"tools[{index}]"
        if not isinstance(tool, Mapping):
            return _wrong_type(path, "an object", tool)
        kind = tool.get("type")
        if kind is None:
            return _missing(f"{path}.type")
        if kind != "function":
            return _wrong_value(f"{path}.type", kind, ("function",))
        function = tool.get("function")
        if not isinstance(function, Mapping):
            return (
                _missing(f"{path}.function")
                if function is None
                else _wrong_type(f"{path}.function", "an object", function)
            )
        problem = _openai_name(f"{path}.function.name", function.get("name"))
        if problem is not None:
            return problem
        for field, expected, wanted in (
            ("description", "a string", str),
            ("parameters", "an object", Mapping),
        ):
            value = function.get(field)
            if value is not None and not isinstance(value, wanted):
                return _wrong_type(f"{path}.function.{field}", expected, value)
        names.append(function["name"])
    return names


def _openai_tool_choice(body: Mapping[str, Any], names: list[str]) -> Problem | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    only_with_tools = Problem(
        "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
        "tool_choice",
    )
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            return _wrong_value("tool_choice", choice, ("none", "auto", "required"))
        return only_with_tools if not names and choice != "none" else None
    if not isinstance(choice, Mapping):
        return _wrong_type("tool_choice", "one of a string or object", choice)
    kind = choice.get("type")
    if kind is None:
        return _missing("tool_choice.type")
    if kind != "function":
        return _wrong_value("tool_choice.type", kind, ("function",))
    function = choice.get("function")
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str) or not name:
        return _missing("tool_choice.function.name")
    if not names:
        return only_with_tools
    if name not in names:
        return Problem(
            f"Invalid value for 'tool_choice': function '{name}' is not one of the functions in 'tools' "
            f"({_listed(tuple(names))}).",
            "tool_choice",
            "invalid_value",
        )
    return None


def _all_text(messages: list[Any]) -> str:
    texts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            )
    return "\n".join(texts)


def _openai_response_format(body: Mapping[str, Any], json_word_rule: bool) -> Problem | None:
    response_format = body.get("response_format")
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        return _wrong_type("response_format", "an object", response_format)
    kind = response_format.get("type")
    if kind is None:
        return _missing("response_format.type")
    if kind not in ("text", "json_object", "json_schema"):
        return _wrong_value("response_format.type", kind, ("text", "json_object", "json_schema"))
    if kind == "json_object" and json_word_rule and "json" not in _all_text(body["messages"]).lower():
        return Problem(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
            "'json_object'.",
            "messages",
        )
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            return (
                _missing("response_format.json_schema")
                if spec is None
                else _wrong_type("response_format.json_schema", "an object", spec)
            )
        problem = _openai_name("response_format.json_schema.name", spec.get("name"))
        if problem is not None:
            return problem
        schema, strict = spec.get("schema"), spec.get("strict")
        if schema is not None and not isinstance(schema, Mapping):
            return _wrong_type("response_format.json_schema.schema", "an object", schema)
        if strict is not None and not isinstance(strict, bool):
            return _wrong_type("response_format.json_schema.strict", "a boolean", strict)
    return None


def _openai_sampling(body: Mapping[str, Any]) -> Problem | None:
    for field, low, high in _OPENAI_RANGES:
        value = body.get(field)
        if value is None:
            continue
        if not _number(value):
            return _wrong_type(field, "a decimal", value)
        if value > high:
            return Problem(
                f"Invalid '{field}': decimal above maximum value. Expected a value <= {high}, but got "
                f"{value} instead.",
                field,
                "decimal_above_max_value",
            )
        if value < low:
            return Problem(
                f"Invalid '{field}': decimal below minimum value. Expected a value >= {low}, but got {value} "
                "instead.",
                field,
                "decimal_below_min_value",
            )
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        return _wrong_type("seed", "an integer", seed)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list):
            return _wrong_type("stop", "one of a string or array of strings", stop)
        if len(stop) > 4:
            return Problem(
                "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array "
                f"with length {len(stop)} instead.",
                "stop",
                "array_above_max_length",
            )
        for index, item in enumerate(stop):
            if not isinstance(item, str):
                return _wrong_type(f"stop[{index}]", "a string", item)
    if body.get("stream_options") is not None and body.get("stream") is not True:
        return Problem(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
        )
    return None


def openai_problem(body: Mapping[str, Any], *, json_word_rule: bool = True) -> Problem | None:
    """Why OpenAI refuses a chat completions body, or ``None``. ``json_word_rule``: OpenAI's rule that
    a ``json_object`` request says "json" somewhere in its messages (GLM has none)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return Problem("you must provide a model parameter", "model")
    for field in ("max_tokens", "max_completion_tokens"):
        if body.get(field) is not None and not _positive_int(body[field]):
            return Problem(f"Invalid '{field}': expected an integer of at least 1.", field)
    problem = _openai_messages(body.get("messages"))
    if problem is not None:
        return problem
    names = _openai_tools(body)
    if isinstance(names, Problem):
        return names
    return (
        _openai_tool_choice(body, names)
        or _openai_response_format(body, json_word_rule)
        or _openai_sampling(body)
    )


# -- Anthropic Messages ----------------------------------------------------------------------------

_ANTHROPIC_BLOCKS = ("text", "image", "tool_use", "tool_result")
_ANTHROPIC_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_ANTHROPIC_ID = re.compile(r"[a-zA-Z0-9_-]+")
_EMPTY_TEXT = "messages: text content blocks must be non-empty"


def _tag_problem(path: str, kind: object, tags: tuple[str, ...]) -> Problem:
    if kind is None:
        return Problem(f"{path}: Unable to extract tag using discriminator 'type'")
    listed = ", ".join(f"'{t}'" for t in tags)
    return Problem(
        f"{path}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {listed}"
    )


def _anthropic_image(path: str, block: Mapping[str, Any]) -> Problem | None:
    source = block.get("source")
    if not isinstance(source, Mapping):
        return Problem(f"{path}.image.source: Field required")
    kind = source.get("type")
    if kind == "url":
        url = source.get("url")
        scheme, sep, rest = url.partition("://") if isinstance(url, str) else ("", "", "")
        if scheme not in ("http", "https") or not sep or not rest:
            return Problem(f"{path}.image.source.url.url: Input should be a valid URL")
        return None
    if kind != "base64":
        return _tag_problem(f"{path}.image.source", kind, ("base64", "url"))
    media_type = source.get("media_type")
    if media_type not in _IMAGE_TYPES:
        return Problem(
            f"{path}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    data = source.get("data")
    if not isinstance(data, str) or not data:
        return Problem(f"{path}.image.source.base64.data: Field required")
    decoded = _decoded(data)
    if decoded is None:
        return Problem(f"{path}.image.source.base64.data: Invalid base64 data")
    sniffed = _sniffed(decoded)
    if sniffed is not None and sniffed != media_type:
        return Problem(
            f"{path}.image.source.base64.data: The image was specified using the {media_type} media "
            f"type, but the image appears to be a {sniffed} image"
        )
    return None


def _anthropic_tool_result_content(path: str, content: object) -> Problem | None:
    if content is None or isinstance(content, str):
        return None
    if not isinstance(content, list):
        return Problem(f"{path}.tool_result.content: Input should be a valid list")
    for index, block in enumerate(content):
        here = f"{path}.tool_result.content.{index}"
        if not isinstance(block, Mapping):
            return Problem(f"{here}: Input should be a valid dictionary or object to extract fields from")
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                return Problem(f"{here}.text.text: Field required")
            if not block["text"]:
                return Problem(_EMPTY_TEXT)
        elif kind == "image":
            problem = _anthropic_image(here, block)
            if problem is not None:
                return problem
        else:
            return _tag_problem(here, kind, ("text", "image"))
    return None


def _anthropic_block(path: str, role: str, block: object) -> Problem | None:
    if not isinstance(block, Mapping):
        return Problem(f"{path}: Input should be a valid dictionary or object to extract fields from")
    kind = block.get("type")
    if kind not in _ANTHROPIC_BLOCKS:
        return _tag_problem(path, kind, _ANTHROPIC_BLOCKS)
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            return Problem(
                f"{path}.text.text: Field required"
                if text is None
                else f"{path}.text.text: Input should be a valid string"
            )
        return Problem(_EMPTY_TEXT) if not text else None
    if kind == "image":
        return _anthropic_image(path, block)
    if kind == "tool_use":
        if role != "assistant":
            return Problem(f"{path}: `tool_use` blocks can only be in `assistant` messages")
        for field in ("id", "name"):
            value = block.get(field)
            if not isinstance(value, str) or not value:
                return Problem(f"{path}.tool_use.{field}: Field required")
        if not _ANTHROPIC_ID.fullmatch(block["id"]):
            return Problem(f"{path}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        if not isinstance(block.get("input"), Mapping):
            missing = "input" not in block
            return Problem(
                f"{path}.tool_use.input: "
                + ("Field required" if missing else "Input should be a valid dictionary")
            )
        return None
    if role != "user":
        return Problem(f"{path}: `tool_result` blocks can only be in `user` messages")
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        return Problem(f"{path}.tool_result.tool_use_id: Field required")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        return Problem(f"{path}.tool_result.is_error: Input should be a valid boolean")
    return _anthropic_tool_result_content(path, block.get("content"))


def _anthropic_messages(messages: list[Mapping[str, Any]]) -> Problem | None:
    previous_role: str | None = None
    previous_uses: list[str] = []
    for index, message in enumerate(messages):
        role = str(message["role"])
        if role == previous_role:
            return Problem(
                f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" '
                "roles in a row"
            )
        content = message["content"]
        final_assistant = role == "assistant" and index == len(messages) - 1
        if isinstance(content, str):
            blocks: list[Any] = []
            empty = not content
        elif isinstance(content, list):
            blocks = content
            empty = not content
        else:
            return Problem(f"messages.{index}.content: Input should be a valid list")
        if empty and not final_assistant:
            return Problem(
                f"messages.{index}: all messages must have non-empty content except for the optional final "
                "assistant message"
            )
        for position, block in enumerate(blocks):
            problem = _anthropic_block(f"messages.{index}.content.{position}", role, block)
            if problem is not None:
                return problem
        uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]
        results = [(p, b["tool_use_id"]) for p, b in enumerate(blocks) if b.get("type") == "tool_result"]
        answered = {tool_use_id for _, tool_use_id in results}
        missing = [u for u in previous_uses if u not in answered]
        if missing:
            return Problem(
                f"messages.{index - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        for position, tool_use_id in results:
            if tool_use_id not in previous_uses:
                return Problem(
                    f"messages.{index}.content.{position}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {tool_use_id}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        previous_role, previous_uses = role, uses
    return None


def _anthropic_system(system: object) -> Problem | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return Problem("system: must be a string or a list of text blocks")
    for index, block in enumerate(system):
        if not isinstance(block, Mapping) or block.get("type") != "text":
            return Problem(f"system.{index}.type: Input should be 'text'")
        if not isinstance(block.get("text"), str):
            return Problem(f"system.{index}.text: Field required")
        if not block["text"]:
            return Problem("system: text content blocks must be non-empty")
    return None


def _anthropic_tools(body: Mapping[str, Any]) -> list[str] | Problem:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        return Problem("tools: Input should be a valid list")
    names: list[str] = []
    for index, tool in enumerate(tools):
        path = f"tools.{index}"
        if not isinstance(tool, Mapping):
            return Problem(f"{path}: Input should be a valid dictionary or object to extract fields from")
        if tool.get("type") not in (None, "custom"):
            continue  # a server tool (web search, code execution...), typed by its version
        name = tool.get("name")
        if not isinstance(name, str):
            return Problem(f"{path}.custom.name: Field required")
        if not _ANTHROPIC_TOOL_NAME.fullmatch(name):
            return Problem(f"{path}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        schema = tool.get("input_schema")
        if schema is None:
            return Problem(f"{path}.custom.input_schema: Field required")
        if not isinstance(schema, Mapping):
            return Problem(f"{path}.custom.input_schema: Input should be a valid dictionary")
        if schema.get("type") != "object":
            return Problem(f"{path}.custom.input_schema.type: Input should be 'object'")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            return Problem(f"{path}.custom.description: Input should be a valid string")
        if name in names:
            return Problem("tools: Tool names must be unique.")
        names.append(name)
    return names


def _anthropic_tool_choice(body: Mapping[str, Any], names: list[str]) -> Problem | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not isinstance(choice, Mapping):
        return Problem("tool_choice: Input should be a valid dictionary or object to extract fields from")
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        return _tag_problem("tool_choice", kind, ("auto", "any", "tool", "none"))
    parallel = choice.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        return Problem(f"tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean")
    if kind in ("any", "tool") and not names:
        return Problem(
            f"tool_choice: a tool_choice of type '{kind}' may only be specified while providing tools"
        )
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            return Problem("tool_choice.tool.name: Field required")
        if name not in names:
            return Problem(f"tool_choice.tool.name: no tool named '{name}' in tools")
    return None


def _anthropic_sampling(body: Mapping[str, Any]) -> Problem | None:
    for field in ("temperature", "top_p"):
        value = body.get(field)
        if value is None:
            continue
        if not _number(value):
            return Problem(f"{field}: Input should be a valid number")
        if value > 1:
            return Problem(f"{field}: Input should be less than or equal to 1")
        if value < 0:
            return Problem(f"{field}: Input should be greater than or equal to 0")
    top_k = body.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0):
        return Problem("top_k: Input should be a non-negative integer")
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list):
            return Problem("stop_sequences: Input should be a valid list")
        for index, stop in enumerate(stops):
            if not isinstance(stop, str):
                return Problem(f"stop_sequences.{index}: Input should be a valid string")
            if not stop.strip():
                return Problem("stop_sequences: each stop sequence must contain non-whitespace")
    return None


def _anthropic_output(body: Mapping[str, Any]) -> Problem | None:
    config = body.get("output_config")
    if config is not None and not isinstance(config, Mapping):
        return Problem("output_config: Input should be a valid dictionary")
    for path, output in (
        ("output_config.format", config.get("format") if isinstance(config, Mapping) else None),
        ("output_format", body.get("output_format")),
    ):
        if output is None:
            continue
        if not isinstance(output, Mapping) or output.get("type") != "json_schema":
            kind = output.get("type") if isinstance(output, Mapping) else None
            return _tag_problem(path, kind, ("json_schema",))
        if not isinstance(output.get("schema"), Mapping):
            return Problem(f"{path}.json_schema.schema: Field required")
    return None


def anthropic_problem(body: Mapping[str, Any]) -> Problem | None:
    """Why the Messages API refuses a body, or ``None``."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return Problem("model: field required")
    if "max_tokens" not in body:
        return Problem("max_tokens: field required")
    if not _positive_int(body["max_tokens"]):
        return Problem("max_tokens: must be an integer of at least 1")
    problem = _anthropic_system(body.get("system")) or messages_problem(
        body, frozenset({"user", "assistant"})
    )
    if problem is not None:
        return problem
    problem = _anthropic_messages(body["messages"])
    if problem is not None:
        return problem
    names = _anthropic_tools(body)
    if isinstance(names, Problem):
        return names
    return _anthropic_tool_choice(body, names) or _anthropic_sampling(body) or _anthropic_output(body)


# -- the AICEO gateway -----------------------------------------------------------------------------


def aiceo_problem(body: Mapping[str, Any]) -> Problem | None:
    """Why the gateway refuses a submit body, or ``None``. It carries text only: a message's content
    must be a string. Fields it does not know (``tools``, ``response_format``...) it ignores."""
    problem = messages_problem(body, frozenset({"system", "user", "assistant"}))
    if problem is not None:
        return problem
    for index, message in enumerate(body["messages"]):
        if not isinstance(message["content"], str):
            return Problem(f"messages.{index}.content: must be a string (the gateway carries text only)")
    return None
