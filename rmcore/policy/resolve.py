"""A policy's providers made concrete: built-ins with the policy's overrides, plus its new ones."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import msgspec

from rmcore.policy.schema import DEFAULT_ROUTE, Policy, ProviderOverride, Target
from rmcore.providers import ProviderKind, ProviderSpec, check_url

__all__ = ["all_route_providers", "resolve_providers", "route_providers"]

_OVERRIDABLE = (
    "kind",
    "url",
    "model",
    "key_env",
    "input_usd_per_mtok",
    "output_usd_per_mtok",
    "aiceo_provider",
    "aiceo_priority",
    "max_concurrency",
    "requests_per_window",
    "tokens_per_window",
    "quota_window_s",
)
_QUOTAS = ("requests_per_window", "tokens_per_window")


def resolve_providers(policy: Policy, builtins: Mapping[str, ProviderSpec]) -> dict[str, ProviderSpec]:
    """Every provider the policy can name: each built-in with the policy's ``[providers.NAME]``
    fields merged over it field by field, then the providers the policy adds (in its order).

    A quota of 0 (``requests_per_window``, ``tokens_per_window``) removes a built-in's quota.
    ``supports`` replaces what the provider's kind carries (a built-in whose ``kind`` the policy
    changes carries what its new kind does, unless the policy says ``supports`` too).
    A new provider without ``key_env`` needs no key (``key_required=False``): local servers often
    take none. ``problems`` says what makes a provider unusable: for a built-in whose URL the
    policy sets, the policy's URL replaces the environment's (and its problems); for a new
    provider, a missing kind, URL or model or a URL that is not http(s).
    """
    resolved = dict(builtins)
    for name, override in policy.providers.items():
        base = builtins.get(name)
        resolved[name] = _new(name, override) if base is None else _merge(base, override)
    return resolved


def route_providers(policy: Policy, route: str = DEFAULT_ROUTE) -> list[str]:
    """Every provider named anywhere in the route called ``route`` (``default``: ``[route]``),
    nested routes included, in order, once each; none for a route the policy lacks."""
    chosen = policy.named_route(route)
    return [] if chosen is None else list(dict.fromkeys(_names(chosen.targets)))


def all_route_providers(policy: Policy) -> list[str]:
    """Every provider named by any of the policy's routes (``[route]`` then each ``[routes.NAME]``),
    in order, once each: those that must be usable before any of its runs starts."""
    names = (name for route in policy.route_names() for name in route_providers(policy, route))
    return list(dict.fromkeys(names))


def _names(targets: tuple[Target, ...]) -> Iterator[str]:
    for target in targets:
        if isinstance(target, str):
            yield target
        else:
            if target.provider is not None:
                yield target.provider
            yield from _names(target.targets or ())


def _merge(base: ProviderSpec, override: ProviderOverride) -> ProviderSpec:
    changes: dict[str, object] = {
        field: value for field in _OVERRIDABLE if (value := getattr(override, field)) is not None
    }
    for quota in _QUOTAS:
        if changes.get(quota) == 0:
            changes[quota] = None
    if override.supports is not None:
        changes["supports"] = frozenset(override.supports)
    if override.url is not None:
        problem = check_url(override.url)
        changes["problems"] = (f"url: {problem}",) if problem else ()
        changes["url_from"] = f"providers.{base.name}.url"
    return msgspec.structs.replace(base, **changes)


def _new(name: str, override: ProviderOverride) -> ProviderSpec:
    problems = [
        f"the policy gives no `{field}`"
        for field in ("kind", "url", "model")
        if getattr(override, field) is None
    ]
    if override.url is not None and (problem := check_url(override.url)):
        problems.append(f"url: {problem}")
    defaults = ProviderSpec(name=name, kind=ProviderKind.OPENAI, url="", model="")
    return ProviderSpec(
        name=name,
        kind=override.kind or ProviderKind.OPENAI,
        url=override.url or "",
        model=override.model or "",
        key_env=override.key_env,
        key_required=override.key_env is not None,
        input_usd_per_mtok=_or(override.input_usd_per_mtok, defaults.input_usd_per_mtok),
        output_usd_per_mtok=_or(override.output_usd_per_mtok, defaults.output_usd_per_mtok),
        aiceo_provider=override.aiceo_provider or defaults.aiceo_provider,
        aiceo_priority=override.aiceo_priority or defaults.aiceo_priority,
        max_concurrency=override.max_concurrency,
        requests_per_window=override.requests_per_window or None,
        tokens_per_window=override.tokens_per_window or None,
        quota_window_s=override.quota_window_s,
        builtin=False,
        problems=tuple(problems),
        url_from=f"providers.{name}.url",
        supports=None if override.supports is None else frozenset(override.supports),
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
