"""``rmgr ask``: one completion, routed by the policy, streamed to the terminal."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Annotated

import anyio
import cyclopts

from rmcli.config import ConfigError, RouteSetup, load_route, route_names
from rmcli.environment import api_key, load_environment
from rmcli.notices import announce_backoff, announce_failed_over, announce_skipped
from rmcli.output import LiveText, emit_json, err, safe_text
from rmcli.runner import Observer, route
from rmcli.session import StoreCircuits, StoreQuotas, http_client, open_store
from rmcli.store import Store
from rmcore.attempts import AttemptRecord
from rmcore.engine import Backoff, FailedOver, StartAttempt, TargetSkipped
from rmcore.requests import DEFAULT_MAX_TOKENS, ChatRequest
from rmcore.results import ask_json
from rmcore.usage import observed_p95_s

__all__ = ["ask", "run_ask"]


class _Announcer(Observer):
    """Tells the person at the terminal what the routing does, the way the seed does (stderr)."""

    def __init__(self, store: Store, run_id: str, live: bool) -> None:
        self.store = store
        self.run_id = run_id
        self.live = live
        self.printed = False
        self._text = LiveText()

    def attempt_started(self, action: StartAttempt) -> None:
        if not action.exclusive:
            err(f"INFO: starting {action.provider.name} (attempt {action.attempt_no}) alongside the others")
        if self.printed:
            # The text streamed so far came from an attempt that failed: say so, start afresh.
            self.end_text()
            sys.stdout.write("\n")
            sys.stdout.flush()
            err("WARNING: the answer above was cut off and is discarded; a new answer follows")
            self.printed = False

    def failed_over(self, notice: FailedOver) -> None:
        announce_failed_over(notice)

    def backing_off(self, notice: Backoff, seconds: float) -> None:
        announce_backoff(notice, seconds)

    def skipped(self, notice: TargetSkipped) -> None:
        announce_skipped(notice)

    def attempt_recorded(self, record: AttemptRecord) -> None:
        if record.outcome == "cancelled":
            err(f"INFO: cancelled {record.provider}: {record.message}")
        self.store.record_attempts(self.run_id, "ask", [record])

    def text(self, delta: str) -> None:
        """Show a delta of the answer as it arrives (escapes and keys neutralised across deltas)."""
        if self.live:
            sys.stdout.write(self._text.feed(delta))
            sys.stdout.flush()
            self.printed = True

    def end_text(self) -> None:
        """The streamed text ended: show what was held back (a possible start of a key)."""
        sys.stdout.write(self._text.flush())


def ask(
    prompt: str,
    /,
    *,
    policy: Annotated[Path | None, cyclopts.Parameter(name=["--policy", "-p"])] = None,
    provider: str | None = None,
    fallback: str | None = None,
    system: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    json: bool = False,
) -> int:
    """Ask one question; the answer is routed by the policy and streamed as it arrives.

    Without --policy the route is AI_PROVIDER, then AI_FALLBACK_PROVIDER. Fail-overs and retries
    are announced on stderr; rmgr --verbose ask also traces every HTTP exchange and routing
    decision there (keys redacted). Text streamed to a terminal has its control characters shown
    escaped and keys redacted, even when split across chunks. Exit code 0 with an answer, 1 when
    every route failed (or the budget or deadline ran out, or a reply passed the 16 MiB limit),
    2 for bad input or configuration.

    Parameters
    ----------
    prompt
        The question or instruction.
    policy
        A TOML policy file: route, limits, retries, budget.
    provider
        Use this provider (overrides the policy's route, or AI_PROVIDER).
    fallback
        Fall back to this provider (overrides AI_FALLBACK_PROVIDER).
    system
        A system prompt.
    max_tokens
        The most tokens the answer may have (also bounds the worst-case cost).
    temperature
        Sampling temperature, 0 to 2; 0 is sent as 0. Unset: the provider's default.
    json
        Print one JSON object (content, provider, model, usage, costUsd, latencyMs, fallbackUsed,
        attempts) instead of streaming text.
    """
    if not prompt.strip():
        raise ConfigError("the prompt is empty")
    if max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1 (got {max_tokens})")
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise ConfigError(f"--temperature must be between 0 and 2 (got {temperature})")
    env = load_environment()
    setup = load_route(env, policy_path=policy, providers=route_names(env, provider, fallback))
    request = ChatRequest(prompt=prompt, system=system, max_tokens=max_tokens, temperature=temperature)
    with open_store(env) as store:
        if setup.uses_observed_latency():
            day_ago_ms = int(time.time() * 1000) - 24 * 3600 * 1000
            setup = setup.with_observed_latency(observed_p95_s(store.attempts_since(day_ago_ms)))
        return anyio.run(run_ask, env, setup, request, store, json)


async def run_ask(
    env: dict[str, str], setup: RouteSetup, request: ChatRequest, store: Store, as_json: bool
) -> int:
    """Route ``request`` by ``setup``, print the answer (streamed on a terminal) or the JSON
    result, announce fail-overs on stderr, record every attempt in ``store``; the exit code."""
    from rmcli.trace import current as current_trace

    live = not as_json and sys.stdout.isatty()
    announcer = _Announcer(store, uuid.uuid4().hex, live)
    tracer = current_trace()
    started = time.monotonic()
    async with http_client() as client:
        if tracer is not None:
            tracer.attach(client)
        outcome = await route(
            setup.plan,
            request,
            client=client,
            keys=lambda spec: api_key(env, spec.key_env),
            observer=announcer if tracer is None else tracer.observer(announcer),
            on_text=announcer.text,
            circuits=StoreCircuits(store),
            quotas=StoreQuotas(store),
        )
    latency_ms = (time.monotonic() - started) * 1000.0
    if as_json:
        emit_json(ask_json(outcome, latency_ms))
    elif len(outcome.answers) > 1:
        for answer in outcome.answers:  # a compare route: every answer, each under its provider
            sys.stdout.write(f"=== {answer.provider} ({answer.model}) ===\n")
            sys.stdout.write(safe_text(answer.completion.content) + "\n\n")
        sys.stdout.flush()
    elif outcome.completion is not None:
        if live:
            announcer.end_text()
        else:
            sys.stdout.write(safe_text(outcome.completion.content))
        sys.stdout.write("\n")
        sys.stdout.flush()
    if outcome.completion is not None:
        if outcome.completion.finish_reason in ("length", "max_tokens"):
            err(
                f"WARNING: the answer stopped at max_tokens ({request.max_tokens}); "
                "raise it for a longer answer"
            )
        err(
            f"INFO: answered by {outcome.provider} ({outcome.model}) in {latency_ms / 1000:.2f} s, "
            f"cost ${outcome.cost_usd:.6f}"
        )
        return 0
    assert outcome.error is not None
    if announcer.printed:
        announcer.end_text()
        sys.stdout.write("\n")
    err(f"ERROR: {outcome.error.kind.value}: {outcome.error.message}")
    return 1
