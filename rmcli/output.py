"""Writing to the terminal: results to stdout, logs to stderr, model text made harmless, keys never.

Every API key the process reads (``rmcli.environment.api_key``) is remembered here, and whatever
this module writes has them replaced by ``<redacted>``: a provider that quotes the key it was sent
in an error message ("Incorrect API key provided: sk-...") must not get it onto a terminal or into
a CI log through us.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import msgspec

__all__ = ["REDACTED", "add_secret", "emit_json", "err", "redact", "safe_text"]

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


def safe_text(text: str) -> str:
    """``text`` with every terminal control character shown as a visible escape, so that a model's
    answer cannot move the cursor, recolour the terminal or rewrite what was printed before; and
    with every secret redacted."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", redact(text))


def emit_json(value: Any) -> None:
    """Print ``value`` as one line of JSON on stdout, secrets redacted."""
    text = msgspec.json.encode(value).decode()
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
