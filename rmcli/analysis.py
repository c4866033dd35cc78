"""One question from several perspectives at once, each perspective routed by the policy.

Every perspective is its own request with its own route through the policy, so a provider that
dies half-way only moves the perspectives still waiting. They run at once, at most
``[analysis] max_concurrency`` at a time (and at most a provider's own limit on it), and share one
budget (a ``Ledger``) and one deadline. Answers come from the cache when a fresh one is there;
only whole answers are cached, so a re-run after a partial failure asks again only the
perspectives that failed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import msgspec

from rmcli.config import RouteSetup
from rmcli.environment import api_key
from rmcli.runner import Observer, ProviderLimits, route
from rmcli.session import StoreCircuits, StoreQuotas
from rmcli.store import Store
from rmcore.attempts import AttemptRecord
from rmcore.budget import Ledger
from rmcore.completion import Usage
from rmcore.confidence import overall_confidence
from rmcore.perspectives import Perspective, cache_key, perspective_request
from rmcore.report import (
    PerspectiveResult,
    Status,
    analysis_json,
    analysis_status,
    answered_result,
    failed_result,
    summarize,
)

__all__ = ["AnalysisRun", "Progress", "run_analysis"]


class _CachedAnswer(msgspec.Struct, frozen=True):
    """A cached answer: its text and who wrote it. What it took to write is not kept: an answer
    served from the cache costs nothing in the run that reuses it (entries written with token
    counts, by earlier versions, still decode: unknown fields are ignored)."""

    text: str
    provider: str
    model: str


class Progress:
    """Hooks that show an analysis while it runs; every method is optional to override."""

    def started(self, perspective: Perspective) -> None:
        """A perspective's request is about to be routed."""

    def finished(self, result: PerspectiveResult, done: int, total: int) -> None:
        """A perspective ended (answered, from the cache, or failed)."""

    def observer(self, perspective: Perspective) -> Observer | None:
        """Hooks for the perspective's route (fail-overs, retries), or None."""
        return None


class AnalysisRun(msgspec.Struct, frozen=True):
    """A whole analysis: every perspective's result, the attempts it sent, its status and figures."""

    question: str
    results: tuple[PerspectiveResult, ...]
    attempts: tuple[AttemptRecord, ...]
    status: Status
    overall: float | None
    summary: str
    execution_ms: float
    timestamp: str
    cost_usd: float

    def to_json(self) -> dict[str, Any]:
        """The DESIGN §3 JSON object of ``rmgr analyze --format json``."""
        return analysis_json(
            self.question,
            self.results,
            self.attempts,
            execution_ms=self.execution_ms,
            timestamp=self.timestamp,
            status=self.status,
        )


async def run_analysis(
    question: str,
    perspectives: Sequence[Perspective],
    setup: RouteSetup,
    *,
    env: dict[str, str],
    store: Store,
    client: httpx.AsyncClient,
    use_cache: bool = True,
    cache_ttl_ms: int = 3_600_000,
    max_tokens: int = 1024,
    temperature: float | None = None,
    progress: Progress | None = None,
    run_id: str | None = None,
    command: str = "analyze",
    cache_scope: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AnalysisRun:
    """Ask ``question`` from every perspective through ``setup``'s route; never raises for a
    provider's fault (a perspective that fails everywhere is a failed result).

    ``cache_ttl_ms`` of 0 turns the cache off (nothing is read or written). Answers cached with a
    ``cache_scope`` are reused only by runs with the same scope: ``rmgr compare`` gives each
    provider its own, so that one provider's answer is never shown as another's."""
    show = progress or Progress()
    policy = setup.policy
    plan = setup.plan
    started_at = clock()
    deadline = started_at + plan.limits.deadline_s
    ledger = Ledger(plan.limits.max_usd)
    limiter = anyio.CapacityLimiter(policy.analysis.max_concurrency)
    provider_limits = ProviderLimits()
    run = run_id or uuid.uuid4().hex
    circuits = StoreCircuits(store)
    quotas = StoreQuotas(store)
    results: dict[str, PerspectiveResult] = {}
    attempts: list[AttemptRecord] = []
    timestamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    class _Recorder(Observer):
        def __init__(self, inner: Observer | None) -> None:
            self.inner = inner or Observer()

        def attempt_started(self, action: Any) -> None:
            self.inner.attempt_started(action)

        def attempt_recorded(self, record: AttemptRecord) -> None:
            attempts.append(record)
            store.record_attempts(run, command, [record])
            self.inner.attempt_recorded(record)

        def failed_over(self, notice: Any) -> None:
            self.inner.failed_over(notice)

        def skipped(self, notice: Any) -> None:
            self.inner.skipped(notice)

        def backing_off(self, notice: Any, seconds: float) -> None:
            self.inner.backing_off(notice, seconds)

    caching = use_cache and cache_ttl_ms > 0

    async def ask(p: Perspective) -> None:
        key = cache_key(question, p) + (f"@{cache_scope}" if cache_scope else "")
        if caching:
            payload = store.cache_get(key, int(time.time() * 1000), cache_ttl_ms)
            if payload is not None:
                cached = msgspec.json.decode(payload, type=_CachedAnswer)
                finish(
                    answered_result(
                        p,
                        cached.text,
                        provider=cached.provider,
                        model=cached.model,
                        usage=Usage(),
                        cost_usd=0.0,
                        latency_ms=0.0,
                        cached=True,
                    )
                )
                return
        async with limiter:
            show.started(p)
            left = deadline - clock()
            if left <= 0:
                finish(failed_result(p, kind="deadline", message="the analysis's deadline was reached"))
                return
            perspective_plan = msgspec.structs.replace(
                plan, limits=msgspec.structs.replace(plan.limits, deadline_s=left)
            )
            request = perspective_request(p, question, max_tokens=max_tokens, temperature=temperature)
            outcome = await route(
                perspective_plan,
                request,
                client=client,
                keys=lambda spec: api_key(env, spec.key_env),
                observer=_Recorder(show.observer(p)),
                circuits=circuits,
                clock=clock,
                ledger=ledger,
                limits=provider_limits,
                quotas=quotas,
            )
        if outcome.completion is not None and outcome.provider is not None:
            c = outcome.completion
            result = answered_result(
                p,
                c.content,
                provider=outcome.provider,
                model=c.model,
                usage=c.usage,
                cost_usd=outcome.cost_usd,
                latency_ms=sum(a.latency_ms for a in outcome.attempts if a.outcome == "ok"),
            )
            if caching:
                payload = msgspec.json.encode(
                    _CachedAnswer(text=c.content, provider=outcome.provider, model=c.model)
                )
                store.cache_put(key, p.id, payload, int(time.time() * 1000))
        else:
            error = outcome.error
            last = outcome.attempts[-1] if outcome.attempts else None
            result = failed_result(
                p,
                kind=error.kind.value if error else "cancelled",
                message=error.message if error else "no answer",
                provider=last.provider if last else None,
                model=last.model if last else None,
                cost_usd=outcome.cost_usd,
            )
        finish(result)

    def finish(result: PerspectiveResult) -> None:
        results[result.id] = result
        show.finished(result, len(results), len(perspectives))

    async with anyio.create_task_group() as tg:
        for p in perspectives:
            tg.start_soon(ask, p)
    ordered = tuple(results[p.id] for p in perspectives)
    status = analysis_status(ordered, policy.analysis.min_perspectives)
    return AnalysisRun(
        question=question,
        results=ordered,
        attempts=tuple(attempts),
        status=status,
        overall=overall_confidence([r.confidence for r in ordered]),
        summary=summarize(ordered),
        execution_ms=(clock() - started_at) * 1000.0,
        timestamp=timestamp,
        cost_usd=sum((a.cost_usd for a in attempts), 0.0),
    )
