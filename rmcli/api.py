"""The embedding API: ``ask``, ``analyze``, ``compare``, ``health`` and ``create`` for programs
that use recursive-manager as a library instead of through ``rmgr``, and ``Client`` for programs
that route many calls (the policy decoded once, one state store, pooled connections).

Each function takes the same inputs as its command (a policy, providers, perspectives) and
returns the struct the command prints: a ``RunOutcome``, an ``AnalysisRun``, ``HealthReport``s.
Bad input or configuration raises ``ConfigError``; a provider's fault never raises, it is in the
result. ``env`` replaces the process environment (default: the process environment over ``.env``);
``transport`` is the httpx transport every request goes through (an ``httpx.MockTransport`` lets
an embedder test without any network); ``state_home`` replaces ``$RECURSIVEMANAGER_HOME``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
import msgspec
from returns.result import Failure

from rmcli.analysis import AnalysisRun, run_analysis
from rmcli.config import ConfigError, RouteSetup, decode_policy_text, load_route, route_for, route_names
from rmcli.environment import api_key, key_problem, load_environment
from rmcli.health import HEALTH_TIMEOUT_S, check_many
from rmcli.runner import Observer, ProviderLimits, route
from rmcli.session import StoreCircuits, StoreQuotas, http_client, open_store
from rmcli.store import Store
from rmcore.attempts import AttemptRecord
from rmcore.engine import RunOutcome
from rmcore.health import HealthReport
from rmcore.perspectives import Perspective, select_perspectives
from rmcore.policy import Policy, resolve_providers
from rmcore.providers import ProviderSpec, builtin_providers
from rmcore.requests import DEFAULT_MAX_TOKENS, ChatRequest
from rmcore.usage import observed_p95_s

__all__ = [
    "AnalysisRun",
    "Client",
    "ConfigError",
    "PolicyInput",
    "Provider",
    "analyze",
    "ask",
    "compare",
    "create",
    "health",
]

PolicyInput = Path | str | Policy | None
"""A policy: a file's path, TOML text (a ``str`` holding a newline or ``=``), a decoded
``Policy``, or None for the default route (``AI_PROVIDER`` then ``AI_FALLBACK_PROVIDER``)."""


def _environment(env: Mapping[str, str] | None, state_home: Path | None) -> dict[str, str]:
    merged = load_environment() if env is None else dict(env)
    if state_home is not None:
        merged["RECURSIVEMANAGER_HOME"] = str(state_home)
    return merged


def _decode(policy: str | Policy, env: Mapping[str, str]) -> Policy:
    return policy if isinstance(policy, Policy) else decode_policy_text(policy, "<policy text>", env)


def _setup(policy: PolicyInput, env: dict[str, str], names: Sequence[str]) -> RouteSetup:
    """The route for ``policy`` with the checks of ``rmgr``'s ``--policy`` (a path goes through
    ``load_route`` itself; text and structs through the same checks)."""
    if isinstance(policy, str) and "\n" not in policy and "=" not in policy:
        policy = Path(policy)
    if policy is None or isinstance(policy, Path):
        return load_route(env, policy_path=policy, providers=names)
    return route_for(_decode(policy, env), env, providers=names)


def _new_client(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    if transport is None:
        return http_client()
    return httpx.AsyncClient(timeout=None, follow_redirects=False, transport=transport)


@asynccontextmanager
async def _client(transport: httpx.AsyncBaseTransport | None) -> AsyncIterator[httpx.AsyncClient]:
    async with _new_client(transport) as client:
        yield client


POOL_SHARE = 4
"""How many calls at once a ``Client`` lets share one HTTP connection pool before it opens
another. httpcore's pool (1.0) looks at every connection it holds, and for each idle one at
every other, whenever a request starts or a reply ends, so its cost per request grows with the
square of its size. At 32 calls at once a routed call took 2.5 ms of CPU in one pool of 32
connections and 0.9 ms in eight pools of 4; the throughput went from about 310 to 860 calls/s
(``bench/RESULTS.md``)."""

MAX_POOLS = 16
"""The most pools a ``Client`` opens; past ``POOL_SHARE * MAX_POOLS`` calls at once they grow."""


class _Pools:
    """The HTTP clients of a ``Client``: one while few calls run at once, more as they grow
    (``POOL_SHARE``). Each call takes the least busy one for its whole run (the lowest in the list
    on a tie, so that calls one at a time always reuse the same warm connections)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None) -> None:
        self._transport = transport
        self._clients: list[httpx.AsyncClient] = []
        self._busy: list[int] = []

    @contextmanager
    def lease(self) -> Iterator[httpx.AsyncClient]:
        """An HTTP client for one call."""
        index = min(range(len(self._busy)), key=self._busy.__getitem__, default=-1)
        # A transport given by the embedder is its own pool: it gets one client, never more.
        growing = self._transport is None and len(self._clients) < MAX_POOLS
        if index < 0 or (growing and self._busy[index] >= POOL_SHARE):
            self._clients.append(_new_client(self._transport))
            self._busy.append(0)
            index = len(self._clients) - 1
        self._busy[index] += 1
        try:
            yield self._clients[index]
        finally:
            self._busy[index] -= 1

    async def aclose(self) -> None:
        """Close every client and its connections."""
        clients, self._clients, self._busy = self._clients, [], []
        for client in clients:
            await client.aclose()


def _perspectives(setup: RouteSetup, chosen: Sequence[str] | None) -> list[Perspective]:
    ids = list(chosen) if chosen is not None else list(setup.policy.analysis.perspectives)
    result = select_perspectives(ids, setup.policy.perspectives)
    if isinstance(result, Failure):
        raise ConfigError(f"perspectives: {result.failure()}")
    perspectives: list[Perspective] = result.unwrap()
    if setup.policy.analysis.min_perspectives > len(perspectives):
        raise ConfigError(
            f"{len(perspectives)} perspective(s) chosen but the policy's [analysis] min_perspectives is "
            f"{setup.policy.analysis.min_perspectives}"
        )
    return perspectives


def _check_ask(prompt: str, max_tokens: int, temperature: float | None) -> None:
    if not prompt.strip():
        raise ConfigError("the prompt is empty")
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be at least 1 (got {max_tokens})")
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise ConfigError(f"temperature must be between 0 and 2 (got {temperature})")


def _check_analyze(question: str, agent_id: str) -> None:
    if not question.strip():
        raise ConfigError("the question is empty")
    if not agent_id.strip():
        raise ConfigError("agent_id must not be empty")


def _cache_ttl_ms(env: dict[str, str]) -> int:
    # Imported here: the command module brings cyclopts and rich, which the API never needs.
    from rmcli.commands.analyze import cache_ttl_ms

    return cache_ttl_ms(env)


class _Recorder(Observer):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.run_id = uuid.uuid4().hex

    def attempt_recorded(self, record: AttemptRecord) -> None:
        self.store.record_attempts(self.run_id, "ask", [record])


OBSERVED_LATENCY_REFRESH_S = 10.0
"""How long a ``Client`` reuses the observed p95 latencies a ``hedge_after_s = "p95"`` route waits
for, before it reads them from the store again."""


class Client:
    """Routes many calls under one policy, for programs that call again and again.

    The module functions do everything afresh on each call: decode the policy, check the route,
    open the state store, open an HTTP client (and its TLS set-up) and a new connection. A
    ``Client`` does the first two once, when it is made (so a bad policy or a missing key raises
    ``ConfigError`` here), and opens the store and its connection pools on first use, keeping
    them until ``aclose`` or the end of ``async with``. Calls may run at once from many tasks of
    one event loop; each is its own run (its own budget and deadline), while the circuit breakers
    and each provider's ``max_concurrency`` are shared by all of them.

    The arguments are those of ``ask``; ``record=False`` saves no attempt and uses no breaker in
    ``ask`` (``analyze`` always opens the store: it holds the cache and the history).
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
    ) -> None:
        self._env = _environment(env, state_home)
        self._setup = _setup(policy, self._env, route_names(self._env, provider, fallback))
        self._observes_latency = self._setup.uses_observed_latency()
        self._observed: tuple[float, RouteSetup] | None = None
        self._transport = transport
        self._record = record
        self._limits = ProviderLimits()
        self._exits = AsyncExitStack()
        self._pools: _Pools | None = None
        self._store: Store | None = None

    @property
    def policy(self) -> Policy:
        """The decoded policy the client routes by (``provider`` / ``fallback`` applied)."""
        return self._setup.policy

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections and the store; a later call opens them again."""
        exits, self._exits = self._exits, AsyncExitStack()
        self._pools = None
        self._store = None
        await exits.aclose()

    def _client(self) -> AbstractContextManager[httpx.AsyncClient]:
        if self._pools is None:
            self._pools = _Pools(self._transport)
            self._exits.push_async_callback(self._pools.aclose)
        return self._pools.lease()

    def _open_store(self) -> Store:
        if self._store is None:
            self._store = self._exits.enter_context(open_store(self._env))
        return self._store

    def _key(self, spec: ProviderSpec) -> str | None:
        return api_key(self._env, spec.key_env)

    def _routed(self, store: Store) -> RouteSetup:
        """The route, with ``"p95"`` hedges resolved from the store's latencies of the last day."""
        if not self._observes_latency:
            return self._setup
        now = time.monotonic()
        if self._observed is None or now - self._observed[0] >= OBSERVED_LATENCY_REFRESH_S:
            day_ago_ms = int(time.time() * 1000) - 24 * 3600 * 1000
            observed = observed_p95_s(store.attempts_since(day_ago_ms))
            self._observed = (now, self._setup.with_observed_latency(observed))
        return self._observed[1]

    async def ask(
        self,
        prompt: str,
        *,
        system: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        stream: bool = True,
    ) -> RunOutcome:
        """One completion routed by the policy, as ``ask`` (the function) routes it. ``stream``
        asks providers that can to stream the answer, so that a first-token and an idle timeout
        apply; without it each reply is read whole."""
        _check_ask(prompt, max_tokens, temperature)
        request = ChatRequest(
            prompt=prompt, system=system, max_tokens=max_tokens, temperature=temperature, stream=stream
        )
        if not self._record:
            with self._client() as client:
                return await route(
                    self._setup.plan, request, client=client, keys=self._key, limits=self._limits
                )
        store = self._open_store()
        with self._client() as client:
            return await route(
                self._routed(store).plan,
                request,
                client=client,
                keys=self._key,
                observer=_Recorder(store),
                circuits=StoreCircuits(store),
                quotas=StoreQuotas(store),
                limits=self._limits,
            )

    async def analyze(
        self,
        question: str,
        *,
        perspectives: Sequence[str] | None = None,
        agent_id: str = "default",
        persist_history: bool = True,
        use_cache: bool = True,
    ) -> AnalysisRun:
        """The multi-perspective analysis, as ``analyze`` (the function) runs it."""
        _check_analyze(question, agent_id)
        ttl_ms = _cache_ttl_ms(self._env)
        chosen = _perspectives(self._setup, perspectives)
        store = self._open_store()
        with self._client() as client:
            result = await run_analysis(
                question,
                chosen,
                self._setup,
                env=self._env,
                store=store,
                client=client,
                use_cache=use_cache,
                cache_ttl_ms=ttl_ms,
            )
        if persist_history:
            store.history_add(
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
) -> RunOutcome:
    """One completion routed by the policy, as ``rmgr ask`` routes it: the outcome holds the
    answer (or the error) and every attempt. With ``record`` the attempts are saved in the state
    store and its circuit breakers are used; without it no file is touched. To route many calls,
    a ``Client`` does the set-up once instead of on every call."""
    _check_ask(prompt, max_tokens, temperature)
    async with Client(
        policy,
        provider=provider,
        fallback=fallback,
        env=env,
        transport=transport,
        state_home=state_home,
        record=record,
    ) as client:
        return await client.ask(
            prompt, system=system, max_tokens=max_tokens, temperature=temperature, stream=stream
        )


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
) -> AnalysisRun:
    """The multi-perspective analysis of ``rmgr analyze``; with ``persist_history`` it is saved in
    ``agent_id``'s history (``rmgr history``). ``perspectives`` are ids (default: the policy's)."""
    _check_analyze(question, agent_id)
    async with Client(
        policy, provider=provider, fallback=fallback, env=env, transport=transport, state_home=state_home
    ) as client:
        return await client.analyze(
            question,
            perspectives=perspectives,
            agent_id=agent_id,
            persist_history=persist_history,
            use_cache=use_cache,
        )


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
) -> dict[str, AnalysisRun]:
    """The analysis on each of ``providers`` alone, at once, as ``rmgr compare`` runs it; the runs
    by provider name, in the order given. Comparison runs are not saved in the history."""
    if not question.strip():
        raise ConfigError("the question is empty")
    names = list(dict.fromkeys(n.strip() for n in providers if n.strip()))
    if not names:
        raise ConfigError("compare needs at least one provider")
    environment = _environment(env, state_home)
    ttl_ms = _cache_ttl_ms(environment)
    setups = {name: _setup(policy, environment, [name]) for name in names}
    chosen = _perspectives(next(iter(setups.values())), perspectives)
    results: dict[str, AnalysisRun] = {}
    with open_store(environment) as store:
        async with _client(transport) as client:

            async def one(name: str, setup: RouteSetup) -> None:
                results[name] = await run_analysis(
                    question,
                    chosen,
                    setup,
                    env=environment,
                    store=store,
                    client=client,
                    use_cache=use_cache,
                    cache_ttl_ms=ttl_ms,
                    command="compare",
                    cache_scope=f"compare:{name}",
                )

            async with anyio.create_task_group() as tg:
                for name, setup in setups.items():
                    tg.start_soon(one, name, setup)
    return {name: results[name] for name in names}


def _specs(env: Mapping[str, str], policy: PolicyInput) -> dict[str, ProviderSpec]:
    specs = builtin_providers(dict(env))
    if policy is None:
        return specs
    if isinstance(policy, str) and "\n" not in policy and "=" not in policy:
        policy = Path(policy)
    if isinstance(policy, Path):
        from rmcli.config import load_policy

        return resolve_providers(load_policy(policy, dict(env)), specs)
    return resolve_providers(_decode(policy, env), specs)


async def health(
    names: Sequence[str] | None = None,
    *,
    policy: PolicyInput = None,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = HEALTH_TIMEOUT_S,
) -> list[HealthReport]:
    """Check providers at once, as ``rmgr health`` does: one report each, in the order asked
    (default: every configured provider, and those ``policy`` defines)."""
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be a positive number of seconds (got {timeout_s})")
    environment = _environment(env, None)
    specs = _specs(environment, policy)
    unknown = [n for n in names or () if n not in specs]
    if unknown:
        raise ConfigError(f"unknown provider {unknown[0]!r}; known providers: {', '.join(sorted(specs))}")
    chosen = [specs[n] for n in dict.fromkeys(names)] if names else list(specs.values())
    bad_keys = {s.name: p for s in chosen if (p := key_problem(environment, s.key_env))}
    checked = [s for s in chosen if s.name not in bad_keys]
    async with _client(transport) as client:
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
