"""The sandbox: four simulated providers over real HTTP on 127.0.0.1, each with a fault mode.

``rmgr sandbox`` runs it for people (``serve``); the project's tests run the same ``Sandbox`` in
process. Each provider listens on its own port and speaks its real wire format, streaming
included; a fault mode (``modes.py``) makes it fail the way real providers fail. A control API
on a separate port, always up, lets other processes change modes and read the request logs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import itertools
import json
import shlex
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import msgspec

from rmcli.sandbox.chat import planned_call, read_chat
from rmcli.sandbox.connection import HttpConnection
from rmcli.sandbox.control import control_answer, control_unreadable
from rmcli.sandbox.formats import (
    Answer,
    Route,
    ServerState,
    StreamingFormat,
    WireFormat,
    builtin_formats,
    encode_json,
)
from rmcli.sandbox.listener import Handler, Listener
from rmcli.sandbox.modes import OK, Mode, ModeKind, format_seconds, parse_mode
from rmcli.sandbox.replies import (
    ReplyFunction,
    count_words,
    cut_at_stop,
    cut_to_words,
    default_reply,
    request_text,
)
from rmcli.sandbox.request import HttpError, Request
from rmcore.providers import BUILTIN_NAMES

__all__ = [
    "ENV_VARS",
    "HUGE_BYTES",
    "NAMES",
    "Outcome",
    "Sandbox",
    "SandboxRequest",
    "export_lines",
    "serve",
]

NAMES: tuple[str, ...] = BUILTIN_NAMES
"""The sandbox's providers: the four built-ins, in this order (ports base..base+3)."""

ENV_VARS: Mapping[str, tuple[str, str]] = {
    "aiceo-gateway": ("AICEO_GATEWAY_URL", "AICEO_GATEWAY_API_KEY"),
    "glm-direct": ("GLM_API_URL", "GLM_API_KEY"),
    "anthropic-direct": ("ANTHROPIC_API_URL", "ANTHROPIC_API_KEY"),
    "openai-direct": ("OPENAI_API_URL", "OPENAI_API_KEY"),
}
"""Each provider's URL and key variables, as the product reads them."""

_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})
_JSON_TYPE = ("content-type", "application/json")
_GARBAGE = b"<!doctype html><title>rmgr sandbox</title>garbage: this body is not JSON {"
_DEFAULT_STREAM_DELAY_S = 0.005

HUGE_BYTES = 1 << 30
"""How long a ``huge`` reply is: 1 GiB, far past any client's reply limit (rmgr's is 16 MiB)."""

_FILL_UNIT = b"and more "
_FILL_BLOCK = _FILL_UNIT * (65536 // len(_FILL_UNIT))
"""The text ``huge`` and ``endless`` replies go on with: plain ASCII words, valid in any JSON
string as they are, sent 64 KiB at a time."""
_FILL_PIECE = (_FILL_UNIT * 455).decode()
"""The text of one event of a ``huge`` or ``endless`` stream: about 4 KiB, so that a client spends
its time on the size of the stream, not on the count of its events."""
_FILL_MARK = "@@rmgr-sandbox-fill@@"

LOG_LIMIT = 10_000
"""Each provider's log keeps its latest requests, up to this many (a long-running sandbox stays small)."""


class Outcome(enum.StrEnum):
    """What the sandbox did with a request: a fault mode's name, or how a normal answer went."""

    OK = "ok"
    HANG = "hang"
    RESET = "reset"
    STATUS = "status"
    RATELIMIT = "ratelimit"
    TRUNCATE = "truncate"
    STALL = "stall"
    GARBAGE = "garbage"
    HUGE = "huge"
    ENDLESS = "endless"
    DOWN = "down"
    """Arrived on a connection opened just before the provider went down: reset."""
    UNAUTHORIZED = "unauthorized"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CLIENT_LEFT = "client_left"
    """The client closed the connection while a ``slow`` provider was still waiting (a lost race)."""
    REPLY_FAILED = "reply_failed"
    """The reply function raised: answered 500."""


@dataclass(frozen=True, slots=True)
class SandboxRequest:
    """One request a sandbox provider received, as logged. Credentials are never kept."""

    provider: str
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    """Lower-cased names; the values of credential headers are replaced by ``<redacted>``."""
    body: Any
    """The parsed JSON body; ``None`` when there is none or it is not JSON."""
    stream: bool
    mode: str
    outcome: Outcome
    status: int | None
    """The HTTP status sent, or ``None`` when no status line was sent (hang, reset, down)."""
    at: float
    """Unix time the request was read."""

    def to_json(self) -> dict[str, Any]:
        """The entry as the control API shows it."""
        return {
            "provider": self.provider,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": dict(self.headers),
            "body": self.body,
            "stream": self.stream,
            "mode": self.mode,
            "outcome": str(self.outcome),
            "status": self.status,
            "at": self.at,
        }


@dataclass(eq=False)
class _Provider:
    name: str
    format: WireFormat
    mode: Mode
    listener: Listener
    log: deque[SandboxRequest] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    in_flight: int = 0
    received: int = 0

    @property
    def key(self) -> str:
        return f"sandbox-key-{self.name}"


@dataclass(frozen=True, slots=True)
class _Exchange:
    """One request being answered: where it came from and how to record it."""

    provider: _Provider
    request: Request
    body: Any
    stream: bool
    mode: Mode
    request_id: str
    read_at: float
    http: HttpConnection


def _check_names(kind: str, names: Mapping[str, object] | None) -> None:
    unknown = sorted(set(names or ()) - set(NAMES))
    if unknown:
        raise ValueError(
            f"unknown sandbox provider in {kind}: {', '.join(unknown)} (known: {', '.join(NAMES)})"
        )


def _redacted(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: ("<redacted>" if k in _CREDENTIAL_HEADERS else v) for k, v in headers.items()}


def _decode_json(raw: bytes) -> Any:
    """What ``json.loads`` reads from ``raw``, decoded by msgspec where it can (several times
    faster); what only Python's json accepts (``NaN``, ``1e400``, a lone surrogate) still reads."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return json.loads(raw)


def _parse_body(raw: bytes) -> tuple[Any, bool]:
    """The JSON of a request body, and whether it is a JSON object (as every chat request must be)."""
    if not raw:
        return None, False
    try:
        value = _decode_json(raw)
    except ValueError:
        return None, False
    return value, isinstance(value, dict)


class Sandbox:
    """Four simulated providers, each on its own port, with a control API on a fifth.

    Use it as an async context manager (or ``start`` / ``aclose``)::

        async with Sandbox({"aiceo-gateway": "down"}) as sandbox:
            env = sandbox.env()          # point the product at it
            sandbox.set_mode("glm-direct", "status:529")

    Ports are ephemeral unless ``ports`` (per provider) or ``control_port`` fix them. Each provider
    accepts only its own key, ``sandbox-key-<name>``. ``reply(provider, request_json)`` writes the
    answers (default: ``default_reply``). ``stream_delay_s`` is the pause between streamed events,
    so that clients see each one arrive separately. ``huge_bytes`` is the length of a ``huge``
    reply (tests shorten it to read one whole). It runs on asyncio (anyio's asyncio backend
    included); methods that change modes must be called from the event loop's thread.
    """

    def __init__(
        self,
        modes: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        reply: ReplyFunction | None = None,
        control_port: int | None = None,
        *,
        stream_delay_s: float = _DEFAULT_STREAM_DELAY_S,
        huge_bytes: int = HUGE_BYTES,
    ) -> None:
        _check_names("modes", modes)
        _check_names("ports", ports)
        parsed = {name: parse_mode(text) for name, text in (modes or {}).items()}
        self.host = host
        self._reply: ReplyFunction = reply or default_reply
        self._stream_delay_s = stream_delay_s
        self._huge_bytes = huge_bytes
        self._ids = itertools.count(1)
        formats = builtin_formats()
        self._providers: dict[str, _Provider] = {}
        for name in NAMES:
            fmt = formats[name]
            provider = _Provider(
                name=name,
                format=fmt,
                mode=parsed.get(name, OK),
                listener=Listener(
                    host, (ports or {}).get(name, 0), self._handler(name), self._unreadable(fmt)
                ),
            )
            self._providers[name] = provider
        self._control = Listener(host, control_port or 0, self._control_exchange, control_unreadable)
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every port and listen on those of providers that are not ``down``."""
        if self._started:
            return
        listeners = [("control API", self._control)] + [
            (p.name, p.listener) for p in self._providers.values()
        ]
        try:
            for label, listener in listeners:
                try:
                    listener.bind()
                except OSError as error:
                    raise OSError(
                        error.errno,
                        f"sandbox {label}: cannot bind {self.host}:{listener.port}: {error.strerror}",
                    ) from error
            self._control.start()
            for provider in self._providers.values():
                if provider.mode.kind is not ModeKind.DOWN:
                    provider.listener.start()
        except BaseException:
            for _, listener in listeners:
                await listener.aclose()
            raise
        self._started = True

    async def aclose(self) -> None:
        """Close every port and connection; cancel and wait for every handler (hanging ones too)."""
        for provider in self._providers.values():
            await provider.listener.aclose()
        await self._control.aclose()
        self._started = False

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- what clients need -----------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """The providers' names."""
        return NAMES

    def _provider(self, name: str) -> _Provider:
        try:
            return self._providers[name]
        except KeyError:
            raise ValueError(f"unknown sandbox provider {name!r} (known: {', '.join(NAMES)})") from None

    def _origin(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    def port(self, name: str) -> int:
        """The provider's port (fixed at ``start``, kept while it is down)."""
        return self._provider(name).listener.port

    def url(self, name: str) -> str:
        """The provider's full chat endpoint URL, as its ``*_URL`` variable takes it."""
        provider = self._provider(name)
        return self._origin(provider.listener.port) + provider.format.chat_path

    def base_url(self, name: str) -> str:
        """The URL an SDK takes as its base (``.../v1`` for OpenAI, the bare origin for Anthropic)."""
        provider = self._provider(name)
        return self._origin(provider.listener.port) + provider.format.base_path

    def key(self, name: str) -> str:
        """The one key the provider accepts."""
        return self._provider(name).key

    @property
    def control_url(self) -> str:
        """Where the control API listens."""
        return self._origin(self._control.port)

    def env(self) -> dict[str, str]:
        """The environment that points the product at the sandbox: each provider's URL and key."""
        env: dict[str, str] = {}
        for name, (url_var, key_var) in ENV_VARS.items():
            env[url_var] = self.url(name)
            env[key_var] = self.key(name)
        return env

    # -- modes and logs --------------------------------------------------------------------------

    def mode(self, name: str) -> Mode:
        """The provider's current mode."""
        return self._provider(name).mode

    def set_mode(self, name: str, mode: str | Mode) -> None:
        """Switch a provider's mode now. ``ValueError`` for an unknown provider or a bad mode.

        To ``down``: its port stops listening and its open connections are cut. From ``down``:
        it listens again on the same port.
        """
        provider = self._provider(name)
        new = mode if isinstance(mode, Mode) else parse_mode(mode)
        old, provider.mode = provider.mode, new
        if not self._started:
            return
        if new.kind is ModeKind.DOWN and old.kind is not ModeKind.DOWN:
            provider.listener.stop()
        elif new.kind is not ModeKind.DOWN and old.kind is ModeKind.DOWN:
            provider.listener.start()

    def requests(self, name: str) -> list[SandboxRequest]:
        """The requests the provider received since its log was last cleared (the latest ``LOG_LIMIT``),
        in the order their outcome was decided (a ``slow`` one after its wait)."""
        return list(self._provider(name).log)

    def clear_log(self, name: str | None = None) -> int:
        """Forget the logged requests of one provider (or of all); returns how many were dropped."""
        providers = [self._provider(name)] if name is not None else list(self._providers.values())
        dropped = sum(len(p.log) for p in providers)
        for provider in providers:
            provider.log.clear()
        return dropped

    def connections(self, name: str) -> int:
        """How many TCP connections the provider has accepted (keep-alive serves many requests on one)."""
        return self._provider(name).listener.accepted

    # -- the providers ---------------------------------------------------------------------------

    def _unreadable(self, fmt: WireFormat) -> Callable[[HttpError], bytes]:
        def body(error: HttpError) -> bytes:
            return encode_json(fmt.error_body(error.status, error.message, "0"))

        return body

    def _handler(self, name: str) -> Handler:
        async def handle(request: Request, http: HttpConnection) -> None:
            await self._provider_exchange(self._providers[name], request, http)

        return handle

    def _record(self, ex: _Exchange, outcome: Outcome, status: int | None) -> None:
        ex.provider.received += 1
        ex.provider.log.append(
            SandboxRequest(
                provider=ex.provider.name,
                method=ex.request.method,
                path=ex.request.path,
                query=ex.request.query,
                headers=_redacted(ex.request.headers),
                body=ex.body,
                stream=ex.stream,
                mode=str(ex.mode),
                outcome=outcome,
                status=status,
                at=ex.read_at,
            )
        )

    async def _send_json(
        self,
        ex: _Exchange,
        status: int,
        payload: bytes,
        outcome: Outcome,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._record(ex, outcome, status)
        headers = (_JSON_TYPE, (ex.provider.format.request_id_header, ex.request_id), *extra)
        await ex.http.respond(status, headers, payload)

    async def _send_error(
        self,
        ex: _Exchange,
        status: int,
        outcome: Outcome,
        message: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        body = ex.provider.format.error_body(status, message, ex.request_id, param, code)
        await self._send_json(ex, status, encode_json(body), outcome, extra)

    async def _provider_exchange(self, provider: _Provider, request: Request, http: HttpConnection) -> None:
        fmt = provider.format
        body, is_object = _parse_body(request.body)
        stream = is_object and isinstance(fmt, StreamingFormat) and fmt.wants_stream(body)
        mode = provider.mode
        ex = _Exchange(provider, request, body, stream, mode, f"{next(self._ids):06d}", time.time(), http)
        kind = mode.kind

        if kind in (ModeKind.DOWN, ModeKind.RESET):
            self._record(ex, Outcome.DOWN if kind is ModeKind.DOWN else Outcome.RESET, None)
            http.reset()
            return
        if kind is ModeKind.HANG:
            self._record(ex, Outcome.HANG, None)
            await http.wait_until_client_leaves()
            return
        if kind is ModeKind.SLOW:
            if await http.client_left_within(mode.seconds or 0.0):
                self._record(ex, Outcome.CLIENT_LEFT, None)
                return
        elif kind is ModeKind.STATUS:
            await self._send_error(ex, mode.status or 500, Outcome.STATUS)
            return
        elif kind is ModeKind.RATELIMIT:
            retry = (("retry-after", format_seconds(mode.seconds or 0.0)),)
            await self._send_error(ex, 429, Outcome.RATELIMIT, extra=retry)
            return

        route = fmt.route(request.method, request.path)
        if route == 404:
            message = f"Invalid URL ({request.method} {request.path})"
            await self._send_error(ex, 404, Outcome.NOT_FOUND, message)
            return
        if route == 405:
            message = f"Method {request.method} is not allowed on {request.path}"
            await self._send_error(ex, 405, Outcome.METHOD_NOT_ALLOWED, message)
            return
        problem = fmt.auth_problem(request.headers, provider.key)
        if problem is not None:
            await self._send_error(ex, 401, Outcome.UNAUTHORIZED, problem)
            return
        problem = fmt.header_problem(request.headers)
        if problem is not None:
            await self._send_error(ex, 400, Outcome.BAD_REQUEST, problem)
            return
        if route is Route.HEALTH:
            state = ServerState(in_flight=provider.in_flight, served=provider.received)
            await self._send_json(ex, 200, encode_json(fmt.health_body(state)), Outcome.OK)
            return

        if not is_object:
            await self._send_error(ex, 400, Outcome.BAD_REQUEST, "The body is not a JSON object.")
            return
        refused = fmt.body_problem(body)
        if refused is not None:
            await self._send_error(
                ex, 400, Outcome.BAD_REQUEST, refused.message, param=refused.param, code=refused.code
            )
            return
        try:
            answer = self._answer(provider, body, request.body, ex.request_id)
        except Exception as error:
            message = f"sandbox reply function failed: {type(error).__name__}"
            await self._send_error(ex, 500, Outcome.REPLY_FAILED, message)
            return
        provider.in_flight += 1
        try:
            await self._send_answer(ex, answer)
        finally:
            provider.in_flight -= 1

    def _answer(self, provider: _Provider, body: dict[str, Any], raw: bytes, request_id: str) -> Answer:
        """The answer to a request: a tool call when it asks for one (``chat.py``), else the reply
        function's text, cut at the request's first stop sequence in it, then at its max tokens."""
        fmt = provider.format
        chat = read_chat(body, text_only=not fmt.carries_tools)
        call = planned_call(chat)
        stop: str | None = None
        if call is not None:
            text = ""
            output_tokens = max(1, count_words(call.arguments_json))
            cut_short = False
        else:
            # The reply function gets a copy of its own (decoding again is cheaper than a deep copy).
            text, stop = cut_at_stop(self._reply(provider.name, _decode_json(raw)), chat.stops)
            cap = fmt.max_tokens(body)
            cut_short = cap is not None and count_words(text) > cap
            if cap is not None and cut_short:
                text, stop = cut_to_words(text, cap), None
            output_tokens = count_words(text)
        return Answer(
            text=text,
            model=fmt.model(body),
            input_tokens=max(1, count_words(request_text(body))),
            output_tokens=output_tokens,
            cut_short=cut_short,
            request_id=request_id,
            created=int(time.time()),
            tool_call=call,
            stop_sequence=stop,
        )

    async def _send_answer(self, ex: _Exchange, answer: Answer) -> None:
        kind = ex.mode.kind
        fmt = ex.provider.format
        if kind is ModeKind.GARBAGE:
            await self._send_json(ex, 200, _GARBAGE, Outcome.GARBAGE)
        elif kind in (ModeKind.HUGE, ModeKind.ENDLESS):
            await self._send_runaway(ex, answer)
        elif ex.stream and isinstance(fmt, StreamingFormat):
            await self._send_stream(ex, fmt, fmt.stream_events(answer, ex.body))
        else:
            payload = encode_json(fmt.answer_body(answer, ex.body))
            if kind is ModeKind.TRUNCATE:
                await self._send_partial(ex, payload, payload[: len(payload) // 2], Outcome.TRUNCATE)
            elif kind is ModeKind.STALL:
                await self._send_partial(ex, payload, payload[: max(1, len(payload) // 4)], Outcome.STALL)
                await ex.http.wait_until_client_leaves()
            else:
                await self._send_json(ex, 200, payload, Outcome.OK)

    async def _send_partial(self, ex: _Exchange, payload: bytes, part: bytes, outcome: Outcome) -> None:
        """The head of a complete answer (its full Content-Length), but only ``part`` of its body:
        the answer is never ended, so the connection closes (or stalls) short of its length."""
        self._record(ex, outcome, 200)
        headers = [
            _JSON_TYPE,
            ("content-length", str(len(payload))),
            ("connection", "close"),
            (ex.provider.format.request_id_header, ex.request_id),
        ]
        await ex.http.start(200, headers)
        await ex.http.send(part)

    async def _send_stream(self, ex: _Exchange, fmt: StreamingFormat, events: list[bytes]) -> None:
        """A chunked event stream, one chunk per event, each flushed on its own.

        ``truncate`` stops after half the events, without the terminating event or the last
        chunk; ``stall`` sends the first event and then nothing until the client leaves.
        """
        kind = ex.mode.kind
        outcome = {ModeKind.TRUNCATE: Outcome.TRUNCATE, ModeKind.STALL: Outcome.STALL}.get(kind, Outcome.OK)
        self._record(ex, outcome, 200)
        headers = [
            ("content-type", fmt.stream_content_type),
            ("cache-control", "no-cache"),
            (fmt.request_id_header, ex.request_id),
        ]
        if outcome is not Outcome.OK:
            headers.append(("connection", "close"))
        await ex.http.start(200, headers)
        if outcome is Outcome.TRUNCATE:
            events = events[: len(events) // 2]
        elif outcome is Outcome.STALL:
            events = events[:1]
        for index, event in enumerate(events):
            if index:
                await asyncio.sleep(self._stream_delay_s)
            await ex.http.send(event)
        if outcome is Outcome.STALL:
            await ex.http.wait_until_client_leaves()
        elif outcome is Outcome.OK:
            await ex.http.end()

    async def _send_runaway(self, ex: _Exchange, answer: Answer) -> None:
        """A ``huge`` or ``endless`` reply, made piece by piece as the client reads it, so that the
        sandbox's memory stays flat however long it goes. It ends when done (huge), or when the
        client closes the connection (``ConnectionError``, which ends the connection's handler)."""
        fmt = ex.provider.format
        huge = ex.mode.kind is ModeKind.HUGE
        # What a huge reply's usage says: the words of the fill (each unit holds two).
        answer = dataclasses.replace(
            answer, output_tokens=self._huge_bytes * 2 // len(_FILL_UNIT), tool_call=None, stop_sequence=None
        )
        pause = 0.0 if huge else ex.mode.seconds or 0.0
        self._record(ex, Outcome.HUGE if huge else Outcome.ENDLESS, 200)
        headers = [(fmt.request_id_header, ex.request_id), ("connection", "close")]
        if ex.stream and isinstance(fmt, StreamingFormat):
            stream_type = ("content-type", fmt.stream_content_type)
            await ex.http.start(200, [stream_type, ("cache-control", "no-cache"), *headers])
            await ex.http.send(b"".join(fmt.stream_opening(answer, ex.body)))
            event = fmt.stream_text(answer, ex.body, _FILL_PIECE)
            # Whole events only: the stream stays well-formed to its end.
            total = -(-self._huge_bytes // len(event)) * len(event) if huge else None
            await self._pour(ex, event, total, pause)
            await ex.http.end(b"".join(fmt.stream_closing(answer, ex.body)))
            return
        # A whole JSON answer whose text is the fill: everything around the text is sent as the
        # format writes it, only the text itself is never built.
        envelope = encode_json(fmt.answer_body(dataclasses.replace(answer, text=_FILL_MARK), ex.body))
        prefix, _, suffix = envelope.partition(_FILL_MARK.encode())
        if huge:
            fill = max(0, self._huge_bytes - len(prefix) - len(suffix))
            length = str(len(prefix) + fill + len(suffix))
            await ex.http.start(200, [_JSON_TYPE, ("content-length", length), *headers])
            await ex.http.send(prefix)
            await self._pour(ex, _FILL_UNIT, fill, 0.0)
            await ex.http.end(suffix)
            return
        await ex.http.start(200, [_JSON_TYPE, *headers])  # no length: chunked, never ended
        await ex.http.send(prefix)
        await self._pour(ex, _FILL_UNIT, None, pause)

    async def _pour(self, ex: _Exchange, unit: bytes, total: int | None, pause: float) -> None:
        """Send ``unit`` again and again: ``total`` bytes of it (the last unit cut to fit, unless
        ``total`` is a multiple of it) or forever; one unit every ``pause`` seconds, or as fast as
        the client reads. A chunked body gets one chunk per send."""
        if pause > 0:
            while True:
                await asyncio.sleep(pause)
                await ex.http.send(unit)
        block = unit * max(1, len(_FILL_BLOCK) // len(unit))
        for piece in _pieces(block, total):
            await ex.http.send(piece)
            # drain() returns at once while the client keeps up: let other connections run too.
            await asyncio.sleep(0)

    # -- the control API -------------------------------------------------------------------------

    async def _control_exchange(self, request: Request, http: HttpConnection) -> None:
        status, payload = control_answer(self, request)
        await http.respond(status, [_JSON_TYPE], encode_json(payload))


def _pieces(block: bytes, total: int | None) -> Iterator[bytes]:
    """``block`` repeated until ``total`` bytes (the last one cut short), or forever."""
    if total is None:
        while True:
            yield block
    sent = 0
    while sent < total:
        piece = block[: total - sent]
        sent += len(piece)
        yield piece


def export_lines(sandbox: Sandbox) -> list[str]:
    """Shell lines that point the product at a running sandbox, and a comment naming its control API."""
    env = {**sandbox.env(), "AI_PROVIDER": "aiceo-gateway", "AI_FALLBACK_PROVIDER": "glm-direct"}
    lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines.append(
        f"# sandbox control API: {sandbox.control_url} "
        "(GET /providers, PUT /mode/NAME with the mode as body, GET /log/NAME, DELETE /log)"
    )
    return lines


def _print_line(line: str) -> None:
    print(line, flush=True)


async def serve(
    modes: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    base_port: int | None = None,
    print_env: Callable[[str], None] = _print_line,
) -> None:
    """Run the sandbox until cancelled, after printing its ``export`` lines with ``print_env``.

    With ``base_port`` P the providers listen on P..P+3 (in ``NAMES`` order) and the control API
    on P+4; without it, on ports the system picks.
    """
    ports: dict[str, int] | None = None
    control_port: int | None = None
    if base_port is not None:
        if not 1 <= base_port <= 65535 - len(NAMES):
            raise ValueError(f"base port {base_port} leaves no room for {len(NAMES) + 1} ports")
        ports = {name: base_port + index for index, name in enumerate(NAMES)}
        control_port = base_port + len(NAMES)
    async with Sandbox(modes, host, ports, control_port=control_port) as sandbox:
        for line in export_lines(sandbox):
            print_env(line)
        await asyncio.Event().wait()
