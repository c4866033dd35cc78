"""Policy text → :class:`~rmcore.policy.schema.Policy`, or every reason it is not one.

Three stages, each reported as ``FILE:LINE: $.path: message``:

1. TOML syntax (``tomllib``): the line comes from the parser's message.
2. Types and constraints (``msgspec.convert`` into the schema): msgspec stops at the first error;
   its message is rewritten in TOML's terms, given the full path (msgspec leaves out dict keys and
   the name of an unknown field) and, for typos, a "did you mean" suggestion.
3. Meaning (only once stage 2 succeeded, all issues together): version, known provider names,
   complete new providers, URLs, variable names, quotas, target tables, retry kinds (those
   :data:`rmcore.conduct.CONFIGURABLE_KINDS` allows), perspectives, budget caps.

The stages are joined as a ``returns`` pipeline: each is a ``Result``, and the first failure
(its issues) is the answer. ``PolicyIssue`` is defined in :mod:`rmcore.problems` with the
core's other failures, and re-exported here.

Lines are found by scanning the text (:mod:`rmcore.policy.locate`).
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NamedTuple

import msgspec
import msgspec.inspect as mi
from returns.pipeline import flow
from returns.pointfree import bind, map_
from returns.result import Failure, Result, Success

from rmcore.conduct import CONDUCT
from rmcore.policy.locate import PathKey, format_path, line_index
from rmcore.policy.schema import (
    BUILTIN_PERSPECTIVES,
    DEFAULT_PRIMARY,
    Policy,
    ProviderOverride,
    Target,
)
from rmcore.problems import PolicyIssue
from rmcore.providers import ProviderKind, builtin_providers, check_url

__all__ = ["PolicyIssue", "decode_policy"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOML_POSITION = re.compile(r"\s*\((?:at line (\d+), column \d+|at end of document)\)$")
_MSGSPEC_AT = re.compile(r"^(.*?)(?: - at `(\$[^`]*)`)?$", re.DOTALL)
_MSGSPEC_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|(\[\.\.\.\])")
_TYPE_WORDS = {
    "object": "a table",
    "array": "an array",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}
_BUILTIN_DEFAULTS = builtin_providers({})
"""The built-ins with no environment: for the settings that do not depend on it (quotas)."""
_MISSING: Any = object()
_HIDDEN: Any = object()


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
        """Stage 2: the document converted into the schema (msgspec stops at the first error)."""
        data = _with_default_targets(raw, self.default_targets)
        try:
            return Success(_Typed(raw=raw, data=data, policy=msgspec.convert(data, Policy)))
        except msgspec.ValidationError as error:
            path, message = _explain_validation(data, str(error))
            return Failure((_issue(self.text, self.source, path, message),))

    def meaning(self, typed: _Typed) -> Result[Policy, tuple[PolicyIssue, ...]]:
        """Stage 3: every rule across fields, all issues together, in document order."""
        route = typed.raw.get("route")
        written = isinstance(route, dict) and "targets" in route
        problems = list(_check(typed.policy, typed.data, self.known, route_written=written))
        if not problems:
            return Success(typed.policy)
        index = line_index(self.text)
        found = [_issue(self.text, self.source, path, message, index) for path, message in problems]
        found.sort(key=lambda issue: issue.line or 0)  # document order; stable for equal lines
        return Failure(tuple(found))

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


# -- stage 2: msgspec's validation errors --------------------------------------------------------


def _explain_validation(data: Any, error: str, prefix: PathKey = ()) -> tuple[PathKey, str]:
    """msgspec's ``error`` about the value at ``prefix`` of the document ``data`` → (full path,
    message in TOML's terms)."""
    match = _MSGSPEC_AT.match(error)
    assert match is not None  # the pattern matches every string
    message, at = match.group(1), match.group(2) or "$"
    path: list[str | int] = list(prefix)
    for segment in _MSGSPEC_SEGMENT.finditer(at):
        key, index, hidden = segment.groups()
        if hidden:
            # msgspec writes a table's key as [...]: find the entry that fails on its own.
            return _explain_table_entry(data, tuple(path), message)
        path.append(key if key is not None else int(index))
    return _rewrite(data, tuple(path), message)


def _explain_table_entry(data: Any, path: PathKey, fallback: str) -> tuple[PathKey, str]:
    table = _value_at(data, path)
    entry_type = _unwrap(_type_at((*path, "")))
    if isinstance(table, dict) and isinstance(entry_type, mi.StructType):
        for key, value in table.items():
            try:
                msgspec.convert(value, entry_type.cls)
            except msgspec.ValidationError as error:
                return _explain_validation(data, str(error), (*path, key))
    return path, fallback


def _rewrite(data: Any, path: PathKey, message: str) -> tuple[PathKey, str]:
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", message, re.DOTALL)
    if unknown:
        return _unknown_key(path, unknown.group(1))
    missing = re.fullmatch(r"Object missing required field `(.*)`", message, re.DOTALL)
    if missing:
        return (*path, missing.group(1)), "missing required key"
    value = _value_at(data, path)
    if path[:1] == ("providers",) and path[-1:] != ("kind",) and isinstance(value, str):
        value = _HIDDEN  # a misplaced string in a provider table might be a pasted key: never echo it
    got = "" if value is _MISSING else f", got {_show(value)}"
    if message.startswith("Invalid enum value"):
        node = _type_at(path)
        choices = _choices(node)
        expected = f"one of {', '.join(choices)}" if len(choices) > 1 else ", ".join(map(repr, choices))
        if _accepts_number(node):
            expected = f"a number or {expected}"
        hint = _did_you_mean(str(value), choices)
        return path, f"invalid value {_show(value)}: expected {expected}{hint}"
    if re.fullmatch(r"Expected `(\w+)` of length >= 1", message):
        return path, "must not be empty"
    bound = re.fullmatch(r"Expected `(\w+)` (>=|>|<=|<) (\S+)", message)
    if bound:
        limit = bound.group(3).removesuffix(".0")
        return path, f"must be {bound.group(2)} {limit}{got}"
    wrong = re.fullmatch(r"Expected `([^`]*)`, got `(\w+)`", message)
    if wrong:
        # TOML has no null: an optional key is simply left out, so "or nothing" would mislead.
        types = [t for t in wrong.group(1).split(" | ") if t != "null"]
        expected = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return path, f"expected {expected}{got}"
    return path, message


def _unknown_key(path: PathKey, key: str) -> tuple[PathKey, str]:
    struct = _unwrap(_type_at(path))
    fields = [f.encode_name for f in struct.fields] if isinstance(struct, mi.StructType) else []
    hint = _did_you_mean(key, fields)
    if not hint and fields:
        hint = f" (known keys here: {', '.join(fields)})"
    return (*path, key), f"unknown key `{key}`{hint}"


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _show(value: Any) -> str:
    """A value as a person reading the TOML would recognise it."""
    if value is _HIDDEN:
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, str | int | float) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_at(data: Any, path: PathKey) -> Any:
    for segment in path:
        in_list = isinstance(data, list) and isinstance(segment, int) and 0 <= segment < len(data)
        in_table = isinstance(data, dict) and isinstance(segment, str) and segment in data
        if not (in_list or in_table):
            return _MISSING
        data = data[segment]
    return data


def _type_at(path: PathKey) -> mi.Type | None:
    """The schema's type at ``path`` (unions resolved towards the member that has the segment)."""
    current: mi.Type | None = mi.type_info(Policy)
    for segment in path:
        current = _child(current, segment)
    return current


def _child(node: mi.Type | None, segment: str | int) -> mi.Type | None:
    node = _strip(node)
    if isinstance(node, mi.UnionType):
        for member in node.types:
            found = _child(member, segment)
            if found is not None:
                return found
        return None
    if isinstance(segment, str) and isinstance(node, mi.StructType):
        return next((f.type for f in node.fields if f.encode_name == segment), None)
    if isinstance(segment, str) and isinstance(node, mi.DictType):
        return node.value_type
    if isinstance(segment, int) and isinstance(node, mi.VarTupleType | mi.ListType):
        return node.item_type
    return None


def _strip(node: mi.Type | None) -> mi.Type | None:
    while isinstance(node, mi.Metadata):
        node = node.type
    return node


def _unwrap(node: mi.Type | None) -> mi.Type | None:
    """The struct (or other non-None member) behind metadata and ``X | None``."""
    node = _strip(node)
    if isinstance(node, mi.UnionType):
        members = [m for m in (_strip(t) for t in node.types) if not isinstance(m, mi.NoneType)]
        structs = [m for m in members if isinstance(m, mi.StructType)]
        return structs[0] if structs else (members[0] if len(members) == 1 else node)
    return node


def _accepts_number(node: mi.Type | None) -> bool:
    node = _strip(node)
    members = node.types if isinstance(node, mi.UnionType) else (node,)
    return any(isinstance(_strip(m), mi.FloatType | mi.IntType) for m in members)


def _choices(node: mi.Type | None) -> list[str]:
    node = _strip(node)
    members = node.types if isinstance(node, mi.UnionType) else (node,)
    out: list[str] = []
    for member in (_strip(m) for m in members):
        if isinstance(member, mi.EnumType):
            out.extend(str(item.value) for item in member.cls)
        elif isinstance(member, mi.LiteralType):
            out.extend(str(v) for v in member.values)
    return out


# -- stage 3: meaning ----------------------------------------------------------------------------


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
    yield from _check_retry(policy)
    yield from _check_analysis(policy)
    yield from _check_budget(policy, defined)


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
        f"{_did_you_mean(name, sorted(defined))}"
    )


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
                f" [perspectives]{_did_you_mean(name, available)}"
            )
    if analysis.min_perspectives > len(analysis.perspectives):
        yield ("analysis", "min_perspectives"), (
            f"must be <= the number of perspectives ({len(analysis.perspectives)}),"
            f" got {analysis.min_perspectives}"
        )
    for name in policy.perspectives:
        if not _NAME.fullmatch(name):
            yield ("perspectives", name), f"perspective id {name!r} must be letters, digits, '.', '_' or '-'"


def _check_budget(policy: Policy, defined: set[str]) -> Iterator[tuple[PathKey, str]]:
    for name, caps in policy.budget.providers.items():
        path: PathKey = ("budget", "providers", name)
        if name not in defined:
            yield path, (
                f"unknown provider `{name}`: neither built in nor defined under [providers]"
                f"{_did_you_mean(name, sorted(defined))}"
            )
        if caps.daily_usd is None and caps.monthly_usd is None:
            yield path, "sets no cap: give `daily_usd`, `monthly_usd` or both"


def _issue(
    text: str, source: str, path: PathKey, message: str, index: Mapping[PathKey, int] | None = None
) -> PolicyIssue:
    lines = line_index(text) if index is None else index
    line = next((lines[path[:end]] for end in range(len(path), 0, -1) if path[:end] in lines), None)
    return PolicyIssue(file=source, line=line, path=format_path(path), message=message)

