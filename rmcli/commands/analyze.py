"""``rmgr analyze``, ``rmgr run`` and ``rmgr compare``: the multi-perspective analysis."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import cyclopts
import httpx
import msgspec
from returns.result import Failure

from rmcli.analysis import AnalysisRun, Progress, run_analysis
from rmcli.analysis_view import LiveProgress, print_text
from rmcli.config import ConfigError, RouteSetup, load_route, route_names
from rmcli.environment import api_key, load_environment
from rmcli.output import emit_json, err, safe_text
from rmcli.runner import Observer
from rmcli.session import http_client, open_store
from rmcli.store import Store
from rmcli.tables import print_table
from rmcore.perspectives import Perspective, select_perspectives
from rmcore.plan import leaves
from rmcore.report import PerspectiveResult, exit_code, render_markdown

__all__ = ["analyze", "compare", "execute_analysis", "run"]

Format = Literal["text", "json", "markdown"]
PolicyOption = Annotated[Path | None, cyclopts.Parameter(name=["--policy", "-p"])]
DEFAULT_TTL_MS = 3_600_000


def cache_ttl_ms(env: dict[str, str]) -> int:
    """``ANALYSIS_CACHE_TTL_MS`` (default one hour); 0 turns the cache off."""
    text = env.get("ANALYSIS_CACHE_TTL_MS", "").strip()
    if not text:
        return DEFAULT_TTL_MS
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"ANALYSIS_CACHE_TTL_MS={text!r} is not a whole number of milliseconds") from None
    if value < 0:
        raise ConfigError(f"ANALYSIS_CACHE_TTL_MS={text!r} must be 0 (no cache) or more")
    return value


class _TracedProgress(Progress):
    """``inner``'s progress, with every perspective's exchanges and decisions in the ``--verbose``
    trace, labelled ``PREFIX PERSPECTIVE``."""

    def __init__(self, inner: Progress | None, prefix: str = "") -> None:
        from rmcli.trace import current

        tracer = current()
        assert tracer is not None
        self.trace = tracer
        self.inner = inner or Progress()
        self.prefix = prefix

    def started(self, perspective: Perspective) -> None:
        from rmcli.trace import trace_label

        # Called in the perspective's own task: its route's attempts inherit the label.
        trace_label.set(f"{self.prefix}{perspective.id}")
        self.inner.started(perspective)

    def finished(self, result: PerspectiveResult, done: int, total: int) -> None:
        self.inner.finished(result, done, total)

    def observer(self, perspective: Perspective) -> Observer:
        return self.trace.observer(self.inner.observer(perspective))


def _traced(progress: Progress | None, prefix: str = "") -> Progress | None:
    """``progress`` traced when ``--verbose`` is on, else as it is."""
    from rmcli.trace import current

    return progress if current() is None else _TracedProgress(progress, prefix)


def _attach_trace(client: httpx.AsyncClient) -> None:
    from rmcli.trace import current

    tracer = current()
    if tracer is not None:
        tracer.attach(client)


def _perspectives(setup: RouteSetup, chosen: str | None) -> list[Perspective]:
    ids = chosen.split(",") if chosen else list(setup.policy.analysis.perspectives)
    result = select_perspectives(ids, setup.policy.perspectives)
    if isinstance(result, Failure):
        raise ConfigError(f"--perspectives: {result.failure()}")
    perspectives: list[Perspective] = result.unwrap()
    if setup.policy.analysis.min_perspectives > len(perspectives):
        raise ConfigError(
            f"{len(perspectives)} perspective(s) chosen but the policy's [analysis] min_perspectives is "
            f"{setup.policy.analysis.min_perspectives}"
        )
    return perspectives


async def execute_analysis(
    question: str,
    setup: RouteSetup,
    perspectives: list[Perspective],
    *,
    env: dict[str, str],
    store: Store,
    fmt: Format,
    agent_id: str,
    history: bool,
    cache: bool,
    command: str,
) -> int:
    """Run the analysis, print it in ``fmt``, save it in the history; the exit code."""
    progress = _traced(LiveProgress(perspectives))
    async with http_client() as client:
        _attach_trace(client)
        result = await run_analysis(
            question,
            perspectives,
            setup,
            env=env,
            store=store,
            client=client,
            use_cache=cache,
            cache_ttl_ms=cache_ttl_ms(env),
            progress=progress,
            command=command,
        )
    document = result.to_json()
    if history:
        store.history_add(
            agent_id,
            question,
            result.status,
            result.overall,
            int(time.time() * 1000),
            msgspec.json.encode(document),
        )
    first = next(leaves(setup.plan)).provider.name
    _print(result, document, fmt, first)
    failed = [r for r in result.results if r.error_kind is not None]
    if failed:
        names = ", ".join(f"{r.id} ({r.error_kind})" for r in failed)
        err(f"WARNING: {len(failed)} of {len(result.results)} perspectives failed: {names}")
    if result.status == "failed":
        err(
            f"ERROR: the analysis failed: fewer than {setup.policy.analysis.min_perspectives} "
            "perspective(s) answered"
        )
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
    if not question.strip():
        raise ConfigError("the question is empty")
    if not agent_id.strip():
        raise ConfigError("--agent-id must not be empty")
    env = load_environment()
    cache_ttl_ms(env)  # a bad ANALYSIS_CACHE_TTL_MS is a configuration error before anything runs
    setup = load_route(env, policy_path=policy, providers=route_names(env, provider, fallback))
    chosen = _perspectives(setup, perspectives)
    with open_store(env) as store:
        return anyio.run(
            lambda: execute_analysis(
                question,
                setup,
                chosen,
                env=env,
                store=store,
                fmt=fmt,
                agent_id=agent_id,
                history=not no_history,
                cache=not no_cache,
                command=command,
            )
        )


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
    if not question.strip():
        raise ConfigError("the question is empty")
    env = load_environment()
    ttl_ms = cache_ttl_ms(env)
    base = load_route(env, policy_path=policy, providers=[]) if policy else None
    if providers:
        names = [n.strip() for n in providers.split(",") if n.strip()]
    else:
        from rmcore.providers import builtin_providers

        specs = builtin_providers(env)
        names = [s.name for s in specs.values() if not s.problems and api_key(env, s.key_env) is not None]
        if not names:
            raise ConfigError("no provider is configured with a URL and a key; name some with --providers")
    setups = {name: load_route(env, policy_path=policy, providers=[name]) for name in dict.fromkeys(names)}
    chosen = _perspectives(base or next(iter(setups.values())), perspectives)
    ids = [p.id for p in chosen]

    async def main(store: Store) -> dict[str, AnalysisRun]:
        results: dict[str, AnalysisRun] = {}
        async with http_client() as client:
            _attach_trace(client)

            async def one(name: str, setup: RouteSetup) -> None:
                results[name] = await run_analysis(
                    question,
                    chosen,
                    setup,
                    env=env,
                    store=store,
                    client=client,
                    use_cache=not no_cache,
                    cache_ttl_ms=ttl_ms,
                    command="compare",
                    cache_scope=f"compare:{name}",
                    progress=_traced(None, f"{name} "),
                )
                err(f"INFO: {name}: {results[name].status} in {results[name].execution_ms / 1000:.2f} s")

            async with anyio.create_task_group() as tg:
                for name, setup in setups.items():
                    tg.start_soon(one, name, setup)
        return results

    with open_store(env) as store:
        results = anyio.run(main, store)
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
