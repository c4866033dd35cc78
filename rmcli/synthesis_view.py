"""How the synthesis opens an analysis report: a block of lines for the terminal, a section for the
Markdown document, and one line for when the synthesis failed.

The synthesis is the report's answer, so it comes first, before the table of perspectives. Every
piece of its text is a model's words: on the terminal they are escaped by
:func:`rmcli.output.safe_text` (no escape sequence gets through, no key shows), as the rest of the
analysis is; in Markdown each point also stays one list item, unable to open a heading, a quote,
a table or a code block. Pure functions of their arguments: no printing here.
"""

from __future__ import annotations

import re
import textwrap

from rmcli import figures
from rmcli.output import safe_text
from rmcore.synthesis import Synthesis

__all__ = [
    "MIN_WIDTH",
    "SECTIONS",
    "synthesis_failed_line",
    "synthesis_failed_markdown",
    "synthesis_heading",
    "synthesis_markdown",
    "synthesis_text_lines",
]

MIN_WIDTH = 20
"""Narrower widths are wrapped as this one: a word per line helps nobody."""

SECTIONS = (
    ("Consensus", "consensus"),
    ("Conflicts", "conflicts"),
    ("Blind spots", "blind_spots"),
    ("Conditions", "conditions"),
)
"""The lists of a synthesis, in the order shown, with their headings."""

_BULLET = "  - "
_HANGING = " " * len(_BULLET)


def _points(s: Synthesis, field: str) -> tuple[str, ...]:
    points: tuple[str, ...] = getattr(s, field)
    return points


def synthesis_heading(s: Synthesis) -> str:
    """``Decision: GO — confidence 0.82`` (``confidence unknown`` when none was stated)."""
    return f"Decision: {s.decision.upper()} — confidence {figures.confidence(s.confidence)}"


def _paragraphs(text: str) -> list[str]:
    """``text`` split at blank lines, each paragraph's lines joined into one."""
    return [" ".join(p.split()) for p in re.split(r"\n[ \t]*\n", text) if p.strip()]


def synthesis_text_lines(s: Synthesis, width: int = 80) -> list[str]:
    """The text report's opening block, one string per line: :func:`synthesis_heading`, the
    recommendation wrapped (a blank line between its paragraphs), then a heading and a bulleted,
    wrapped point per line for each of Consensus, Conflicts, Blind spots and Conditions that has
    any. No line is longer than ``width`` characters (a longer word is broken).

    Model text is escaped (:func:`rmcli.output.safe_text`) before it is wrapped. Print the
    lines as plain text (``rich.text.Text`` or ``print``), never as Rich markup.
    """
    width = max(width, MIN_WIDTH)
    lines = textwrap.wrap(synthesis_heading(s), width, break_on_hyphens=False)
    for n, paragraph in enumerate(_paragraphs(safe_text(s.recommendation))):
        if n:
            lines.append("")
        lines += textwrap.wrap(paragraph, width, break_on_hyphens=False)
    for heading, field in SECTIONS:
        points = _points(s, field)
        if not points:
            continue
        lines += ["", heading]
        for point in points:
            lines += textwrap.wrap(
                " ".join(safe_text(point).split()),
                width,
                initial_indent=_BULLET,
                subsequent_indent=_HANGING,
                break_on_hyphens=False,
            )
    return lines


def synthesis_failed_line(kind: str, message: str) -> str:
    """The one line that stands for a failed synthesis in the text report:
    ``Synthesis failed (server_error): HTTP 500 — the keyword summary below stands in for it``."""
    said = " ".join(safe_text(message).split()) or "no message"
    return f"Synthesis failed ({safe_text(kind)}): {said} — the keyword summary below stands in for it"


# --- Markdown ------------------------------------------------------------------------------------

_BLOCK_START = re.compile(r"^(?:[#>+*=`~<|_-]|\d+[.)])")


def _inline(text: str) -> str:
    """``text`` as Markdown that stays where it is put: on one line, pipes escaped (as table cells
    are), and a first character that would open a block (a heading, a quote, a list, a fence,
    HTML, a rule) escaped with a backslash. Terminal controls escaped, keys redacted."""
    line = " ".join(safe_text(text).split()).replace("|", "\\|")
    match = _BLOCK_START.match(line)
    if match is None:
        return line
    if match.group(0)[0].isdigit():
        end = match.end() - 1
        return line[:end] + "\\" + line[end:]
    return "\\" + line


def synthesis_markdown(s: Synthesis) -> str:
    """The Markdown report's ``## Synthesis`` section, to put before its table: the decision and
    confidence in bold, the recommendation (one paragraph per paragraph it has), then a
    ``### Heading`` and a list for each of Consensus, Conflicts, Blind spots and Conditions that
    has any. Ends with a newline."""
    out = [
        "## Synthesis",
        "",
        f"**Decision:** {s.decision.upper()} · **Confidence:** {figures.confidence(s.confidence)}",
    ]
    for paragraph in _paragraphs(s.recommendation):
        out += ["", _inline(paragraph)]
    for heading, field in SECTIONS:
        points = _points(s, field)
        if points:
            out += ["", f"### {heading}", ""]
            out += [f"- {_inline(point)}" for point in points]
    return "\n".join(out) + "\n"


def synthesis_failed_markdown(kind: str, message: str) -> str:
    """The Markdown report's ``## Synthesis`` section for a failed synthesis: what failed, and that
    the keyword summary stands in for it. Ends with a newline."""
    said = _inline(message) or "no message"
    return (
        f"## Synthesis\n\n**Synthesis failed** ({_inline(kind)}): {said} — "
        "the keyword summary below stands in for it.\n"
    )
