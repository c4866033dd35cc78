"""``rmgr analyze``, ``rmgr run`` and ``rmgr compare``: the multi-perspective analysis."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import cyclopts

from rmcli import api, interrupt
from rmcli.analysis_view import LiveProgress, print_text
from rmcli.api import AnalysisRun
from rmcli.errors import ConfigError
from rmcli.output import emit_json, err, safe_text
from rmcli.tables import print_table
from rmcore.plan import leaves
from rmcore.report import exit_code, render_markdown

__all__ = ["analyze", "compare", "run"]

Format = Literal["text", "json", "markdown"]
PolicyOption = Annotated[Path | None, cyclopts.Parameter(name=["--policy", "-p"])]


def _split(perspectives: str | None) -> list[str] | None:
    return None if perspectives is None else [p.strip() for p in perspectives.split(",")]


def _report(result: AnalysisRun, fmt: Format, first_provider: str, min_perspectives: int) -> int:
    """Print the analysis in ``fmt`` and the closing notices; the exit code."""
    _print(result, result.to_json(), fmt, first_provider)
    failed = [r for r in result.results if r.error_kind is not None]
    if failed:
        names = ", ".join(f"{r.id} ({r.error_kind})" for r in failed)
        err(f"WARNING: {len(failed)} of {len(result.results)} perspectives failed: {names}")
    if result.status == "failed":
        err(f"ERROR: the analysis failed: fewer than {min_perspectives} perspective(s) answered")
    return exit_code(result.status)


def _print(result: AnalysisRun, document: dict[str, Any], fmt: Format, first_provider: str) -> None:
    if fmt == "json":
        emit_json(document)
    elif fmt == "markdown":
        text = render_markdown(
            result.question,
            result.results,
            status=result.status,
            overall=result.overall,
            summary=result.summary,
            execution_ms=result.execution_ms,
            cost_usd=result.cost_usd,
        )
        sys.stdout.write(safe_text(text) + "\n")
        sys.stdout.flush()
    else:
        print_text(result, first_provider)


def _analyze(
    question: str,
    policy: Path | None,
    provider: str | None,
    fallback: str | None,
    perspectives: str | None,
    fmt: Format,
    agent_id: str,
    no_history: bool,
    no_cache: bool,
    command: str,
) -> int:
    client = api.Client(
        policy, provider=provider, fallback=fallback, hooks=LiveProgress().hooks(), command=command
    )
    options = {
        "perspectives": _split(perspectives),
        "agent_id": agent_id,
        "persist_history": not no_history,
        "use_cache": not no_cache,
    }
    return interrupt.run(lambda: _analysis(client, question, options, fmt))


async def demo_analysis(env: dict[str, str], question: str, fmt: Format) -> int:
    """``rmgr demo``: the analysis in ``env`` (the sandbox's), saved in the history of ``demo``."""
    client = api.Client(env=env, hooks=LiveProgress().hooks(), command="demo")
    return await _analysis(client, question, {"agent_id": "demo"}, fmt)


async def _analysis(client: api.Client, question: str, options: dict[str, Any], fmt: Format) -> int:
    async with client:
        result = await client.analyze(question, **options)
    first = next(leaves(client.setup.plan)).provider.name
    return _report(result, fmt, first, client.policy.analysis.min_perspectives)


def analyze(
    question: str,
    /,
    *,
    policy: PolicyOption = None,
    provider: str | None = None,
    fallback: str | None = None,
    perspectives: str | None = None,
    format: Format = "text",
    agent_id: str = "default",
    no_history: bool = False,
    no_cache: bool = False,
) -> int:
    """Analyse a question from several perspectives at once, each routed by the policy.

    Without --policy the route is AI_PROVIDER, then AI_FALLBACK_PROVIDER. Exit code 0 when every
    perspective answered, 3 when some failed (partial), 1 when fewer than [analysis]
    min_perspectives answered, 2 for bad input.

    Parameters
    ----------
    question
        The decision to analyse.
    policy
        A TOML policy file: route, limits, budget, perspectives.
    provider
        Use this provider (overrides the route, or AI_PROVIDER).
    fallback
        Fall back to this provider (overrides AI_FALLBACK_PROVIDER).
    perspectives
        Comma-separated perspective ids (default: the policy's, or all eight).
    format
        text (a box, a table, each perspective in full), json, or markdown.
    agent_id
        Whose history the analysis is saved in.
    no_history
        Do not save the analysis in the history.
    no_cache
        Ask every perspective afresh (and do not store the answers).
    """
    return _analyze(
        question, policy, provider, fallback, perspectives, format, agent_id, no_history, no_cache, "analyze"
    )


def run(
    question: str,
    /,
    *,
    policy: Annotated[Path, cyclopts.Parameter(name=["--policy", "-p"])],
    provider: str | None = None,
    fallback: str | None = None,
    perspectives: str | None = None,
    format: Format = "text",
    agent_id: str = "default",
    no_history: bool = False,
    no_cache: bool = False,
) -> int:
    """Analyse a question under a policy: the same as ``analyze --policy FILE``.

    Parameters
    ----------
    question
        The decision to analyse.
    policy
        The TOML policy file (required).
    provider
        Use this provider (overrides the policy's route).
    fallback
        Fall back to this provider.
    perspectives
        Comma-separated perspective ids (default: the policy's, or all eight).
    format
        text, json, or markdown.
    agent_id
        Whose history the analysis is saved in.
    no_history
        Do not save the analysis in the history.
    no_cache
        Ask every perspective afresh.
    """
    return _analyze(
        question, policy, provider, fallback, perspectives, format, agent_id, no_history, no_cache, "run"
    )


def _compare_row(name: str, result: AnalysisRun | None, error: str | None) -> dict[str, Any]:
    if result is None:
        return {
            "provider": name,
            "status": "failed",
            "error": error,
            "executionTime": None,
            "overallConfidence": None,
            "perspectives": {},
            "usage": None,
            "costUsd": 0.0,
        }
    failed = [r for r in result.results if r.error_kind is not None]
    return {
        "provider": name,
        "status": result.status,
        "error": (f"{failed[0].error_kind}: {failed[0].error_message}" if failed else None),
        "executionTime": round(result.execution_ms, 1),
        "overallConfidence": result.overall,
        "perspectives": {r.id: r.confidence for r in result.results},
        "usage": {
            "inputTokens": sum(a.usage.input_tokens for a in result.attempts),
            "outputTokens": sum(a.usage.output_tokens for a in result.attempts),
        },
        "costUsd": result.cost_usd,
    }


def compare(
    question: str,
    /,
    *,
    providers: str | None = None,
    policy: PolicyOption = None,
    perspectives: str | None = None,
    format: Literal["text", "json"] = "text",
    no_cache: bool = False,
) -> int:
    """Run the analysis on each provider alone, side by side: time, overall and per-perspective
    confidence, tokens, cost; a provider that fails shows its error in its row. Comparison runs
    are not saved in the history. Exit code 0 when every provider answered fully, 3 when some
    did not, 1 when none did.

    Parameters
    ----------
    providers
        Comma-separated providers (default: every configured provider with a URL and key).
    policy
        A policy for limits, budget and perspectives (its route is replaced by each provider).
    perspectives
        Comma-separated perspective ids.
    format
        text or json.
    no_cache
        Ask every perspective afresh.
    """
    names = (
        [n.strip() for n in providers.split(",") if n.strip()] if providers else api.configured_providers()
    )
    if not names:
        raise ConfigError("no provider is configured with a URL and a key; name some with --providers")

    def done(name: str, run: AnalysisRun) -> None:
        err(f"INFO: {name}: {run.status} in {run.execution_ms / 1000:.2f} s")

    results = interrupt.run(
        lambda: api.compare(
            question,
            providers=names,
            policy=policy,
            perspectives=_split(perspectives),
            use_cache=not no_cache,
            on_done=done,
        )
    )
    setups = list(results)
    ids = [r.id for r in next(iter(results.values())).results]
    rows = [_compare_row(n, results.get(n), None) for n in setups]
    if format == "json":
        emit_json([{**row, "analysis": results[row["provider"]].to_json()} for row in rows])
    else:

        def conf(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        table_rows = [
            [
                row["provider"],
                row["status"] + (f" ({row['error'][:60]})" if row["error"] else ""),
                f"{row['executionTime'] / 1000:.2f} s",
                conf(row["overallConfidence"]),
                *[conf(row["perspectives"].get(i)) for i in ids],
                f"{row['usage']['inputTokens']}/{row['usage']['outputTokens']}",
                f"${row['costUsd']:.6f}",
            ]
            for row in rows
        ]
        print_table(
            "Provider comparison",
            ["Provider", "Status", "Time", "Overall", *ids, "Tokens in/out", "Cost"],
            table_rows,
        )
    statuses = [row["status"] for row in rows]
    if all(s == "ok" for s in statuses):
        return 0
    return 1 if all(s == "failed" for s in statuses) else 3
