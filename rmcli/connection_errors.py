"""What to tell a person when a provider could not be reached: where, why, and what to try.

Every message names the address (``127.0.0.1:8080``) and the setting that points there
(``OPENAI_API_URL=http://127.0.0.1:8080/v1/chat/completions``), so that the fix is one look away:
``connection refused to 127.0.0.1:8080 (OPENAI_API_URL=...) — is the server running?``. Messages
are one line, built from the OS's and OpenSSL's reasons and the URL with its credentials hidden
(``rmcore.wire.endpoint.shown_url``), never from a header: no key can get in.

``ConnectionWatch`` follows a request through httpx's ``trace`` extension, so that an attempt that
runs out of time can say whether it was still connecting (``no connection to ... within 30 s``),
in its TLS handshake, or waiting for the answer; and it bounds the TLS handshake by
``TLS_HANDSHAKE_TIMEOUT_S``, so that https to a server that does not speak TLS and says nothing
fails in seconds rather than at the attempt timeout.
"""

from __future__ import annotations

import enum
import math
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio

from rmcore.providers import ProviderSpec
from rmcore.wire.endpoint import address, url_setting

__all__ = [
    "TLS_HANDSHAKE_TIMEOUT_S",
    "ConnectionWatch",
    "Phase",
    "closed_before_response",
    "connect_failed",
    "handshake_too_slow",
    "out_of_time",
]

TLS_HANDSHAKE_TIMEOUT_S = 4.0
"""The longest a TLS handshake may take once the TCP connection is up: a few round trips to a
server that speaks TLS, far less than this even across the world. One that takes longer is a
server that does not speak TLS (a plain-HTTP port waiting for a request line) and fails as
``connection``."""

_NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
    }
)
"""OpenSSL's reasons for a handshake answered with something that is not TLS (a plain-HTTP
``400 Bad Request``, for one); the names differ between OpenSSL versions."""


class Phase(enum.Enum):
    """How far a request's connection got."""

    REUSED = "reused"
    """No new connection was made (yet): a pooled one carries the request, or none started."""
    CONNECTING = "connecting"
    """Resolving the host name and opening the TCP connection."""
    HANDSHAKE = "handshake"
    """Connected; the TLS handshake is under way."""
    CONNECTED = "connected"
    """Connected (and the handshake done): the request goes out, the answer is awaited."""


class ConnectionWatch:
    """One request's connection, followed through httpx's ``trace`` extension: its ``phase``,
    and the cancel scope ``handshake`` that ends a TLS handshake running past
    ``TLS_HANDSHAKE_TIMEOUT_S`` (the caller wraps the request's head in it)."""

    def __init__(self, handshake_timeout_s: float = TLS_HANDSHAKE_TIMEOUT_S) -> None:
        self.phase = Phase.REUSED
        self._handshake: anyio.CancelScope | None = None
        self.handshake_timeout_s = handshake_timeout_s

    @property
    def handshake(self) -> anyio.CancelScope:
        """The scope a request through httpx's API is wrapped in (made when first asked: the
        direct way bounds its handshake itself and never needs it)."""
        if self._handshake is None:
            self._handshake = anyio.CancelScope()
        return self._handshake

    @property
    def extensions(self) -> dict[str, Any]:
        """The request extensions that report to this watch."""
        return {"trace": self.trace}

    async def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """Hear one of httpx's ``trace`` events (the direct way sends the same)."""
        match event:
            case "connection.connect_tcp.started":
                self.phase = Phase.CONNECTING
            case "connection.start_tls.started":
                self.phase = Phase.HANDSHAKE
                self.handshake.deadline = anyio.current_time() + self.handshake_timeout_s
            case "connection.connect_tcp.complete" | "connection.start_tls.complete":
                self.phase = Phase.CONNECTED
                if self._handshake is not None:
                    self._handshake.deadline = math.inf


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _os_reason(exc: BaseException) -> str:
    """A short reason from the OS for ``exc``, lower case: the first one in its chain of causes."""
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by peer"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def connect_failed(exc: BaseException, spec: ProviderSpec) -> str:
    """Why no connection to ``spec`` could be made (refused, unresolvable, unreachable, a TLS
    handshake that failed), where it was going, and what to try."""
    where, setting = address(spec.url), url_setting(spec)
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused to {where} ({setting}) — is the server running?"
        if isinstance(cause, socket.gaierror):
            host = urlsplit(spec.url).hostname or where
            return f"cannot resolve host {host} ({setting}) — check the host name in the URL"
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or "certificate verify failed"
            return (
                f"the TLS certificate of {where} is not trusted: {why} ({setting}) — check the "
                "host name in the URL, or point SSL_CERT_FILE at the CA that signed it"
            )
        if isinstance(cause, ssl.SSLError):
            if cause.reason in _NOT_TLS_REASONS:
                return f"the server at {where} does not speak TLS ({setting}) — use http:// instead?"
            if isinstance(cause, ssl.SSLEOFError):
                return (
                    f"the server at {where} closed the connection during the TLS handshake "
                    f"({setting}) — does it speak TLS? use http:// instead?"
                )
            return f"TLS handshake with {where} failed: {cause.reason or cause} ({setting})"
    if "refused" in str(exc).lower():
        return f"connection refused to {where} ({setting}) — is the server running?"
    return f"cannot connect to {where}: {_os_reason(exc)} ({setting}) — is the host reachable?"


def closed_before_response(exc: BaseException, spec: ProviderSpec) -> str:
    """The connection to ``spec`` was reset or closed before a response arrived. To an http://
    URL that is also what a server that speaks only TLS does, hence the question."""
    where, setting = address(spec.url), url_setting(spec)
    message = f"connection to {where} closed before a response: {_os_reason(exc)} ({setting})"
    if urlsplit(spec.url).scheme == "http":
        return f"{message} — if the server speaks TLS, use https://"
    return message


def handshake_too_slow(spec: ProviderSpec, seconds: float) -> str:
    """The TLS handshake with ``spec`` did not finish within ``seconds``."""
    return (
        f"no TLS handshake from {address(spec.url)} within {seconds:.3g} s ({url_setting(spec)}) "
        "— does the server speak TLS? use http:// instead?"
    )


def out_of_time(phase: Phase, spec: ProviderSpec, seconds: float, otherwise: str) -> str:
    """What an attempt that ran out of time (after ``seconds``) was waiting for: a connection,
    a TLS handshake, or else (``otherwise``) the answer."""
    if phase is Phase.CONNECTING:
        return (
            f"no connection to {address(spec.url)} within {seconds:.3g} s ({url_setting(spec)}) "
            "— is the host reachable?"
        )
    if phase is Phase.HANDSHAKE:
        return handshake_too_slow(spec, seconds)
    return otherwise
