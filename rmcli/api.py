"""The front door: every run of recursive-manager goes through here, ``rmgr``'s commands included.

``Client`` routes many calls under one policy (decoded and checked once, one state, pooled
connections); ``ask``, ``analyze``, ``compare``, ``health`` and ``create`` do one thing each for
programs that call once; ``records`` opens the state for what a person reads back (usage,
history, the cache, the breakers). Each takes the same inputs as its command and returns the
struct the command prints: a ``RunOutcome``, an ``AnalysisRun``, ``HealthReport``s.

Bad input or configuration raises ``ConfigError``; a provider's fault never raises, it is in the
result. ``hooks`` (``rmcli.hooks.Hooks``) tell the caller what happens while a run goes on.
``env`` replaces the process environment (default: the process environment over ``.env``);
``transport`` is the httpx transport every request goes through (an ``httpx.MockTransport`` lets
an embedder test without any network); ``state_home`` replaces ``$RECURSIVEMANAGER_HOME``.
"""

from __future__ import annotations

import dataclasses
import functools
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import anyio
import httpx
import msgspec
from returns.result import Failure, Success

from rmcli import conversation
from rmcli.analysis import AnalysisRun, run_analysis
from rmcli.config import (
    ConfigError,
    RouteSetup,
    cache_ttl_ms,
    check_text,
    decode_policy_text,
    load_policy,
    load_route,
    route_for,
    route_names,
)
from rmcli.conversation import Conversation
from rmcli.environment import api_key, key_problem, load_environment
from rmcli.environment import state_home as _home
from rmcli.health import HEALTH_TIMEOUT_S, check_many
from rmcli.hooks import Hooks, fan_out
from rmcli.http1 import Http1Transport
from rmcli.http_client import ProviderClient
from rmcli.output import err
from rmcli.runner import ProviderLimits, Routing
from rmcli.runner import route as run_route
from rmcli.state import (
    DB_FILENAME,
    AttemptClaim,
    Caps,
    SlotBusy,
    State,
    StoreError,
    StoreUnavailable,
    open_state,
    state_url,
)
from rmcore.breaker import CircuitState
from rmcore.events import RunOutcome
from rmcore.health import HealthReport
from rmcore.perspectives import Perspective, select_perspectives
from rmcore.plan import build_plan
from rmcore.policy import Breaker, Policy, all_route_providers, resolve_providers
from rmcore.providers import ProviderSpec, builtin_providers
from rmcore.quota import Cap, Refusal, client_admission
from rmcore.requests import DEFAULT_MAX_TOKENS, ChatRequest, TextPart
from rmcore.usage import observed_p95_s

__all__ = [
    "AnalysisRun",
    "CircuitBoard",
    "Client",
    "ConfigError",
    "Hooks",
    "PolicyInput",
    "Provider",
    "analyze",
    "ask",
    "chat",
    "circuit_board",
    "compare",
    "create",
    "health",
    "records",
    "reset_circuits",
    "stored_circuits",
]

PolicyInput = Path | str | Policy | None
"""A policy: a file's path, TOML text (a ``str`` holding a newline or ``=``), a decoded
``Policy``, or None for the default route (``AI_PROVIDER`` then ``AI_FALLBACK_PROVIDER``)."""

OBSERVED_LATENCY_REFRESH_S = 10.0
"""How long a ``Client`` reuses the observed p95 latencies a ``hedge_after_s = "p95"`` route waits
for, before it reads them from the state again."""

ADMISSION_LEASE_S = 30.0
"""How long a client's admission (``Client.admit``) holds its reservation if its process dies
between taking and settling it: it is settled at once otherwise."""

def _environment(env: Mapping[str, str] | None, home: Path | None) -> dict[str, str]:
    merged = load_environment() if env is None else dict(env)
    if home is not None:
        merged["RECURSIVEMANAGER_HOME"] = str(home)
    return merged


def _as_path(policy: PolicyInput) -> PolicyInput:
    if isinstance(policy, str) and "\n" not in policy and "=" not in policy:
        return Path(policy)
    return policy


def _setup(
    policy: PolicyInput, env: dict[str, str], names: Sequence[str], model: str | None = None
) -> RouteSetup:
    """The route for ``policy`` with the checks of ``rmgr``'s ``--policy``; ``model`` (``--model``)
    replaces the model of every provider the route uses."""
    policy = _as_path(policy)
    if policy is None or isinstance(policy, Path):
        return _with_model(load_route(env, policy_path=policy, providers=names), model)
    if isinstance(policy, str):
        policy = decode_policy_text(policy, "<policy text>", env)
    return _with_model(route_for(policy, env, providers=names), model)


def _model_scope(scope: str | None, model: str | None) -> str | None:
    """The cache scope of an analysis whose model is overridden: its answers are never served
    to a run that asks another model, nor its runs served answers of the provider's default."""
    return scope if model is None else f"{scope or ''}@model:{model}"


def _with_model(setup: RouteSetup, model: str | None) -> RouteSetup:
    """``setup`` with every provider of its route asked for ``model`` instead of its own (None:
    unchanged). Prices stay the provider's: they are per its configured model, and no price is
    known for another one."""
    if model is None:
        return setup
    if not model or not model.isprintable() or any(c.isspace() for c in model):
        raise ConfigError(
            f"model {model!r} is not a model name — write it as the provider lists it, without spaces"
        )
    used = set(all_route_providers(setup.policy))
    providers = {
        name: msgspec.structs.replace(spec, model=model) if name in used else spec
        for name, spec in setup.providers.items()
    }
    match build_plan(setup.policy, providers):
        case Success(plan):
            return RouteSetup(setup.policy, providers, plan, source=setup.source)
        case Failure(problem):
            raise ConfigError(f"route: {problem}")
    raise AssertionError("unreachable")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA bundle costs ~20 ms of CPU."""
    return httpx.create_ssl_context()


def _new_client(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    """A client with no client-side timeouts (the engine's limits are cancel scopes), no
    redirects (an endpoint URL is used as given), certificates always verified, and the
    ``--verbose`` trace attached when it is on."""
    if transport is None:
        # Our own HTTP/1.1 transport (``rmcli.http1``: several times less CPU per request
        # than httpcore's pool); ``verify`` and ``limits`` still configure the transports httpx
        # mounts for the proxy variables, as before (``rmcli.http_client.ProviderClient``).
        client = ProviderClient(
            verify=_tls_context(),
            timeout=None,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=32),
            own=Http1Transport(_tls_context(), max_connections=100, max_keepalive_connections=32),
        )
    else:
        client = ProviderClient(timeout=None, follow_redirects=False, transport=transport)
    from rmcli.trace import current

    tracer = current()
    return client if tracer is None else tracer.attach(client)


def _traced(hooks: Hooks | None) -> Hooks:
    """``hooks`` with the ``--verbose`` trace's in front of them when it is on."""
    from rmcli.trace import current

    tracer = current()
    return fan_out(tracer.hooks() if tracer is not None else None, hooks)


class _Connections:
    """The HTTP client of a ``Client``, made once and shared by all its calls. (Until issue 19
    calls were spread over several pools of four, because httpcore's pool cost grew with the
    square of its size; the project's own transport takes a connection in O(1), and one client
    measured the same as eight pools: 0.656 against 0.701 ms of CPU a routed call.)"""

    def __init__(self, transport: httpx.AsyncBaseTransport | None) -> None:
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._preparing = anyio.Lock()

    async def get(self) -> httpx.AsyncClient:
        """The client, made in a worker thread the first time: its CA bundle and httpx's first
        imports hold the thread for about 50 ms, which would stall everything else on the loop."""
        if self._client is None:
            async with self._preparing:
                if self._client is None:
                    self._client = await anyio.to_thread.run_sync(_new_client, self._transport)
        return self._client

    async def aclose(self) -> None:
        """Close the client and its connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


async def _open(env: Mapping[str, str], hooks: Hooks, *, check: bool) -> State:
    """The state ``env`` chooses, as a ConfigError (exit 2) when it cannot be used. ``check``
    verifies the database first: a damaged one is found before any request is paid for."""
    warn = hooks.state_unavailable or (lambda message: err(f"WARNING: {message}"))
    try:
        return await open_state(env, _home(env), warn=warn, check=check)
    except StoreError as exc:
        raise ConfigError(exc.message) from None


@asynccontextmanager
async def records(
    *, env: Mapping[str, str] | None = None, state_home: Path | None = None
) -> AsyncIterator[State]:
    """The state (``rmcli.state.State``: attempts, circuits, caps, cache, history) for reading
    back what runs left and for clearing it, as ``rmgr usage``, ``history`` and ``cache`` do. A
    state that cannot be used, or that fails while it is read, is a ``ConfigError``."""
    environment = _environment(env, state_home)
    state = await _open(environment, Hooks(), check=False)
    try:
        yield state
    except StoreError as exc:
        raise ConfigError(exc.message) from None
    finally:
        await state.aclose()


async def stored_circuits(
    *, env: Mapping[str, str] | None = None, state_home: Path | None = None
) -> list[CircuitState] | None:
    """Every provider's circuit breaker as the state keeps it (every process using the state sees
    the same), or None when there is no state yet (reading one never creates it)."""
    environment = _environment(env, state_home)
    if state_url(environment) is None and not (_home(environment) / DB_FILENAME).is_file():
        return None
    async with records(env=environment) as state:
        return await state.circuits.all()


class CircuitBoard(NamedTuple):
    """Every provider's circuit breaker and the settings it is read by (``circuit_board``)."""

    circuits: list[CircuitState]
    """One per provider, by name: each configured (built in, or defined by the policy) and each
    the state holds (another policy's); closed and clean when never recorded."""
    breaker: Breaker
    """The policy's ``[breaker]``: its ``cooldown_s`` times when an open circuit is probed."""
    stored: bool
    """Whether there was a state to read (False: none yet, so every circuit is closed)."""


def _decoded(env: Mapping[str, str], policy: PolicyInput) -> Policy:
    policy = _as_path(policy)
    if policy is None or isinstance(policy, Path):
        return load_policy(policy, dict(env))
    if isinstance(policy, str):
        return decode_policy_text(policy, "<policy text>", env)
    return policy


async def circuit_board(
    policy: PolicyInput = None, *, env: Mapping[str, str] | None = None, state_home: Path | None = None
) -> CircuitBoard:
    """Every provider's circuit breaker as the state keeps it (the fleet's, with a shared state),
    with ``policy``'s breaker settings (default: the default policy's), as ``rmgr circuits``
    shows them. Reading never creates a state."""
    environment = _environment(env, state_home)
    decoded = _decoded(environment, policy)
    stored = await stored_circuits(env=environment)
    configured = resolve_providers(decoded, builtin_providers(environment))
    board = {name: CircuitState(provider=name) for name in configured}
    board.update((c.provider, c) for c in stored or ())
    return CircuitBoard([board[name] for name in sorted(board)], decoded.breaker, stored is not None)


async def reset_circuits(
    names: Sequence[str] | None,
    *,
    policy: PolicyInput = None,
    env: Mapping[str, str] | None = None,
    state_home: Path | None = None,
) -> list[CircuitState]:
    """Close the circuits of ``names`` (every one when None), as ``rmgr circuits reset`` does, for
    every process sharing the state: the next request to each is sent at once. Returns the
    circuits that had anything to reset (open, half-open, or failures counted) as they were. A
    name neither configured (built in, or in ``policy``) nor stored is a ``ConfigError`` listing
    the known ones; nothing is reset then."""
    environment = _environment(env, state_home)
    board = await circuit_board(policy, env=environment)
    before = {c.provider: c for c in board.circuits}
    unknown = [name for name in names or () if name not in before]
    if unknown:
        raise ConfigError(f"unknown provider {unknown[0]!r} — known providers: {', '.join(before)}")
    if not board.stored or (names is not None and not names):
        return []
    async with records(env=environment) as state:
        reset = await state.circuits.reset(None if names is None else list(dict.fromkeys(names)))
    was = [before.get(name, CircuitState(provider=name)) for name in reset]
    return [c for c in was if c != CircuitState(provider=c.provider)]


def _perspectives(setup: RouteSetup, chosen: Sequence[str] | None) -> list[Perspective]:
    ids = list(chosen) if chosen is not None else list(setup.policy.analysis.perspectives)
    if chosen is not None and not [i for i in ids if i.strip()]:
        raise ConfigError("perspectives: none given (leave the option out to use the policy's)")
    match select_perspectives(ids, setup.policy.perspectives):
        case Failure(problem):
            raise ConfigError(f"perspectives: {problem}")
        case Success(perspectives):
            pass
    if setup.policy.analysis.min_perspectives > len(perspectives):
        raise ConfigError(
            f"{len(perspectives)} perspective(s) chosen but the policy's [analysis] min_perspectives is "
            f"{setup.policy.analysis.min_perspectives}"
        )
    return list(perspectives)


def _check_ask(prompt: str, system: str | None, max_tokens: int, temperature: float | None) -> None:
    check_text("the prompt", prompt)
    if system is not None:
        check_text("the system text", system, empty_ok=True)
    _check_sampling(max_tokens, temperature)


def _check_chat(request: ChatRequest) -> None:
    if not request.messages:
        raise ConfigError("the request holds no message")
    for number, message in enumerate(request.messages):
        texts = [message.content] if isinstance(message.content, str) else [
            part.text for part in message.content if isinstance(part, TextPart)
        ]
        for text in texts:
            check_text(f"message {number + 1} ({message.role})", text, empty_ok=True)
    _check_sampling(request.max_tokens, request.temperature)


def _check_sampling(max_tokens: int, temperature: float | None) -> None:
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be at least 1 (got {max_tokens})")
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise ConfigError(f"temperature must be between 0 and 2 (got {temperature})")


def _check_analyze(question: str, agent_id: str) -> None:
    check_text("the question", question)
    check_text("agent_id", agent_id)


class Client:
    """Routes many calls under one policy, for programs that call again and again.

    The policy is decoded and its route checked when the client is made (so a bad policy or a
    missing key raises ``ConfigError`` here); the state and the connection pools open on first
    use and stay open until ``aclose`` or the end of ``async with``. Calls may run at once from
    many tasks of one event loop; each is its own run (its own budget and deadline), while the
    circuit breakers and each provider's ``max_concurrency`` are shared by all of them.

    ``record=False`` saves no attempt and uses no breaker in ``ask`` (``analyze`` always opens
    the state: it holds the cache and the history). ``hooks`` apply to every call; a call's own
    ``hooks`` are called after them. ``command`` names the attempts' origin in the state (default:
    the method's name). ``model`` replaces the model sent to every provider of the route (its
    prices stay those of its configured model).
    """

    def __init__(
        self,
        policy: PolicyInput = None,
        *,
        provider: str | None = None,
        fallback: str | None = None,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        state_home: Path | None = None,
        record: bool = True,
        hooks: Hooks | None = None,
        command: str | None = None,
        model: str | None = None,
    ) -> None:
        self._env = _environment(env, state_home)
        self._setup = _setup(policy, self._env, route_names(self._env, provider, fallback), model)
        self._observed: tuple[float, RouteSetup] | None = None
        self._transport = transport
        self._record = record
        self._hooks = hooks
        self._command = command
        self._model = model
        self._limits = ProviderLimits()
        self._clean: set[str] = set()
        self._exits = AsyncExitStack()
        self._connections: _Connections | None = None
        self._state: State | None = None
        self._opening = anyio.Lock()  # calls at once on a new client open one state

    @property
    def policy(self) -> Policy:
        """The decoded policy the client routes by (``provider`` / ``fallback`` applied)."""
        return self._setup.policy

    @property
    def setup(self) -> RouteSetup:
        """The checked route: the policy, its providers and the plan the engine runs."""
        return self._setup

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections and the state; a later call opens them again."""
        exits, self._exits = self._exits, AsyncExitStack()
        self._connections = None
        self._state = None
        await exits.aclose()

    async def open(self) -> None:
        """Open the state (when recording) and the first connection pool now instead of on the
        first call: a long-running caller (``rmgr serve``) learns of an unusable state at
        start-up, and its first request waits for neither. A ``ConfigError`` when the state
        cannot be used."""
        if self._record:
            await self._open_state()
        await self._client()

    async def _client(self) -> httpx.AsyncClient:
        if self._connections is None:
            self._connections = _Connections(self._transport)
            self._exits.push_async_callback(self._connections.aclose)
        return await self._connections.get()

    async def _open_state(self) -> State:
        if self._state is not None:
            return self._state
        async with self._opening:
            if self._state is None:
                state = await _open(self._env, self._hooks or Hooks(), check=True)
                self._exits.push_async_callback(state.aclose)
                self._state = state
            return self._state

    def _key(self, spec: ProviderSpec) -> str | None:
        return api_key(self._env, spec.key_env)

    def _routing(
        self, client: httpx.AsyncClient, state: State | None, hooks: Hooks | None, command: str
    ) -> Routing:
        return Routing(
            client=client,
            keys=self._key,
            state=state,
            hooks=_traced(fan_out(self._hooks, hooks)),
            command=self._command or command,
            limits=self._limits,
            clean=self._clean,
        )

    async def _routed(
        self, state: State | None, setup: RouteSetup | None = None, *, every_route: bool = False
    ) -> RouteSetup:
        """The route, with ``"p95"`` hedges resolved from the state's latencies of the last day
        (every flow resolves them here, the same way); with ``every_route``, the policy's other
        routes too (an analysis sends perspectives and the synthesis by them)."""
        setup = setup or self._setup
        if state is None or not setup.uses_observed_latency(every_route=every_route):
            return setup
        now = time.monotonic()
        cached = self._observed
        if setup is self._setup and cached is not None and now - cached[0] < OBSERVED_LATENCY_REFRESH_S:
            return cached[1]
        day_ago_ms = int(time.time() * 1000) - 24 * 3600 * 1000
        resolved = setup.with_observed_latency(observed_p95_s(await state.attempts.since(day_ago_ms)))
        if setup is self._setup:
            self._observed = (now, resolved)
        return resolved

    async def ask(
        self,
        prompt: str,
        *,
        system: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        stream: bool = True,
        hooks: Hooks | None = None,
        route: str | None = None,
    ) -> RunOutcome:
        """One completion routed by the policy. ``stream`` asks providers that can to stream the
        answer (``hooks.text`` gets it as it arrives), so that a first-token and an idle timeout
        apply; without it each reply is read whole. ``route`` picks one of the policy's named
        routes (``[routes.NAME]``; default: ``[route]``); a name it lacks is a ``ConfigError``."""
        _check_ask(prompt, system, max_tokens, temperature)
        request = ChatRequest.ask(
            prompt, system=system, max_tokens=max_tokens, temperature=temperature, stream=stream
        )
        return await self._send(request, hooks, route)  # checked above: not again on every call

    async def chat(
        self,
        request: ChatRequest,
        *,
        hooks: Hooks | None = None,
        route: str | None = None,
        caps: Sequence[Cap] = (),
    ) -> RunOutcome:
        """The whole chat request (a conversation, tools, images, a JSON answer, ...) routed by
        the policy, translated for each provider the route reaches; a target whose format cannot
        carry what the request needs is skipped, and a route none of whose targets can is a
        ``ConfigError`` before anything is sent. ``route`` as in :meth:`ask`. ``caps`` are caps
        over time beyond the policy's that every attempt of this call is charged against, like
        ``[budget]``'s (``rmgr serve``: its client key's, ``rmcore.quota.client_caps``)."""
        _check_chat(request)
        return await self._send(request, hooks, route, tuple(caps))

    async def _send(
        self, request: ChatRequest, hooks: Hooks | None, route: str | None, caps: tuple[Cap, ...] = ()
    ) -> RunOutcome:
        chosen = None if route is None else self._setup.for_route(route)
        state = await self._open_state() if self._record else None
        setup = await self._routed(state, chosen)
        plan = msgspec.structs.replace(setup.plan, caps=setup.plan.caps + caps) if caps else setup.plan
        client = await self._client()
        return await run_route(plan, request, self._routing(client, state, hooks, "ask"))

    async def admit(self, caps: Sequence[Cap]) -> Refusal | None:
        """Count one request against ``caps`` (``rmgr serve``'s client key's, from
        ``rmcore.quota.client_caps``) in the state all processes share, or say why it may not go
        (its ``rpm`` spent in this minute, or its day's budget): ``rmcore.quota.client_admission``.
        While a shared state is unreachable, a policy that fails open counts on this host alone;
        one that fails closed raises ``StoreUnavailable``. Nothing to count without a state."""
        if not caps or not self._record:
            return None
        state = await self._open_state()
        asked, kept = client_admission(caps, time.time())
        claim = AttemptClaim(holder=f"admission-{uuid.uuid4().hex}", lease_s=ADMISSION_LEASE_S, charges=asked)

        async def count_in(caps: Caps) -> Refusal | None:
            refused = await caps.begin(claim, time.time())
            if refused is None:
                await caps.end(claim, kept, time.time())
            assert not isinstance(refused, SlotBusy)  # the claim holds no slot
            return refused

        try:
            return await count_in(state.caps)
        except StoreUnavailable:
            if state.local_caps is None or self._setup.plan.on_state_unavailable != "fail_open":
                raise
            return await count_in(state.local_caps)

    async def circuits(self) -> list[CircuitState]:
        """The circuit breakers as the state holds them now (none without a state), for a
        long-running caller's figures (``rmgr serve``'s ``/metrics``)."""
        return await (await self._open_state()).circuits.all() if self._record else []

    async def last_conversation(self) -> Conversation | None:
        """The conversation kept last (by ``rmgr ask`` or ``rmgr chat``), None when there is none."""
        return await conversation.latest(await self._open_state())

    async def keep_conversation(self, kept: Conversation) -> None:
        """Keep ``kept`` in the state as the conversation to continue (not when not recording)."""
        if self._record:
            await conversation.save(await self._open_state(), kept, int(time.time() * 1000))

    async def analyze(
        self,
        question: str,
        *,
        perspectives: Sequence[str] | None = None,
        agent_id: str = "default",
        persist_history: bool = True,
        use_cache: bool = True,
        hooks: Hooks | None = None,
        setup: RouteSetup | None = None,
        cache_scope: str | None = None,
        synthesis: bool = True,
    ) -> AnalysisRun:
        """The multi-perspective analysis, then the synthesis over it (unless ``synthesis`` is
        False or the policy turns it off); with ``persist_history`` it is saved in ``agent_id``'s
        history. ``setup`` replaces the client's route for this call (``compare`` gives each
        provider its own), ``cache_scope`` keeps its cached answers apart."""
        _check_analyze(question, agent_id)
        ttl_ms = cache_ttl_ms(self._env)
        routed = setup or self._setup
        chosen = _perspectives(routed, perspectives)
        state = await self._open_state()
        routed = await self._routed(state, routed, every_route=True)
        client = await self._client()
        routing = self._routing(client, state, hooks, "analyze")
        if cache_scope:
            routing = dataclasses.replace(routing, command="compare")
        result = await run_analysis(
            question,
            chosen,
            routed,
            routing,
            use_cache=use_cache,
            cache_ttl_ms=ttl_ms,
            cache_scope=_model_scope(cache_scope, self._model),
            synthesize=synthesis,
        )
        if persist_history:
            await state.history.add(
                agent_id,
                question,
                result.status,
                result.overall,
                int(time.time() * 1000),
                msgspec.json.encode(result.to_json()),
            )
        return result


async def ask(
    prompt: str,
    *,
    policy: PolicyInput = None,
    provider: str | None = None,
    fallback: str | None = None,
    system: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    state_home: Path | None = None,
    record: bool = True,
    stream: bool = True,
    hooks: Hooks | None = None,
    model: str | None = None,
    route: str | None = None,
) -> RunOutcome:
    """One completion routed by the policy, as ``rmgr ask`` routes it: the outcome holds the
    answer (or the error) and every attempt. With ``record`` the attempts are saved in the state
    and its circuit breakers are used; without it no file is touched. ``model`` replaces the
    model sent to the route's providers; ``route`` picks one of the policy's named routes
    (``[routes.NAME]``; default: ``[route]``). To route many calls, a ``Client`` does the set-up
    once instead of on every call."""
    _check_ask(prompt, system, max_tokens, temperature)
    return await chat(
        ChatRequest.ask(prompt, system=system, max_tokens=max_tokens, temperature=temperature, stream=stream),
        policy=policy,
        provider=provider,
        fallback=fallback,
        env=env,
        transport=transport,
        state_home=state_home,
        record=record,
        hooks=hooks,
        model=model,
        route=route,
    )


async def chat(
    request: ChatRequest,
    *,
    policy: PolicyInput = None,
    provider: str | None = None,
    fallback: str | None = None,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    state_home: Path | None = None,
    record: bool = True,
    hooks: Hooks | None = None,
    model: str | None = None,
    route: str | None = None,
) -> RunOutcome:
    """The whole chat request (``rmcore.requests.ChatRequest``: a conversation, tools, images,
    a JSON answer, ...) routed by the policy, as :meth:`Client.chat` routes it; the other
    arguments as for :func:`ask`. ``rmcore.chat_request.decode_openai_chat`` reads one from an
    OpenAI-shaped JSON body."""
    async with Client(
        policy,
        provider=provider,
        fallback=fallback,
        env=env,
        transport=transport,
        state_home=state_home,
        record=record,
        model=model,
    ) as client:
        return await client.chat(request, hooks=hooks, route=route)


async def analyze(
    question: str,
    *,
    policy: PolicyInput = None,
    provider: str | None = None,
    fallback: str | None = None,
    perspectives: Sequence[str] | None = None,
    agent_id: str = "default",
    persist_history: bool = True,
    use_cache: bool = True,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    state_home: Path | None = None,
    hooks: Hooks | None = None,
    model: str | None = None,
    synthesis: bool = True,
) -> AnalysisRun:
    """The multi-perspective analysis of ``rmgr analyze``, and its synthesis unless ``synthesis``
    is False; with ``persist_history`` it is saved in ``agent_id``'s history (``rmgr history``).
    ``perspectives`` are ids (default: the policy's); ``model`` replaces the model sent to the
    route's providers."""
    _check_analyze(question, agent_id)
    async with Client(
        policy,
        provider=provider,
        fallback=fallback,
        env=env,
        transport=transport,
        state_home=state_home,
        model=model,
    ) as client:
        return await client.analyze(
            question,
            perspectives=perspectives,
            agent_id=agent_id,
            persist_history=persist_history,
            use_cache=use_cache,
            hooks=hooks,
            synthesis=synthesis,
        )


def configured_providers(env: Mapping[str, str] | None = None) -> list[str]:
    """The built-in providers that have a usable URL and a key: ``compare``'s default."""
    environment = _environment(env, None)
    specs = builtin_providers(environment)
    return [s.name for s in specs.values() if not s.problems and api_key(environment, s.key_env) is not None]


async def compare(
    question: str,
    *,
    providers: Sequence[str],
    policy: PolicyInput = None,
    perspectives: Sequence[str] | None = None,
    use_cache: bool = True,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    state_home: Path | None = None,
    hooks: Hooks | None = None,
    on_done: Callable[[str, AnalysisRun], None] | None = None,
    model: str | None = None,
    synthesis: bool = True,
) -> dict[str, AnalysisRun]:
    """The analysis on each of ``providers`` alone, at once, as ``rmgr compare`` runs it; the runs
    by provider name, in the order given. Comparison runs are not saved in the history.
    ``on_done(name, run)`` is called as each provider's analysis ends; ``model`` replaces the
    model sent to every one of them."""
    check_text("the question", question)
    names = list(dict.fromkeys(n.strip() for n in providers if n.strip()))
    if not names:
        raise ConfigError("compare needs at least one provider")
    environment = _environment(env, state_home)
    setups = {name: _setup(policy, environment, [name], model) for name in names}
    first = next(iter(setups.values()))
    chosen = [p.id for p in _perspectives(first, perspectives)]
    results: dict[str, AnalysisRun] = {}
    async with Client(first.policy, env=environment, transport=transport, hooks=hooks) as client:

        async def one(name: str, setup: RouteSetup) -> None:
            from rmcli.trace import trace_scope

            trace_scope.set(name)
            results[name] = await client.analyze(
                question,
                perspectives=chosen,
                persist_history=False,
                use_cache=use_cache,
                setup=setup,
                cache_scope=_model_scope(f"compare:{name}", model),
                synthesis=synthesis,
            )
            if on_done is not None:
                on_done(name, results[name])

        async with anyio.create_task_group() as tg:
            for name, setup in setups.items():
                tg.start_soon(one, name, setup)
    return {name: results[name] for name in names}


def _specs(env: Mapping[str, str], policy: PolicyInput) -> dict[str, ProviderSpec]:
    specs = builtin_providers(dict(env))
    policy = _as_path(policy)
    if policy is None:
        return specs
    if isinstance(policy, Path):
        return resolve_providers(load_policy(policy, dict(env)), specs)
    if isinstance(policy, str):
        policy = decode_policy_text(policy, "<policy text>", env)
    return resolve_providers(policy, specs)


async def health(
    names: Sequence[str] | None = None,
    *,
    policy: PolicyInput = None,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = HEALTH_TIMEOUT_S,
) -> list[HealthReport]:
    """Check providers at once, as ``rmgr health`` does: one report each, in the order asked
    (default: every configured provider, and those ``policy`` defines). A provider whose key is
    missing or unusable is reported unhealthy with the reason, and nothing is sent to it."""
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be a positive number of seconds (got {timeout_s})")
    environment = _environment(env, None)
    specs = _specs(environment, policy)
    unknown = [n for n in names or () if n not in specs]
    if unknown:
        raise ConfigError(f"unknown provider {unknown[0]!r}; known providers: {', '.join(sorted(specs))}")
    chosen = [specs[n] for n in dict.fromkeys(names)] if names else list(specs.values())
    bad_keys: dict[str, str] = {}
    for spec in chosen:
        problem = key_problem(environment, spec.key_env)
        if problem is None and spec.key_required and api_key(environment, spec.key_env) is None:
            problem = f"{spec.key_env} is not set"
        if problem is not None:
            bad_keys[spec.name] = problem
    checked = [s for s in chosen if s.name not in bad_keys]
    async with _new_client(transport) as client:
        reports = await check_many(client, checked, lambda s: api_key(environment, s.key_env), timeout_s)
    by_name = {r.provider: r for r in reports}
    for name, problem in bad_keys.items():
        by_name[name] = HealthReport(provider=name, healthy=False, reason=problem, response_time_ms=None)
    return [by_name[s.name] for s in chosen]


class Provider:
    """One provider, bound to an environment, a policy and a transport (see ``create``)."""

    def __init__(
        self,
        spec: ProviderSpec,
        *,
        env: dict[str, str],
        policy: PolicyInput,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.spec = spec
        self._env = env
        self._policy = policy
        self._transport = transport

    @property
    def name(self) -> str:
        """The provider's name (``anthropic-direct``, or one a policy defines)."""
        return self.spec.name

    async def health_check(self, timeout_s: float = HEALTH_TIMEOUT_S) -> HealthReport:
        """Whether the provider is up (its status URL or ``/models``, with the configured key)."""
        reports = await health(
            [self.name], policy=self._policy, env=self._env, transport=self._transport, timeout_s=timeout_s
        )
        return reports[0]

    async def complete(self, prompt: str, **kw: Any) -> RunOutcome:
        """``ask`` with this provider as the route; ``kw`` are ``ask``'s other options."""
        return await ask(
            prompt, provider=self.name, policy=self._policy, env=self._env, transport=self._transport, **kw
        )

    async def analyze(self, question: str, **kw: Any) -> AnalysisRun:
        """``analyze`` with this provider as the route; ``kw`` are ``analyze``'s other options."""
        return await analyze(
            question, provider=self.name, policy=self._policy, env=self._env, transport=self._transport, **kw
        )


def create(
    name: str,
    *,
    env: Mapping[str, str] | None = None,
    policy: PolicyInput = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Provider:
    """The provider called ``name`` (a built-in one, or one ``policy`` defines), e.g.
    ``create("anthropic-direct")``; an unknown name is a ConfigError."""
    environment = _environment(env, None)
    specs = _specs(environment, policy)
    spec = specs.get(name)
    if spec is None:
        raise ConfigError(f"unknown provider {name!r}; known providers: {', '.join(sorted(specs))}")
    return Provider(spec, env=environment, policy=policy, transport=transport)
