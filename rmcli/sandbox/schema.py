"""Values made up from a JSON schema: the arguments of the sandbox's tool calls and its JSON answers.

Deterministic and simple, so that tests can predict them:

- a string is a word of the user's last text: the last capitalised word that does not begin a
  sentence ("What is the weather in Paris?" gives "Paris"; when the last text has none, the same
  word of the latest earlier user text that has one: "I live in Paris." then "What is the
  weather?" gives "Paris"), else the last text's last capitalised word, else its last word, else
  "example". A string with an ``enum`` takes its first value, a ``const`` its
  value, a ``default`` its default; ``format`` date, date-time, email and uri get a fixed value of
  that form;
- an integer or a number is 1, moved into ``minimum``..``maximum`` when the schema bounds it;
- a boolean is ``true``, a null ``null``;
- an array holds one item made up from ``items`` (``minItems`` of them when that is more);
- an object has its required properties (every property when the schema has no ``required``
  list), each made up from its own schema; ``anyOf`` / ``oneOf`` / ``allOf`` take their first
  branch that is not ``null``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["example_object", "example_value", "pick_word", "pick_word_in"]

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_SENTENCE_END = ".!?"
_MAX_DEPTH = 8
_FORMATS = {
    "date": "2025-01-01",
    "date-time": "2025-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "someone@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _begins_sentence(text: str, start: int) -> bool:
    before = text[:start]
    stripped = before.rstrip().rstrip("\"'“‘(")
    return not stripped or stripped[-1] in _SENTENCE_END or "\n" in before[len(stripped) :]


def _candidates(text: str) -> tuple[list[str], list[str], list[str]]:
    """The capitalised words of ``text`` that do not begin a sentence, all its capitalised words,
    and all its words, in order."""
    words = [(m.group(), m.start()) for m in _WORD.finditer(text)]
    words = [(w.removesuffix("'s").removesuffix("’s"), start) for w, start in words]
    capitalised = [(w, start) for w, start in words if w[0].isupper() and w != "I"]
    inside = [w for w, start in capitalised if not _begins_sentence(text, start)]
    return inside, [w for w, _ in capitalised], [w for w, _ in words]


def pick_word(text: str) -> str:
    """The word a made-up string takes from ``text`` (see the module's description)."""
    for candidates in _candidates(text):
        if candidates:
            return candidates[-1]
    return "example"


def pick_word_in(texts: Sequence[str]) -> str:
    """The word a made-up string takes from a conversation's user texts, the latest last: the
    latest one's, unless only an earlier one has a capitalised word inside a sentence."""
    for text in reversed(texts):
        inside = _candidates(text)[0]
        if inside:
            return inside[-1]
    return pick_word(texts[-1]) if texts else "example"


def _first_type(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        kinds = [v for v in value if isinstance(v, str)]
        return next((k for k in kinds if k != "null"), kinds[0] if kinds else None)
    return None


def _number(schema: Mapping[str, Any], integer: bool) -> int | float:
    value: int | float = 1
    low, high = schema.get("minimum"), schema.get("maximum")
    exclusive_low, exclusive_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(low, int | float) and not isinstance(low, bool) and value < low:
        value = low
    if (
        isinstance(exclusive_low, int | float)
        and not isinstance(exclusive_low, bool)
        and value <= exclusive_low
    ):
        value = exclusive_low + 1
    if isinstance(high, int | float) and not isinstance(high, bool) and value > high:
        value = high
    if (
        isinstance(exclusive_high, int | float)
        and not isinstance(exclusive_high, bool)
        and value >= exclusive_high
    ):
        value = exclusive_high - 1
    return int(value) if integer and float(value).is_integer() else value


def example_value(schema: object, word: str, depth: int = 0) -> Any:
    """A value valid for ``schema`` in the simple cases, its strings being ``word``."""
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return word
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            chosen = next(
                (b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")), branches[0]
            )
            return example_value(chosen, word, depth + 1)
    kind = _first_type(schema.get("type"))
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return example_object(schema, word, depth)
    if kind == "array":
        count = schema.get("minItems")
        count = count if isinstance(count, int) and not isinstance(count, bool) and count > 1 else 1
        return [example_value(schema.get("items"), word, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    form = schema.get("format")
    return _FORMATS.get(form, word) if isinstance(form, str) else word


def example_object(schema: object, word: str, depth: int = 0) -> dict[str, Any]:
    """An object for an object ``schema``: its required properties (all when none is listed)."""
    if not isinstance(schema, Mapping):
        return {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = schema.get("required")
    if isinstance(required, list):
        names = [n for n in properties if n in required]
        names += [n for n in required if isinstance(n, str) and n not in properties]
    else:
        names = [n for n in properties if isinstance(n, str)]
    return {name: example_value(properties.get(name), word, depth + 1) for name in names}
