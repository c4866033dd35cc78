"""Reading a perspective's answer, and combining confidences into one.

:func:`parse_answer` reads what a model wrote in answer to a perspective's prompt. The prompt asks
for one JSON object (``findings``, ``recommendation``, ``confidence``, ``reasoning``); models often
wrap it in a fenced block or in prose, or ignore it and write text. So the answer is read in this
order, the first that applies wins:

1. a JSON object with at least one of the expected keys: the whole answer, the last one inside a
   fenced block (```json or plain ```), or the last one embedded in prose;
2. otherwise labelled text: ``Recommendation: ...``, ``Reasoning: ...`` and the forms models
   really write for a confidence: ``Confidence: 0.8``, ``**Confidence:** 0.85``,
   ``Confidence: 85%``, ``confidence of 0.9/1.0``, ``Confidence level: 0.7``, ``confidence: .8``,
   ``Confidence = 80 %``, ``**Confidence**: 0.9``, ``Confidence: 8 out of 10``. The last such
   statement on the [0, 1] scale wins (the prompt asks for it at the end). A JSON object without
   a usable confidence also falls back to the text forms.

A percentage is divided by 100 and a fraction (``0.9/1.0``, ``8/10``) is divided out. A value
outside [0, 1] after that (``Confidence: 8``, ``1.5``, ``120%``) is rejected, not clamped: the model
did not answer on the scale it was asked for, and guessing what it meant would be inventing a
number. A confidence that cannot be found is ``None``, never a default (the original silently
used 0.7).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeGuard

from rmcore.base import Base

__all__ = [
    "ConfidenceSource",
    "ParsedAnswer",
    "embedded_objects",
    "overall_confidence",
    "parse_answer",
    "parse_confidence_text",
]

ConfidenceSource = Literal["json", "text"]


class ParsedAnswer(Base, frozen=True):
    """What a perspective's answer says.

    ``analysis`` is the findings text to show (the whole answer when it had no structure).
    ``confidence`` is in [0, 1], or ``None`` when the answer stated none on that scale.
    ``confidence_from`` tells where the confidence was read: the JSON object, the text, or nowhere.
    ``structured`` is true when the answer held a JSON object with the expected keys.
    """

    analysis: str
    recommendation: str | None = None
    confidence: float | None = None
    reasoning: str | None = None
    confidence_from: ConfidenceSource | None = None
    structured: bool = False


_EXPECTED_KEYS = frozenset({"findings", "analysis", "recommendation", "confidence", "reasoning"})

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript)?[ \t]*\n(.*?)```", re.DOTALL)

_NUMBER = r"(?>\d+(?:\.\d+)?|\.\d+)"
"""A decimal number without sign. Atomic, so that a rejected ``12x`` is not retried as ``1``."""

_VALUE = rf"""
    (?P<num>{_NUMBER})
    (?:
        [ \t]*(?P<pct>%)
      | [ \t]*/[ \t]*(?P<den>{_NUMBER})
      | [ \t]+out[ \t]+of[ \t]+(?P<outof>{_NUMBER})
    )?
    (?![A-Za-z]|\.?\d)                       # a number, not "1st", "2x" or a version "1.2.3"
"""

_VALUE_ONLY = re.compile(_VALUE, re.VERBOSE)

_EMPHASIS = r"(?:\*\*|__|\*|_)?"

_CONFIDENCE = re.compile(
    rf"""
    \bconfidence\b
    (?:[ \t]+(?:level|score|rating|value))?    # Confidence level / score
    [ \t]*(?:\([^)\n]{{0,40}}\))?              # Confidence (0-1)
    [ \t]*{_EMPHASIS}["']?                     # **Confidence**: / "confidence":
    [ \t]*
    (?:[:=\-–—]|\bis\b|\bof\b|(?=\r?\n))       # the separator, or the end of a heading line
    \s*{_EMPHASIS}[ \t]*                       # **Confidence:** 0.85 / Confidence: **0.8**
    (?:(?:approximately|about|around|roughly)\b|~|≈)?[ \t]*
    {_VALUE}
    """,
    re.VERBOSE | re.IGNORECASE,
)


def _section(label: str) -> re.Pattern[str]:
    """A line that starts a labelled section: ``Recommendation: ...``, ``**2. Reasoning**: ...``,
    or a heading that stands alone (``## Recommendation``). ``rest`` is what follows the label on
    its line (``None`` for a heading)."""
    return re.compile(
        rf"""
        ^[ \t]*(?:\#{{1,6}}[ \t]*)?{_EMPHASIS}[ \t]*(?:\d+[.)][ \t]*)?{_EMPHASIS}[ \t]*
        {label}\w*
        (?:
            [ \t]*{_EMPHASIS}[ \t]*[:\-–—][ \t]*{_EMPHASIS}[ \t]*(?P<rest>.*)$
          | [ \t]*{_EMPHASIS}[ \t]*:?[ \t]*$
        )
        """,
        re.VERBOSE | re.IGNORECASE | re.MULTILINE,
    )


_RECOMMENDATION = _section("recommend")
_REASONING = _section("reasoning")
_HEADING = re.compile(r"^[ \t]*(?:#{1,6}[ \t]|\*\*|__|\d+[.)][ \t])")


def parse_answer(text: str) -> ParsedAnswer:
    """Read findings, recommendation, confidence and reasoning from a perspective's answer.

    See the module's docstring for the order of the forms tried. Never raises: an answer with no
    structure at all is returned whole as ``analysis`` with everything else ``None``.
    """
    obj = _find_json_object(text)
    if obj is None:
        confidence = parse_confidence_text(text)
        return ParsedAnswer(
            analysis=text.strip(),
            recommendation=_labelled(text, _RECOMMENDATION),
            confidence=confidence,
            reasoning=_labelled(text, _REASONING),
            confidence_from="text" if confidence is not None else None,
        )
    findings = _text_field(obj, "findings") or _text_field(obj, "analysis")
    confidence = _json_confidence(obj.get("confidence"))
    source: ConfidenceSource | None = "json"
    if confidence is None:
        confidence = parse_confidence_text(text)
        source = "text" if confidence is not None else None
    return ParsedAnswer(
        analysis=findings if findings is not None else text.strip(),
        recommendation=_text_field(obj, "recommendation"),
        confidence=confidence,
        reasoning=_text_field(obj, "reasoning"),
        confidence_from=source,
        structured=True,
    )


def parse_confidence_text(text: str) -> float | None:
    """The last confidence stated in ``text`` in one of the forms of the module's docstring that
    is on the [0, 1] scale; ``None`` when there is none.

    Statements off the scale (``Confidence: 8``) are skipped, not clamped: when a text holds only
    those, the result is ``None``.
    """
    values = [_scaled(match) for match in _CONFIDENCE.finditer(text)]
    known = [v for v in values if v is not None]
    return known[-1] if known else None


def _scaled(match: re.Match[str]) -> float | None:
    number = float(match.group("num"))
    denominator = match.group("den") or match.group("outof")
    if match.group("pct"):
        number /= 100
    elif denominator is not None:
        den = float(denominator)
        if den == 0:
            return None
        number /= den
    return _in_range(number)


def _in_range(value: float) -> float | None:
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def _json_confidence(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _in_range(float(value))
    if isinstance(value, str):
        match = _VALUE_ONLY.fullmatch(value.strip())
        return _scaled(match) if match else None
    return None


def _text_field(obj: Mapping[str, Any], key: str) -> str | None:
    """A field as text: a string as it is, a list of strings as bullet lines, any other JSON value
    as indented JSON; ``None`` when absent, null or empty."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        text = "\n".join(f"- {item.strip()}" for item in value)
    else:
        text = json.dumps(value, indent=2, ensure_ascii=False)
    return text or None


def _find_json_object(text: str) -> dict[str, Any] | None:
    """The answer's JSON object: the whole text, else the last in a fenced block, else the last
    embedded in prose; only objects with at least one expected key count. Raw line breaks inside
    strings are accepted (``strict=False``): models write them, and they are unambiguous."""
    stripped = text.strip()
    whole = _decode_object(stripped)
    if whole is not None:
        return whole
    for source in ([m.group(1) for m in _FENCE.finditer(text)], [text]):
        found = [obj for chunk in source for obj in _embedded_objects(chunk)]
        if found:
            return found[-1]
    return None


def _decode_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text, strict=False)
    except (ValueError, RecursionError):
        return None
    return value if _is_answer(value) else None


def embedded_objects(text: str, pick: Callable[[Any], dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Every top-level JSON value in ``text`` (among prose, raw line breaks inside strings
    accepted, as models write them) that ``pick`` keeps, as ``pick`` returns it, in order."""
    decoder = json.JSONDecoder(strict=False)
    found: list[dict[str, Any]] = []
    position = text.find("{")
    while position != -1:
        try:
            value, end = decoder.raw_decode(text, position)
        except (ValueError, RecursionError):
            position = text.find("{", position + 1)
            continue
        kept = pick(value)
        if kept is not None:
            found.append(kept)
        position = text.find("{", end)
    return found


def _embedded_objects(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object in ``text`` that looks like an answer, in order."""
    return embedded_objects(text, lambda value: value if _is_answer(value) else None)


def _is_answer(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and not _EXPECTED_KEYS.isdisjoint(value)


def _labelled(text: str, pattern: re.Pattern[str]) -> str | None:
    """The text of a labelled section: the rest of its line, or when the label stands alone (a
    heading), the paragraph below it up to a blank line or the next heading."""
    match = pattern.search(text)
    if match is None:
        return None
    rest = (match.group("rest") or "").strip().strip("*_").strip()
    if rest:
        return rest
    lines: list[str] = []
    for line in text[match.end() :].splitlines()[1:]:
        if not line.strip():
            if lines:
                break
            continue
        if _HEADING.match(line) and lines:
            break
        lines.append(line.strip())
    return " ".join(lines) or None


def overall_confidence(values: Sequence[float | None]) -> float | None:
    """One confidence for the whole analysis: the mean of the known confidences minus half their
    mean absolute deviation from that mean.

    ``None`` values (perspectives that failed or stated no confidence) are left out; with no known
    value the result is ``None``. Disagreement lowers the result, agreement does not: when every
    confidence is ``c`` the result is ``c``.

    Why not the reference's rule (mean minus half the population standard deviation, clamped)? It
    breaks a promise a summary number must keep: lowering one perspective's confidence can *raise*
    it. With eight perspectives, seven at 0.5 and one at 1.0 give 0.48; lowering the 1.0 to 0.5
    gives 0.5. The standard deviation's pull on a single value grows with that value's distance
    from the mean (its z-score can reach sqrt(n - 1)), so for n >= 6 an outlier's penalty can
    outweigh its share of the mean.

    The mean absolute deviation bounds that pull. The partial derivative of
    ``mean - k * MAD`` with respect to one value is ``(1 - k * (s_i - s̄)) / n``, where ``s_i`` is
    the sign of that value's deviation and ``s̄`` the mean sign, so ``s_i - s̄ <= 2 - 2/n``. With
    ``k = 1/2`` the derivative is at least ``1/n²`` > 0 everywhere the function is differentiable,
    and the function is continuous and piecewise linear: lowering any one confidence always
    lowers the result, for any number of perspectives. It also stays in [0, 1] without clamping:
    it is at most the mean, and for values >= 0 the MAD is at most twice the mean. (The final
    ``min``/``max`` only absorbs floating-point rounding.) Half a deviation is the reference's
    weight, kept so that the numbers stay comparable with it.
    """
    known = [v for v in values if v is not None]
    if not known:
        return None
    n = len(known)
    mean = math.fsum(known) / n
    mad = math.fsum(abs(v - mean) for v in known) / n
    return min(1.0, max(0.0, mean - mad / 2))
