"""Results as the JSON objects of the contract (DESIGN §3): camelCase, as in the seed."""

from __future__ import annotations

from typing import Any

from rmcore.attempts import AttemptRecord
from rmcore.events import RunOutcome

__all__ = ["ask_json", "attempt_json"]


def attempt_json(record: AttemptRecord) -> dict[str, Any]:
    """One attempt: ``{provider, model, outcome, status, latencyMs, startedAtMs}`` plus its tokens,
    cost and, for a failure, the message."""
    return {
        "provider": record.provider,
        "model": record.model,
        "outcome": record.outcome,
        "status": record.status,
        "latencyMs": round(record.latency_ms, 3),
        "startedAtMs": record.started_at_ms,
        "inputTokens": record.usage.input_tokens,
        "outputTokens": record.usage.output_tokens,
        "usageEstimated": record.usage.estimated,
        "costUsd": record.cost_usd,
        "message": record.message,
    }


def ask_json(outcome: RunOutcome, latency_ms: float) -> dict[str, Any]:
    """``rmgr ask --json``: ``{content, toolCalls, finishReason, provider, model, usage, costUsd,
    latencyMs, fallbackUsed, attempts}``, plus ``error`` (``{kind, message}``, null on success),
    ``skipped`` targets and ``answers`` (every answer received: several for a ``compare`` route)."""
    completion = outcome.completion
    return {
        "content": completion.content if completion else None,
        "provider": outcome.provider,
        "model": outcome.model,
        "usage": {
            "inputTokens": completion.usage.input_tokens if completion else 0,
            "outputTokens": completion.usage.output_tokens if completion else 0,
        },
        "toolCalls": [
            {"id": call.id, "name": call.name, "arguments": call.arguments} for call in completion.tool_calls
        ]
        if completion
        else [],
        "finishReason": completion.finish_reason if completion else None,
        "costUsd": outcome.cost_usd,
        "latencyMs": round(latency_ms, 3),
        "fallbackUsed": outcome.fallback_used,
        "attempts": [attempt_json(a) for a in outcome.attempts],
        "skipped": [
            {"provider": s.provider, "reason": s.kind.value, "message": s.message} for s in outcome.skipped
        ],
        "answers": [
            {
                "provider": a.provider,
                "model": a.model,
                "content": a.completion.content,
                "usage": {
                    "inputTokens": a.completion.usage.input_tokens,
                    "outputTokens": a.completion.usage.output_tokens,
                },
            }
            for a in outcome.answers
        ],
        "error": (
            {"kind": outcome.error.kind.value, "message": outcome.error.message} if outcome.error else None
        ),
    }
