"""A streamed answer relayed to the client, in the shape of its API (``StreamShape``: OpenAI's
``chat.completion.chunk`` events, or Anthropic's message events).

The run's hooks put what happens on a queue; one task reads the queue and writes the stream.
Nothing is sent (not even the response's headers) until the first text arrives or the run ends:
a failure before that fails over invisibly, and the client sees one clean stream from whichever
provider answered. Once text went out, the answer is that attempt's: if it fails (or the route
moves on to another attempt), the stream ends with an error event, never a ``finish_reason``,
and the run is cancelled (its attempts in flight are settled as ``cancelled``). A client that
hangs up cancels the run the same way.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rmcli.errors import ConfigError
from rmcli.hooks import Hooks
from rmcli.output import err, redact
from rmcli.serve import openai_format as fmt
from rmcli.serve.asgi import Receive, Send, respond, watch_disconnect
from rmcli.serve.clients import ClientLimited
from rmcore.attempts import AttemptRecord
from rmcore.completion import Completion
from rmcore.events import RunOutcome, StartAttempt

__all__ = ["Relay", "StreamShape", "unexpected"]


def unexpected(exc: Exception) -> str:
    """Say on stderr that the gateway met an error of its own (a bug: one line, keys redacted,
    never a traceback that may quote a header), and return what the client is told."""
    err(f"ERROR: unexpected {type(exc).__name__} in rmgr serve: {redact(str(exc))[:300]}")
    return f"unexpected {type(exc).__name__} in the gateway; the request was not completed"


class StreamShape(Protocol):
    """The events of one API's stream, as bytes ready to send."""

    def opening(self) -> bytes:
        """What goes out with the response's head, before any text."""
        ...

    def text(self, pieces: Sequence[str]) -> bytes:
        """Text deltas, in order."""
        ...

    def closing(self, completion: Completion) -> bytes:
        """After the text: tool calls, the stop reason, usage, the terminating event."""
        ...

    def error_event(self, status: int, message: str, code: str) -> bytes:
        """The event that ends a stream whose answer failed after text went out."""
        ...

    def error_body(self, status: int, message: str, code: str) -> bytes:
        """An error response's body, when nothing went out yet (``status`` is the response's)."""
        ...


SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(frozen=True, slots=True)
class _Cut:
    """Text went out, then its attempt failed or was left: the stream must end in an error."""

    message: str


@dataclass(frozen=True, slots=True)
class _Done:
    """The run ended: its outcome, or why it did not run (a request no target can carry: 400;
    a fault of the gateway's own: 500)."""

    outcome: RunOutcome | None
    refused: tuple[int, str, str] | None = None
    retry_after_s: float | None = None


_Item = str | _Cut | _Done


class Relay:
    """One streamed request: ``hooks()`` go to the run, ``run(...)`` writes the stream."""

    def __init__(self, shape: StreamShape) -> None:
        self._shape = shape
        sender, receiver = anyio.create_memory_object_stream[_Item](math.inf)
        self._sender: MemoryObjectSendStream[_Item] = sender
        self._receiver: MemoryObjectReceiveStream[_Item] = receiver
        self._spoke = False
        self._cut = False
        self._provider: str | None = None
        self._attempts = 0
        self._started = False

    def hooks(self) -> Hooks:
        """The run's hooks: text as it streams, and the attempts that start and end."""
        return Hooks(
            text=self._text, attempt_started=self._attempt_started, attempt_ended=self._attempt_ended
        )

    def _put(self, item: _Item) -> None:
        # Hooks must not raise: after the stream is over (a cancelled run settling), drop it.
        if not self._cut:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._sender.send_nowait(item)

    def _text(self, delta: str) -> None:
        if delta:
            self._spoke = True
            self._put(delta)

    def _attempt_started(self, action: StartAttempt) -> None:
        if self._spoke:
            self._put(_Cut(f"the answer from {self._provider} was cut off; the route moved on"))
            self._cut = True
        self._provider = action.provider.name
        self._attempts += 1

    def _attempt_ended(self, record: AttemptRecord) -> None:
        if self._spoke and record.outcome != "ok":
            self._put(
                _Cut(f"the answer from {record.provider} was cut off: {record.message or record.outcome}")
            )
            self._cut = True

    async def run(self, receive: Receive, send: Send, chat: Callable[[Hooks], Awaitable[RunOutcome]]) -> None:
        """Run ``chat`` with this relay's hooks and stream what it gives to the client."""
        async with anyio.create_task_group() as group:

            async def produce() -> None:
                try:
                    outcome = await chat(self.hooks())
                except ConfigError as refused:
                    self._put(_Done(None, (400, str(refused), "unsupported")))
                except ClientLimited as limited:
                    refusal = (429, limited.message, "rate_limit_exceeded")
                    self._put(_Done(None, refusal, limited.retry_after_s))
                except Exception as exc:
                    self._put(_Done(None, (500, unexpected(exc), "internal_error")))
                else:
                    self._put(_Done(outcome))

            group.start_soon(produce)
            group.start_soon(watch_disconnect, receive, group.cancel_scope)
            try:
                await self._write(send)
            finally:
                group.cancel_scope.cancel()

    async def _write(self, send: Send) -> None:
        async with self._receiver:
            item = await self._receiver.receive()
            while isinstance(item, str):
                # Whatever text arrived meanwhile goes out in the same write.
                pieces, following = [item], None
                while following is None:
                    try:
                        more = self._receiver.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    if isinstance(more, str):
                        pieces.append(more)
                    else:
                        following = more
                await self._send_text(send, pieces)
                item = following if following is not None else await self._receiver.receive()
            if isinstance(item, _Cut):
                await self._send_cut(send, item.message)
            else:
                await self._finish(send, item)

    async def _open(self, send: Send) -> bytes:
        """The response's head (once), and the opening chunk to go out with the first text."""
        self._started = True
        headers = list(SSE_HEADERS)
        if self._provider is not None:
            headers.append((b"x-rmgr-provider", self._provider.encode()))
        if self._attempts:  # so far: the head goes out before the answer, and its cost, is known
            headers.append((b"x-rmgr-attempts", str(self._attempts).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        return self._shape.opening()

    async def _send_text(self, send: Send, pieces: list[str]) -> None:
        events = b"" if self._started else await self._open(send)
        events += self._shape.text(pieces)
        await send({"type": "http.response.body", "body": events, "more_body": True})

    async def _send_cut(self, send: Send, message: str) -> None:
        if not self._started:  # not reached (text always goes out before a cut), but never a 200
            await respond(send, 502, self._shape.error_body(502, message, "stream_truncated"))
            return
        event = self._shape.error_event(502, message, "stream_truncated")
        await send({"type": "http.response.body", "body": event, "more_body": False})

    async def _finish(self, send: Send, done: _Done) -> None:
        outcome = done.outcome
        if outcome is None or outcome.completion is None:
            retry: list[tuple[bytes, bytes]] = []
            if done.refused is not None:
                status, message, code = done.refused
                retry = fmt.retry_after_header(done.retry_after_s)
            else:
                assert outcome is not None and outcome.error is not None
                error = fmt.run_error(outcome.error)
                status, message, code = error.status, outcome.error.message, error.code
                retry = fmt.retry_after_header(error.retry_after_s)
            if self._started:
                event = self._shape.error_event(status, message, code)
                await send({"type": "http.response.body", "body": event, "more_body": False})
            else:
                await respond(send, status, self._shape.error_body(status, message, code), retry)
            return
        completion = outcome.completion
        events = b""
        if not self._started:
            self._provider = outcome.provider
            events = await self._open(send)
            if completion.content:
                events += self._shape.text([completion.content])
        events += self._shape.closing(completion)
        await send({"type": "http.response.body", "body": events, "more_body": False})
