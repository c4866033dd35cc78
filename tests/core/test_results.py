"""Results as the JSON objects of the contract (``rmcore.results``, DESIGN §3): camelCase, as in
the seed, and the same keys whether the run answered or failed."""

from __future__ import annotations

import json

import msgspec

from rmcore.attempts import AttemptRecord
from rmcore.completion import Usage
from rmcore.errors import ErrorKind, ProviderError
from rmcore.events import ProviderAnswer, RunOutcome, SkippedTarget
from rmcore.requests import ToolCall
from rmcore.results import ask_json, attempt_json
from tests.core.helpers import completion

ATTEMPT_KEYS = {
    "provider",
    "model",
    "outcome",
    "status",
    "latencyMs",
    "startedAtMs",
    "inputTokens",
    "outputTokens",
    "usageEstimated",
    "costUsd",
    "message",
}
ASK_KEYS = {
    "content",
    "provider",
    "model",
    "usage",
    "toolCalls",
    "finishReason",
    "costUsd",
    "latencyMs",
    "fallbackUsed",
    "attempts",
    "skipped",
    "answers",
    "error",
}

FAILED_ATTEMPT = AttemptRecord(
    provider="a",
    model="a-model",
    outcome="server_error",
    status=500,
    latency_ms=12.34567,
    started_at_ms=1_700_000_000_000,
    usage=Usage(input_tokens=3, output_tokens=0, estimated=True),
    cost_usd=0.0001,
    message="HTTP 500: boom",
)
ANSWER = completion("Yes, migrate.", "b-model", input_tokens=10, output_tokens=20, finish_reason="stop")
ANSWERED = RunOutcome(
    completion=ANSWER,
    provider="b",
    model="b-model",
    error=None,
    attempts=(FAILED_ATTEMPT, AttemptRecord(provider="b", model="b-model", outcome="ok", status=200)),
    skipped=(SkippedTarget(provider="c", kind=ErrorKind.CIRCUIT_OPEN, message="open for 20 s"),),
    cost_usd=0.25,
    fallback_used=True,
    answers=(ProviderAnswer(provider="b", model="b-model", completion=ANSWER),),
)
FAILED = RunOutcome(
    completion=None,
    provider=None,
    model=None,
    error=ProviderError(kind=ErrorKind.DEADLINE, message="the run's 30 s deadline passed"),
    attempts=(FAILED_ATTEMPT,),
    skipped=(),
    cost_usd=0.0001,
    fallback_used=False,
)


def test_an_attempt_is_its_record_in_camel_case() -> None:
    """Every field of the record, under the contract's names, latency rounded to the microsecond."""
    assert attempt_json(FAILED_ATTEMPT) == {
        "provider": "a",
        "model": "a-model",
        "outcome": "server_error",
        "status": 500,
        "latencyMs": 12.346,
        "startedAtMs": 1_700_000_000_000,
        "inputTokens": 3,
        "outputTokens": 0,
        "usageEstimated": True,
        "costUsd": 0.0001,
        "message": "HTTP 500: boom",
    }


def test_an_answered_run_reports_the_answer_its_attempts_and_what_was_skipped() -> None:
    """A run that answered has its content, usage, cost, every attempt, the skipped targets,
    every answer, and ``error`` null."""
    doc = ask_json(ANSWERED, latency_ms=1234.56789)
    assert set(doc) == ASK_KEYS
    assert doc["content"] == "Yes, migrate."
    assert (doc["provider"], doc["model"], doc["finishReason"]) == ("b", "b-model", "stop")
    assert doc["usage"] == {"inputTokens": 10, "outputTokens": 20}
    assert (doc["costUsd"], doc["latencyMs"], doc["fallbackUsed"]) == (0.25, 1234.568, True)
    assert [a["outcome"] for a in doc["attempts"]] == ["server_error", "ok"]
    assert doc["skipped"] == [{"provider": "c", "reason": "circuit_open", "message": "open for 20 s"}]
    assert doc["answers"] == [
        {
            "provider": "b",
            "model": "b-model",
            "content": "Yes, migrate.",
            "usage": {"inputTokens": 10, "outputTokens": 20},
        }
    ]
    assert doc["error"] is None


def test_a_failed_run_has_the_same_keys_with_null_content_and_the_error() -> None:
    """A run without an answer keeps every key: no content, zero usage, and ``error`` as
    ``{kind, message}``; what its attempts cost is still reported."""
    doc = ask_json(FAILED, latency_ms=30_000.0)
    assert set(doc) == ASK_KEYS
    assert (doc["content"], doc["provider"], doc["model"], doc["finishReason"]) == (None, None, None, None)
    assert doc["usage"] == {"inputTokens": 0, "outputTokens": 0}
    assert doc["error"] == {"kind": "deadline", "message": "the run's 30 s deadline passed"}
    assert doc["costUsd"] == 0.0001
    assert doc["answers"] == []
    assert [set(a) for a in doc["attempts"]] == [ATTEMPT_KEYS]


def test_results_are_plain_json() -> None:
    """The objects hold only JSON values: they serialise and read back unchanged."""
    for outcome in (ANSWERED, FAILED):
        doc = ask_json(outcome, latency_ms=1.0)
        assert json.loads(json.dumps(doc)) == doc


def test_tool_calls_come_back_in_one_shape() -> None:
    """The tool calls the model asked for: ``[{id, name, arguments}]``, arguments the JSON text
    as produced; none is an empty list, for an answer and for a failure alike."""
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    asked = msgspec.structs.replace(ANSWER, content="", tool_calls=(call,), finish_reason="tool_calls")
    doc = ask_json(msgspec.structs.replace(ANSWERED, completion=asked), latency_ms=1.0)
    assert doc["toolCalls"] == [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]
    assert doc["finishReason"] == "tool_calls"
    assert ask_json(ANSWERED, latency_ms=1.0)["toolCalls"] == []
    assert ask_json(FAILED, latency_ms=1.0)["toolCalls"] == []
