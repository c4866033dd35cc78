"""What the sandbox's handlers see of a request, and the error for one that cannot be read.

Plain values, apart from the HTTP machinery (``connection.py``), so that the control API and the
providers can be written and tested against them alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["HttpError", "Request"]


class HttpError(Exception):
    """A request this server cannot read: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    """One whole request, body included. Header names are lower-cased; repeats are joined by ", "."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
