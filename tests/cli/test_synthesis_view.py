"""How the synthesis opens a report: the text block, the Markdown section, the failed line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rmcli.output import add_secret
from rmcli.synthesis_view import (
    MIN_WIDTH,
    synthesis_failed_line,
    synthesis_failed_markdown,
    synthesis_heading,
    synthesis_markdown,
    synthesis_text_lines,
)
from rmcore.synthesis import DECISIONS, Synthesis

FULL = Synthesis(
    decision="conditional",
    recommendation="Move billing to event sourcing after a pilot on refunds.",
    confidence=0.823,
    consensus=("The audit trail is valuable.",),
    conflicts=("Simplicity objects to the operational cost; the audit need outweighs it.",),
    blind_spots=("Nobody priced the migration of historical invoices.",),
    conditions=("The pilot keeps refunds correct for a month.", "A rollback path exists."),
)


def test_heading_states_the_decision_and_the_confidence() -> None:
    """ "Decision: GO — confidence 0.82"; an unstated confidence reads "unknown"."""
    assert synthesis_heading(Synthesis(decision="go", confidence=0.823)) == "Decision: GO — confidence 0.82"
    assert synthesis_heading(Synthesis(decision="no-go")) == "Decision: NO-GO — confidence unknown"


def test_text_block_opens_with_the_heading_then_the_recommendation_then_each_section() -> None:
    """Heading, recommendation, then Consensus, Conflicts, Blind spots, Conditions with a bullet per point."""
    lines = synthesis_text_lines(FULL, 200)
    assert lines == [
        "Decision: CONDITIONAL — confidence 0.82",
        "Move billing to event sourcing after a pilot on refunds.",
        "",
        "Consensus",
        "  - The audit trail is valuable.",
        "",
        "Conflicts",
        "  - Simplicity objects to the operational cost; the audit need outweighs it.",
        "",
        "Blind spots",
        "  - Nobody priced the migration of historical invoices.",
        "",
        "Conditions",
        "  - The pilot keeps refunds correct for a month.",
        "  - A rollback path exists.",
    ]


def test_empty_sections_are_left_out() -> None:
    """A synthesis with no points shows the heading and recommendation alone."""
    lines = synthesis_text_lines(Synthesis(decision="go", recommendation="Do it."), 80)
    assert lines == ["Decision: GO — confidence unknown", "Do it."]


def test_text_wraps_to_the_width_with_a_hanging_indent() -> None:
    """Every line fits the width; a long point continues under its first word, not the bullet."""
    s = Synthesis(decision="go", recommendation="word " * 40, conditions=("point " * 30,))
    lines = synthesis_text_lines(s, 40)
    assert all(len(line) <= 40 for line in lines)
    bullets = lines[lines.index("Conditions") + 1 :]
    assert bullets[0].startswith("  - point")
    assert all(line.startswith("    point") for line in bullets[1:])


@given(
    st.text(max_size=300),
    st.lists(st.text(max_size=80), max_size=3),
    st.integers(min_value=1, max_value=120),
)
def test_no_line_is_ever_wider_than_the_width(text: str, points: list[str], width: int) -> None:
    """Whatever the model wrote, no line is wider than the width (or ``MIN_WIDTH`` below it)."""
    s = Synthesis(decision="unclear", recommendation=text, consensus=tuple(p for p in points if p.strip()))
    limit = max(width, MIN_WIDTH)
    assert all(len(line) <= limit for line in synthesis_text_lines(s, width))


def test_paragraphs_of_the_recommendation_are_kept_apart() -> None:
    """A blank line in the recommendation stays a blank line; single line breaks are joined."""
    s = Synthesis(decision="go", recommendation="First\nparagraph.\n\nSecond one.")
    assert synthesis_text_lines(s, 80)[1:] == ["First paragraph.", "", "Second one."]


def test_model_text_cannot_control_the_terminal_or_show_a_key() -> None:
    """Escape sequences in the recommendation or a point are shown, not obeyed; a key is redacted."""
    add_secret("sk-synthesis-view-0123456789")
    s = Synthesis(
        decision="go",
        recommendation="Go \x1b[2J now sk-synthesis-view-0123456789",
        consensus=("\x1b]0;title\x07 agreed",),
    )
    text = "\n".join(synthesis_text_lines(s, 80))
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J" in text
    assert "sk-synthesis-view" not in text and "<redacted>" in text


def test_failed_line_names_the_kind_and_message_and_the_fallback() -> None:
    """One line: kind, message (escaped, on one line), and that the keyword summary stands in."""
    line = synthesis_failed_line("server_error", "HTTP 500:\n\x1b[31mboom")
    assert line == (
        "Synthesis failed (server_error): HTTP 500: \\x1b[31mboom"
        " — the keyword summary below stands in for it"
    )
    assert "\n" not in line
    assert "(no message)" not in synthesis_failed_line("timeout", "")
    assert "timeout): no message" in synthesis_failed_line("timeout", "")


def test_markdown_section_has_the_decision_the_recommendation_and_the_lists() -> None:
    """A "## Synthesis" section: decision and confidence in bold, the recommendation, a
    "### Heading" and a list per non-empty section."""
    text = synthesis_markdown(FULL)
    assert text == (
        "## Synthesis\n\n"
        "**Decision:** CONDITIONAL · **Confidence:** 0.82\n\n"
        "Move billing to event sourcing after a pilot on refunds.\n\n"
        "### Consensus\n\n- The audit trail is valuable.\n\n"
        "### Conflicts\n\n- Simplicity objects to the operational cost; the audit need outweighs it.\n\n"
        "### Blind spots\n\n- Nobody priced the migration of historical invoices.\n\n"
        "### Conditions\n\n- The pilot keeps refunds correct for a month.\n- A rollback path exists.\n"
    )


def test_markdown_leaves_out_empty_sections() -> None:
    """No points: no "###" heading at all; an unstated confidence reads "unknown"."""
    text = synthesis_markdown(Synthesis(decision="unclear", recommendation="Not enough facts."))
    assert "###" not in text
    assert "**Confidence:** unknown" in text


def test_markdown_points_cannot_open_blocks_or_break_tables() -> None:
    """A point or recommendation starting with a heading, quote, list, fence or HTML mark is
    escaped; pipes are escaped; line breaks inside a point are joined, so it stays one item."""
    s = Synthesis(
        decision="go",
        recommendation="# Not a heading | really",
        consensus=("> quote", "1. numbered", "```fence", "<details>", "two\nlines", "- dash", "a | b"),
    )
    text = synthesis_markdown(s)
    assert "\n\\# Not a heading \\| really\n" in text
    for item in (
        "- \\> quote",
        "- 1\\. numbered",
        "- \\```fence",
        "- \\<details>",
        "- two lines",
        "- \\- dash",
    ):
        assert f"\n{item}\n" in text or text.endswith(f"\n{item}\n"), item
    assert "- a \\| b" in text


def test_markdown_escapes_terminal_controls() -> None:
    """The Markdown goes to stdout too: escape sequences are shown, not obeyed."""
    assert "\x1b" not in synthesis_markdown(Synthesis(decision="go", recommendation="\x1b[2Jx"))


def test_failed_markdown_section() -> None:
    """A failed synthesis is a "## Synthesis" section saying what failed and what stands in."""
    text = synthesis_failed_markdown("server_error", "HTTP 500 | upstream")
    assert text == (
        "## Synthesis\n\n**Synthesis failed** (server_error): HTTP 500 \\| upstream — "
        "the keyword summary below stands in for it.\n"
    )


@given(st.sampled_from(DECISIONS), st.none() | st.floats(min_value=0, max_value=1))
def test_every_decision_and_confidence_renders(decision: str, confidence: float | None) -> None:
    """Each of the four decisions, with or without a confidence, renders in both forms."""
    s = Synthesis(decision=decision, confidence=confidence)  # type: ignore[arg-type]
    assert synthesis_text_lines(s)[0].startswith(f"Decision: {decision.upper()} — confidence ")
    assert f"**Decision:** {decision.upper()}" in synthesis_markdown(s)
