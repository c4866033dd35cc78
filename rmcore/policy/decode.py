"""Policy text → :class:`~rmcore.policy.schema.Policy`, or every reason it is not one.

Three stages, each reported as ``FILE:LINE: $.path: message``:

1. TOML syntax (``tomllib``): the line comes from the parser's message.
2. Types and constraints (the document against the schema, :mod:`rmcore.policy.shape`): every
   unknown key, wrong type and value out of range, each with its full path and, for typos, a
   "did you mean" suggestion.
3. Meaning (all issues together): version, known provider names, complete new providers, URLs,
   variable names, quotas, capabilities listed once, target tables, named routes
   (``[routes.NAME]``: their names, targets and the routes ``[analysis]`` names), retry kinds (those
   :data:`rmcore.conduct.CONFIGURABLE_KINDS` allows), perspectives, budget caps.

The stages are joined as a ``returns`` pipeline: each is a ``Result``, and the first failure
(its issues) is the answer. When stage 2 fails, stage 3 still looks at what stage 2 did not
reject (unknown keys left out, wrong values left at their defaults) and adds its issues about the
sections no wrong value could have misled (see :func:`_independent_meaning`), so that one round
of ``rmgr policy validate`` shows every independent mistake. All issues are sorted by line.
``PolicyIssue`` is defined in :mod:`rmcore.problems` with the core's other failures, and
re-exported here.

Lines are found by scanning the text (:mod:`rmcore.policy.locate`).
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NamedTuple

import msgspec
from returns.pipeline import flow
from returns.pointfree import bind, map_
from returns.result import Failure, Result, Success

from rmcore.conduct import CONDUCT
from rmcore.policy.locate import PathKey, format_path, line_index
from rmcore.policy.schema import (
    BUILTIN_PERSPECTIVES,
    DEFAULT_PRIMARY,
    DEFAULT_ROUTE,
    Policy,
    ProviderOverride,
    Target,
)
from rmcore.policy.shape import ShapeIssue, did_you_mean, shape_issues
from rmcore.problems import PolicyIssue
from rmcore.providers import ProviderKind, builtin_providers, check_url

__all__ = ["PolicyIssue", "decode_policy"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOML_POSITION = re.compile(r"\s*\((?:at line (\d+), column \d+|at end of document)\)$")
_BUILTIN_DEFAULTS = builtin_providers({})
"""The built-ins with no environment: for the settings that do not depend on it (quotas)."""
_MISSING: Any = object()
_READS_FROM: dict[str, tuple[str, ...]] = {
    "providers": ("route", "routes", "budget"),
    "perspectives": ("analysis",),
    "routes": ("analysis",),
}
"""Sections whose meaning checks read another section (the providers a route or a budget names,
the perspectives an analysis asks, the routes it names): a wrong value in the key's section
misleads them too (for ``routes``, only a wrong value that takes a whole route away)."""
_ROUTE_NAME = re.compile(r"[a-z0-9_-]+")


def decode_policy(
    text: str,
    source: str,
    known_providers: Collection[str],
    *,
    default_targets: Sequence[str] = (DEFAULT_PRIMARY,),
) -> Result[Policy, tuple[PolicyIssue, ...]]:
    """Decode and check the policy ``text`` read from ``source`` (a file name, used in issues and
    as the policy's name when the file gives none).

    ``known_providers`` are the built-in provider names; the policy's ``[providers]`` may add
    more. ``default_targets`` is the route used when the file writes no ``route.targets`` (the
    shell passes ``AI_PROVIDER`` and ``AI_FALLBACK_PROVIDER``). The three stages run in turn,
    each a ``Result``; the first that fails is the answer."""
    reader = _Reader(text=text, source=source, known=known_providers, default_targets=default_targets)
    return flow(reader.syntax(), bind(reader.types), bind(reader.meaning), map_(reader.named))


class _Typed(NamedTuple):
    """What stage 2 hands to stage 3: the TOML as written, with the default targets filled in,
    and as a ``Policy``."""

    raw: dict[str, Any]
    data: dict[str, Any]
    policy: Policy


@dataclass(frozen=True, kw_only=True)
class _Reader:
    """The stages of :func:`decode_policy`, over one text."""

    text: str
    source: str
    known: Collection[str]
    default_targets: Sequence[str]

    def syntax(self) -> Result[dict[str, Any], tuple[PolicyIssue, ...]]:
        """Stage 1: the TOML document."""
        try:
            return Success(tomllib.loads(self.text))
        except tomllib.TOMLDecodeError as error:
            return Failure((_syntax_issue(error, self.text, self.source),))

    def types(self, raw: dict[str, Any]) -> Result[_Typed, tuple[PolicyIssue, ...]]:
        """Stage 2: the document converted into the schema; on failure every issue of its shape,
        with the meaning issues that do not depend on the values it rejected."""
        data = _with_default_targets(raw, self.default_targets)
        try:
            return Success(_Typed(raw=raw, data=data, policy=msgspec.convert(data, Policy)))
        except msgspec.ValidationError:
            pass
        misfits = shape_issues(data)
        problems = [(m.path, m.message) for m in misfits]
        problems += _independent_meaning(raw, data, misfits, self.known)
        return Failure(self._located(problems))

    def meaning(self, typed: _Typed) -> Result[Policy, tuple[PolicyIssue, ...]]:
        """Stage 3: every rule across fields, all issues together, in document order."""
        problems = list(_check(typed.policy, typed.data, self.known, route_written=_route_written(typed.raw)))
        return Failure(self._located(problems)) if problems else Success(typed.policy)

    def _located(self, problems: Sequence[tuple[PathKey, str]]) -> tuple[PolicyIssue, ...]:
        """The problems as issues with their lines, in document order (stable for equal lines)."""
        index = line_index(self.text)
        found = [_issue(self.text, self.source, path, message, index) for path, message in problems]
        found.sort(key=lambda issue: issue.line or 0)
        return tuple(found)

    def named(self, policy: Policy) -> Policy:
        """The policy, named after its file's stem when it gives no name."""
        if policy.name:
            return policy
        return msgspec.structs.replace(policy, name=PurePath(self.source).stem or self.source)


# -- stage 1: syntax -----------------------------------------------------------------------------


def _syntax_issue(error: tomllib.TOMLDecodeError, text: str, source: str) -> PolicyIssue:
    message = str(error)
    match = _TOML_POSITION.search(message)
    if match is None:
        return PolicyIssue(file=source, line=None, path="$", message=f"invalid TOML: {message}")
    last_line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
    line = int(match.group(1)) if match.group(1) else last_line
    return PolicyIssue(file=source, line=line, path="$", message=f"invalid TOML: {message[: match.start()]}")


def _with_default_targets(raw: dict[str, Any], default_targets: Sequence[str]) -> dict[str, Any]:
    """``raw`` with ``route.targets`` filled in when the file does not write it (else ``raw`` itself)."""
    route = raw.get("route", _MISSING)
    if not default_targets or not (route is _MISSING or (isinstance(route, dict) and "targets" not in route)):
        return raw
    filled = {} if route is _MISSING else dict(route)
    filled["targets"] = list(default_targets)
    return {**raw, "route": filled}


# -- stage 3: meaning ----------------------------------------------------------------------------


def _route_written(raw: Mapping[str, Any]) -> bool:
    route = raw.get("route")
    return isinstance(route, dict) and "targets" in route


def _independent_meaning(
    raw: dict[str, Any], data: dict[str, Any], misfits: Sequence[ShapeIssue], known: Collection[str]
) -> list[tuple[PathKey, str]]:
    """The meaning issues of ``data`` once the ``misfits`` of stage 2 are left out, keeping only
    those no misfit could have caused: none in a section (top-level table) that had a misfit
    (``daily = 1`` meant ``daily_usd``: "sets no cap" would mislead), nor, after a wrong value, in
    a section that reads that one (:data:`_READS_FROM`). None at all after an unknown top-level
    key (which section was meant is unknown), or when leaving the misfits out does not give a
    policy (a required key is missing or wrong)."""
    if any(not m.path or (m.unknown_key and len(m.path) == 1) for m in misfits):
        return []
    repaired = _without(data, [m.path for m in misfits])
    try:
        policy = msgspec.convert(repaired, Policy)
    except msgspec.ValidationError:
        return []
    blocked: set[PathKey] = set()
    for misfit in misfits:
        section = misfit.path[0]
        # Each [routes.NAME] is a section of its own: a mistake in one misleads no other.
        blocked.add(misfit.path[:2] if section == "routes" else misfit.path[:1])
        whole_route_gone = section != "routes" or len(misfit.path) <= 2
        if not misfit.unknown_key and whole_route_gone:
            blocked.update((reader,) for reader in _READS_FROM.get(str(section), ()))
    return [
        (path, message)
        for path, message in _check(policy, repaired, known, route_written=_route_written(raw))
        if path and not any(path[: len(prefix)] == prefix for prefix in blocked)
    ]


def _without(data: dict[str, Any], paths: Sequence[PathKey]) -> dict[str, Any]:
    """A copy of ``data`` without the values at ``paths``; a path into an array takes the whole
    array out (taking out one item would renumber the others)."""
    out = copy.deepcopy(data)
    for path in paths:
        cut = next((path[:i] for i, segment in enumerate(path) if isinstance(segment, int)), path)
        parent: Any = out
        for segment in cut[:-1]:
            parent = parent.get(segment) if isinstance(parent, dict) else None
        if cut and isinstance(parent, dict):
            parent.pop(cut[-1], None)
    return out


def _check(
    policy: Policy, data: Mapping[str, Any], known: Collection[str], *, route_written: bool
) -> Iterator[tuple[PathKey, str]]:
    if policy.version != 1:
        yield ("version",), f"unsupported version {policy.version}: this tool reads version 1"
    yield from _check_finite(data, ())
    yield from _check_providers(policy, known)
    defined = set(known) | set(policy.providers)
    for index, target in enumerate(policy.route.targets):
        yield from _check_target(target, ("route", "targets", index), defined, route_written)
    yield from _check_routes(policy, data, defined)
    yield from _check_retry(policy)
    yield from _check_analysis(policy)
    yield from _check_budget(policy, defined)
    yield from _check_serve(policy)


def _check_finite(value: Any, path: PathKey) -> Iterator[tuple[PathKey, str]]:
    if isinstance(value, float) and math.isinf(value):
        yield path, "must be a finite number"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _check_finite(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _check_finite(item, (*path, index))


def _check_providers(policy: Policy, known: Collection[str]) -> Iterator[tuple[PathKey, str]]:
    kinds = ", ".join(k.value for k in ProviderKind)
    for name, override in policy.providers.items():
        path: PathKey = ("providers", name)
        if not _NAME.fullmatch(name):
            yield path, f"provider name {name!r} must be letters, digits, '.', '_' or '-'"
        if name not in known:
            if override.kind is None:
                yield path, f"new provider `{name}` needs `kind` ({kinds})"
            if override.url is None:
                yield path, f"new provider `{name}` needs `url` (its full chat endpoint)"
            if override.model is None:
                yield path, f"new provider `{name}` needs `model`"
        if override.url is not None and (problem := check_url(override.url)):
            yield (*path, "url"), problem
        if override.quota_window_s is not None and not _has_quota(name, override, known):
            yield (*path, "quota_window_s"), (
                "there is no quota for this window: set `requests_per_window` or"
                " `tokens_per_window` too, or leave `quota_window_s` out"
            )
        for index, capability in enumerate(override.supports or ()):
            if capability in (override.supports or ())[:index]:
                yield (*path, "supports", index), f"`{capability.value}` is listed twice"
        if override.key_env is not None and not _ENV_VAR.fullmatch(override.key_env):
            yield (*path, "key_env"), (
                "must name an environment variable (letters, digits and '_', not starting with a"
                " digit): write the variable's name here, never the key"
            )


def _has_quota(name: str, override: ProviderOverride, known: Collection[str]) -> bool:
    """Whether provider ``name`` has a quota once ``override`` applies (a known provider that is
    not one of the built-ins is given the benefit of the doubt)."""
    base = _BUILTIN_DEFAULTS.get(name)
    if name in known and base is None:
        return True
    requests, tokens = override.requests_per_window, override.tokens_per_window
    if base is not None:
        requests = base.requests_per_window if requests is None else requests
        tokens = base.tokens_per_window if tokens is None else tokens
    return bool(requests or tokens)


def _check_target(
    target: Target, path: PathKey, defined: set[str], route_written: bool
) -> Iterator[tuple[PathKey, str]]:
    if isinstance(target, str):
        yield from _check_name(target, path, defined, route_written)
        return
    if (target.provider is None) == (target.targets is None):
        yield path, "a target table needs exactly one of `provider` or `targets` (a nested route)"
    if target.provider is not None:
        yield from _check_name(target.provider, (*path, "provider"), defined, route_written)
        for key in ("strategy", "hedge_after_s"):
            if getattr(target, key) is not None:
                yield (*path, key), f"`{key}` belongs to a nested route (with `targets`), not to a provider"
    for index, inner in enumerate(target.targets or ()):
        yield from _check_target(inner, (*path, "targets", index), defined, route_written)


def _check_name(
    name: str, path: PathKey, defined: set[str], route_written: bool
) -> Iterator[tuple[PathKey, str]]:
    if name in defined:
        return
    origin = "" if route_written else " (the default route: this file writes no route.targets)"
    yield path, (
        f"unknown provider `{name}`{origin}: neither built in nor defined under [providers]"
        f"{did_you_mean(name, sorted(defined))}"
    )


def _check_routes(
    policy: Policy, data: Mapping[str, Any], defined: set[str]
) -> Iterator[tuple[PathKey, str]]:
    """The ``[routes.NAME]`` tables: their names, and every provider they name (as ``[route]``'s)."""
    written = data.get("routes")
    for name, route in policy.routes.items():
        path: PathKey = ("routes", name)
        if name == DEFAULT_ROUTE:
            yield path, (
                f"`{DEFAULT_ROUTE}` is the name of [route]: write the default route under [route],"
                " or give this one another name"
            )
            continue
        if not _ROUTE_NAME.fullmatch(name):
            yield path, f"route name {name!r} must be lowercase letters, digits, '-' or '_'"
        table = written.get(name) if isinstance(written, dict) else None
        if not (isinstance(table, dict) and "targets" in table):
            yield path, f"route `{name}` needs `targets`: the providers (or nested routes) it tries"
            continue
        for index, target in enumerate(route.targets):
            yield from _check_target(target, (*path, "targets", index), defined, True)


def _no_route(name: str, policy: Policy) -> str:
    """The message for a reference to a route the policy does not define."""
    names = policy.route_names()
    return f'no route named "{name}"; routes: {", ".join(names)}{did_you_mean(name, names)}'


def _check_retry(policy: Policy) -> Iterator[tuple[PathKey, str]]:
    retry = policy.retry
    for key, kinds in (("on", retry.on), ("stop_on", retry.stop_on)):
        for index, kind in enumerate(kinds):
            if not CONDUCT[kind].configurable:
                yield ("retry", key, index), (
                    f"`{kind.value}` is not how an attempt ends (it describes the run or a skipped"
                    f" target), so it cannot be in retry.{key}"
                )
    for index, kind in enumerate(retry.stop_on):
        if kind in retry.on:
            yield ("retry", "stop_on", index), f"`{kind.value}` is in both retry.on and retry.stop_on"
    if retry.backoff_max_s < retry.backoff_initial_s:
        yield ("retry", "backoff_max_s"), (
            f"must be >= backoff_initial_s ({retry.backoff_initial_s:g}), got {retry.backoff_max_s:g}"
        )


def _check_analysis(policy: Policy) -> Iterator[tuple[PathKey, str]]:
    analysis = policy.analysis
    available = list(BUILTIN_PERSPECTIVES) + [p for p in policy.perspectives if p not in BUILTIN_PERSPECTIVES]
    seen: set[str] = set()
    for index, name in enumerate(analysis.perspectives):
        path: PathKey = ("analysis", "perspectives", index)
        if name in seen:
            yield path, f"perspective `{name}` is listed twice"
        seen.add(name)
        if name not in available:
            yield path, (
                f"unknown perspective `{name}`: neither one of the eight nor defined under"
                f" [perspectives]{did_you_mean(name, available)}"
            )
    if analysis.min_perspectives > len(analysis.perspectives):
        yield ("analysis", "min_perspectives"), (
            f"must be <= the number of perspectives ({len(analysis.perspectives)}),"
            f" got {analysis.min_perspectives}"
        )
    for name in policy.perspectives:
        if not _NAME.fullmatch(name):
            yield ("perspectives", name), f"perspective id {name!r} must be letters, digits, '.', '_' or '-'"
    routes = policy.route_names()
    for perspective, route in analysis.routes.items():
        path = ("analysis", "routes", perspective)
        if perspective not in available:
            yield path, (
                f"unknown perspective `{perspective}`: the perspectives are {', '.join(available)}"
                f"{did_you_mean(perspective, available)}"
            )
        if route not in routes:
            yield path, _no_route(route, policy)
    if analysis.synthesis_route not in routes:
        yield ("analysis", "synthesis_route"), _no_route(analysis.synthesis_route, policy)


def _check_budget(policy: Policy, defined: set[str]) -> Iterator[tuple[PathKey, str]]:
    for name, caps in policy.budget.providers.items():
        path: PathKey = ("budget", "providers", name)
        if name not in defined:
            yield path, (
                f"unknown provider `{name}`: neither built in nor defined under [providers]"
                f"{did_you_mean(name, sorted(defined))}"
            )
        if caps.daily_usd is None and caps.monthly_usd is None:
            yield path, "sets no cap: give `daily_usd`, `monthly_usd` or both"


def _check_serve(policy: Policy) -> Iterator[tuple[PathKey, str]]:
    for name, limits in policy.serve.keys.items():
        path: PathKey = ("serve", "keys", name)
        if not _NAME.fullmatch(name):
            yield path, f"`{name}` is not a key name: letters, digits, '.', '_' and '-', as in NAME=KEY"
        if limits.max_usd_per_day is None and limits.rpm is None:
            yield path, "sets no limit: give `max_usd_per_day`, `rpm` or both"


def _issue(
    text: str, source: str, path: PathKey, message: str, index: Mapping[PathKey, int] | None = None
) -> PolicyIssue:
    lines = line_index(text) if index is None else index
    line = next((lines[path[:end]] for end in range(len(path), 0, -1) if path[:end] in lines), None)
    return PolicyIssue(file=source, line=line, path=format_path(path), message=message)

