"""The embedding API: ``ask``, ``analyze``, ``compare``, ``health`` and ``create`` for programs
that use recursive-manager as a library instead of through ``rmgr``.

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
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
from returns.result import Failure

from rmcli.analysis import AnalysisRun, run_analysis
from rmcli.commands.analyze import cache_ttl_ms
from rmcli.config import ConfigError, RouteSetup, decode_policy_text, load_route, route_for, route_names
from rmcli.environment import api_key, key_problem, load_environment
from rmcli.health import HEALTH_TIMEOUT_S, check_many
from rmcli.runner import Observer, route
from rmcli.session import StoreCircuits, http_client, open_store
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


@asynccontextmanager
async def _client(transport: httpx.AsyncBaseTransport | None) -> AsyncIterator[httpx.AsyncClient]:
    if transport is None:
        async with http_client() as client:
            yield client
    else:
        async with httpx.AsyncClient(timeout=None, follow_redirects=False, transport=transport) as client:
            yield client


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


class _Recorder(Observer):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.run_id = uuid.uuid4().hex

    def attempt_recorded(self, record: AttemptRecord) -> None:
        self.store.record_attempts(self.run_id, "ask", [record])


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
) -> RunOutcome:
    """One completion routed by the policy, as ``rmgr ask`` routes it: the outcome holds the
    answer (or the error) and every attempt. With ``record`` the attempts are saved in the state
    store and its circuit breakers are used; without it no file is touched."""
    if not prompt.strip():
        raise ConfigError("the prompt is empty")
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be at least 1 (got {max_tokens})")
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise ConfigError(f"temperature must be between 0 and 2 (got {temperature})")
    environment = _environment(env, state_home)
    setup = _setup(policy, environment, route_names(environment, provider, fallback))
    request = ChatRequest(prompt=prompt, system=system, max_tokens=max_tokens, temperature=temperature)

    def keys(spec: ProviderSpec) -> str | None:
        return api_key(environment, spec.key_env)

    if not record:
        async with _client(transport) as client:
            return await route(setup.plan, request, client=client, keys=keys)
    with open_store(environment) as store:
        if setup.uses_observed_latency():
            day_ago_ms = int(time.time() * 1000) - 24 * 3600 * 1000
            setup = setup.with_observed_latency(observed_p95_s(store.attempts_since(day_ago_ms)))
        async with _client(transport) as client:
            return await route(
                setup.plan,
                request,
                client=client,
                keys=keys,
                observer=_Recorder(store),
                circuits=StoreCircuits(store),
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
    if not question.strip():
        raise ConfigError("the question is empty")
    if not agent_id.strip():
        raise ConfigError("agent_id must not be empty")
    environment = _environment(env, state_home)
    ttl_ms = cache_ttl_ms(environment)
    setup = _setup(policy, environment, route_names(environment, provider, fallback))
    chosen = _perspectives(setup, perspectives)
    with open_store(environment) as store:
        async with _client(transport) as client:
            result = await run_analysis(
                question,
                chosen,
                setup,
                env=environment,
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
    ttl_ms = cache_ttl_ms(environment)
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
