"""The gateway as a plain ASGI application: routing, the endpoints, one ``api.Client`` per worker.

``GET /health`` answers without a key; every other path needs one of the clients' keys
(``keys``). ``GET /v1/models`` lists the policy's routes as model ids. ``POST
/v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic) read the request in their
API's shape (``dialects``), run it on the route its ``model`` names (``default``: the policy's
``[route]``) through the worker's shared ``api.Client`` (every attempt recorded, as ``serve``),
and answer in the same shape, streamed (``relay``) or whole; errors too.
"""

from __future__ import annotations

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
from rmcli.serve import openai_format as fmt
from rmcli.serve.asgi import (
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
    watch_disconnect,
)
from rmcli.serve.dialects import ANTHROPIC, OPENAI, Decoded, Dialect
from rmcli.serve.keys import authorized, presented_key
from rmcli.serve.relay import Relay, unexpected
from rmcore.events import RunOutcome
from rmcore.requests import ChatRequest

__all__ = ["DEFAULT_MODEL", "Gateway", "Settings"]

DEFAULT_MODEL = "default"
"""The model id of the policy's ``[route]``."""

_HEALTHY = msgspec.json.encode({"status": "ok"})


@dataclass(frozen=True)
class Settings:
    """What a worker serves: the policy, the clients' keys (none: no key is asked for, which
    ``rmgr serve`` allows on a loopback host only), and, for tests and embedders, the
    environment and HTTP transport its ``api.Client`` uses (None: the process's)."""

    policy: Path | None = None
    keys: tuple[bytes, ...] = ()
    env: dict[str, str] | None = field(default=None, repr=False)
    transport: httpx.AsyncBaseTransport | None = None


class Gateway:
    """The ASGI application of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: api.Client | None = None
        self._routes: tuple[str, ...] = ()
        self._models = b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # --- start-up and shut-down ------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Open the worker's client at start-up (its state and first pool), close it at shut-down."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except ConfigError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        """Make and open the client (a ``ConfigError`` for a bad policy or state)."""
        s = self.settings
        client = api.Client(s.policy, env=s.env, transport=s.transport, record=True, command="serve")
        await client.open()
        self._client = client
        self._routes = client.setup.route_names()
        self._models = fmt.models_body(self._routes)

    async def stop(self) -> None:
        """Close the client: its connections and its state."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- requests --------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health":
            if method not in ("GET", "HEAD"):
                return await _not_allowed(send, OPENAI)
            return await respond(send, 200, _HEALTHY)
        dialect = ANTHROPIC if path == "/v1/messages" else OPENAI
        keys = self.settings.keys
        if keys and not authorized(presented_key(scope["headers"]), keys):
            message = "Missing or incorrect API key: send one of RMGR_SERVE_KEYS (Bearer or x-api-key)."
            body = dialect.error_body(401, message, "invalid_api_key")
            return await respond(send, 401, body, [(b"www-authenticate", b"Bearer")])
        if path == "/v1/models":
            if method != "GET":
                return await _not_allowed(send, OPENAI)
            return await respond(send, 200, self._models)
        if path in ("/v1/chat/completions", "/v1/messages"):
            if method != "POST":
                return await _not_allowed(send, dialect)
            return await self._chat(scope, receive, send, dialect)
        served = "/v1/chat/completions, /v1/messages, /v1/models and /health"
        message = f"Unknown path {path}: this gateway serves {served}."
        await respond(send, 404, OPENAI.error_body(404, message, "not_found"))

    async def _chat(self, scope: Scope, receive: Receive, send: Send, dialect: Dialect) -> None:
        started = time.perf_counter()
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
        run = self._runner(decoded.request, None if model == DEFAULT_MODEL else model)
        if decoded.request.stream:
            return await Relay(dialect.stream(decoded, model)).run(receive, send, run)
        await self._whole(receive, send, run, dialect, model, started)

    def _runner(
        self, request: ChatRequest, route: str | None
    ) -> Callable[[Hooks | None], Awaitable[RunOutcome]]:
        client = self._client
        assert client is not None, "the worker has not started"

        async def run(hooks: Hooks | None = None) -> RunOutcome:
            return await client.chat(request, hooks=hooks, route=route)

        return run

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


async def _not_allowed(send: Send, dialect: Dialect) -> None:
    await respond(send, 405, dialect.error_body(405, "Method not allowed.", "method_not_allowed"))
