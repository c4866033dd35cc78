"""Writing to the terminal: results to stdout, logs to stderr, model text made harmless."""

from __future__ import annotations

import re
import sys
from typing import Any

import msgspec

__all__ = ["emit_json", "err", "safe_text"]

# C0 controls but tab and newline, DEL, and C1 controls: escape sequences start with one of them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(text: str) -> str:
    """``text`` with every terminal control character shown as a visible escape, so that a model's
    answer cannot move the cursor, recolour the terminal or rewrite what was printed before."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def emit_json(value: Any) -> None:
    """Print ``value`` as one line of JSON on stdout."""
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


def err(line: str) -> None:
    """Print one line on stderr (logs, notices, errors)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
