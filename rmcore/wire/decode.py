"""JSON decoding that never raises: a reply is either the expected shape or ``None``.

Providers' replies are untrusted input. msgspec reports bad JSON and wrong shapes with
``DecodeError`` (``ValidationError`` is a subclass) and absurdly deep nesting with
``RecursionError``; both mean the same thing here: not the documented wire format.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

__all__ = ["decode_any", "decode_as"]

T = TypeVar("T")


def decode_as(data: bytes | str, shape: type[T]) -> T | None:
    """``data`` decoded as ``shape``, or ``None`` when it is not valid JSON of that shape."""
    try:
        return msgspec.json.decode(data, type=shape)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None


def decode_any(data: bytes | str) -> Any:
    """``data`` decoded to plain Python values, or ``None`` when it is not valid JSON."""
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None
