"""Writing to the terminal: results to stdout, logs to stderr, model text made harmless, keys never.

Every API key the process reads (``rmcli.environment.api_key``) is remembered here, and whatever
this module writes has them replaced by ``<redacted>``: a provider that quotes the key it was sent
in an error message ("Incorrect API key provided: sk-...") must not get it onto a terminal or into
a CI log through us.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from rmcli.figures import significant

__all__ = [
    "REDACTED",
    "LiveText",
    "add_secret",
    "contains_secret",
    "emit_json",
    "err",
    "json_ready",
    "redact",
    "safe_text",
]

REDACTED = "<redacted>"

MIN_SECRET_LENGTH = 8
"""Shorter values are not treated as secrets: replacing them would garble ordinary text, and no
provider issues keys that short."""

# C0 controls but tab and newline, DEL, and C1 controls: escape sequences start with one of them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_secrets: set[str] = set()


def add_secret(value: str) -> None:
    """Remember ``value`` (an API key) so that no output of this process shows it."""
    if len(value) >= MIN_SECRET_LENGTH:
        _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every remembered secret replaced by ``<redacted>`` (longest first, so that a
    key that contains another is hidden whole)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def contains_secret(text: str) -> bool:
    """Whether ``text`` holds any remembered secret."""
    return any(secret in text for secret in _secrets)


def safe_text(text: str) -> str:
    """``text`` with every terminal control character shown as a visible escape, so that a model's
    answer cannot move the cursor, recolour the terminal or rewrite what was printed before; and
    with every secret redacted."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", redact(text))


class LiveText:
    """Model text made safe piece by piece, as it streams to a terminal.

    Escaping terminal controls works character by character, so an escape sequence split across
    two deltas is neutralised as surely as a whole one. A secret split across deltas is not
    caught by redacting each delta, so the end of what arrived is held back while it could be
    the start of a secret, until the next delta (or ``flush``) settles it.
    """

    def __init__(self) -> None:
        self._held = ""

    def feed(self, delta: str) -> str:
        """What of ``delta`` (and of the text held back before it) can be shown now, made safe."""
        text = redact(self._held + delta)
        keep = _secret_start_length(text)
        self._held = text[len(text) - keep :] if keep else ""
        return safe_text(text[: len(text) - keep])

    def flush(self) -> str:
        """The text still held back, made safe: the stream ended, or its text is abandoned."""
        text, self._held = self._held, ""
        return safe_text(text)


def _secret_start_length(text: str) -> int:
    """The length of the longest end of ``text`` that is the start of a secret (not a whole one)."""
    longest = 0
    for secret in _secrets:
        for length in range(min(len(secret) - 1, len(text)), longest, -1):
            if text.endswith(secret[:length]):
                longest = length
                break
    return longest


COST_DIGITS = 6
"""Significant digits kept of a cost or a price (a field whose name holds ``cost`` or ``usd``):
enough for a millionth of a cent on a request that costs a few cents."""

FINE_DIGITS = 3
"""Significant digits kept of a confidence or a time in milliseconds (``...Ms``,
``executionTime``): what the measurement is worth. Whole milliseconds are always kept, so
that a time of 12,345.6 ms becomes 12346, not 12300, and a moment such as ``startedAtMs``
stays exact."""

OTHER_DIGITS = 15
"""Significant digits kept of any other float: every digit a decimal number written with up to
15 digits has, without the binary noise (``0.30000000000000004`` becomes ``0.3``)."""

_Rounder = Callable[[float], float]


def _cost(value: float) -> float:
    return significant(value, COST_DIGITS)


def _fine(value: float) -> float:
    return significant(value, FINE_DIGITS)


def _milliseconds(value: float) -> float:
    if abs(value) >= 10**FINE_DIGITS and math.isfinite(value):
        return float(round(value))
    return significant(value, FINE_DIGITS)


def _other(value: float) -> float:
    return significant(value, OTHER_DIGITS)


def _rounder(key: str) -> _Rounder | None:
    """How a float under the field ``key`` is rounded; None when the name says nothing."""
    lowered = key.lower()
    if "cost" in lowered or "usd" in lowered:
        return _cost
    if "confidence" in lowered or lowered.endswith("rate"):
        return _fine
    if key.endswith("Ms") or lowered.endswith("_ms") or key == "executionTime":
        return _milliseconds
    return None


def _rounded(value: Any, rounder: _Rounder) -> Any:
    if isinstance(value, float):
        return rounder(value)
    if isinstance(value, dict):
        return {
            k: _rounded(v, (_rounder(k) if isinstance(k, str) else None) or rounder) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rounded(v, rounder) for v in value]
    return value


def json_ready(value: Any) -> Any:
    """``value`` as JSON builtins (structs and dataclasses become dicts, as msgspec encodes them)
    with every float rounded by what its field holds: costs and prices to 6 significant digits,
    confidences, rates and milliseconds to 3 (whole milliseconds kept), any other float to 15 (no
    binary noise). A float in a list or an unnamed map rounds as the field holding it; ints and
    everything else are untouched. ``0.6525000000000001`` becomes ``0.6525``."""
    return _rounded(msgspec.to_builtins(value), _other)


def emit_json(value: Any) -> None:
    """Print ``value`` as one line of JSON on stdout, floats rounded (``json_ready``), secrets
    redacted."""
    text = msgspec.json.encode(json_ready(value)).decode()
    if _secrets:
        text = redact(text)
        # A key with a character JSON escapes (" or \) appears escaped in the encoded text.
        for secret in _secrets:
            escaped = msgspec.json.encode(secret).decode()[1:-1]
            if escaped != secret:
                text = text.replace(escaped, REDACTED)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(line: str) -> None:
    """Print one line on stderr (logs, notices, errors), secrets redacted and terminal controls
    escaped: a notice often quotes a provider's error message, which is not to be trusted."""
    sys.stderr.write(safe_text(line) + "\n")
    sys.stderr.flush()
