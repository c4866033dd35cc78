"""The live feedback classes on their own, drawn on a fake terminal (a rich ``Console`` on a
``StringIO`` that believes it is one): ``rmgr ask``'s ``Spinner`` and ``rmgr analyze``'s
``LiveProgress``; and ``rmcli.question``'s reading and shortening rules without a process."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from rmcli import question
from rmcli.analysis_view import LiveProgress
from rmcli.errors import ConfigError
from rmcli.question import join_context, read_question, shorten_question
from rmcli.spinner import Spinner
from rmcore.attempts import AttemptRecord
from rmcore.completion import Usage
from rmcore.perspectives import BUILTIN
from rmcore.report import answered_result, failed_result


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def terminal() -> tuple[Console, io.StringIO]:
    """A console that draws like a terminal into a string."""
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100, color_system=None), out


# --- Spinner ---------------------------------------------------------------------------------------


def test_spinner_says_whom_it_waits_for_and_for_how_long() -> None:
    """The spinner's line names the provider awaited and the seconds since it started; drawn on
    a terminal while it runs, and erased (cursor shown again) when stopped."""
    console, out = terminal()
    clock = FakeClock()
    spinner = Spinner(live=True, console=console, clock=clock)
    spinner.start()
    spinner.waiting_for("glm-direct")
    clock.now += 2.25
    assert spinner.text() == "Waiting for glm-direct… 2.2 s"
    states = [spinner.running]
    spinner.stop()
    spinner.stop()  # a second stop is harmless
    states.append(spinner.running)
    assert states == [True, False]
    drawn = out.getvalue()
    assert "Waiting for" in drawn
    assert "\x1b[?25h" in drawn  # the cursor is shown again


def test_spinner_off_a_terminal_draws_nothing() -> None:
    """``live=False`` (JSON, pipes): start, update and stop write nothing at all."""
    console, out = terminal()
    spinner = Spinner(live=False, console=console)
    spinner.start()
    spinner.waiting_for("glm-direct")
    spinner.stop()
    assert not spinner.running
    assert out.getvalue() == ""


# --- LiveProgress ---------------------------------------------------------------------------------


def record(cost: float) -> AttemptRecord:
    return AttemptRecord(provider="glm-direct", model="glm-4.7", outcome="ok", cost_usd=cost)


def test_progress_counts_done_running_failed_and_money_spent() -> None:
    """The progress line counts perspectives done (of the total once known), running and
    failed, adds up what every attempt cost, and shows the seconds since the start."""
    console, out = terminal()
    clock = FakeClock()
    progress = LiveProgress(live=True, console=console, clock=clock)
    hooks = progress.hooks()
    security, ux, growth = BUILTIN["security"], BUILTIN["ux"], BUILTIN["growth"]
    with progress:
        assert progress.status() == "Analysing: 0 done · 0 running · $0.000000 spent · 0.0 s"
        for p in (security, ux, growth):
            assert hooks.perspective_started is not None
            hooks.perspective_started(p)
        assert hooks.attempt_ended is not None and hooks.perspective_finished is not None
        hooks.attempt_ended(record(0.0012))
        answer = answered_result(
            security,
            "Fine. Confidence: 0.8",
            provider="glm-direct",
            model="glm-4.7",
            usage=Usage(input_tokens=5, output_tokens=3),
            cost_usd=0.0012,
            latency_ms=1500.0,
        )
        hooks.perspective_finished(answer, 1, 3)
        hooks.attempt_ended(record(0.0003))
        hooks.perspective_finished(failed_result(ux, kind="timeout", message="too slow"), 2, 3)
        clock.now += 4.2
        assert progress.status() == "Analysing: 2/3 done · 1 running · 1 failed · $0.001500 spent · 4.2 s"
    drawn = out.getvalue()
    assert "[1/3] Security" in drawn
    assert "✓ 0.80 (glm-direct, 1.5 s)" in drawn
    assert "[2/3] User Experience" in drawn
    assert "✗ failed: timeout" in drawn
    assert "Analysing:" in drawn


def test_progress_counts_cached_answers_as_done_never_running() -> None:
    """A perspective answered from the cache is never started: it counts as done, and the
    running count never goes below zero."""
    progress = LiveProgress(live=False, clock=FakeClock())
    hooks = progress.hooks()
    assert hooks.perspective_finished is not None
    cached = answered_result(
        BUILTIN["security"],
        "ok",
        provider="glm-direct",
        model="m",
        usage=Usage(),
        cost_usd=0.0,
        latency_ms=0.0,
        cached=True,
    )
    hooks.perspective_finished(cached, 1, 2)
    assert progress.status().startswith("Analysing: 1/2 done · 0 running · $0.000000 spent")


def test_progress_says_when_the_synthesis_is_asked() -> None:
    """Once the perspectives are in and the synthesis is asked, the line says so (with the money
    spent and the time), not "0 running"."""
    progress = LiveProgress(live=False, clock=FakeClock())
    hooks = progress.hooks()
    assert hooks.perspective_finished is not None and hooks.synthesis_started is not None
    failed = failed_result(BUILTIN["ux"], kind="timeout", message="slow")
    hooks.perspective_finished(failed, 1, 1)
    hooks.synthesis_started()
    assert progress.status().startswith("Deciding: the synthesis over 1/1 perspectives · 1 failed · $")


def test_progress_off_a_terminal_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """``live=False``: no line, no per-perspective lines, on the console or on stderr."""
    console, out = terminal()
    progress = LiveProgress(live=False, console=console)
    hooks = progress.hooks()
    assert hooks.perspective_finished is not None
    with progress:
        hooks.perspective_finished(failed_result(BUILTIN["security"], kind="timeout", message="x"), 1, 1)
    assert out.getvalue() == ""
    assert capsys.readouterr().err == ""


# --- reading and shortening the question ------------------------------------------------------------


def test_read_question_from_a_stream_and_a_prompt_with_context() -> None:
    """``-`` reads the stream whole (a UTF-8 byte-order mark dropped); a prompt with piped text
    is the prompt, a blank line, the text; a prompt alone is sent as it is."""
    assert read_question("-", stdin=io.BytesIO("\ufeffwhy?".encode())) == "why?"
    assert read_question("explain", stdin=io.BytesIO(b"ctx\n\n"), piped=True) == "explain\n\nctx"
    assert read_question("explain", stdin=io.BytesIO(b"ignored"), piped=False) == "explain"
    assert read_question(None, stdin=io.BytesIO(b"asked"), piped=True) == "asked"


def test_read_question_problems_are_config_errors() -> None:
    """Nothing given, an empty argument, bad bytes: ``ConfigError`` (exit 2) with the reason."""
    with pytest.raises(ConfigError, match="no question given"):
        read_question(None, stdin=io.BytesIO(b""), piped=False)
    with pytest.raises(ConfigError, match="the question is empty"):
        read_question("  ", stdin=io.BytesIO(b""), piped=False)
    with pytest.raises(ConfigError, match=r"byte 0xc3 at offset 2"):
        read_question("-", stdin=io.BytesIO(b"ab\xc3"))


def test_read_question_file(tmp_path: Path) -> None:
    """``--file`` is read whole; with a prompt it is the prompt's context."""
    path = tmp_path / "q.txt"
    path.write_text("the text\n", encoding="utf-8")
    assert read_question(None, path) == "the text\n"
    assert read_question("sum up", path) == "sum up\n\nthe text"


def test_join_context_format() -> None:
    """Prompt (trailing spaces dropped), one blank line, the context (trailing newlines dropped)."""
    assert join_context("explain  ", "a\nb\n\n") == "explain\n\na\nb"


def test_short_questions_are_shown_whole() -> None:
    """A question within the limits is shown as it is (outer whitespace trimmed)."""
    assert shorten_question("  Should we?  ") == "Should we?"


def test_long_questions_show_their_start_and_length() -> None:
    """Past 200 characters or 6 lines: the start, an ellipsis, and the full length."""
    long = "x" * 1000
    assert shorten_question(long) == "x" * 200 + "… (1,000 characters)"
    lines = "\n".join(f"line {i}" for i in range(10))
    assert (
        shorten_question(lines) == "\n".join(f"line {i}" for i in range(6)) + f"… ({len(lines)} characters)"
    )


@given(st.text(min_size=1, max_size=2000))
def test_shortened_questions_are_bounded(text: str) -> None:
    """Whatever the question, what a report shows is at most 200 characters plus the note, and
    either the whole (trimmed) text or a start of it."""
    shown = shorten_question(text)
    trimmed = text.strip()
    if shown != trimmed:
        head, _, note = shown.rpartition("… (")
        assert trimmed.startswith(head)
        assert len(head) <= 200
        assert note == f"{len(trimmed):,} characters)"


def test_a_silent_pipe_is_announced_then_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Piped stdin that stays silent past the notice delay: ``rmgr`` says on stderr that it is
    waiting for it (a pipe left open would otherwise look like a hang), then reads it whole."""
    monkeypatch.setattr(question, "WAIT_NOTICE_S", 0.05)
    read_end, write_end = os.pipe()

    def write_later() -> None:
        time.sleep(0.3)
        os.write(write_end, b"late context")
        os.close(write_end)

    writer = threading.Thread(target=write_later)
    writer.start()
    with os.fdopen(read_end, "rb") as stream:
        text = read_question("explain", stdin=stream)
    writer.join()
    assert text == "explain\n\nlate context"
    assert "waiting for the text piped into stdin" in capsys.readouterr().err
