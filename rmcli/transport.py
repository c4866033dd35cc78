"""One attempt over real HTTP: send what the engine asked for, enforce its timeouts, report the event.

The engine decides which provider and how long; this module does the I/O with one shared
``httpx.AsyncClient`` and turns whatever happens (an answer, an HTTP error, a refused or reset
connection, a silent or truncated stream) into exactly one ``AttemptSucceeded`` or
``AttemptFailed``. Timeouts are anyio cancel scopes, so an abandoned attempt's connection is
closed at once, never left to bill in the background.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
import msgspec
from returns.result import Failure, Success

from rmcore import wire
from rmcore.completion import Usage
from rmcore.engine import AttemptFailed, AttemptSucceeded, StartAttempt
from rmcore.errors import ErrorKind, ProviderError
from rmcore.pricing import estimate_prompt_tokens
from rmcore.providers import ProviderKind
from rmcore.requests import ChatRequest, HttpRequest

__all__ = ["MAX_BODY_BYTES", "perform_attempt"]

MAX_BODY_BYTES = 16 * 1024 * 1024
"""The largest reply accepted from a provider (a whole body, or a stream's total); larger is
``malformed_response``, so a runaway provider cannot exhaust memory."""

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


def _partial_usage(request: ChatRequest, text: str) -> Usage:
    """What a cut-off stream probably cost: the prompt and the text that arrived (estimated)."""
    return Usage(
        input_tokens=estimate_prompt_tokens(request),
        output_tokens=math.ceil(len(text) / 4),
        estimated=True,
    )


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
    with anyio.move_on_after(action.timeout_s) as scope:
        try:
            event = await _exchange(client, http, action, request, streaming, started, clock, on_text)
        except httpx.TimeoutException:
            timed_out = True
    if scope.cancelled_caught or timed_out or event is None:
        return _fail(
            action, clock(), action.timeout_kind, f"no complete answer within {action.timeout_s:.3g} s"
        )
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
) -> AttemptEvent:
    first_token_by = started + action.first_token_timeout_s
    try:
        with anyio.move_on_after(action.first_token_timeout_s if streaming else math.inf) as head:
            response_cm = client.stream(http.method, http.url, headers=list(http.headers), content=http.body)
            response = await response_cm.__aenter__()
        if head.cancelled_caught:
            return _fail(
                action,
                clock(),
                ErrorKind.FIRST_TOKEN_TIMEOUT,
                f"no response headers within {action.first_token_timeout_s:.3g} s",
            )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return _fail(action, clock(), ErrorKind.CONNECTION, _reason(exc))
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        return _fail(
            action, clock(), ErrorKind.CONNECTION, f"connection closed before a response: {_reason(exc)}"
        )
    try:
        headers = {k.lower(): v for k, v in response.headers.items()}
        is_event_stream = headers.get("content-type", "").startswith("text/event-stream")
        if streaming and response.status_code == 200 and is_event_stream:
            return await _read_stream(response, action, request, first_token_by, clock, on_text)
        body, complete = await _read_body(response)
        now = clock()
        if body is None:
            return _fail(
                action,
                now,
                ErrorKind.MALFORMED_RESPONSE,
                f"reply larger than {MAX_BODY_BYTES} bytes",
                status=response.status_code,
            )
        if not complete and 200 <= response.status_code < 300:
            return _fail(
                action,
                now,
                ErrorKind.STREAM_TRUNCATED,
                f"reply cut off after {len(body)} bytes",
                status=response.status_code,
                usage=_partial_usage(request, ""),
            )
        match wire.parse_response(action.provider, response.status_code, headers, body, time.time()):
            case Success(completion):
                if on_text is not None and completion.content:
                    on_text(completion.content)
                return AttemptSucceeded(
                    attempt_id=action.attempt_id, at=now, completion=completion, status=response.status_code
                )
            case Failure(error):
                return AttemptFailed(attempt_id=action.attempt_id, at=now, error=error)
        raise AssertionError("unreachable")
    finally:
        # Shielded, so that a cancelled attempt (a lost race, a deadline) still closes its
        # connection at once instead of leaving it to the pool half-read.
        with anyio.CancelScope(shield=True):
            await response_cm.__aexit__(None, None, None)


def _reason(exc: BaseException) -> str:
    """A short, key-free description of a connection failure: the OS's reason when there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, ConnectionResetError):
            return "connection reset by peer"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    text = str(exc) or type(exc).__name__
    return "connection refused" if "refused" in text.lower() else text[:200]


async def _read_body(response: httpx.Response) -> tuple[bytes | None, bool]:
    """The whole body (None when too large) and whether it arrived complete."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None, False
            chunks.append(chunk)
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return b"".join(chunks), False
    return b"".join(chunks), True


async def _read_stream(
    response: httpx.Response,
    action: StartAttempt,
    request: ChatRequest,
    first_token_by: float,
    clock: Callable[[], float],
    on_text: TextSink | None,
) -> AttemptEvent:
    parser = wire.stream_parser(action.provider, request)
    received: list[str] = []
    size = 0
    chunks: AsyncIterator[bytes] = response.aiter_bytes()
    while True:
        now = clock()
        if received:
            limit, kind = action.idle_timeout_s, ErrorKind.STREAM_STALLED
        else:
            to_first = first_token_by - now
            limit, kind = (
                (to_first, ErrorKind.FIRST_TOKEN_TIMEOUT)
                if to_first <= action.idle_timeout_s
                else (action.idle_timeout_s, ErrorKind.STREAM_STALLED)
            )
        chunk: bytes | None = None
        with anyio.move_on_after(max(limit, 0.0)) as wait:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                chunk = None
            except (httpx.RemoteProtocolError, httpx.ReadError):
                chunk = None
        if wait.cancelled_caught:
            what = "first token" if kind is ErrorKind.FIRST_TOKEN_TIMEOUT else "next chunk"
            return _fail(
                action,
                clock(),
                kind,
                f"no {what} within {limit:.3g} s",
                usage=_partial_usage(request, "".join(received)),
                status=200,
            )
        if chunk is None:
            break
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return _fail(
                action,
                clock(),
                ErrorKind.MALFORMED_RESPONSE,
                f"stream larger than {MAX_BODY_BYTES} bytes",
                usage=_partial_usage(request, "".join(received)),
                status=200,
            )
        for delta in parser.feed(chunk):
            received.append(delta)
            if on_text is not None:
                on_text(delta)
        if parser.error is not None:
            return AttemptFailed(
                attempt_id=action.attempt_id,
                at=clock(),
                error=parser.error,
                usage=_partial_usage(request, "".join(received)),
            )
    now = clock()
    match parser.finish():
        case Success(completion):
            return AttemptSucceeded(attempt_id=action.attempt_id, at=now, completion=completion, status=200)
        case Failure(error):
            return AttemptFailed(
                attempt_id=action.attempt_id,
                at=now,
                error=error,
                usage=_partial_usage(request, "".join(received)),
            )
    raise AssertionError("unreachable")
