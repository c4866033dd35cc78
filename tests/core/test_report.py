"""An analysis's results: status and exit code, the summary, the JSON of DESIGN §3, Markdown."""

from __future__ import annotations

import json

import pytest

from rmcore.attempts import AttemptRecord
from rmcore.completion import Usage
from rmcore.perspectives import BUILTIN
from rmcore.report import (
    FLAG_NO_CONFIDENCE,
    FLAG_UNSTRUCTURED,
    PerspectiveResult,
    analysis_json,
    analysis_status,
    answered_result,
    exit_code,
    failed_result,
    one_line,
    perspective_answer,
    render_markdown,
    stance,
    summarize,
)


def answer(
    pid: str, confidence: float | None, recommendation: str = "Proceed.", *, cached: bool = False
) -> PerspectiveResult:
    body: dict[str, object] = {"findings": f"{pid} findings. More detail.", "recommendation": recommendation}
    if confidence is not None:
        body["confidence"] = confidence
    return answered_result(
        BUILTIN[pid],
        json.dumps(body),
        provider="glm-direct",
        model="glm-4.7",
        usage=Usage(input_tokens=100, output_tokens=50),
        cost_usd=0.0001,
        latency_ms=1500.0,
        cached=cached,
    )


def failure(pid: str) -> PerspectiveResult:
    return failed_result(
        BUILTIN[pid],
        kind="timeout",
        message="no answer within 30 s",
        provider="openai-direct",
        model="gpt-4-turbo",
        usage=Usage(input_tokens=100),
        cost_usd=0.001,
        latency_ms=30000.0,
    )


# --- building results ---------------------------------------------------------------------------


def test_answered_result_flags_a_missing_confidence() -> None:
    """An unstructured answer without a confidence is flagged for both, and keeps its usage and cost."""
    r = answered_result(
        BUILTIN["ux"],
        "It reads well.",
        provider="glm-direct",
        model="glm-4.7",
        usage=Usage(input_tokens=3, output_tokens=4),
        cost_usd=0.5,
        latency_ms=12.0,
    )
    assert r.confidence is None
    assert r.flags == (FLAG_NO_CONFIDENCE, FLAG_UNSTRUCTURED)
    assert (r.id, r.perspective, r.analysis) == ("ux", "User Experience", "It reads well.")
    assert (r.input_tokens, r.output_tokens, r.cost_usd) == (3, 4, 0.5)
    assert r.answered


def test_a_json_answer_with_confidence_has_no_flags() -> None:
    """A JSON answer with a confidence carries no flag."""
    r = answer("security", 0.8)
    assert r.flags == ()
    assert r.confidence == pytest.approx(0.8)
    assert r.recommendation == "Proceed."


def test_failed_result_keeps_its_error_and_cost() -> None:
    """A failed perspective keeps its error and what its attempts cost."""
    r = failure("marketing")
    assert not r.answered
    assert (r.error_kind, r.error_message, r.cost_usd, r.input_tokens) == (
        "timeout",
        "no answer within 30 s",
        0.001,
        100,
    )


# --- status and exit code -----------------------------------------------------------------------


def test_all_answered_is_ok_even_without_a_confidence() -> None:
    """When every perspective answered the analysis is ``ok``, exit 0, confidences or not."""
    results = [answer("security", 0.8), answer("ux", None)]
    assert analysis_status(results, 1) == "ok"
    assert exit_code("ok") == 0


def test_some_failed_is_partial_with_exit_3() -> None:
    """Some failures with enough answers is ``partial``, exit 3."""
    results = [answer("security", 0.8), failure("marketing")]
    assert analysis_status(results, 1) == "partial"
    assert exit_code("partial") == 3


def test_fewer_than_min_answered_is_failed_with_exit_1() -> None:
    """Fewer answers than ``min_perspectives`` is ``failed``, exit 1."""
    results = [answer("security", 0.8), failure("marketing"), failure("growth")]
    assert analysis_status(results, 2) == "failed"
    assert analysis_status(results, 1) == "partial"
    assert analysis_status([failure("growth")], 1) == "failed"
    assert analysis_status([], 1) == "failed"
    assert exit_code("failed") == 1


def test_min_above_the_number_asked_fails_even_when_all_answered() -> None:
    """A minimum above the number of perspectives asked fails even when all answered."""
    assert analysis_status([answer("security", 0.8)], 2) == "failed"


# --- summary ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recommendation", "expected"),
    [
        ("Proceed only if SSO is enforced.", "for"),
        ("Yes, adopt it.", "for"),
        ("**Go ahead** with a pilot.", "for"),
        ("Do not proceed.", "against"),
        ("Don't migrate yet.", "against"),
        ("No.", "against"),
        ("Defer until Q3.", "against"),
        ("Avoid the rewrite.", "against"),
        ("Use PostgreSQL.", None),
        ("Notably, proceed.", None),
        ("", None),
        (None, None),
    ],
)
def test_stance_reads_the_opening_words(recommendation: str | None, expected: str | None) -> None:
    """A recommendation's opening words decide for, against, or no clear verdict."""
    assert stance(recommendation) == expected


def test_summary_lines_agreement_and_disagreement() -> None:
    """The summary lists each perspective, then agreement, the confidence range and who disagrees or is far
    less confident."""
    results = [
        answer("security", 0.8, "Proceed only with SSO."),
        answer("architecture", 0.75, "Proceed."),
        answer("financial", 0.3, "Do not proceed: too costly."),
        answer("ux", None, "Use the existing design."),
        failure("marketing"),
    ]
    text = summarize(results).splitlines()
    assert text[0] == "4 of 5 perspectives answered."
    assert text[1] == "- Security (0.80): Proceed only with SSO."
    assert text[3] == "- Financial (0.30): Do not proceed: too costly."
    assert text[4] == "- User Experience (confidence not stated): Use the existing design."
    assert text[5] == "- Marketing: failed (timeout: no answer within 30 s)"
    assert (
        "Agreement: 2 of 3 perspectives with a clear verdict say go ahead (Security, Architecture)." in text
    )
    assert "Confidence: from 0.30 to 0.80, median 0.75." in text
    disagreement = next(line for line in text if line.startswith("Disagreement: "))
    assert "Financial says do not." in disagreement
    assert "Financial is far less confident than the rest (0.30 against a median of 0.75)." in disagreement
    assert "Security is far" not in disagreement
    assert text[-1] == "No confidence stated: User Experience."


def test_summary_of_a_split_and_of_close_confidences() -> None:
    """Split verdicts are a disagreement; close confidences are not called far apart."""
    text = summarize([answer("security", 0.7, "Proceed."), answer("growth", 0.72, "Do not.")])
    assert "Disagreement: verdicts are split: Security says go ahead; Growth says do not." in text
    assert "Agreement" not in text
    assert "far" not in text


def test_summary_of_unanimous_verdicts_has_no_disagreement() -> None:
    """Unanimous verdicts give agreement and no disagreement."""
    text = summarize([answer(pid, 0.8, "Proceed.") for pid in ("security", "ux", "growth")])
    assert "Agreement: 3 of 3 perspectives with a clear verdict say go ahead" in text
    assert "Disagreement" not in text


def test_one_line() -> None:
    """``one_line`` gives the first sentence without markdown or list markers, cut with an ellipsis."""
    assert one_line("\n## **Findings:** The API is slow. It times out.\nMore") == "The API is slow."
    assert one_line("- 1. point one") == "point one"
    assert one_line("x" * 200, 10) == "x" * 9 + "…"
    assert one_line("") == ""


# --- JSON (DESIGN §3) ---------------------------------------------------------------------------

PERSPECTIVE_KEYS = {"id", "perspective", "analysis", "confidence", "reasoning", "metadata", "error"}
METADATA_KEYS = {"provider", "model", "usage", "costUsd", "latencyMs", "cached"}
TOP_KEYS = {
    "question",
    "status",
    "perspectives",
    "summary",
    "overallConfidence",
    "executionTime",
    "timestamp",
    "usage",
    "attempts",
}


def attempts() -> list[AttemptRecord]:
    return [
        AttemptRecord(
            provider="openai-direct",
            model="gpt-4-turbo",
            outcome="timeout",
            latency_ms=30000.0,
            usage=Usage(input_tokens=100),
            cost_usd=0.001,
        ),
        AttemptRecord(
            provider="glm-direct",
            model="glm-4.7",
            outcome="ok",
            status=200,
            latency_ms=1500.0,
            started_at_ms=1_700_000_000_000,
            usage=Usage(input_tokens=100, output_tokens=50),
            cost_usd=0.0001,
        ),
    ]


def test_analysis_json_has_exactly_the_design_shape() -> None:
    """The analysis JSON has exactly the keys of the design, with usage totals, attempts and per-
    perspective metadata."""
    results = [answer("security", 0.8), answer("ux", 0.6, cached=True), failure("marketing")]
    doc = analysis_json(
        "Adopt SSO?",
        results,
        attempts(),
        execution_ms=31234.5678,
        timestamp="2025-01-01T00:00:00Z",
        status="partial",
    )
    assert set(doc) >= TOP_KEYS
    assert set(doc) - TOP_KEYS <= {"providers"}
    assert doc["question"] == "Adopt SSO?"
    assert doc["status"] == "partial"
    assert doc["executionTime"] == 31234.568
    assert doc["timestamp"] == "2025-01-01T00:00:00Z"
    assert doc["overallConfidence"] == pytest.approx(0.65)
    assert doc["usage"] == {"inputTokens": 200, "outputTokens": 50, "costUsd": pytest.approx(0.0011)}
    assert doc["providers"] == ["glm-direct"]
    assert [a["outcome"] for a in doc["attempts"]] == ["timeout", "ok"]
    assert {"provider", "model", "outcome", "status", "latencyMs", "startedAtMs"} <= set(doc["attempts"][0])
    assert doc["summary"] == summarize(results)

    for item in doc["perspectives"]:
        assert set(item) >= PERSPECTIVE_KEYS
        assert set(item) - PERSPECTIVE_KEYS <= {"recommendation", "flags"}
        assert set(item["metadata"]) == METADATA_KEYS
        assert set(item["metadata"]["usage"]) == {"inputTokens", "outputTokens"}

    security, ux, marketing = doc["perspectives"]
    assert security == {
        "id": "security",
        "perspective": "Security",
        "analysis": "security findings. More detail.",
        "recommendation": "Proceed.",
        "confidence": 0.8,
        "reasoning": None,
        "flags": [],
        "metadata": {
            "provider": "glm-direct",
            "model": "glm-4.7",
            "usage": {"inputTokens": 100, "outputTokens": 50},
            "costUsd": 0.0001,
            "latencyMs": 1500.0,
            "cached": False,
        },
        "error": None,
    }
    assert ux["metadata"]["cached"] is True
    assert marketing["analysis"] is None
    assert marketing["confidence"] is None
    assert marketing["error"] == {"kind": "timeout", "message": "no answer within 30 s"}
    json.dumps(doc)


def test_overall_is_null_when_no_confidence_is_known() -> None:
    """Without any known confidence the overall confidence is null."""
    doc = analysis_json(
        "q", [answer("ux", None), failure("growth")], [], execution_ms=1.0, timestamp="t", status="partial"
    )
    assert doc["overallConfidence"] is None
    assert doc["perspectives"][0]["flags"] == [FLAG_NO_CONFIDENCE]


# --- Markdown -----------------------------------------------------------------------------------


def test_markdown_table_and_sections() -> None:
    """The markdown report has a status line, a table with escaped pipes, a section per perspective and the
    summary."""
    results = [
        answered_result(
            BUILTIN["security"],
            '{"findings": "Tokens | keys leak.\\nSecond line.", "recommendation": "Rotate.",'
            ' "confidence": 0.8, "reasoning": "Seen before."}',
            provider="glm-direct",
            model="glm-4.7",
            usage=Usage(),
            cost_usd=0.0,
            latency_ms=800.0,
        ),
        answer("ux", None),
        failure("marketing"),
    ]
    summary = summarize(results)
    md = render_markdown(
        "Adopt | SSO?\nNow?",
        results,
        status="partial",
        overall=0.8,
        summary=summary,
        execution_ms=2500.0,
        cost_usd=0.0123,
    )
    lines = md.splitlines()
    assert lines[0] == "# Multi-perspective analysis"
    assert "> Adopt | SSO?" in lines and "> Now?" in lines
    assert "**Status:** partial · **Overall confidence:** 0.80 · **Time:** 2.5 s · **Cost:** $0.0123" in lines
    header = lines.index("| Perspective | Confidence | Provider | Finding |")
    assert lines[header + 1] == "|---|---|---|---|"
    assert lines[header + 2] == "| Security | 0.80 | glm-direct (glm-4.7) | Tokens \\| keys leak. |"
    assert lines[header + 3] == "| User Experience | — | glm-direct (glm-4.7) | ux findings. |"
    assert lines[header + 4] == "| Marketing | — | openai-direct | failed: timeout |"
    for row in lines[header : header + 5]:
        assert row.replace("\\|", "").count("|") == 5
    assert "## Security" in lines
    assert "**Recommendation:** Rotate." in lines
    assert "**Reasoning:** Seen before." in lines
    assert "**Failed** (timeout): no answer within 30 s" in lines
    assert "_No confidence was stated; it is not counted in the overall confidence._" in lines
    summary_at = lines.index("## Summary")
    unstated = lines.index("No confidence stated: User Experience.")
    assert summary_at < unstated
    assert lines[unstated - 1] == "", "a line after a list item must not be folded into it"
    assert md.endswith("\n")


def test_several_answers_are_kept_in_json_and_markdown_one_is_not_listed() -> None:
    """A perspective answered by several providers lists each answer (read like a perspective's,
    with its cost) in JSON and as its own markdown block; one answer alone adds no ``answers``."""
    texts = {"glm-direct": '{"findings": "A.", "confidence": 0.7}', "openai-direct": "Plain B."}
    answers = [
        perspective_answer(text, provider=name, model="m", usage=Usage(input_tokens=3), cost_usd=0.002)
        for name, text in texts.items()
    ]
    several = answered_result(
        BUILTIN["security"],
        texts["glm-direct"],
        provider="glm-direct",
        model="m",
        usage=Usage(),
        cost_usd=0.004,
        latency_ms=1.0,
        answers=answers,
    )
    alone = answered_result(
        BUILTIN["ux"], "x", provider="p", model="m", usage=Usage(), cost_usd=0, latency_ms=1,
        answers=answers[:1],
    )
    document = analysis_json("q", [several, alone], [], execution_ms=1, timestamp="t", status="ok")
    listed, single = document["perspectives"]
    assert [(a["provider"], a["confidence"], a["analysis"]) for a in listed["answers"]] == [
        ("glm-direct", 0.7, "A."),
        ("openai-direct", None, "Plain B."),
    ]
    assert listed["answers"][1]["costUsd"] == 0.002 and "answers" not in single
    md = render_markdown("q", [several], status="ok", overall=None, summary="", execution_ms=1, cost_usd=0)
    assert "**Answer 2** · openai-direct / m · **Confidence:** —" in md and "Plain B." in md
