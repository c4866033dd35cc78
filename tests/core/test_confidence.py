"""Reading a perspective's answer, and the overall confidence rule."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.confidence import ParsedAnswer, overall_confidence, parse_answer, parse_confidence_text

# --- text forms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Confidence: 0.8", 0.8),
        ("**Confidence:** 0.85", 0.85),
        ("Confidence: 85%", 0.85),
        ("I answer with a confidence of 0.9/1.0 given what we know.", 0.9),
        ("Confidence level: 0.7", 0.7),
        ("confidence: .8", 0.8),
        ("Confidence = 80 %", 0.8),
        ("**Confidence**: 0.9", 0.9),
        ("Confidence: **0.6**", 0.6),
        ("Confidence score: 0.75.", 0.75),
        ("Confidence (0.0-1.0): 0.65", 0.65),
        ("Confidence: 8/10", 0.8),
        ("Confidence: 7 out of 10", 0.7),
        ("My confidence is about 0.72, because ...", 0.72),
        ("## Confidence\n\n0.55\n", 0.55),
        ("3. Confidence - 0.4", 0.4),
        ("Confidence: 1", 1.0),
        ("Confidence: 0", 0.0),
        ('{"confidence": 0.66, oops not json', 0.66),
    ],
)
def test_confidence_forms_models_write_parse_to_the_right_number(text: str, expected: float) -> None:
    """Every form of the issue (and a few more seen in the wild) gives the stated number."""
    assert parse_confidence_text(text) == pytest.approx(expected)
    parsed = parse_answer(f"Some findings.\n\n{text}")
    assert parsed.confidence == pytest.approx(expected)
    assert parsed.confidence_from == "text"


@pytest.mark.parametrize(
    "text",
    [
        "The team has low confidence in the vendor.",
        "Confidence: high",
        "Confidence: 8",
        "Confidence: 1.5",
        "Confidence: 120%",
        "Confidence: -0.3",
        "Confidence: 12x faster",
        "Confidence: 1.2.3",
        "Confidence: 5/0",
        "",
    ],
)
def test_no_confidence_on_the_scale_is_none_never_invented_or_clamped(text: str) -> None:
    """Nothing stated, or stated off the [0, 1] scale: ``None`` (the original invented 0.7)."""
    assert parse_confidence_text(text) is None
    parsed = parse_answer(text)
    assert parsed.confidence is None
    assert parsed.confidence_from is None


def test_the_last_statement_on_the_scale_wins() -> None:
    """A draft figure early on is overridden by the final one; an off-scale one is skipped."""
    text = "Initial confidence: 0.5.\n...\nFinal confidence: 0.8\nConfidence\n2. Reasoning: ..."
    assert parse_confidence_text(text) == pytest.approx(0.8)


@given(st.integers(min_value=0, max_value=100))
def test_any_percentage_is_divided_by_100(percent: int) -> None:
    """Any percentage from 0% to 100% is read as that fraction."""
    assert parse_confidence_text(f"Confidence: {percent}%") == pytest.approx(percent / 100)


@given(st.floats(min_value=0.0, max_value=1.0))
def test_any_two_decimal_value_round_trips(value: float) -> None:
    """Any confidence written with two decimals, even in bold, reads back as itself."""
    assert parse_confidence_text(f"**Confidence:** {value:.2f}") == pytest.approx(round(value, 2))


# --- JSON ---------------------------------------------------------------------------------------


def test_bare_json_object() -> None:
    """An answer that is a bare JSON object is read field by field, its confidence from the JSON."""
    parsed = parse_answer(
        '{"findings": "Tokens never expire.", "recommendation": "Proceed only with rotation.",'
        ' "confidence": 0.8, "reasoning": "Standard controls."}'
    )
    assert parsed == ParsedAnswer(
        analysis="Tokens never expire.",
        recommendation="Proceed only with rotation.",
        confidence=0.8,
        reasoning="Standard controls.",
        confidence_from="json",
        structured=True,
    )


def test_fenced_json_with_prose_around_it() -> None:
    """A ```json block inside prose is found and read, the prose is not taken as findings."""
    text = (
        "Sure! Here is my analysis.\n\n```json\n"
        '{"findings": "Cheap to run.", "recommendation": "Go ahead.", "confidence": 0.9,'
        ' "reasoning": "Costs are flat."}\n```\n\nLet me know if you need more. Confidence: 0.2'
    )
    parsed = parse_answer(text)
    assert parsed.analysis == "Cheap to run."
    assert parsed.recommendation == "Go ahead."
    assert parsed.confidence == pytest.approx(0.9)
    assert parsed.confidence_from == "json"


def test_json_embedded_in_prose_without_fences_and_with_raw_newlines() -> None:
    """Models put raw line breaks in JSON strings; the object is still read."""
    text = 'My answer: {"findings": "Line one.\nLine two.", "confidence": "85%"} -- done'
    parsed = parse_answer(text)
    assert parsed.analysis == "Line one.\nLine two."
    assert parsed.confidence == pytest.approx(0.85)
    assert parsed.structured


def test_json_findings_as_a_list_become_bullets() -> None:
    """Findings given as a JSON list become a bulleted analysis."""
    parsed = parse_answer('{"findings": ["one", "two"], "confidence": 0.5}')
    assert parsed.analysis == "- one\n- two"


@pytest.mark.parametrize("value", ["85", "1.5", "true", '"high"', "null", "-0.1"])
def test_json_confidence_off_the_scale_is_none(value: str) -> None:
    """A JSON confidence that is not a number from 0 to 1 is no confidence, though the answer stays
    structured."""
    parsed = parse_answer(f'{{"findings": "x", "confidence": {value}}}')
    assert parsed.confidence is None
    assert parsed.structured


def test_json_without_confidence_falls_back_to_the_text() -> None:
    """JSON without a confidence takes the one written in the text around it."""
    parsed = parse_answer('```json\n{"findings": "x", "recommendation": "No."}\n```\nConfidence: 0.35')
    assert parsed.confidence == pytest.approx(0.35)
    assert parsed.confidence_from == "text"
    assert parsed.recommendation == "No."


def test_unrelated_json_in_prose_is_not_taken_for_the_answer() -> None:
    """An example payload in the findings is not the answer: it has none of the expected keys."""
    text = 'Findings: the API returns {"id": 3}.\nRecommendation: Proceed.\nConfidence: 0.6'
    parsed = parse_answer(text)
    assert not parsed.structured
    assert parsed.analysis == text
    assert parsed.recommendation == "Proceed."
    assert parsed.confidence == pytest.approx(0.6)


def test_labelled_text_sections() -> None:
    """Without JSON, numbered and emphasised labels give the recommendation and the reasoning."""
    text = (
        "1. **Findings**: the migration is risky.\n"
        "2. **Recommendation**: Defer until Q3.\n"
        "3. **Confidence**: 70%\n"
        "4. **Reasoning**:\nThe team is small\nand busy.\n\nThanks."
    )
    parsed = parse_answer(text)
    assert parsed.recommendation == "Defer until Q3."
    assert parsed.reasoning == "The team is small and busy."
    assert parsed.confidence == pytest.approx(0.7)
    assert parsed.analysis == text.strip()


def test_heading_sections() -> None:
    """Markdown headings delimit the recommendation and the confidence."""
    parsed = parse_answer("## Recommendation\n\nProceed now.\n## Confidence\n0.9")
    assert parsed.recommendation == "Proceed now."
    assert parsed.confidence == pytest.approx(0.9)


def test_a_plain_answer_is_kept_whole() -> None:
    """An answer without structure is the analysis, trimmed, with no confidence invented."""
    parsed = parse_answer("  It depends on the budget.  ")
    assert parsed == ParsedAnswer(analysis="It depends on the budget.")


# --- overall confidence -------------------------------------------------------------------------

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
confidences = st.lists(unit, min_size=1, max_size=12)


@given(st.lists(st.one_of(unit, st.none()), max_size=12))
def test_overall_stays_in_the_unit_interval(values: list[float | None]) -> None:
    """The overall confidence of any known confidences lies between 0 and 1; of none, it is ``None``."""
    result = overall_confidence(values)
    if all(v is None for v in values):
        assert result is None
    else:
        assert result is not None
        assert 0.0 <= result <= 1.0


@given(unit, st.integers(min_value=1, max_value=12))
def test_overall_of_equal_confidences_is_that_confidence(c: float, n: int) -> None:
    """When every perspective has the same confidence, the overall is that confidence."""
    result = overall_confidence([c] * n)
    assert result is not None
    assert math.isclose(result, c, rel_tol=1e-12, abs_tol=1e-12)


@given(confidences, st.data())
def test_overall_never_rises_when_one_confidence_falls(values: list[float], data: st.DataObject) -> None:
    """Lowering one perspective's confidence never raises the overall."""
    index = data.draw(st.integers(min_value=0, max_value=len(values) - 1))
    lowered = data.draw(st.floats(min_value=0.0, max_value=values[index]))
    before = overall_confidence(values)
    after = overall_confidence([*values[:index], lowered, *values[index + 1 :]])
    assert before is not None and after is not None
    assert after <= before + 1e-12


@given(st.lists(st.one_of(unit, st.none()), max_size=12))
def test_none_values_are_ignored(values: list[float | None]) -> None:
    """Perspectives without a confidence do not weigh on the overall."""
    assert overall_confidence(values) == overall_confidence([v for v in values if v is not None])


def test_empty_is_none() -> None:
    """No confidence at all gives no overall confidence."""
    assert overall_confidence([]) is None
    assert overall_confidence([None, None]) is None


def test_disagreement_lowers_the_overall_below_the_mean() -> None:
    """0.4 and 1.0: mean 0.7, mean absolute deviation 0.3, overall 0.7 - 0.15."""
    assert overall_confidence([0.4, 1.0]) == pytest.approx(0.55)


def test_the_reference_rule_breaks_monotonicity_and_ours_does_not() -> None:
    """Why the reference's mean - std/2 was not kept: with eight perspectives, lowering the one
    outlier from 1.0 to 0.5 raises it. The rule used here falls in the same case."""

    def reference(values: list[float]) -> float:
        return min(1.0, max(0.0, statistics.fmean(values) - statistics.pstdev(values) / 2))

    high = [0.5] * 7 + [1.0]
    lowered = [0.5] * 8
    assert reference(lowered) > reference(high)
    ours_high, ours_lowered = overall_confidence(high), overall_confidence(lowered)
    assert ours_high is not None and ours_lowered is not None
    assert ours_lowered < ours_high


@given(st.text(alphabet=st.sampled_from(list('{}[]":,.%/ \n*#-0123456789abconfidencexyz')), max_size=200))
def test_parse_answer_never_raises_and_stays_on_the_scale(text: str) -> None:
    """Any text parses without raising, its confidence on the scale and its source given exactly when it
    has one."""
    parsed = parse_answer(text)
    assert parsed.confidence is None or 0.0 <= parsed.confidence <= 1.0
    assert (parsed.confidence is None) == (parsed.confidence_from is None)
