"""The public names of ``rmcore`` and ``rmcli``: every name in ``__all__`` imports, and none of
them disappears without this frozen list (and docs/embedding.md's promise) being changed."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

RMCORE = {
    "window_of",
    "settled_amounts",
    "refuse",
    "policy_caps",
    "charges_for",
    "attempt_settlement",
    "attempt_charges",
    "Resource",
    "Refusal",
    "Period",
    "Charge",
    "CapUsage",
    "Cap",
    "AttemptRefused",
    "AttemptHeld",
    "PERSPECTIVES",
    "Action",
    "AdmitCircuit",
    "AttemptFailed",
    "AttemptRecord",
    "AttemptSucceeded",
    "Backoff",
    "CancelAttempt",
    "ChatRequest",
    "ImagePart",
    "Message",
    "ResponseFormat",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "OpenAIRequest",
    "decode_openai_chat",
    "decode_openai_request",
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
    "Perspective",
    "PerspectiveResult",
    "Policy",
    "PolicyIssue",
    "ProviderAnswer",
    "ProviderError",
    "ProviderKind",
    "ProviderSpec",
    "RunOutcome",
    "RunPlan",
    "SimProvider",
    "SimReply",
    "Simulation",
    "StartAttempt",
    "Status",
    "StreamParser",
    "TargetSkipped",
    "TimePassed",
    "Usage",
    "analysis_json",
    "analysis_status",
    "answered_result",
    "build_health_request",
    "build_plan",
    "build_request",
    "builtin_providers",
    "cache_key",
    "classify_failure",
    "cost_usd",
    "decode_policy",
    "encode_policy",
    "default_policy",
    "estimate_prompt_tokens",
    "explain",
    "failed_result",
    "leaves",
    "overall_confidence",
    "parse_answer",
    "parse_response",
    "perspective_request",
    "read_health_reply",
    "render_markdown",
    "resolve_providers",
    "select_perspectives",
    "stream_parser",
    "summarize",
    "user_prompt",
    "worst_case_usd",
    "Synthesis",
    "parse_synthesis",
    "synthesis_answers",
    "synthesis_json",
    "synthesis_request",
}

RMCLI_API = {
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
}


@pytest.mark.parametrize(
    ("package", "frozen"), [("rmcore", RMCORE), ("rmcli.api", RMCLI_API), ("rmcli", {"__version__"})]
)
def test_every_public_name_imports_and_none_disappears(package: str, frozen: set[str]) -> None:
    """Every name in ``__all__`` imports, and none is added or lost without the frozen list changing."""
    module = importlib.import_module(package)
    exported = set(module.__all__)
    assert frozen - exported == set(), f"{package} lost public names"
    assert exported - frozen == set(), f"{package} gained names: add them to the frozen list"
    for name in exported:
        value = getattr(module, name)
        assert value is not None and not isinstance(value, types.ModuleType), name


def test_importing_rmcli_loads_neither_httpx_nor_anyio() -> None:
    """``import rmcli`` stays light: neither httpx nor anyio is loaded."""
    program = "import sys, rmcli; print(','.join(m for m in ('httpx', 'anyio') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
