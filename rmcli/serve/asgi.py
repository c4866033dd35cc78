"""The few ASGI pieces the gateway needs, without a web framework: types, a JSON response, a
body read with a size limit, and a watcher that notices a client hanging up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import anyio

__all__ = [
    "MAX_BODY_BYTES",
    "BodyTooLarge",
    "ClientGone",
    "Headers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "read_body",
    "respond",
    "watch_disconnect",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

MAX_BODY_BYTES = 32 * 1024 * 1024
"""The largest request body read (images travel inline as data URLs); a longer one is a 413."""

JSON = (b"content-type", b"application/json")


class BodyTooLarge(Exception):
    """The request's body is over ``MAX_BODY_BYTES``."""


class ClientGone(Exception):
    """The client hung up before its request's body was read."""


async def respond(send: Send, status: int, body: bytes, headers: Headers = ()) -> None:
    """A whole JSON response."""
    await send({"type": "http.response.start", "status": status, "headers": [JSON, *headers]})
    await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_body(scope: Scope, receive: Receive) -> bytes:
    """The request's whole body; ``BodyTooLarge`` as soon as it is known to be too large (by its
    Content-Length, or as it arrives), ``ClientGone`` when the client hangs up first."""
    declared = _declared_length(scope)
    if declared is not None and declared > MAX_BODY_BYTES:
        raise BodyTooLarge
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        part: bytes = message.get("body", b"")
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge
        parts.append(part)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` when the client hangs up (the body must have been read already): its
    run is cancelled, which settles every attempt in flight as ``cancelled``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
