"""``rmgr analyze``, ``rmgr run`` and ``rmgr compare``: the multi-perspective analysis."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import cyclopts

from rmcli import api, figures, interrupt
from rmcli.analysis_view import LiveProgress, print_text
from rmcli.api import AnalysisRun
from rmcli.errors import ConfigError
from rmcli.output import emit_json, err, safe_text
from rmcli.question import read_question, shorten_question
from rmcli.spinner import wants_live
from rmcore.plan import leaves
from rmcore.report import exit_code, render_markdown

__all__ = ["analyze", "compare", "run"]

Format = Literal["text", "json", "markdown"]
PolicyOption = Annotated[Path | None, cyclopts.Parameter(name=["--policy", "-p"])]
QuestionArgument = Annotated[str | None, cyclopts.Parameter(allow_leading_hyphen=True)]


def _split(perspectives: str | None) -> list[str] | None:
    """``--perspectives`` as ids; None when it is not given. Given but naming none (``""``,
    ``" , "``) is bad input: running all eight instead would hide the mistake."""
    if perspectives is None:
        return None
    ids = [p.strip() for p in perspectives.split(",") if p.strip()]
    if not ids:
        raise ConfigError(
            "--perspectives names no perspective — give ids such as security,ux, or leave it out "
            "for the policy's"
        )
    return ids


def _report(
    result: AnalysisRun, fmt: Format, first_provider: Callable[[str], str], min_perspectives: int
) -> int:
    """Print the analysis in ``fmt`` and the closing notices; the exit code."""
    _print(result, result.to_json(), fmt, first_provider)
    failed = [r for r in result.results if r.error_kind is not None]
    if failed:
        names = ", ".join(f"{r.id} ({r.error_kind})" for r in failed)
        err(f"WARNING: {len(failed)} of {len(result.results)} perspectives failed: {names}")
    if result.status == "failed":
        err(
            f"error: the analysis failed: fewer than {min_perspectives} perspective(s) answered "
            "— see why above; rmgr health checks the providers"
        )
    return exit_code(result.status)


def _print(
    result: AnalysisRun, document: dict[str, Any], fmt: Format, first_provider: Callable[[str], str]
) -> None:
    if fmt == "json":
        emit_json(document)
    elif fmt == "markdown":
        from rmcli.synthesis_view import synthesis_failed_markdown, synthesis_markdown

        chair, section = result.synthesis, ""
        if chair is not None and chair.synthesis is not None:
            section = synthesis_markdown(chair.synthesis)
        elif chair is not None:
            section = synthesis_failed_markdown(chair.error_kind or "failed", chair.error_message or "")
        text = render_markdown(
            shorten_question(result.question),
            result.results,
            status=result.status,
            overall=result.overall,
            summary="" if chair is not None and chair.synthesis is not None else result.summary,
            execution_ms=result.execution_ms,
            cost_usd=result.cost_usd,
            synthesis=section,
        )
        sys.stdout.write(safe_text(text) + "\n")
        sys.stdout.flush()
    else:
        print_text(result, first_provider)


def _analyze(
    question: str | None,
    file: Path | None,
    policy: Path | None,
    provider: str | None,
    fallback: str | None,
    model: str | None,
    perspectives: str | None,
    fmt: Format,
    agent_id: str,
    no_history: bool,
    no_cache: bool,
    no_synthesis: bool,
    command: str,
) -> int:
    progress = LiveProgress(live=wants_live(as_json=fmt == "json"))
    client = api.Client(
        policy, provider=provider, fallback=fallback, model=model, hooks=progress.hooks(), command=command
    )
    options = {
        "perspectives": _split(perspectives),
        "agent_id": agent_id,
        "persist_history": not no_history,
        "use_cache": not no_cache,
        "synthesis": not no_synthesis,
    }
    text = read_question(question, file)
    return interrupt.run(lambda: _analysis(client, text, options, fmt, progress))


async def demo_analysis(env: dict[str, str], question: str, fmt: Format) -> int:
    """``rmgr demo``: the analysis in ``env`` (the sandbox's), saved in the history of ``demo``."""
    progress = LiveProgress(live=wants_live(as_json=fmt == "json"))
    client = api.Client(env=env, hooks=progress.hooks(), command="demo")
    return await _analysis(client, question, {"agent_id": "demo"}, fmt, progress)


async def _analysis(
    client: api.Client,
    question: str,
    options: dict[str, Any],
    fmt: Format,
    progress: LiveProgress | None = None,
) -> int:
    """Run the analysis, its live progress shown (when ``progress`` is live) until it ends; then
    the report. The exit code."""
    with progress or LiveProgress(live=False):
        async with client:
            result = await client.analyze(question, **options)
    setup = client.setup

    def first(perspective: str) -> str:
        return next(leaves(setup.for_perspective(perspective).plan)).provider.name

    return _report(result, fmt, first, client.policy.analysis.min_perspectives)


def analyze(
    question: QuestionArgument = None,
    /,
    *,
    file: Path | None = None,
    policy: PolicyOption = None,
    provider: str | None = None,
    fallback: str | None = None,
    model: str | None = None,
    perspectives: str | None = None,
    format: Format = "text",
    agent_id: str = "default",
    no_history: bool = False,
    no_cache: bool = False,
    no_synthesis: bool = False,
) -> int:
    """Analyse a question from several perspectives at once.

    Each perspective is one request, routed by the policy. The question is the argument, - for
    stdin, or --file PATH (text piped in beside an argument is appended as context). --model
    changes the model asked for, not the prices: costs are counted at the provider's. Without
    --policy the route is AI_PROVIDER, then AI_FALLBACK_PROVIDER. Exit code 0 when every
    perspective answered, 3 when some failed (partial), 1 when fewer than [analysis]
    min_perspectives answered, 2 for bad input.

    Example: rmgr analyze "Should we adopt gRPC?" --perspectives security,ux

    Parameters
    ----------
    question
        The decision to analyse; - reads it from stdin.
    file
        Read the question from this file.
    policy
        A policy (file or bundled name): route, limits, budget, perspectives.
    provider
        Use this provider for every perspective and the synthesis (replaces the targets of
        every route; overrides AI_PROVIDER).
    fallback
        Fall back to this provider (overrides AI_FALLBACK_PROVIDER).
    model
        Use this model (at the provider's prices).
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
    no_synthesis
        Skip the synthesis (the decision over the perspectives).
    """
    return _analyze(
        question,
        file,
        policy,
        provider,
        fallback,
        model,
        perspectives,
        format,
        agent_id,
        no_history,
        no_cache,
        no_synthesis,
        "analyze",
    )


def run(
    question: QuestionArgument = None,
    /,
    *,
    policy: Annotated[Path, cyclopts.Parameter(name=["--policy", "-p"])],
    file: Path | None = None,
    provider: str | None = None,
    fallback: str | None = None,
    model: str | None = None,
    perspectives: str | None = None,
    format: Format = "text",
    agent_id: str = "default",
    no_history: bool = False,
    no_cache: bool = False,
    no_synthesis: bool = False,
) -> int:
    """Analyse a question under a policy: analyze --policy FILE.

    The design card's form: the policy (a file, or a bundled policy's name: rmgr policy list)
    is required. Exit codes as for analyze: 0 ok, 3 partial, 1 failed, 2 bad input.

    Example: rmgr run --policy cost-first "Should we migrate to Kubernetes?"

    Parameters
    ----------
    question
        The decision to analyse; - reads it from stdin.
    policy
        The policy: a TOML file, or a bundled policy's name.
    file
        Read the question from this file.
    provider
        Use this provider for every perspective and the synthesis (replaces the targets of
        every route).
    fallback
        Fall back to this provider.
    model
        Use this model (at the provider's prices).
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
    no_synthesis
        Skip the synthesis (the decision over the perspectives).
    """
    return _analyze(
        question,
        file,
        policy,
        provider,
        fallback,
        model,
        perspectives,
        format,
        agent_id,
        no_history,
        no_cache,
        no_synthesis,
        "run",
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
            "decision": None,
        }
    failed = [r for r in result.results if r.error_kind is not None]
    chair = result.synthesis
    if not failed and chair is not None and chair.error_kind is not None:
        error = f"synthesis: {chair.error_kind}: {chair.error_message}"
    else:
        error = f"{failed[0].error_kind}: {failed[0].error_message}" if failed else None
    return {
        "provider": name,
        "status": result.status,
        "error": error,
        "decision": None if chair is None or chair.synthesis is None else chair.synthesis.decision,
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
    question: QuestionArgument = None,
    /,
    *,
    file: Path | None = None,
    providers: str | None = None,
    policy: PolicyOption = None,
    model: str | None = None,
    perspectives: str | None = None,
    format: Literal["text", "json"] = "text",
    no_cache: bool = False,
    no_synthesis: bool = False,
) -> int:
    """Run the analysis on each provider alone, side by side.

    For each provider: its decision (the synthesis), time, overall and per-perspective
    confidence, tokens, cost; a provider that fails shows its error. Comparison runs are not
    saved in the history. Exit code 0 when every provider answered fully, 3 when some did not, 1
    when none did, 2 for bad input.

    Example: rmgr compare "Build or buy?" --providers glm-direct,openai-direct

    Parameters
    ----------
    question
        The decision to compare the providers on; - reads it from stdin.
    file
        Read the question from this file.
    providers
        Comma-separated providers (default: every configured provider with a URL and key).
    policy
        A policy for limits, budget and perspectives (its route is replaced by each provider).
    model
        Use this model on each provider (own prices).
    perspectives
        Comma-separated perspective ids.
    format
        text or json.
    no_cache
        Ask every perspective afresh.
    no_synthesis
        Skip each provider's synthesis (its decision over the perspectives).
    """
    names = (
        [n.strip() for n in providers.split(",") if n.strip()] if providers else api.configured_providers()
    )
    if not names:
        raise ConfigError("no provider is configured with a URL and a key; name some with --providers")
    chosen = _split(perspectives)
    text = read_question(question, file)

    def done(name: str, run: AnalysisRun) -> None:
        err(f"INFO: {name}: {run.status} in {figures.duration(run.execution_ms)}")

    results = interrupt.run(
        lambda: api.compare(
            text,
            providers=names,
            policy=policy,
            perspectives=chosen,
            use_cache=not no_cache,
            on_done=done,
            model=model,
            synthesis=not no_synthesis,
        )
    )
    setups = list(results)
    ids = [r.id for r in next(iter(results.values())).results]
    rows = [_compare_row(n, results.get(n), None) for n in setups]
    if format == "json":
        emit_json([{**row, "analysis": results[row["provider"]].to_json()} for row in rows])
    else:
        from rmcli.compare_view import print_comparison

        print_comparison(rows, ids)
    statuses = [row["status"] for row in rows]
    if all(s == "ok" for s in statuses):
        return 0
    return 1 if all(s == "failed" for s in statuses) else 3
