"""One question from several perspectives at once, each perspective routed by the policy.

Every perspective is its own request with its own route through the policy, so a provider that
dies half-way only moves the perspectives still waiting. They run at once, at most
``[analysis] max_concurrency`` at a time (and at most a provider's own limit on it), and share one
budget (a ``Ledger``) and one deadline. Answers come from the cache when a fresh one is there;
only whole answers are cached, so a re-run after a partial failure asks again only the
perspectives that failed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec

from rmcli.config import RouteSetup
from rmcli.hooks import Hooks, fan_out
from rmcli.runner import Routing, route
from rmcore.attempts import AttemptRecord
from rmcore.budget import Ledger
from rmcore.completion import Usage
from rmcore.confidence import overall_confidence
from rmcore.events import RunOutcome
from rmcore.perspectives import Perspective, cache_key, perspective_request
from rmcore.report import (
    PerspectiveAnswer,
    PerspectiveResult,
    Status,
    analysis_json,
    analysis_status,
    answered_result,
    failed_result,
    perspective_answer,
    summarize,
)

__all__ = ["AnalysisRun", "run_analysis"]


class _CachedAnswer(msgspec.Struct, frozen=True):
    """A cached answer: its text and who wrote it, and every other provider's when several
    answered (a ``compare`` route). What it took to write is not kept: an answer served from the
    cache costs nothing in the run that reuses it (entries written with token counts, by earlier
    versions, still decode: unknown fields are ignored)."""

    text: str
    provider: str
    model: str
    others: tuple[_CachedAnswer, ...] = ()


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
    routing: Routing,
    *,
    use_cache: bool = True,
    cache_ttl_ms: int = 3_600_000,
    max_tokens: int = 1024,
    temperature: float | None = None,
    cache_scope: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AnalysisRun:
    """Ask ``question`` from every perspective through ``setup``'s route; never raises for a
    provider's fault (a perspective that fails everywhere is a failed result).

    ``routing`` carries the client, the state (its cache is used when it has one), the hooks and
    the run id every perspective's attempts are recorded under. ``cache_ttl_ms`` of 0 turns the
    cache off. Answers cached with a ``cache_scope`` are reused only by runs with the same scope:
    ``rmgr compare`` gives each provider its own, so that one provider's answer is never shown as
    another's."""
    hooks = routing.hooks
    policy = setup.policy
    plan = setup.plan
    started_at = clock()
    deadline = started_at + plan.limits.deadline_s
    ledger = Ledger(plan.limits.max_usd)
    limiter = anyio.CapacityLimiter(policy.analysis.max_concurrency)
    results: dict[str, PerspectiveResult] = {}
    attempts: list[AttemptRecord] = []
    timestamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    collect = Hooks(attempt_ended=attempts.append)
    routed = dataclasses.replace(routing, hooks=fan_out(collect, hooks))
    cache = routing.state.cache if routing.state is not None and use_cache and cache_ttl_ms > 0 else None

    async def ask(p: Perspective) -> None:
        key = cache_key(question, p) + (f"@{cache_scope}" if cache_scope else "")
        if cache is not None:
            payload = await cache.get(key, int(time.time() * 1000), cache_ttl_ms)
            if payload is not None:
                cached = msgspec.json.decode(payload, type=_CachedAnswer)
                every = (cached, *cached.others)
                answers = [
                    perspective_answer(c.text, provider=c.provider, model=c.model, usage=Usage(), cost_usd=0)
                    for c in every
                ]
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
                        answers=answers,
                    )
                )
                return
        async with limiter:
            if hooks.perspective_started is not None:
                hooks.perspective_started(p)
            left = deadline - clock()
            if left <= 0:
                finish(failed_result(p, kind="deadline", message="the analysis's deadline was reached"))
                return
            perspective_plan = msgspec.structs.replace(
                plan, limits=msgspec.structs.replace(plan.limits, deadline_s=left)
            )
            request = perspective_request(p, question, max_tokens=max_tokens, temperature=temperature)
            outcome = await route(
                perspective_plan, request, routed, clock=clock, ledger=ledger, perspective=p.id
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
                answers=_answers(outcome),
            )
            if cache is not None:
                others = tuple(
                    _CachedAnswer(text=a.completion.content, provider=a.provider, model=a.model)
                    for a in outcome.answers[1:]
                )
                kept = _CachedAnswer(text=c.content, provider=outcome.provider, model=c.model, others=others)
                await cache.put(key, p.id, msgspec.json.encode(kept), int(time.time() * 1000))
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
        if hooks.perspective_finished is not None:
            hooks.perspective_finished(result, len(results), len(perspectives))

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


def _answers(outcome: RunOutcome) -> list[PerspectiveAnswer]:
    """Every provider's answer of a run that holds several (a ``compare`` route), each with what
    that provider's successful attempts cost."""
    if len(outcome.answers) < 2:
        return []
    paid: dict[str, float] = {}
    for t in outcome.attempts:
        if t.outcome == "ok":
            paid[t.provider] = paid.get(t.provider, 0.0) + t.cost_usd
    return [
        perspective_answer(
            a.completion.content,
            provider=a.provider,
            model=a.model,
            usage=a.completion.usage,
            cost_usd=paid.get(a.provider, 0.0),
        )
        for a in outcome.answers
    ]
