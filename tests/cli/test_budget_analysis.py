"""Budgets that serve a whole analysis, tried as a user would: ``rmgr`` against the sandbox
(every provider up, no added delay), one process per analysis.

The perspectives of an analysis share the policy's ``max_usd``. Each request reserves its worst
case (the prompt's estimate plus max_tokens at the provider's prices) while it runs; a
perspective that does not fit beside the running ones waits for them to settle (they usually
cost a fraction of their worst case) instead of failing with ``budget``. So every bundled policy
runs a default analysis through, and none spends more than its budget.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest

from tests.cli.helpers import REPO, Cli, SandboxProcess

POLICIES = sorted(p.stem for p in (REPO / "policies").glob("*.toml"))
QUESTION = "Should we move billing to event sourcing?"


def max_usd(name: str) -> float:
    """The ``[limits] max_usd`` of bundled policy ``name`` (the schema's default when unset)."""
    policy = tomllib.loads((REPO / "policies" / f"{name}.toml").read_text(encoding="utf-8"))
    limit: float = policy.get("limits", {}).get("max_usd", 0.10)
    return limit


def analysed(cli: Cli, sandbox: SandboxProcess, *args: str) -> tuple[int, dict[str, Any], str]:
    """``rmgr analyze QUESTION ARGS --format json`` against the sandbox: exit code, JSON, stderr."""
    done = cli.with_env(sandbox.env).run("analyze", QUESTION, *args, "--format", "json")
    assert done.stdout.strip(), f"no JSON on stdout; stderr: {done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report, done.stderr


def spent(report: dict[str, Any]) -> float:
    """The analysis's whole cost: the top-level ``costUsd`` (perspectives and synthesis) when
    the report has one, the perspectives' ``usage.costUsd`` otherwise."""
    total: float = report.get("costUsd", report["usage"]["costUsd"])
    return total


def test_cost_first_on_openai_answers_every_perspective_within_the_budget(
    cli: Cli, sandbox: SandboxProcess
) -> None:
    """The issue's case: $0.10 holds two of openai-direct's $0.038 worst cases, and each
    perspective really costs about $0.005. The other six wait for room instead of failing:
    status ok, exit 0, no ``budget`` failure, at most $0.10 spent."""
    code, report, stderr = analysed(cli, sandbox, "--policy", "cost-first", "--provider", "openai-direct")
    assert code == 0, stderr
    assert report["status"] == "ok"
    perspectives = report["perspectives"]
    assert len(perspectives) == 8 and all(p["error"] is None for p in perspectives)
    assert {p["metadata"]["provider"] for p in perspectives} == {"openai-direct"}
    assert not any(a["outcome"] == "budget" for a in report["attempts"])
    assert "budget" not in stderr
    assert 0 < spent(report) <= 0.10


def test_the_text_report_of_that_analysis_exits_0(cli: Cli, sandbox: SandboxProcess) -> None:
    """The same run as a person reads it: exit 0, no warning of failed perspectives."""
    done = cli.with_env(sandbox.env).run(
        "analyze", QUESTION, "--policy", "cost-first", "--provider", "openai-direct", "--no-history"
    )
    assert done.returncode == 0, done.stderr
    assert "failed" not in done.stderr and "budget" not in done.stderr


@pytest.mark.parametrize("name", POLICIES)
def test_every_bundled_policy_runs_a_default_analysis_within_its_budget(
    cli: Cli, sandbox: SandboxProcess, name: str
) -> None:
    """A default analysis under each shipped policy: status ok, every perspective answered, no
    provider skipped for budget (no "Skipped provider ... budget" notice), and no more spent than
    the policy's ``max_usd``."""
    code, report, stderr = analysed(cli, sandbox, "--policy", name)
    assert code == 0, stderr
    assert report["status"] == "ok"
    assert all(p["error"] is None for p in report["perspectives"])
    assert "Skipped provider" not in stderr and "budget" not in stderr, stderr
    assert spent(report) <= max_usd(name)
