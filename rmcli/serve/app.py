"""The gateway as a plain ASGI application: routing, the endpoints, one ``api.Client`` per worker.

``GET /health`` answers without a key; every other path needs one of the clients' keys
(``keys``), and a named key's requests are held to its limits (``clients``). ``GET /v1/models``
lists the policy's routes as model ids; ``GET /metrics`` gives the figures (``metrics``). ``POST
/v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic) read the request in their
API's shape (``dialects``), run it on the route its ``model`` names (``default``: the policy's
``[route]``) through the worker's shared ``api.Client`` (every attempt recorded, as ``serve``),
and answer in the same shape, streamed (``relay``) or whole; errors too. Each request ends
with one access-log line on stderr (never a key; its content only with ``log_content``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import msgspec
from returns.result import Failure, Success

from rmcli import api
from rmcli.errors import ConfigError
from rmcli.hooks import Hooks
from rmcli.output import add_secret, err
from rmcli.serve import openai_format as fmt
from rmcli.serve.asgi import (
    BodyTooLarge,
    ClientGone,
    Message,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
    watch_disconnect,
)
from rmcli.serve.clients import ClientLimited, Limits
from rmcli.serve.dialects import ANTHROPIC, OPENAI, Decoded, Dialect
from rmcli.serve.keys import ClientKey, authorized, presented_key
from rmcli.serve.metrics import METRICS_DIR_VARIABLE, WRITE_EVERY_S, Counts, render
from rmcli.serve.relay import Relay, StreamShape, unexpected
from rmcli.state import StoreError, StoreUnavailable
from rmcore.events import RunOutcome
from rmcore.policy import all_route_providers
from rmcore.requests import ChatRequest

__all__ = ["DEFAULT_MODEL", "Gateway", "Settings"]

DEFAULT_MODEL = "default"
"""The model id of the policy's ``[route]``."""

_HEALTHY = msgspec.json.encode({"status": "ok"})
_PROMETHEUS = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
_ENDPOINTS = frozenset({"/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/messages"})
SETTLE_S = 5.0
"""How long a stopping worker waits for its cancelled requests to settle their attempts."""
_CONTENT_CHARS = 500
"""How much of a request's last message and of its answer ``log_content`` shows."""


@dataclass(frozen=True)
class Settings:
    """What a worker serves: the policy, the clients' keys (none: no key is asked for, which
    ``rmgr serve`` allows on a loopback host only), and, for tests and embedders, the
    environment and HTTP transport its ``api.Client`` uses (None: the process's)."""

    policy: Path | None = None
    keys: tuple[ClientKey, ...] = ()
    env: dict[str, str] | None = field(default=None, repr=False)
    transport: httpx.AsyncBaseTransport | None = None
    log_content: bool = False
    """Show each request's last message and its answer (cut short) in the access log."""
    access_log: bool = True


@dataclass
class _Exchange:
    """What one request's access-log line and figures say about it."""

    started: float
    endpoint: str
    status: int = 0
    model: str = "-"
    key_name: str = "-"
    outcome: RunOutcome | None = None
    asked: str | None = None
    stream: StreamShape | None = None


class Gateway:
    """The ASGI application of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: api.Client | None = None
        self._routes: tuple[str, ...] = ()
        self._providers: tuple[str, ...] = ()
        self._models = b""
        self._limits: Limits | None = None
        folder = os.environ.get(METRICS_DIR_VARIABLE)
        self.counts = Counts(Path(folder) if folder else None)
        for key in settings.keys:
            add_secret(key.secret.decode(errors="replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # --- start-up and shut-down ------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Open the worker's client at start-up (its state and first pool), close it at shut-down;
        meanwhile, leave this worker's figures for the others every second (``--workers N``)."""
        async with anyio.create_task_group() as group:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        await self.start()
                    except ConfigError as exc:
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        group.cancel_scope.cancel()
                        return
                    group.start_soon(self._write_counts)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    group.cancel_scope.cancel()
                    await self.stop()
                    self.counts.write()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _write_counts(self) -> None:
        while True:
            await anyio.sleep(WRITE_EVERY_S)
            self.counts.write()

    async def start(self) -> None:
        """Make and open the client (a ``ConfigError`` for a bad policy or state)."""
        s = self.settings
        client = api.Client(
            s.policy, env=s.env, transport=s.transport, record=True, command="serve",
            hooks=Hooks(attempt_ended=self.counts.attempt_ended),
        )
        self._limits = Limits(client.setup.policy, s.keys)
        await client.open()
        self._client = client
        self._routes = client.setup.route_names()
        self._providers = tuple(all_route_providers(client.setup.policy))
        self._models = fmt.models_body(self._routes)

    async def stop(self) -> None:
        """Close the client, its connections and its state, once the requests still running have
        ended (those the server cancelled are settling their attempts: for at most ``SETTLE_S``)."""
        with anyio.move_on_after(SETTLE_S):
            while self.counts.counts.in_flight > 0:
                await anyio.sleep(0.01)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- requests --------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        exchange = _Exchange(time.perf_counter(), path if path in _ENDPOINTS else "other")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
            await send(message)

        self.counts.request_started()
        try:
            await self._serve(scope, receive, sending, exchange)
        except anyio.get_cancelled_exc_class():
            # The server gave up on the request (its grace period after SIGTERM ran out): the run
            # was cancelled and its attempts settled; tell the client, in its API's shape. This is
            # the request's outermost frame and the server wants it over: it ends here, quietly.
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._shutting_down(send, exchange)
        finally:
            seconds = time.perf_counter() - exchange.started
            self.counts.request_ended(exchange.endpoint, exchange.model, exchange.status, seconds)
            if self.settings.access_log:
                self._log(scope, exchange, seconds)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health":
            if method not in ("GET", "HEAD"):
                return await _not_allowed(send, OPENAI)
            return await respond(send, 200, _HEALTHY)
        dialect = ANTHROPIC if path == "/v1/messages" else OPENAI
        key: ClientKey | None = None
        if keys := self.settings.keys:
            key = authorized(presented_key(scope["headers"]), keys)
            if key is None:
                message = "Missing or incorrect API key: send one of RMGR_SERVE_KEYS (Bearer or x-api-key)."
                body = dialect.error_body(401, message, "invalid_api_key")
                return await respond(send, 401, body, [(b"www-authenticate", b"Bearer")])
            exchange.key_name = key.name or "-"
        if path == "/v1/models":
            if method != "GET":
                return await _not_allowed(send, OPENAI)
            return await respond(send, 200, self._models)
        if path == "/metrics":
            if method != "GET":
                return await _not_allowed(send, OPENAI)
            return await self._metrics(send)
        if path in ("/v1/chat/completions", "/v1/messages"):
            if method != "POST":
                return await _not_allowed(send, dialect)
            return await self._chat(scope, receive, send, dialect, key, exchange)
        served = "/v1/chat/completions, /v1/messages, /v1/models, /metrics and /health"
        message = f"Unknown path {path}: this gateway serves {served}."
        await respond(send, 404, OPENAI.error_body(404, message, "not_found"))

    async def _shutting_down(self, send: Send, exchange: _Exchange) -> None:
        message = "the gateway is shutting down and did not finish this request; ask again"
        code = "shutting_down"
        if exchange.stream is not None and exchange.status == 200:
            event = exchange.stream.error_event(503, message, code)
            await send({"type": "http.response.body", "body": event, "more_body": False})
        elif exchange.status == 0:
            dialect = ANTHROPIC if exchange.endpoint == "/v1/messages" else OPENAI
            exchange.status = 503
            body = dialect.error_body(503, message, code)
            await respond(send, 503, body, fmt.retry_after_header(1))

    async def _metrics(self, send: Send) -> None:
        client = self._client
        assert client is not None, "the worker has not started"
        try:
            circuits = await client.circuits()
        except StoreError:
            circuits = []  # the figures still go out; the breakers show as closed
        body = render(self.counts.all_workers(), circuits, self._providers)
        await send({"type": "http.response.start", "status": 200, "headers": [_PROMETHEUS]})
        await send({"type": "http.response.body", "body": body})

    async def _chat(
        self, scope: Scope, receive: Receive, send: Send, dialect: Dialect, key: ClientKey | None,
        exchange: _Exchange,
    ) -> None:
        started = exchange.started
        try:
            body = await read_body(scope, receive)
        except BodyTooLarge:
            message = "The request body is over 32 MB."
            return await respond(send, 413, dialect.error_body(413, message, "request_too_large"))
        except ClientGone:
            return
        match dialect.decode(body):
            case Failure(problem):
                error = dialect.error_body(400, problem.message, "invalid_request", problem.subject)
                return await respond(send, 400, error)
            case Success(Decoded() as decoded):
                pass
        model = decoded.model or DEFAULT_MODEL
        if model not in self._routes:
            message = f"No model {model!r}: the models are this policy's routes: {', '.join(self._routes)}."
            return await respond(send, 404, dialect.error_body(404, message, "model_not_found", "model"))
        exchange.model = model
        if self.settings.log_content:
            exchange.asked = _last_text(decoded.request)
        limits = self._limits
        assert limits is not None and self._client is not None, "the worker has not started"
        try:
            await limits.admit(self._client, key)
        except ClientLimited as limited:
            self.counts.limited(limited.key_name, limited.reason)
            return await _limited(send, dialect, limited)
        except StoreUnavailable as exc:
            message = f"{exc.message}; client keys' limits cannot be checked, so nothing is sent"
            return await respond(send, 503, dialect.error_body(503, message, "state_unavailable"))
        run = self._runner(decoded.request, None if model == DEFAULT_MODEL else model, key, exchange)
        if decoded.request.stream:
            exchange.stream = dialect.stream(decoded, model)
            return await Relay(exchange.stream).run(receive, send, run)
        await self._whole(receive, send, run, dialect, model, started)

    def _runner(
        self, request: ChatRequest, route: str | None, key: ClientKey | None, exchange: _Exchange
    ) -> Callable[[Hooks | None], Awaitable[RunOutcome]]:
        """The run of one request: its outcome kept for the access log, and a failure for want of
        the client key's budget raised as ``ClientLimited`` (a 429)."""
        client, limits = self._client, self._limits
        assert client is not None and limits is not None, "the worker has not started"
        spending = limits.spending(key)

        async def run(hooks: Hooks | None = None) -> RunOutcome:
            outcome = await client.chat(request, hooks=hooks, route=route, caps=spending)
            exchange.outcome = outcome
            try:
                limits.check_outcome(key, outcome)
            except ClientLimited as limited:
                self.counts.limited(limited.key_name, limited.reason)
                raise
            return outcome

        return run

    def _log(self, scope: Scope, exchange: _Exchange, seconds: float) -> None:
        """One access-log line: who, what, how it ended, who answered, at what cost; never a key."""
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "-"
        line = (
            f'INFO:     {peer} - "{scope["method"]} {scope["path"]}" {exchange.status} '
            f"model={exchange.model} key={exchange.key_name}"
        )
        outcome = exchange.outcome
        if outcome is not None:
            line += f" provider={outcome.provider or '-'} attempts={len(outcome.attempts)}"
            line += f" cost_usd={outcome.cost_usd:.6f}"
        line += f" ms={seconds * 1000:.1f}"
        if exchange.asked is not None:
            answer = outcome.completion.content if outcome is not None and outcome.completion else ""
            line += f" asked={_quoted(exchange.asked)} answered={_quoted(answer)}"
        err(line)

    async def _whole(
        self,
        receive: Receive,
        send: Send,
        run: Callable[[Hooks | None], Awaitable[RunOutcome]],
        dialect: Dialect,
        model: str,
        started: float,
    ) -> None:
        """A request answered in one piece: the run, watched for the client hanging up."""
        outcome: RunOutcome | None = None
        refused: tuple[int, str, str] | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(watch_disconnect, receive, group.cancel_scope)
            try:
                outcome = await run(None)
            except ConfigError as exc:
                refused = (400, str(exc), "unsupported")
            except ClientLimited as limited:
                group.cancel_scope.cancel()
                return await _limited(send, dialect, limited)
            except Exception as exc:
                refused = (500, unexpected(exc), "internal_error")
            group.cancel_scope.cancel()
        if refused is not None:
            status, message, code = refused
            return await respond(send, status, dialect.error_body(status, message, code))
        if outcome is None:
            return  # the client hung up: the run was cancelled, nobody is left to answer
        headers = _outcome_headers(outcome, started)
        if outcome.completion is None:
            assert outcome.error is not None
            error = fmt.run_error(outcome.error)
            body = dialect.error_body(error.status, outcome.error.message, error.code)
            return await respond(
                send, error.status, body, [*headers, *fmt.retry_after_header(error.retry_after_s)]
            )
        await respond(send, 200, dialect.answer(outcome.completion, model), headers)


def _outcome_headers(outcome: RunOutcome, started: float) -> list[tuple[bytes, bytes]]:
    """What the run cost and who answered, for the client's logs; ``x-rmgr-overhead-ms`` is the
    time the request spent in the gateway outside its attempts (reading, routing, recording,
    back-off waits), from ``started`` (``perf_counter``) until now."""
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    overhead_ms = max(0.0, elapsed_ms - sum(a.latency_ms for a in outcome.attempts))
    headers = [
        (b"x-rmgr-attempts", str(len(outcome.attempts)).encode()),
        (b"x-rmgr-cost-usd", f"{outcome.cost_usd:.8f}".encode()),
        (b"x-rmgr-overhead-ms", f"{overhead_ms:.3f}".encode()),
    ]
    if outcome.provider is not None:
        headers.append((b"x-rmgr-provider", outcome.provider.encode()))
    return headers


def _last_text(request: ChatRequest) -> str:
    """The text of the request's last message (what ``log_content`` shows of it)."""
    return request.messages[-1].text if request.messages else ""


def _quoted(text: str) -> str:
    cut = text[:_CONTENT_CHARS] + ("..." if len(text) > _CONTENT_CHARS else "")
    return msgspec.json.encode(cut).decode()


async def _limited(send: Send, dialect: Dialect, limited: ClientLimited) -> None:
    body = dialect.error_body(429, limited.message, "rate_limit_exceeded")
    await respond(send, 429, body, fmt.retry_after_header(limited.retry_after_s))


async def _not_allowed(send: Send, dialect: Dialect) -> None:
    await respond(send, 405, dialect.error_body(405, "Method not allowed.", "method_not_allowed"))
