"""recursive-manager's pure core: policies, wire formats, the fail-over engine, pricing.

Values in, values out: nothing here opens a socket or a file, reads a clock or the environment,
or draws a random number of its own. Time, jitter seeds and observations are arguments.

The names below are the public API (docs/embedding.md): policies (``decode_policy``, ``encode_policy``,
``explain``), the engine (``Engine``: events in, actions out), budgets and quotas over time
windows (``policy_caps``, ``charges_for``, ``refuse``), the providers' wire formats
(``build_request``, ``parse_response``, ``stream_parser``), the analysis prompts, the parsing
and aggregation of answers, the synthesis (``synthesis_request``, ``parse_synthesis``), and cost
estimation.

Each name is imported from its module on first use, so that importing one module of the core
(``rmcore.wire``, say) loads only what that module needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rmcore.attempts import AttemptRecord
    from rmcore.budget import Ledger
    from rmcore.completion import Completion, Usage
    from rmcore.confidence import ParsedAnswer, overall_confidence, parse_answer
    from rmcore.engine import Engine
    from rmcore.errors import ErrorKind, ProviderError
    from rmcore.events import (
        Action,
        AdmitCircuit,
        AttemptFailed,
        AttemptHeld,
        AttemptRefused,
        AttemptSucceeded,
        Backoff,
        CancelAttempt,
        CheckHealth,
        CircuitAnswered,
        Event,
        FailedOver,
        Finish,
        HealthObserved,
        ProviderAnswer,
        RunOutcome,
        StartAttempt,
        TargetSkipped,
        TimePassed,
    )
    from rmcore.health import HealthReport, build_health_request, read_health_reply
    from rmcore.perspectives import (
        PERSPECTIVES,
        Perspective,
        cache_key,
        perspective_request,
        select_perspectives,
        user_prompt,
    )
    from rmcore.plan import RunPlan, build_plan, leaves
    from rmcore.policy import (
        Policy,
        PolicyIssue,
        decode_policy,
        default_policy,
        encode_policy,
        explain,
        resolve_providers,
    )
    from rmcore.pricing import cost_usd, estimate_prompt_tokens, worst_case_usd
    from rmcore.providers import ProviderKind, ProviderSpec, builtin_providers
    from rmcore.quota import (
        Cap,
        CapUsage,
        Charge,
        Period,
        Refusal,
        Resource,
        attempt_charges,
        attempt_settlement,
        charges_for,
        policy_caps,
        refuse,
        settled_amounts,
        window_of,
    )
    from rmcore.report import (
        PerspectiveResult,
        Status,
        analysis_json,
        analysis_status,
        answered_result,
        failed_result,
        render_markdown,
        summarize,
    )
    from rmcore.requests import ChatRequest, HttpRequest
    from rmcore.simulate import SimProvider, SimReply, Simulation
    from rmcore.synthesis import (
        Synthesis,
        parse_synthesis,
        synthesis_answers,
        synthesis_json,
        synthesis_request,
    )
    from rmcore.wire import StreamParser, build_request, classify_failure, parse_response, stream_parser

_LAZY = {
    "Action": "rmcore.events",
    "AdmitCircuit": "rmcore.events",
    "AttemptFailed": "rmcore.events",
    "AttemptHeld": "rmcore.events",
    "AttemptRecord": "rmcore.attempts",
    "AttemptRefused": "rmcore.events",
    "AttemptSucceeded": "rmcore.events",
    "Backoff": "rmcore.events",
    "CancelAttempt": "rmcore.events",
    "Cap": "rmcore.quota",
    "CapUsage": "rmcore.quota",
    "Charge": "rmcore.quota",
    "ChatRequest": "rmcore.requests",
    "CheckHealth": "rmcore.events",
    "CircuitAnswered": "rmcore.events",
    "Completion": "rmcore.completion",
    "Engine": "rmcore.engine",
    "ErrorKind": "rmcore.errors",
    "Event": "rmcore.events",
    "FailedOver": "rmcore.events",
    "Finish": "rmcore.events",
    "HealthObserved": "rmcore.events",
    "HealthReport": "rmcore.health",
    "HttpRequest": "rmcore.requests",
    "Ledger": "rmcore.budget",
    "PERSPECTIVES": "rmcore.perspectives",
    "ParsedAnswer": "rmcore.confidence",
    "Period": "rmcore.quota",
    "Perspective": "rmcore.perspectives",
    "PerspectiveResult": "rmcore.report",
    "Policy": "rmcore.policy",
    "PolicyIssue": "rmcore.policy",
    "ProviderAnswer": "rmcore.events",
    "ProviderError": "rmcore.errors",
    "ProviderKind": "rmcore.providers",
    "ProviderSpec": "rmcore.providers",
    "Refusal": "rmcore.quota",
    "Resource": "rmcore.quota",
    "RunOutcome": "rmcore.events",
    "RunPlan": "rmcore.plan",
    "SimProvider": "rmcore.simulate",
    "SimReply": "rmcore.simulate",
    "Simulation": "rmcore.simulate",
    "StartAttempt": "rmcore.events",
    "Status": "rmcore.report",
    "StreamParser": "rmcore.wire",
    "Synthesis": "rmcore.synthesis",
    "TargetSkipped": "rmcore.events",
    "TimePassed": "rmcore.events",
    "Usage": "rmcore.completion",
    "analysis_json": "rmcore.report",
    "analysis_status": "rmcore.report",
    "answered_result": "rmcore.report",
    "attempt_charges": "rmcore.quota",
    "attempt_settlement": "rmcore.quota",
    "build_health_request": "rmcore.health",
    "build_plan": "rmcore.plan",
    "build_request": "rmcore.wire",
    "builtin_providers": "rmcore.providers",
    "cache_key": "rmcore.perspectives",
    "charges_for": "rmcore.quota",
    "classify_failure": "rmcore.wire",
    "cost_usd": "rmcore.pricing",
    "decode_policy": "rmcore.policy",
    "default_policy": "rmcore.policy",
    "encode_policy": "rmcore.policy",
    "estimate_prompt_tokens": "rmcore.pricing",
    "explain": "rmcore.policy",
    "failed_result": "rmcore.report",
    "leaves": "rmcore.plan",
    "overall_confidence": "rmcore.confidence",
    "parse_answer": "rmcore.confidence",
    "parse_response": "rmcore.wire",
    "parse_synthesis": "rmcore.synthesis",
    "perspective_request": "rmcore.perspectives",
    "policy_caps": "rmcore.quota",
    "read_health_reply": "rmcore.health",
    "refuse": "rmcore.quota",
    "render_markdown": "rmcore.report",
    "resolve_providers": "rmcore.policy",
    "select_perspectives": "rmcore.perspectives",
    "settled_amounts": "rmcore.quota",
    "stream_parser": "rmcore.wire",
    "summarize": "rmcore.report",
    "synthesis_answers": "rmcore.synthesis",
    "synthesis_json": "rmcore.synthesis",
    "synthesis_request": "rmcore.synthesis",
    "user_prompt": "rmcore.perspectives",
    "window_of": "rmcore.quota",
    "worst_case_usd": "rmcore.pricing",
}

__all__ = [
    "PERSPECTIVES",
    "Action",
    "AdmitCircuit",
    "AttemptFailed",
    "AttemptHeld",
    "AttemptRecord",
    "AttemptRefused",
    "AttemptSucceeded",
    "Backoff",
    "CancelAttempt",
    "Cap",
    "CapUsage",
    "Charge",
    "ChatRequest",
    "CheckHealth",
    "CircuitAnswered",
    "Completion",
    "Engine",
    "ErrorKind",
    "Event",
    "FailedOver",
    "Finish",
    "HealthObserved",
    "HealthReport",
    "HttpRequest",
    "Ledger",
    "ParsedAnswer",
    "Period",
    "Perspective",
    "PerspectiveResult",
    "Policy",
    "PolicyIssue",
    "ProviderAnswer",
    "ProviderError",
    "ProviderKind",
    "ProviderSpec",
    "Refusal",
    "Resource",
    "RunOutcome",
    "RunPlan",
    "SimProvider",
    "SimReply",
    "Simulation",
    "StartAttempt",
    "Status",
    "StreamParser",
    "Synthesis",
    "TargetSkipped",
    "TimePassed",
    "Usage",
    "analysis_json",
    "analysis_status",
    "answered_result",
    "attempt_charges",
    "attempt_settlement",
    "build_health_request",
    "build_plan",
    "build_request",
    "builtin_providers",
    "cache_key",
    "charges_for",
    "classify_failure",
    "cost_usd",
    "decode_policy",
    "default_policy",
    "encode_policy",
    "estimate_prompt_tokens",
    "explain",
    "failed_result",
    "leaves",
    "overall_confidence",
    "parse_answer",
    "parse_response",
    "parse_synthesis",
    "perspective_request",
    "policy_caps",
    "read_health_reply",
    "refuse",
    "render_markdown",
    "resolve_providers",
    "select_perspectives",
    "settled_amounts",
    "stream_parser",
    "summarize",
    "synthesis_answers",
    "synthesis_json",
    "synthesis_request",
    "user_prompt",
    "window_of",
    "worst_case_usd",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module when first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rmcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
