"""One attempt over real HTTP: send what the engine asked for, enforce its timeouts, report the event.

The engine decides which provider and how long; this module does the I/O with one shared
``httpx.AsyncClient`` (the direct way of ``rmcli.http_client.ProviderClient`` when it may, httpx's
API otherwise) and turns whatever happens (an answer, an HTTP error, a refused or reset
connection, a silent or truncated stream) into exactly one ``AttemptSucceeded`` or
``AttemptFailed``. Timeouts are anyio cancel scopes, so an abandoned attempt's connection is
closed at once, never left to bill in the background.

A reply is never trusted to be small, nor to end:

- A whole body (2xx) is read up to ``MAX_BODY_BYTES`` (16 MiB); one that announces more in its
  Content-Length is refused before a byte of it is read, one that turns out larger is cut off
  there. Both end the attempt as ``malformed_response`` ("reply larger than the 16 MiB limit").
- An error reply (4xx, 5xx) is read up to ``MAX_ERROR_BODY_BYTES`` (1 MiB) and classified by its
  status and what was read, so a 503 with a runaway body is still ``overloaded``.
- A stream counts every byte it delivers: past ``MAX_BODY_BYTES`` in total it is cut off as
  ``malformed_response`` ("stream larger than the 16 MiB limit"), however slowly it came. A stream
  that never ends but stays under the limit is ended by the attempt timeout (``timeout``, or
  ``deadline`` when the run's deadline binds first); one that goes silent by the idle timeout
  (``stream_stalled``). Either way nothing is kept of it: the attempt failed.
- Sizes are counted after decoding a gzip or deflate Content-Encoding, which is decoded at most
  ``_DECODE_PIECE_BYTES`` at a time, so a small compressed body cannot expand past the limit in
  memory. Any other encoding (which we never ask for) is ``malformed_response``.

So an attempt holds at most about ``MAX_BODY_BYTES`` of a reply at any moment, whatever the
provider sends.

A failure to connect says where and what to try (``rmcli.connection_errors``): the address and
the setting that points there, a TLS handshake that cannot succeed (https to a plain-HTTP port)
within ``TLS_HANDSHAKE_TIMEOUT_S`` whatever the server does, and an attempt that ran out of time
while still connecting says so.
"""

from __future__ import annotations

import functools
import math
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import msgspec
from returns.result import Failure, Success

from rmcli.connection_errors import (
    ConnectionWatch,
    closed_before_response,
    connect_failed,
    handshake_too_slow,
    out_of_time,
)
from rmcli.http1 import BodyIdle, Endpoint, Reply, TLSHandshakeTimeout
from rmcli.http_client import ProviderClient
from rmcore import wire
from rmcore.completion import Usage
from rmcore.errors import ErrorKind, ProviderError
from rmcore.events import AttemptFailed, AttemptSucceeded, StartAttempt
from rmcore.pricing import estimate_prompt_tokens
from rmcore.providers import ProviderKind
from rmcore.requests import ChatRequest, HttpRequest

__all__ = ["MAX_BODY_BYTES", "MAX_ERROR_BODY_BYTES", "perform_attempt"]

MAX_BODY_BYTES = 16 * 1024 * 1024
"""The largest reply accepted from a provider (a whole body, or a stream's total, decoded); larger
is ``malformed_response``, so a runaway provider cannot exhaust memory."""

MAX_ERROR_BODY_BYTES = 1024 * 1024
"""How much of an error reply (4xx, 5xx) is read: its status and the start of its body say why."""

_DECODE_PIECE_BYTES = 1024 * 1024
"""The most a compressed body may expand to in one step of decoding."""

_ACCEPT_ENCODING = ("Accept-Encoding", "gzip, deflate")
"""The encodings asked for: those decoded here within the limit (httpx would also offer br or
zstd when their packages happen to be installed)."""

_LIMIT_TEXT = f"the {MAX_BODY_BYTES // (1024 * 1024)} MiB limit"

AttemptEvent = AttemptSucceeded | AttemptFailed
TextSink = Callable[[str], None]


def _fail(
    action: StartAttempt,
    at: float,
    kind: ErrorKind,
    message: str,
    *,
    usage: Usage | None = None,
    status: int | None = None,
) -> AttemptFailed:
    return AttemptFailed(
        attempt_id=action.attempt_id,
        at=at,
        error=ProviderError(kind=kind, message=message, status=status),
        usage=usage,
    )


def _partial_usage(request: ChatRequest, chars: int) -> Usage:
    """What a cut-off stream probably cost: the prompt and the ``chars`` characters of text that
    arrived (estimated; never more output than the request's ``max_tokens``, which no provider
    bills past, however much a runaway stream sent)."""
    return Usage(
        input_tokens=estimate_prompt_tokens(request),
        output_tokens=min(math.ceil(chars / 4), request.max_tokens),
        estimated=True,
    )


class _TooLarge(Exception):
    """The reply went past its size limit."""


class _Undecodable(Exception):
    """The reply's Content-Encoding is not one we decode, or its bytes do not decode."""


class _Decoder:
    """A body's Content-Encoding undone chunk by chunk, its decoded size counted against a limit.

    httpx would decode a whole raw chunk at once, which a compressed body can blow up a
    thousandfold; here no step yields more than ``_DECODE_PIECE_BYTES``, and the count raises
    ``_TooLarge`` as soon as the total passes ``limit``.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        self.limit = limit
        self.size = 0
        name = encoding.strip().lower()
        self._inflate: zlib._Decompress | None
        self._raw_fallback = False
        if name in ("", "identity"):
            self._inflate = None
        elif name in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name == "deflate":
            # "deflate" is meant to be zlib-wrapped, but some servers send it raw.
            self._inflate = zlib.decompressobj()
            self._raw_fallback = True
        else:
            raise _Undecodable(f"reply in an encoding we did not ask for: {encoding[:40]!r}")
        self.encoding = name or "identity"

    def _count(self, piece: bytes) -> bytes:
        self.size += len(piece)
        if self.size > self.limit:
            raise _TooLarge
        return piece

    def feed(self, raw: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``raw``; ``_TooLarge`` once past the limit."""
        if self._inflate is None:
            if raw:
                yield self._count(raw)
            return
        pending = raw
        while pending:
            try:
                piece = self._inflate.decompress(pending, _DECODE_PIECE_BYTES)
            except zlib.error:
                if self._raw_fallback and self.size == 0:
                    self._raw_fallback = False
                    self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise _Undecodable(f"the reply's {self.encoding} encoding is corrupt") from None
            self._raw_fallback = False
            if piece:
                yield self._count(piece)
            pending = self._inflate.unconsumed_tail

    def end(self) -> bytes:
        """What decoding still held back when the body ended."""
        if self._inflate is None:
            return b""
        try:
            return self._count(self._inflate.flush())
        except zlib.error:
            raise _Undecodable(f"the reply's {self.encoding} encoding is corrupt") from None


Response = httpx.Response | Reply
"""A reply whose head arrived: httpx's, or the direct way's (the same attributes, as used here)."""


def _raw_chunks(response: Response) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive, still encoded. A response built in memory (as
    ``httpx.MockTransport`` handlers build them) was read, and decoded, when it was made."""
    if isinstance(response, httpx.Response) and response.is_stream_consumed:
        return _once(response.content)
    return response.aiter_raw()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _declared_length(headers: dict[str, str]) -> int | None:
    """The Content-Length a reply announces, when it announces a valid one."""
    text = headers.get("content-length", "").strip()
    return int(text) if text.isdigit() else None


@functools.lru_cache(maxsize=256)
def _parsed_url(url: str) -> httpx.URL:
    """``url`` parsed once: httpx takes about 30 µs to parse a URL, on every request otherwise."""
    return httpx.URL(url)


def _http_request(client: httpx.AsyncClient, http: HttpRequest, extensions: dict[str, Any]) -> httpx.Request:
    """``http`` as httpx's request on ``client``: what ``client.build_request`` makes (the client's
    default headers under ours, its cookies, its timeout), for a third of its cost."""
    ours = [*http.headers, _ACCEPT_ENCODING]
    names = {name.lower() for name, _ in ours}
    headers = [(name, value) for name, value in client.headers.multi_items() if name not in names]
    request = httpx.Request(
        http.method,
        _parsed_url(http.url),
        headers=[*headers, *ours],
        content=http.body,
        extensions={**extensions, "timeout": client.timeout.as_dict()},
    )
    if client.cookies:
        client.cookies.set_cookie_header(request)
    return request


async def perform_attempt(
    client: httpx.AsyncClient,
    action: StartAttempt,
    request: ChatRequest,
    api_key: str | None,
    clock: Callable[[], float],
    on_text: TextSink | None = None,
) -> AttemptEvent:
    """Send ``request`` to ``action.provider`` and report how it ended, within ``action``'s limits."""
    streaming = request.stream and action.provider.kind is not ProviderKind.AICEO
    if request.stream and not streaming:
        request = msgspec.structs.replace(request, stream=False)
    http = wire.build_request(action.provider, request, api_key)
    started = clock()
    timed_out = False
    event: AttemptEvent | None = None
    watch = ConnectionWatch()
    endpoint = client.direct(http.url) if isinstance(client, ProviderClient) else None
    exchange = functools.partial(
        _exchange, client, http, action, request, streaming, started, clock, on_text, watch
    )
    if endpoint is not None and not streaming:
        # The direct way keeps a whole reply's time by the connection's timer: no cancel scope.
        try:
            event = await exchange(endpoint, action.timeout_s)
        except (BodyIdle, httpx.TimeoutException):
            timed_out = True
    else:
        with anyio.move_on_after(action.timeout_s) as scope:
            try:
                event = await exchange(endpoint, None)
            except httpx.TimeoutException:
                timed_out = True
        timed_out = timed_out or scope.cancelled_caught
    if timed_out or event is None:
        otherwise = f"no complete answer within {action.timeout_s:.3g} s"
        message = out_of_time(watch.phase, action.provider, action.timeout_s, otherwise)
        return _fail(action, clock(), action.timeout_kind, message)
    return event


async def _exchange(
    client: httpx.AsyncClient,
    http: HttpRequest,
    action: StartAttempt,
    request: ChatRequest,
    streaming: bool,
    started: float,
    clock: Callable[[], float],
    on_text: TextSink | None,
    watch: ConnectionWatch,
    endpoint: Endpoint | None,
    within_s: float | None,
) -> AttemptEvent:
    """The exchange of one attempt: sent the direct way to ``endpoint`` when there is one (with
    ``within_s``, given that long: ``BodyIdle`` past it), else through httpx's API."""
    first_token_by = started + action.first_token_timeout_s
    spec = action.provider
    try:
        if not streaming:  # the attempt's own timeout is the only other limit
            response = await _send(client, http, watch, endpoint, within_s)
        else:
            with anyio.move_on_after(action.first_token_timeout_s) as head:
                response = await _send(client, http, watch, endpoint, within_s)
            if head.cancelled_caught:
                otherwise = f"no response headers within {action.first_token_timeout_s:.3g} s"
                message = out_of_time(watch.phase, spec, action.first_token_timeout_s, otherwise)
                return _fail(action, clock(), ErrorKind.FIRST_TOKEN_TIMEOUT, message)
    except TLSHandshakeTimeout:
        message = handshake_too_slow(spec, watch.handshake_timeout_s)
        return _fail(action, clock(), ErrorKind.CONNECTION, message)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return _fail(action, clock(), ErrorKind.CONNECTION, connect_failed(exc, spec))
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        return _fail(action, clock(), ErrorKind.CONNECTION, closed_before_response(exc, spec))
    try:
        return await _answer(response, action, request, streaming, first_token_by, clock, on_text)
    finally:
        if isinstance(response, Reply):
            response.close()  # at once, without an await
        else:
            # Shielded, so that a cancelled attempt (a lost race, a deadline) still closes its
            # connection at once instead of leaving it to the pool half-read.
            with anyio.CancelScope(shield=True):
                await response.aclose()


async def _send(
    client: httpx.AsyncClient,
    http: HttpRequest,
    watch: ConnectionWatch,
    endpoint: Endpoint | None,
    within_s: float | None,
) -> Response:
    """Send ``http`` and return the reply with its head read: the direct way to ``endpoint`` (the
    client's for this URL) when there is one, else through httpx's API. ``TLSHandshakeTimeout``
    when a TLS handshake runs past ``watch``'s limit (the direct way bounds it itself; httpx's,
    by the watch's scope)."""
    if endpoint is None:
        with watch.handshake:
            return await client.send(_http_request(client, http, watch.extensions), stream=True)
        raise TLSHandshakeTimeout(f"no TLS handshake within {watch.handshake_timeout_s:g} s")
    assert isinstance(client, ProviderClient)
    headers = (*http.headers, _ACCEPT_ENCODING)
    return await client.send_direct(
        http.method, endpoint, headers, http.body, watch.trace, watch.handshake_timeout_s, within_s
    )


def _headers(response: Response) -> dict[str, str]:
    """The reply's headers by lower-case name."""
    if isinstance(response, Reply):
        return response.headers
    return {k.lower(): v for k, v in response.headers.items()}


async def _answer(
    response: Response,
    action: StartAttempt,
    request: ChatRequest,
    streaming: bool,
    first_token_by: float,
    clock: Callable[[], float],
    on_text: TextSink | None,
) -> AttemptEvent:
    """Read the reply whose head arrived, within the size limits, and say how the attempt ended."""
    status = response.status_code
    headers = _headers(response)
    success = 200 <= status < 300
    declared = _declared_length(headers)
    if success and declared is not None and declared > MAX_BODY_BYTES:
        return _fail(
            action,
            clock(),
            ErrorKind.MALFORMED_RESPONSE,
            f"reply of {declared} bytes announced, larger than {_LIMIT_TEXT}; not read",
            status=status,
        )
    encoding = "" if response.is_stream_consumed else headers.get("content-encoding", "")
    limit = MAX_BODY_BYTES if success else MAX_ERROR_BODY_BYTES
    try:
        decoder = _Decoder(encoding, limit)
    except _Undecodable as exc:
        if success:
            return _fail(action, clock(), ErrorKind.MALFORMED_RESPONSE, str(exc), status=status)
        decoder = _Decoder("", limit)  # an error reply: its status says enough
    if streaming and status == 200 and headers.get("content-type", "").startswith("text/event-stream"):
        return await _read_stream(response, decoder, action, request, first_token_by, clock, on_text)
    body, complete, problem = await _read_body(response, decoder, keep_start=not success)
    now = clock()
    if problem is not None and success:
        return _fail(action, now, ErrorKind.MALFORMED_RESPONSE, problem, status=status)
    if not complete and success:
        return _fail(
            action,
            now,
            ErrorKind.STREAM_TRUNCATED,
            f"reply cut off after {len(body)} bytes",
            status=status,
            usage=_partial_usage(request, 0),
        )
    # An error reply is classified by its status and what was read of it, even when cut short.
    match wire.parse_response(action.provider, status, headers, body, time.time(), request):
        case Success(completion):
            if on_text is not None and completion.content:
                on_text(completion.content)
            return AttemptSucceeded(
                attempt_id=action.attempt_id, at=now, completion=completion, status=status
            )
        case Failure(error):
            return AttemptFailed(attempt_id=action.attempt_id, at=now, error=error)
    raise AssertionError("unreachable")


async def _read_body(
    response: Response, decoder: _Decoder, *, keep_start: bool
) -> tuple[bytes, bool, str | None]:
    """The body read (decoded), whether it arrived complete, and what was wrong with it: larger
    than the decoder's limit (reading stops there, and what was read is returned only when
    ``keep_start``), or not decodable."""
    chunks: list[bytes] = []
    try:
        async for raw in _raw_chunks(response):
            for piece in decoder.feed(raw):
                chunks.append(piece)
        chunks.append(decoder.end())
    except _TooLarge:
        start = b"".join(chunks) if keep_start else b""
        return start, False, f"reply larger than {_LIMIT_TEXT}; cut off there"
    except _Undecodable as exc:
        return b"", False, str(exc)
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return b"".join(chunks), False, None
    return b"".join(chunks), True, None


_IDLE: Any = object()
"""What ``_next_chunk`` gives when nothing arrived in time."""


async def _next_chunk(response: Response, chunks: AsyncIterator[bytes] | None, within_s: float) -> Any:
    """The stream's next bytes; None at its end, or where the connection broke (the parser judges
    what came); ``_IDLE`` when nothing arrived within ``within_s``. A reply of our own transport
    is read with a timer (``Reply.next_chunk``), httpx's within a cancel scope."""
    try:
        if chunks is None:
            assert isinstance(response, Reply)
            return await response.next_chunk(within_s)
        with anyio.move_on_after(within_s):
            return await chunks.__anext__()
        return _IDLE
    except BodyIdle:
        return _IDLE
    except StopAsyncIteration:
        return None
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return None


async def _read_stream(
    response: Response,
    decoder: _Decoder,
    action: StartAttempt,
    request: ChatRequest,
    first_token_by: float,
    clock: Callable[[], float],
    on_text: TextSink | None,
) -> AttemptEvent:
    """Feed the stream to the provider's parser as it arrives, within the idle and first-token
    timeouts and the size limit; only the parser keeps the text (here, its length is counted)."""
    parser = wire.stream_parser(action.provider, request)
    chars = 0
    chunks = None if isinstance(response, Reply) else _raw_chunks(response)
    while True:
        now = clock()
        if chars:
            limit, kind = action.idle_timeout_s, ErrorKind.STREAM_STALLED
        else:
            to_first = first_token_by - now
            limit, kind = (
                (to_first, ErrorKind.FIRST_TOKEN_TIMEOUT)
                if to_first <= action.idle_timeout_s
                else (action.idle_timeout_s, ErrorKind.STREAM_STALLED)
            )
        chunk = await _next_chunk(response, chunks, max(limit, 0.0))
        if chunk is _IDLE:
            what = "first token" if kind is ErrorKind.FIRST_TOKEN_TIMEOUT else "next chunk"
            return _fail(
                action,
                clock(),
                kind,
                f"no {what} within {limit:.3g} s",
                usage=_partial_usage(request, chars),
                status=200,
            )
        try:
            pieces = list(decoder.feed(chunk)) if chunk is not None else [decoder.end()]
        except _TooLarge:
            return _fail(
                action,
                clock(),
                ErrorKind.MALFORMED_RESPONSE,
                f"stream larger than {_LIMIT_TEXT}; cut off there",
                usage=_partial_usage(request, chars),
                status=200,
            )
        except _Undecodable as exc:
            return _fail(
                action,
                clock(),
                ErrorKind.MALFORMED_RESPONSE,
                str(exc),
                usage=_partial_usage(request, chars),
                status=200,
            )
        for piece in pieces:
            for delta in parser.feed(piece):
                chars += len(delta)
                if on_text is not None:
                    on_text(delta)
        if parser.error is not None:
            return AttemptFailed(
                attempt_id=action.attempt_id,
                at=clock(),
                error=parser.error,
                usage=_partial_usage(request, chars),
            )
        if chunk is None:
            break
    now = clock()
    match parser.finish():
        case Success(completion):
            return AttemptSucceeded(attempt_id=action.attempt_id, at=now, completion=completion, status=200)
        case Failure(error):
            return AttemptFailed(
                attempt_id=action.attempt_id,
                at=now,
                error=error,
                usage=_partial_usage(request, chars),
            )
    raise AssertionError("unreachable")
