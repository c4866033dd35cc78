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
from returns.result import Failure, Success

from rmcli.config import RouteSetup
from rmcli.hooks import Hooks, fan_out
from rmcli.runner import Routing, route
from rmcli.state import Cache
from rmcore.attempts import AttemptRecord
from rmcore.budget import Ledger
from rmcore.completion import Usage
from rmcore.confidence import overall_confidence
from rmcore.events import RunOutcome
from rmcore.perspectives import Perspective, cache_key, perspective_request
from rmcore.plan import leaves
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
from rmcore.requests import ChatRequest
from rmcore.synthesis import (
    SOURCE_ID,
    Synthesis,
    affordable_max_tokens,
    parse_synthesis,
    synthesis_answers,
    synthesis_cache_key,
    synthesis_json,
    synthesis_request,
)

__all__ = ["AnalysisRun", "SynthesisResult", "run_analysis"]


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
    synthesis: SynthesisResult | None = None
    """The chair's decision over the perspectives; None when it was off or nothing answered."""

    def to_json(self) -> dict[str, Any]:
        """The DESIGN §3 JSON object of ``rmgr analyze --format json``: with ``synthesis`` (null
        when it was off) and ``costUsd``, every attempt's cost, the synthesis's included."""
        document = analysis_json(
            self.question,
            self.results,
            self.attempts,
            execution_ms=self.execution_ms,
            timestamp=self.timestamp,
            status=self.status,
        )
        document["synthesis"] = None if self.synthesis is None else self.synthesis.to_json()
        document["costUsd"] = self.cost_usd
        return document


class SynthesisResult(msgspec.Struct, frozen=True):
    """How the synthesis ended: the chair's decision, or why there is none (``error_kind`` and
    ``error_message``), and what it took (zero when served from the cache)."""

    synthesis: Synthesis | None = None
    provider: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False
    error_kind: str | None = None
    error_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{decision, recommendation, confidence, consensus, conflicts, blindSpots, conditions,
        provider, model, usage, costUsd, latencyMs, cached, error}`` (the decision's fields null
        when it failed; ``error`` ``{kind, message}`` then, else null)."""
        decided: dict[str, Any] = (
            synthesis_json(self.synthesis) if self.synthesis is not None else dict.fromkeys(_DECISION_KEYS)
        )
        return {
            **decided,
            "provider": self.provider,
            "model": self.model,
            "usage": {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens},
            "costUsd": self.cost_usd,
            "latencyMs": round(self.latency_ms, 3),
            "cached": self.cached,
            "error": None
            if self.error_kind is None
            else {"kind": self.error_kind, "message": self.error_message},
        }


_DECISION_KEYS = (
    "decision", "recommendation", "confidence", "consensus", "conflicts", "blindSpots", "conditions",
)


class _CachedSynthesis(msgspec.Struct, frozen=True):
    """A cached synthesis: the chair's reply and who wrote it (read again on use)."""

    text: str
    provider: str
    model: str


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
    synthesize: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> AnalysisRun:
    """Ask ``question`` from every perspective, each through its route (``[analysis.routes]``,
    else the default), then the chair (``[analysis] synthesis_route``) for a decision over the
    answers, unless ``synthesize`` is False or the policy turns it off; never raises for a
    provider's fault (a perspective that fails everywhere is a failed result, a synthesis that
    fails makes the analysis ``partial``).

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
            own = setup.for_perspective(p.id).plan
            perspective_plan = msgspec.structs.replace(
                own, limits=msgspec.structs.replace(own.limits, deadline_s=left)
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
    chair = setup.for_synthesis() if synthesize else None
    synthesis: SynthesisResult | None = None
    if chair is not None and any(r.answered for r in ordered):
        request = synthesis_request(
            question, synthesis_answers(ordered), withhold=_names(setup), temperature=temperature
        )
        key = f"synthesis:{synthesis_cache_key(request)}" + (f"@{cache_scope}" if cache_scope else "")
        if hooks.synthesis_started is not None:
            hooks.synthesis_started()
        left = deadline - clock()
        synthesis = await _synthesize(request, chair, routed, ledger, left, (cache, key, cache_ttl_ms), clock)
        if synthesis.error_kind is not None and status == "ok":
            status = "partial"
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
        synthesis=synthesis,
    )


def _names(setup: RouteSetup) -> list[str]:
    """Every provider and model name of the policy: withheld from the chair's request."""
    return sorted({n for spec in setup.providers.values() for n in (spec.name, spec.model) if n})


async def _synthesize(
    request: ChatRequest,
    chair: RouteSetup,
    routed: Routing,
    ledger: Ledger,
    left_s: float,
    cached: tuple[Cache | None, str, int],
    clock: Callable[[], float],
) -> SynthesisResult:
    """The chair's decision: from the cache (``cached``: the cache, the key of these answers, the
    TTL) when a fresh one is there, else asked by the synthesis route, under what is left of the
    analysis's budget and deadline."""
    cache, key, ttl_ms = cached
    if cache is not None:
        payload = await cache.get(key, int(time.time() * 1000), ttl_ms)
        if payload is not None:
            kept = msgspec.json.decode(payload, type=_CachedSynthesis)
            match parse_synthesis(kept.text):
                case Success(decided):
                    served = SynthesisResult(provider=kept.provider, model=kept.model, cached=True)
                    return msgspec.structs.replace(served, synthesis=decided)
    if left_s <= 0:
        return SynthesisResult(error_kind="deadline", error_message="the analysis's deadline was reached")
    limits = msgspec.structs.replace(chair.plan.limits, deadline_s=left_s)
    plan = msgspec.structs.replace(chair.plan, limits=limits)
    tokens = affordable_max_tokens(request, (t.provider for t in leaves(plan)), ledger.left())
    request = msgspec.structs.replace(request, max_tokens=tokens)
    outcome = await route(plan, request, routed, clock=clock, ledger=ledger, perspective=SOURCE_ID)
    c = outcome.completion
    if c is None or outcome.provider is None:
        error = outcome.error
        return SynthesisResult(
            cost_usd=outcome.cost_usd,
            provider=outcome.attempts[-1].provider if outcome.attempts else None,
            error_kind=error.kind.value if error else "cancelled",
            error_message=error.message if error else "no answer",
        )
    spent = SynthesisResult(
        provider=outcome.provider,
        model=c.model,
        input_tokens=c.usage.input_tokens,
        output_tokens=c.usage.output_tokens,
        cost_usd=outcome.cost_usd,
        latency_ms=sum(a.latency_ms for a in outcome.attempts if a.outcome == "ok"),
    )
    match parse_synthesis(c.content):
        case Success(decided):
            if cache is not None:
                kept = _CachedSynthesis(text=c.content, provider=outcome.provider, model=c.model)
                await cache.put(key, SOURCE_ID, msgspec.json.encode(kept), int(time.time() * 1000))
            return msgspec.structs.replace(spent, synthesis=decided)
        case Failure(problem):
            kind, message = problem.kind.value, problem.message
            return msgspec.structs.replace(spent, error_kind=kind, error_message=message)
    raise AssertionError("unreachable")


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
