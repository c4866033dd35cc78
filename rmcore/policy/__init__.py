"""Policy files (DESIGN §4): the schema, decoding with located errors, provider resolution and
plain-words explanations. Pure: text and mappings in, values out."""

from __future__ import annotations

from rmcore.policy.decode import PolicyIssue, decode_policy
from rmcore.policy.encode import encode_policy
from rmcore.policy.explain import explain
from rmcore.policy.locate import format_path, line_index, locate, parse_path
from rmcore.policy.resolve import all_route_providers, resolve_providers, route_providers
from rmcore.policy.schema import (
    BUILTIN_PERSPECTIVES,
    DEFAULT_PRIMARY,
    DEFAULT_ROUTE,
    NON_ATTEMPT_KINDS,
    Analysis,
    Breaker,
    Budget,
    Health,
    HedgeAfter,
    Limits,
    OnStateUnavailable,
    PerspectiveDef,
    Policy,
    ProviderBudget,
    ProviderOverride,
    Retry,
    Route,
    Strategy,
    Target,
    TargetTable,
    default_policy,
)

__all__ = [
    "BUILTIN_PERSPECTIVES",
    "DEFAULT_PRIMARY",
    "DEFAULT_ROUTE",
    "NON_ATTEMPT_KINDS",
    "Analysis",
    "Breaker",
    "Budget",
    "Health",
    "HedgeAfter",
    "Limits",
    "OnStateUnavailable",
    "PerspectiveDef",
    "Policy",
    "PolicyIssue",
    "ProviderBudget",
    "ProviderOverride",
    "Retry",
    "Route",
    "Strategy",
    "Target",
    "TargetTable",
    "all_route_providers",
    "decode_policy",
    "default_policy",
    "encode_policy",
    "explain",
    "format_path",
    "line_index",
    "locate",
    "parse_path",
    "resolve_providers",
    "route_providers",
]
