"""The result of an analysis: one value per perspective, the run's status, a summary, and the
JSON and Markdown forms of ``rmgr analyze`` (DESIGN §3).

The shell asks each perspective and turns each outcome into a :class:`PerspectiveResult`, with
:func:`answered_result` (it parses the answer and flags what is missing) or :func:`failed_result`.
Everything after that is here and pure: :func:`analysis_status` and :func:`exit_code` decide what
the run counts as, :func:`summarize` writes the summary, :func:`analysis_json` and
:func:`render_markdown` the two documents.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from typing import Any, Literal

from rmcore.attempts import AttemptRecord
from rmcore.base import Base
from rmcore.completion import Usage
from rmcore.confidence import overall_confidence, parse_answer
from rmcore.perspectives import Perspective
from rmcore.results import attempt_json

__all__ = [
    "FAR_FROM_OTHERS",
    "FLAG_NO_CONFIDENCE",
    "FLAG_UNSTRUCTURED",
    "PerspectiveAnswer",
    "PerspectiveResult",
    "Stance",
    "Status",
    "analysis_json",
    "analysis_status",
    "answered_result",
    "exit_code",
    "failed_result",
    "one_line",
    "perspective_answer",
    "render_markdown",
    "stance",
    "summarize",
]

Status = Literal["ok", "partial", "failed"]
Stance = Literal["for", "against"]

FLAG_NO_CONFIDENCE = "no_confidence"
"""The answer stated no confidence on the [0, 1] scale: ``confidence`` is ``None``, not invented."""
FLAG_UNSTRUCTURED = "unstructured"
"""The answer was not the JSON object the prompt asked for; its parts were read from the text."""

FAR_FROM_OTHERS = 0.25
"""A confidence this far (or farther) from the median of the other perspectives' is a disagreement."""


class PerspectiveAnswer(Base, frozen=True):
    """One provider's answer to a perspective that several providers answered (a ``compare``
    route): read as the perspective's own answer is, with what that provider's attempts cost."""

    provider: str
    model: str
    analysis: str
    recommendation: str | None = None
    confidence: float | None = None
    reasoning: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class PerspectiveResult(Base, frozen=True):
    """How one perspective ended: its answer (read by :func:`rmcore.confidence.parse_answer`) and
    what it took, or why it failed.

    ``perspective`` is the display name. ``error_kind`` is ``None`` for an answered perspective and
    an ``ErrorKind`` value for one that failed on every route. ``provider`` and ``model`` are the
    ones that answered (for a failure, the last one tried, when any was). ``cost_usd`` and the
    tokens are what this perspective cost in this run, every attempt included (zero when served
    from the cache). ``flags`` hold the ``FLAG_*`` values that apply. ``answers`` holds every
    provider's answer when several answered (a ``compare`` route; the first is the one above),
    and is empty otherwise.
    """

    id: str
    perspective: str
    analysis: str = ""
    recommendation: str | None = None
    confidence: float | None = None
    reasoning: str | None = None
    provider: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False
    error_kind: str | None = None
    error_message: str | None = None
    flags: tuple[str, ...] = ()
    answers: tuple[PerspectiveAnswer, ...] = ()

    @property
    def answered(self) -> bool:
        """Whether the perspective produced an answer (with or without a confidence)."""
        return self.error_kind is None


def answered_result(
    p: Perspective,
    text: str,
    *,
    provider: str,
    model: str,
    usage: Usage,
    cost_usd: float,
    latency_ms: float,
    cached: bool = False,
    answers: Sequence[PerspectiveAnswer] = (),
) -> PerspectiveResult:
    """The result of a perspective that answered ``text``: parsed, with its flags set;
    ``answers``, every provider's when several answered."""
    parsed = parse_answer(text)
    flags: list[str] = []
    if parsed.confidence is None:
        flags.append(FLAG_NO_CONFIDENCE)
    if not parsed.structured:
        flags.append(FLAG_UNSTRUCTURED)
    return PerspectiveResult(
        id=p.id,
        perspective=p.title,
        analysis=parsed.analysis,
        recommendation=parsed.recommendation,
        confidence=parsed.confidence,
        reasoning=parsed.reasoning,
        provider=provider,
        model=model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=cost_usd,
        latency_ms=latency_ms,
        cached=cached,
        flags=tuple(flags),
        answers=tuple(answers) if len(answers) > 1 else (),
    )


def perspective_answer(
    text: str, *, provider: str, model: str, usage: Usage, cost_usd: float
) -> PerspectiveAnswer:
    """One provider's answer to a perspective, parsed as a perspective's answer is."""
    parsed = parse_answer(text)
    return PerspectiveAnswer(
        provider=provider,
        model=model,
        analysis=parsed.analysis,
        recommendation=parsed.recommendation,
        confidence=parsed.confidence,
        reasoning=parsed.reasoning,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=cost_usd,
    )


def failed_result(
    p: Perspective,
    *,
    kind: str,
    message: str,
    provider: str | None = None,
    model: str | None = None,
    usage: Usage | None = None,
    cost_usd: float = 0.0,
    latency_ms: float = 0.0,
) -> PerspectiveResult:
    """The result of a perspective that failed everywhere: ``kind`` is the ``ErrorKind`` value
    that ended it; what its failed attempts cost is still reported."""
    spent = usage or Usage()
    return PerspectiveResult(
        id=p.id,
        perspective=p.title,
        provider=provider,
        model=model,
        input_tokens=spent.input_tokens,
        output_tokens=spent.output_tokens,
        cost_usd=cost_usd,
        latency_ms=latency_ms,
        error_kind=kind,
        error_message=message,
    )


def analysis_status(results: Sequence[PerspectiveResult], min_perspectives: int) -> Status:
    """``"failed"`` when fewer than ``min_perspectives`` perspectives answered (an analysis of
    nothing, or of too little to count); otherwise ``"ok"`` when every perspective answered and
    ``"partial"`` when some failed. An answer without a stated confidence counts as answered."""
    answered = sum(1 for r in results if r.answered)
    if answered < min_perspectives or answered == 0:
        return "failed"
    return "ok" if answered == len(results) else "partial"


def exit_code(status: Status) -> int:
    """The process exit code of DESIGN §3 for an analysis: 0 ok, 3 partial, 1 failed."""
    return {"ok": 0, "partial": 3, "failed": 1}[status]


# --- summary ------------------------------------------------------------------------------------

_AGAINST = re.compile(
    r"""^\W*(?:
        no(?![\w-]) | not(?![\w-]) | don['’]?t\b | do\s+not\b | never\b
      | avoid | reject | declin | stop\b | abandon | against\b
      | hold\s+off | defer | postpone | delay | wait\b | reconsider
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_FOR = re.compile(
    r"""^\W*(?:
        yes\b | proceed | go\s+ahead | go\s+for\b | approve | adopt | accept
      | move\s+forward | do\s+it\b | implement | invest\b | launch | ship\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def stance(recommendation: str | None) -> Stance | None:
    """Whether a recommendation's opening words say go ahead (``"for"``: "Yes", "Proceed",
    "Proceed only if ...", "Adopt", "Implement", ...) or not (``"against"``: "No", "Do not",
    "Avoid", "Defer", "Wait", ...); ``None`` when they say neither.

    Only the opening words are read: the prompt asks each perspective to start its recommendation
    with a verdict. This is deliberately a small keyword rule, not an interpretation: a
    recommendation that starts otherwise ("Use PostgreSQL") has no stance and is left out of the
    agreement count rather than guessed at.
    """
    if not recommendation:
        return None
    if _AGAINST.match(recommendation):
        return "against"
    if _FOR.match(recommendation):
        return "for"
    return None


def one_line(text: str, limit: int = 100) -> str:
    """The first sentence of ``text``'s first non-empty line, Markdown list and heading marks and
    a leading ``Findings:`` label removed, at most ``limit`` characters (cut with "…")."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^(?:[#>*\-+]+\s*|\d+[.)]\s+)+", "", line).replace("**", "").strip()
    line = re.sub(r"^(?:findings|analysis|summary)\s*:\s*", "", line, flags=re.IGNORECASE)
    sentence = re.match(r".*?[.!?](?=\s|$)", line)
    if sentence:
        line = sentence.group(0)
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _names(results: Sequence[PerspectiveResult]) -> str:
    return ", ".join(r.perspective for r in results)


def summarize(results: Sequence[PerspectiveResult]) -> str:
    """A short plain-text summary: one line per perspective, then agreements and disagreements.

    Each perspective's line gives its confidence and its recommendation (or, without one, the
    first sentence of its findings); a failed perspective gives its error.

    Agreement and disagreement are judged on two things only, both stated as what they are:

    - *verdicts*: the :func:`stance` of each recommendation (go ahead or not, by its opening
      words). When two or more perspectives have one, the majority is reported as the agreement
      and those that go against it as the disagreement; a tie is reported as a split.
    - *confidence*: with two or more known confidences, their range and median. With three or
      more, a perspective whose confidence is :data:`FAR_FROM_OTHERS` or more from the median of
      all of them is named as a disagreement (far more or far less sure than the rest). The median
      is used because one outlier cannot move it.

    Perspectives that stated no confidence are listed, so a missing number is never mistaken for
    agreement.
    """
    answered = [r for r in results if r.answered]
    lines = [f"{len(answered)} of {len(results)} perspectives answered."]
    for r in results:
        if not r.answered:
            error = one_line(r.error_message or "", 120)
            lines.append(f"- {r.perspective}: failed ({r.error_kind}{': ' + error if error else ''})")
            continue
        confidence = f"{r.confidence:.2f}" if r.confidence is not None else "confidence not stated"
        gist = one_line(r.recommendation or r.analysis, 120) or "(empty answer)"
        lines.append(f"- {r.perspective} ({confidence}): {gist}")
    agreement, disagreements = _verdicts(answered)
    known = [(r, r.confidence) for r in answered if r.confidence is not None]
    if agreement:
        lines.append(f"Agreement: {agreement}")
    if len(known) >= 2:
        values = [c for _, c in known]
        median = statistics.median(values)
        lines.append(f"Confidence: from {min(values):.2f} to {max(values):.2f}, median {median:.2f}.")
        if len(known) >= 3:
            for r, c in known:
                if abs(c - median) >= FAR_FROM_OTHERS:
                    direction = "more" if c > median else "less"
                    disagreements.append(
                        f"{r.perspective} is far {direction} confident than the rest ({c:.2f} against a"
                        f" median of {median:.2f})."
                    )
    if disagreements:
        lines.append("Disagreement: " + " ".join(disagreements))
    unstated = [r for r in answered if r.confidence is None]
    if unstated:
        lines.append(f"No confidence stated: {_names(unstated)}.")
    return "\n".join(lines)


def _say(group: Sequence[PerspectiveResult]) -> str:
    return f"{_names(group)} {'says' if len(group) == 1 else 'say'}"


def _verdicts(answered: Sequence[PerspectiveResult]) -> tuple[str | None, list[str]]:
    """The verdict agreement (or ``None``) and the verdict disagreements, by :func:`stance`."""
    pro = [r for r in answered if stance(r.recommendation) == "for"]
    con = [r for r in answered if stance(r.recommendation) == "against"]
    counted = len(pro) + len(con)
    if counted < 2:
        return None, []
    if len(pro) == len(con):
        return None, [f"verdicts are split: {_say(pro)} go ahead; {_say(con)} do not."]
    majority, minority = (pro, con) if len(pro) > len(con) else (con, pro)
    verdict = "go ahead" if majority is pro else "do not go ahead"
    agreement = (
        f"{len(majority)} of {counted} perspectives with a clear verdict say {verdict} ({_names(majority)})."
    )
    if not minority:
        return agreement, []
    return agreement, [f"{_say(minority)} {'do not' if minority is con else 'go ahead'}."]


# --- JSON ---------------------------------------------------------------------------------------


def _answer_json(a: PerspectiveAnswer) -> dict[str, Any]:
    return {
        "provider": a.provider,
        "model": a.model,
        "analysis": a.analysis,
        "recommendation": a.recommendation,
        "confidence": a.confidence,
        "reasoning": a.reasoning,
        "usage": {"inputTokens": a.input_tokens, "outputTokens": a.output_tokens},
        "costUsd": a.cost_usd,
    }


def _perspective_json(r: PerspectiveResult) -> dict[str, Any]:
    extra = {"answers": [_answer_json(a) for a in r.answers]} if r.answers else {}
    return {
        "id": r.id,
        "perspective": r.perspective,
        "analysis": r.analysis if r.answered else None,
        "recommendation": r.recommendation,
        "confidence": r.confidence,
        "reasoning": r.reasoning,
        "flags": list(r.flags),
        "metadata": {
            "provider": r.provider,
            "model": r.model,
            "usage": {"inputTokens": r.input_tokens, "outputTokens": r.output_tokens},
            "costUsd": r.cost_usd,
            "latencyMs": round(r.latency_ms, 3),
            "cached": r.cached,
        },
        "error": None if r.answered else {"kind": r.error_kind, "message": r.error_message},
        **extra,
    }


def analysis_json(
    question: str,
    results: Sequence[PerspectiveResult],
    attempts: Sequence[AttemptRecord],
    *,
    execution_ms: float,
    timestamp: str,
    status: Status,
) -> dict[str, Any]:
    """``rmgr analyze --format json`` (DESIGN §3): ``{question, status, perspectives, summary,
    overallConfidence, executionTime, timestamp, usage, attempts}``.

    Each perspective is ``{id, perspective, analysis, confidence, reasoning, metadata: {provider,
    model, usage: {inputTokens, outputTokens}, costUsd, latencyMs, cached}, error}``, plus
    ``recommendation`` and ``flags``; ``analysis`` is null and ``error`` is ``{kind, message}`` for
    a failed one. A perspective several providers answered (a ``compare`` route) also has
    ``answers: [{provider, model, analysis, recommendation, confidence, reasoning, usage,
    costUsd}]``. ``overallConfidence`` is :func:`rmcore.confidence.overall_confidence` over the
    known confidences (null when there is none). ``executionTime`` is in milliseconds;
    ``timestamp`` is given (ISO 8601, the shell's clock). The top-level ``usage`` is the sum over
    ``attempts``, every request this run sent, failed and cancelled ones included; answers served
    from the cache cost nothing and have no attempt. ``providers`` lists the providers that
    answered, in order of first appearance.
    """
    input_tokens = sum(a.usage.input_tokens for a in attempts)
    output_tokens = sum(a.usage.output_tokens for a in attempts)
    providers = list(dict.fromkeys(r.provider for r in results if r.answered and r.provider))
    return {
        "question": question,
        "status": status,
        "perspectives": [_perspective_json(r) for r in results],
        "summary": summarize(results),
        "overallConfidence": overall_confidence([r.confidence for r in results if r.answered]),
        "executionTime": round(execution_ms, 3),
        "timestamp": timestamp,
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "costUsd": sum(a.cost_usd for a in attempts),
        },
        "providers": providers,
        "attempts": [attempt_json(a) for a in attempts],
    }


# --- Markdown -----------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """``text`` made safe for one Markdown table cell: on one line, pipes escaped."""
    return " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|")


def _duration(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _confidence_text(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "—"


def _markdown_blocks(summary: str) -> list[str]:
    """The plain-text summary as Markdown: bullet lines kept together as one list, every other line
    its own paragraph (a line right after a list item would otherwise be folded into that item)."""
    out: list[str] = []
    for line in summary.strip().splitlines():
        bullet = line.startswith("- ")
        if out and not (bullet and out[-1].startswith("- ")):
            out.append("")
        out.append(line)
    return out


def render_markdown(
    question: str,
    results: Sequence[PerspectiveResult],
    *,
    status: Status,
    overall: float | None,
    summary: str,
    execution_ms: float,
    cost_usd: float,
    synthesis: str = "",
) -> str:
    """``rmgr analyze --format markdown``: a document to paste into a pull request or a note.

    A heading with the question quoted, the status, overall confidence, time and cost; the
    ``synthesis`` section when given (Markdown, made by the shell); a table (perspective |
    confidence | provider | one-line finding); the keyword summary when no synthesis decided
    (``summary`` empty leaves it out); then each perspective in full. Table cells are kept on one
    line with ``|`` escaped.
    """
    out = ["# Multi-perspective analysis", ""]
    out += [f"> {line}" if line.strip() else ">" for line in question.strip().splitlines()]
    out += [
        "",
        f"**Status:** {status} · **Overall confidence:** {_confidence_text(overall)} · "
        f"**Time:** {_duration(execution_ms)} · **Cost:** ${cost_usd:.4f}",
        "",
        *([synthesis.rstrip("\n"), ""] if synthesis else []),
        "| Perspective | Confidence | Provider | Finding |",
        "|---|---|---|---|",
    ]
    for r in results:
        if r.answered:
            provider = f"{r.provider} ({r.model})" if r.provider and r.model else (r.provider or "—")
            if r.cached:
                provider += ", cached"
            finding = one_line(r.analysis)
        else:
            provider = r.provider or "—"
            finding = f"failed: {r.error_kind}"
        cells = [_cell(r.perspective), _confidence_text(r.confidence), _cell(provider), _cell(finding)]
        out.append("| " + " | ".join(cells) + " |")
    if summary:
        out += ["", "## Summary", "", *_markdown_blocks(summary)]
    for r in results:
        out += ["", f"## {r.perspective}", ""]
        if not r.answered:
            out.append(f"**Failed** ({r.error_kind}): {r.error_message or 'no message'}")
            continue
        facts = [f"**Confidence:** {_confidence_text(r.confidence)}"]
        if r.provider:
            facts.append(f"{r.provider} / {r.model}" if r.model else r.provider)
        facts.append(_duration(r.latency_ms))
        facts.append(f"${r.cost_usd:.4f}")
        if r.cached:
            facts.append("cached")
        out += [" · ".join(facts), "", r.analysis.strip() or "_(empty answer)_"]
        for n, a in enumerate(r.answers[1:], start=2):
            who = f"{a.provider} / {a.model}"
            head = f"**Answer {n}** · {who} · **Confidence:** {_confidence_text(a.confidence)}"
            out += ["", head, "", a.analysis.strip() or "_(empty answer)_"]
        # An unstructured answer is shown whole above: its recommendation and reasoning are in it.
        if FLAG_UNSTRUCTURED not in r.flags:
            if r.recommendation:
                out += ["", f"**Recommendation:** {r.recommendation}"]
            if r.reasoning:
                out += ["", f"**Reasoning:** {r.reasoning}"]
        if FLAG_NO_CONFIDENCE in r.flags:
            out += ["", "_No confidence was stated; it is not counted in the overall confidence._"]
    return "\n".join(out) + "\n"
