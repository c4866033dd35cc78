"""From the command line and the environment to a run plan, or a clear configuration error.

Everything a user can get wrong before a request is sent is checked here, and reported as a
``ConfigError`` (exit code 2) that says which file, variable or option is wrong and what to do:
an unreadable or invalid policy, an unknown provider, a provider whose URL is unset or not
http(s), a provider whose key variable is unset.

``--policy`` names a file, or one of the policies bundled with the package (:mod:`rmcli.bundled`):
a path is tried first, relative to the current directory, then a bundled name (``cost-first`` or
``cost-first.toml``). Every command that takes ``--policy`` loads it through :func:`load_policy`,
so they all resolve it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec
from returns.result import Failure, Success

from rmcli.environment import api_key, key_problem
from rmcli.errors import ConfigError
from rmcore.plan import RunPlan, build_plan
from rmcore.policy import Policy, all_route_providers, decode_policy, default_policy, resolve_providers
from rmcore.policy.schema import DEFAULT_PRIMARY, DEFAULT_ROUTE, Route
from rmcore.policy.trust import key_leaks, plain_http
from rmcore.providers import BUILTIN_NAMES, ProviderSpec, builtin_providers

__all__ = [
    "DEFAULT_CACHE_TTL_MS",
    "ConfigError",
    "Route",
    "RouteSetup",
    "cache_ttl_ms",
    "check_text",
    "decode_policy_text",
    "load_policy",
    "load_route",
    "policy_text",
    "read_policy_file",
    "route_for",
    "route_names",
]


DEFAULT_CACHE_TTL_MS = 3_600_000


def check_text(what: str, text: str, *, empty_ok: bool = False) -> None:
    """Refuse text no provider can be sent: empty (unless ``empty_ok``), or holding bytes that
    are not UTF-8 (a terminal or a file in another encoding; Python keeps them as lone
    surrogates). The message names ``what`` and where the first bad byte is."""
    if not empty_ok and not text.strip():
        raise ConfigError(f"{what} is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"{bad!r}"
        raise ConfigError(
            f"{what} is not valid UTF-8 text ({byte} at character {exc.start + 1}); "
            "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8) and try again"
        ) from None


def cache_ttl_ms(env: Mapping[str, str]) -> int:
    """``ANALYSIS_CACHE_TTL_MS`` (default one hour); 0 turns the cache off."""
    text = env.get("ANALYSIS_CACHE_TTL_MS", "").strip()
    if not text:
        return DEFAULT_CACHE_TTL_MS
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"ANALYSIS_CACHE_TTL_MS={text!r} is not a whole number of milliseconds") from None
    if value < 0:
        raise ConfigError(f"ANALYSIS_CACHE_TTL_MS={text!r} must be 0 (no cache) or more")
    return value


class RouteSetup:
    """A resolved route: the policy, every provider it may use, and the plan the engine runs.

    ``route`` names the policy's route that ``plan`` runs (``default``: ``[route]``); the
    setups of the policy's other routes (``[routes.NAME]``) come from :meth:`for_route`, which
    builds each plan once and shares it with every setup of the same policy. ``source`` says
    where the policy came from, for messages (its file, else its name).
    """

    def __init__(
        self,
        policy: Policy,
        providers: dict[str, ProviderSpec],
        plan: RunPlan,
        *,
        route: str = DEFAULT_ROUTE,
        source: str | None = None,
        siblings: dict[str, RouteSetup] | None = None,
        observed_p95_s: Mapping[str, float] | None = None,
    ) -> None:
        self.policy = policy
        self.providers = providers
        self.plan = plan
        self.route = route
        self.source = source or f'policy "{policy.name or DEFAULT_ROUTE}"'
        self._observed = observed_p95_s
        """The latencies ``"p95"`` hedges were resolved from (``with_observed_latency``), for the
        other routes' plans too."""
        self._siblings: dict[str, RouteSetup] = {} if siblings is None else siblings
        self._siblings.setdefault(route, self)
        self._uses_observed: dict[bool, bool] = {}  # asked on every call; the policy never changes

    def route_names(self) -> tuple[str, ...]:
        """The policy's route names: ``default`` first, then its ``[routes.NAME]`` in file order."""
        return self.policy.route_names()

    def for_route(self, name: str) -> RouteSetup:
        """The setup whose plan runs the policy's route called ``name`` (built once, then reused);
        a ConfigError naming the routes there are when the policy has none of that name."""
        known = self._siblings.get(name)
        if known is not None:
            return known
        if self.policy.named_route(name) is None:
            raise ConfigError(
                f'no route named "{name}" in {self.source}; routes: {", ".join(self.route_names())}'
            )
        built = build_plan(
            self.policy,
            self.providers,
            observed_p95_s=self._observed,
            route=name,
            breakers=self.plan.breaker.enabled,
        )
        match built:
            case Success(plan):
                return RouteSetup(
                    self.policy,
                    self.providers,
                    plan,
                    route=name,
                    source=self.source,
                    siblings=self._siblings,
                    observed_p95_s=self._observed,
                )
            case Failure(problem):
                raise ConfigError(f"{self.source}: route {name}: {problem}")
        raise AssertionError("unreachable")

    def for_perspective(self, perspective: str) -> RouteSetup:
        """The setup of the route that asks ``perspective`` (``[analysis.routes]``, else ``default``)."""
        return self.for_route(self.policy.analysis.route_for(perspective))

    def for_synthesis(self) -> RouteSetup | None:
        """The setup of the route the synthesis goes by (``[analysis] synthesis_route``), or None
        when the policy turns the synthesis off (``synthesis = false``)."""
        analysis = self.policy.analysis
        return self.for_route(analysis.synthesis_route) if analysis.synthesis else None

    def uses_observed_latency(self, *, every_route: bool = False) -> bool:
        """True when this setup's route (nested routes included), or with ``every_route`` any of
        the policy's routes (an analysis may use them all), waits for the observed p95 latency."""
        known = self._uses_observed.get(every_route)
        if known is None:
            names = self.route_names() if every_route else (self.route,)
            known = any(b'"p95"' in msgspec.json.encode(self.policy.named_route(name)) for name in names)
            self._uses_observed[every_route] = known
        return known

    def with_observed_latency(self, observed_p95_s: Mapping[str, float]) -> RouteSetup:
        """The same route with ``hedge_after_s = "p95"`` resolved from observed latencies, as are
        the other routes' (``for_route``) of the setup it returns."""
        plan = build_plan(
            self.policy,
            self.providers,
            observed_p95_s=observed_p95_s,
            route=self.route,
            breakers=self.plan.breaker.enabled,
        ).unwrap()
        return RouteSetup(
            self.policy,
            self.providers,
            plan,
            route=self.route,
            source=self.source,
            observed_p95_s=observed_p95_s,
        )


class _NoSuchFile(ConfigError):
    """No file at the path given: ``policy_text`` then looks for a bundled policy."""


def read_policy_file(path: Path) -> str:
    """The text of the policy file at ``path``, or a ConfigError saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _NoSuchFile(f"{path}: no such policy file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a policy file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the policy file (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text; a policy file is TOML") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the policy file ({exc.strerror})") from None


def policy_text(path: Path) -> tuple[str, str]:
    """The text of ``--policy PATH`` and where it was read from (for messages): the file at
    ``path`` when there is one, else the bundled policy that a bare name (``cost-first`` or
    ``cost-first.toml``) names. A ConfigError otherwise, listing the bundled names."""
    try:
        return read_policy_file(path), str(path)
    except _NoSuchFile:
        pass
    # Only now: importlib.resources costs a few milliseconds that a policy file never needs.
    from rmcli.bundled import bundled_policies, find_bundled

    bundled = find_bundled(path.name)
    if bundled is not None and len(path.parts) == 1:
        return bundled.text(), bundled.source
    if bundled is not None:
        raise ConfigError(
            f"{path}: no such policy file — for the bundled policy of that name, give its name "
            f"alone: {bundled.name}"
        )
    names = ", ".join(policy.name for policy in bundled_policies())
    raise ConfigError(
        f"{path}: no such policy file, nor a bundled policy of that name — give a policy file or "
        f"a bundled name: {names} (rmgr policy list describes them)"
    )


def _default_targets(env: Mapping[str, str]) -> list[str]:
    primary = env.get("AI_PROVIDER", "").strip() or DEFAULT_PRIMARY
    fallback = env.get("AI_FALLBACK_PROVIDER", "").strip()
    return [primary] + ([fallback] if fallback and fallback != primary else [])


def route_names(env: Mapping[str, str], provider: str | None, fallback: str | None) -> list[str]:
    """The route that ``--provider`` / ``--fallback`` ask for (empty when neither is given): the
    provider (else ``AI_PROVIDER``), then the fallback."""
    if not (provider or fallback):
        return []
    primary = provider or env.get("AI_PROVIDER", "").strip() or DEFAULT_PRIMARY
    return [primary] + ([fallback] if fallback else [])


def decode_policy_text(text: str, source: str, env: Mapping[str, str]) -> Policy:
    """The policy in ``text`` (read from ``source``), or a ConfigError listing every issue."""
    match decode_policy(text, source, BUILTIN_NAMES, default_targets=_default_targets(env)):
        case Success(Policy() as policy):
            return policy
        case Failure(issues):
            raise ConfigError("\n".join(str(issue) for issue in issues))
    raise AssertionError("unreachable")


def load_policy(path: Path | None, env: dict[str, str]) -> Policy:
    """The policy at ``path`` (a file, else a bundled name: :func:`policy_text`), or the default
    route (``AI_PROVIDER`` then ``AI_FALLBACK_PROVIDER``)."""
    if path is None:
        targets = _default_targets(env)
        return default_policy(targets[0], targets[1] if len(targets) > 1 else None)
    text, source = policy_text(path)
    return decode_policy_text(text, source, env)


def _origin(name: str, env: dict[str, str], policy_path: Path | None, providers: Sequence[str]) -> str:
    """Where a provider name came from, for a message: an option, a variable or the policy file."""
    if providers:
        return " (from --provider, --fallback or --providers)"
    if policy_path is not None:
        return f" (in {policy_path})"
    variables = [v for v in ("AI_PROVIDER", "AI_FALLBACK_PROVIDER") if env.get(v, "").strip() == name]
    return f" (from {variables[0]})" if variables else ""


def load_route(
    env: dict[str, str],
    *,
    policy_path: Path | None = None,
    providers: Sequence[str] = (),
) -> RouteSetup:
    """The route for a command: from ``--policy`` or the environment; ``providers`` (from
    ``--provider`` / ``--fallback``), when given, replace the route's targets. Checks that every
    provider the route uses is known, has a usable URL and has its key."""
    return route_for(load_policy(policy_path, env), env, policy_path=policy_path, providers=providers)


def route_for(
    policy: Policy,
    env: dict[str, str],
    *,
    policy_path: Path | None = None,
    providers: Sequence[str] = (),
) -> RouteSetup:
    """The route for an already decoded ``policy``, with every check of ``load_route``: known
    providers, usable URLs, keys present, and no key sent where its owner did not point it. The
    checks cover every route of the policy (``[route]`` and each ``[routes.NAME]``), so that no
    run starts whose perspectives or synthesis could not be sent; ``providers``, when given,
    replace the targets of every route (each keeps its strategy)."""
    if providers:
        targets = tuple(dict.fromkeys(providers))
        policy = msgspec.structs.replace(
            policy,
            route=Route(strategy=policy.route.strategy, targets=targets),
            routes={name: Route(strategy=r.strategy, targets=targets) for name, r in policy.routes.items()},
        )
    builtins = builtin_providers(env)
    specs = resolve_providers(policy, builtins)
    for name in all_route_providers(policy):
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(sorted(specs))
            where = _origin(name, env, policy_path, providers)
            raise ConfigError(f"unknown provider {name!r}{where}; known providers: {known}")
        if spec.problems:
            raise ConfigError(f"provider {name}: " + "; ".join(spec.problems))
        if spec.key_required and api_key(env, spec.key_env) is None:
            raise ConfigError(
                f"provider {name} needs an API key: set {spec.key_env} in the environment or in .env"
            )
        if problem := key_problem(env, spec.key_env):
            raise ConfigError(f"provider {name}: {problem}")
    used = [specs[name] for name in all_route_providers(policy)]
    allowed = [o.strip() for o in env.get("RMGR_ALLOWED_ORIGINS", "").split(",") if o.strip()]
    problems = key_leaks(used, builtins, allowed)
    if env.get("RMGR_ALLOW_HTTP", "").strip().lower() not in ("1", "true", "yes"):
        problems += plain_http(used)
    if problems:
        raise ConfigError("\n".join(problems))
    match build_plan(policy, specs):
        case Success(plan):
            return RouteSetup(policy, specs, plan, source=None if policy_path is None else str(policy_path))
        case Failure(problem):
            raise ConfigError(f"{policy_path or 'route'}: {problem}")
    raise AssertionError("unreachable")
