"""Where ``rmgr``'s question comes from, end to end: ``-`` for stdin, ``--file PATH``, text piped
beside a prompt as context; bad input (empty, only whitespace, not UTF-8, a missing file) stops
with exit 2 before anything is sent; ``--model`` reaches the provider and the JSON; a long
question is shortened in the text report but kept whole in JSON and the history; and no spinner
or progress frame is ever written when stdout and stderr are not terminals.

``rmgr`` runs as a child process against a sandbox of this module's own, whose request log
(``GET /log/NAME`` of its control API) shows exactly what each provider received.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import RMGR, SandboxProcess, clean_env, sandbox_process

PROVIDER = "openai-direct"
CHEAP = "glm-direct"
"""The sandbox provider whose prices let a 1 MB question fit the default $1 budget."""
ONE_MB = 1024 * 1024


@pytest.fixture(scope="module")
def box() -> Iterator[SandboxProcess]:
    """A sandbox of this module's own, every provider up: its request logs are read."""
    with sandbox_process() as running:
        yield running


@pytest.fixture
def sandbox_env(box: SandboxProcess) -> dict[str, str]:
    """The sandbox's variables, with its logs cleared for this test."""
    box.clear_logs()
    return dict(box.env)


def rmgr(
    args: Sequence[str],
    home: Path,
    env: Mapping[str, str],
    *,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """``rmgr ARGS`` in ``home`` with ``stdin`` piped in (None: stdin is ``/dev/null``, which
    is not a pipe: nothing is read from it unless ``-`` asks)."""
    done = subprocess.run(
        [*RMGR, *args],
        env=clean_env(home, env),
        cwd=home,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8")
    )


def sent_prompts(box: SandboxProcess, name: str = PROVIDER) -> list[str]:
    """The user message of every chat request provider ``name`` received."""
    prompts = []
    for request in box.log(name):
        body: dict[str, Any] = request["body"] or {}
        messages = body.get("messages") or []
        prompts += [m["content"] for m in messages if m.get("role") == "user"]
    return prompts


def one_json(done: subprocess.CompletedProcess[str]) -> Any:
    """The single JSON document a command printed on stdout."""
    assert done.returncode in (0, 3), done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout[:500]
    return json.loads(lines[0])


# --- where the question comes from ---------------------------------------------------------------


def test_ask_dash_reads_the_whole_question_from_stdin(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """``echo ... | rmgr ask -`` sends stdin's text (lines and all) as the prompt."""
    question = "Should we adopt gRPC?\nWe run 40 services in Go."
    done = rmgr(
        ["ask", "-", "--provider", PROVIDER, "--json"], tmp_path, sandbox_env, stdin=question.encode()
    )
    assert one_json(done)["provider"] == PROVIDER
    assert sent_prompts(box) == [question]


def test_ask_without_an_argument_reads_piped_stdin(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """``echo q | rmgr ask`` (no argument at all) asks what was piped in."""
    done = rmgr(
        ["ask", "--provider", PROVIDER, "--json"], tmp_path, sandbox_env, stdin=b"Is Rust worth it?\n"
    )
    one_json(done)
    assert sent_prompts(box) == ["Is Rust worth it?\n"]


def test_piped_text_beside_a_prompt_is_appended_as_context(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """``cat notes | rmgr ask "summarise"``: the prompt, a blank line, then the piped text (its
    trailing newline dropped)."""
    notes = "line one\nline two\n"
    done = rmgr(
        ["ask", "summarise", "--provider", PROVIDER, "--json"], tmp_path, sandbox_env, stdin=notes.encode()
    )
    one_json(done)
    assert sent_prompts(box) == ["summarise\n\nline one\nline two"]


def test_a_prompt_with_a_file_sends_the_file_as_context(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """``rmgr ask "explain" --file f``: the prompt, a blank line, then the file's text."""
    (tmp_path / "f.txt").write_text("the file's text", encoding="utf-8")
    done = rmgr(
        ["ask", "explain", "--file", "f.txt", "--provider", PROVIDER, "--json"], tmp_path, sandbox_env
    )
    one_json(done)
    assert sent_prompts(box) == ["explain\n\nthe file's text"]


def test_a_one_megabyte_question_from_a_file_reaches_the_provider_whole(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """``rmgr ask --file big.txt`` sends a 1 MiB question, byte for byte: no argument list is
    involved, so the shell's limit does not apply (glm-direct: its prices keep the worst case
    within the default budget)."""
    question = ("Should we adopt gRPC for our internal services? " * 30_000)[:ONE_MB]
    (tmp_path / "big.txt").write_text(question, encoding="utf-8")
    done = rmgr(["ask", "--file", "big.txt", "--provider", CHEAP, "--json"], tmp_path, sandbox_env)
    one_json(done)
    prompts = sent_prompts(box, CHEAP)
    assert len(prompts) == 1
    assert len(prompts[0]) == ONE_MB
    assert prompts[0] == question


def test_analyze_dash_reads_the_question_from_stdin(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """``rmgr analyze -`` analyses stdin's text: the JSON's question is it, and the perspective's
    request carries it."""
    question = "Should we move to a monorepo?"
    done = rmgr(
        [
            "analyze",
            "-",
            "--provider",
            PROVIDER,
            "--perspectives",
            "security",
            "--format",
            "json",
            "--no-cache",
        ],
        tmp_path,
        sandbox_env,
        stdin=question.encode(),
    )
    assert one_json(done)["question"] == question
    assert any(question in p for p in sent_prompts(box))


@pytest.mark.parametrize("command", ["ask", "analyze", "compare"])
def test_no_question_at_all_is_exit_2(tmp_path: Path, sandbox_env: dict[str, str], command: str) -> None:
    """No argument, no ``-``, no ``--file`` and nothing piped in: exit 2 saying how to give one."""
    done = rmgr(
        [command, "--provider" if command != "compare" else "--providers", PROVIDER], tmp_path, sandbox_env
    )
    assert done.returncode == 2, done.stderr
    assert f"no {'prompt' if command == 'ask' else 'question'} given" in done.stderr
    assert "--file" in done.stderr


# --- bad input: exit 2 before anything is sent ----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "stdin is empty"),
        (b"  \n\t \n", "stdin holds only whitespace"),
        (b"caf\xe9 au lait", "stdin is not UTF-8 text (byte 0xe9 at offset 3)"),
    ],
)
@pytest.mark.parametrize("command", ["ask", "analyze", "run"])
def test_bad_stdin_is_exit_2_and_nothing_is_sent(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str], command: str, data: bytes, message: str
) -> None:
    """Empty, whitespace-only or non-UTF-8 stdin: exit 2, a message naming stdin (and the byte
    and its offset), no request sent."""
    args = [command, "-", "--provider", PROVIDER]
    if command == "run":
        (tmp_path / "p.toml").write_text(
            'version = 1\n[route]\ntargets = ["openai-direct"]\n', encoding="utf-8"
        )
        args += ["--policy", "p.toml"]
    done = rmgr(args, tmp_path, sandbox_env, stdin=data)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stderr.startswith("error: ")
    assert box.log(PROVIDER) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\n   \n", "holds only whitespace"),
        (b"ok then \xff\xfe", "is not UTF-8 text (byte 0xff at offset 8)"),
    ],
)
def test_a_bad_question_file_is_exit_2_naming_the_file(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str], data: bytes, message: str
) -> None:
    """An empty, whitespace-only or non-UTF-8 ``--file``: exit 2, the message names the path."""
    (tmp_path / "q.txt").write_bytes(data)
    for command in ("ask", "analyze"):
        done = rmgr([command, "--file", "q.txt", "--provider", PROVIDER], tmp_path, sandbox_env)
        assert done.returncode == 2, done.stderr
        assert f"--file q.txt {message}" in done.stderr
    assert box.log(PROVIDER) == []


def test_a_missing_or_unreadable_file_is_exit_2_naming_the_path(
    tmp_path: Path, sandbox_env: dict[str, str]
) -> None:
    """``--file`` that does not exist, or is a folder: exit 2 with the path and what is wrong."""
    done = rmgr(["ask", "--file", "nowhere/q.txt", "--provider", PROVIDER], tmp_path, sandbox_env)
    assert done.returncode == 2
    assert "--file nowhere/q.txt: no such file" in done.stderr
    (tmp_path / "folder").mkdir()
    done = rmgr(["analyze", "--file", "folder", "--provider", PROVIDER], tmp_path, sandbox_env)
    assert done.returncode == 2
    assert "--file folder: is a folder" in done.stderr


def test_dash_and_file_together_is_exit_2(tmp_path: Path, sandbox_env: dict[str, str]) -> None:
    """``-`` and ``--file`` at once is ambiguous: exit 2."""
    (tmp_path / "q.txt").write_text("q", encoding="utf-8")
    done = rmgr(["ask", "-", "--file", "q.txt", "--provider", PROVIDER], tmp_path, sandbox_env, stdin=b"q")
    assert done.returncode == 2
    assert "both - and --file" in done.stderr


def test_a_mistyped_option_is_not_sent_as_the_question(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """``rmgr ask --jsn`` (the question may be ``-``, so options-looking words reach it) is
    refused as an unknown option, never sent to a model."""
    done = rmgr(["ask", "--jsn", "--provider", PROVIDER], tmp_path, sandbox_env)
    assert done.returncode == 2
    assert "unknown option --jsn" in done.stderr
    assert box.log(PROVIDER) == []


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_demo_with_an_empty_question_is_exit_2(tmp_path: Path, question: str) -> None:
    """``rmgr demo --question ""`` (or only whitespace) analyses nothing: exit 2."""
    done = rmgr(["demo", "--question", question], tmp_path, {})
    assert done.returncode == 2, done.stdout
    assert "question is empty" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("value", ["", " , ", ","])
def test_an_empty_perspectives_list_is_exit_2(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str], value: str
) -> None:
    """``--perspectives ""`` names none: exit 2 rather than silently running all eight."""
    for command in ("analyze", "compare"):
        where = "--provider" if command == "analyze" else "--providers"
        done = rmgr([command, "q", where, PROVIDER, "--perspectives", value], tmp_path, sandbox_env)
        assert done.returncode == 2, done.stderr
        assert "--perspectives names no perspective" in done.stderr
    assert box.log(PROVIDER) == []


# --- --model ---------------------------------------------------------------------------------------


def sent_models(box: SandboxProcess, name: str = PROVIDER) -> set[str | None]:
    """The ``model`` of every request provider ``name`` received."""
    return {(r["body"] or {}).get("model") for r in box.log(name)}


def test_ask_model_is_sent_and_shown_in_json_and_attempts(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """``ask --model gpt-test``: the provider receives that model; the JSON's model and every
    attempt's model say it; the cost is still counted at the provider's prices."""
    done = rmgr(["ask", "hi", "--provider", PROVIDER, "--model", "gpt-test", "--json"], tmp_path, sandbox_env)
    result = one_json(done)
    assert sent_models(box) == {"gpt-test"}
    assert result["model"] == "gpt-test"
    assert [a["model"] for a in result["attempts"]] == ["gpt-test"]
    assert result["costUsd"] > 0


def test_model_applies_to_every_target_of_the_route(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """With a fallback in the route, both providers are asked for the overridden model."""
    box.set_mode("glm-direct", "status:500")
    try:
        done = rmgr(
            ["ask", "hi", "--provider", "glm-direct", "--fallback", PROVIDER, "--model", "m-1", "--json"],
            tmp_path,
            {**sandbox_env, "RECURSIVEMANAGER_HOME": str(tmp_path / "state")},
        )
    finally:
        box.set_mode("glm-direct", "ok")
    result = one_json(done)
    assert result["provider"] == PROVIDER
    assert sent_models(box, "glm-direct") == {"m-1"}
    assert sent_models(box) == {"m-1"}
    assert {a["model"] for a in result["attempts"]} == {"m-1"}


@pytest.mark.parametrize("command", ["analyze", "run"])
def test_analyze_and_run_model_reach_every_perspective(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str], command: str
) -> None:
    """``analyze``/``run --model``: every perspective's request asks for it, and the JSON's
    perspectives and attempts record it."""
    args = [command, "Go?", "--model", "big-model", "--perspectives", "security,ux", "--format", "json"]
    if command == "run":
        (tmp_path / "p.toml").write_text(
            'version = 1\n[route]\ntargets = ["openai-direct"]\n', encoding="utf-8"
        )
        args += ["--policy", "p.toml", "--no-cache"]
    else:
        args += ["--provider", PROVIDER, "--no-cache"]
    document = one_json(rmgr(args, tmp_path, sandbox_env))
    assert sent_models(box) == {"big-model"}
    assert {p["metadata"]["model"] for p in document["perspectives"]} == {"big-model"}
    assert {a["model"] for a in document["attempts"]} == {"big-model"}


def test_cached_answers_are_kept_apart_by_model(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """An answer cached for the provider's own model is not served to ``--model other`` (which
    asks again), and the answer cached for ``--model other`` is served to the next such run."""
    args = ["analyze", "Cache me?", "--provider", PROVIDER, "--perspectives", "security", "--format", "json"]
    one_json(rmgr(args, tmp_path, sandbox_env))
    assert sent_models(box) == {"gpt-4-turbo"}
    box.clear_logs()
    first = one_json(rmgr([*args, "--model", "other"], tmp_path, sandbox_env))
    assert sent_models(box) == {"other"}
    assert first["perspectives"][0]["metadata"]["cached"] is False
    box.clear_logs()
    again = one_json(rmgr([*args, "--model", "other"], tmp_path, sandbox_env))
    assert box.log(PROVIDER) == []
    assert again["perspectives"][0]["metadata"]["cached"] is True
    assert again["perspectives"][0]["metadata"]["model"] == "other"


def test_compare_model_reaches_every_provider(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """``compare --model``: each provider compared is asked for the overridden model."""
    done = rmgr(
        [
            "compare",
            "Go?",
            "--providers",
            f"glm-direct,{PROVIDER}",
            "--model",
            "same-model",
            "--perspectives",
            "security",
            "--format",
            "json",
            "--no-cache",
        ],
        tmp_path,
        sandbox_env,
    )
    rows = one_json(done)
    assert sent_models(box, "glm-direct") == {"same-model"}
    assert sent_models(box) == {"same-model"}
    assert {a["model"] for row in rows for a in row["analysis"]["attempts"]} == {"same-model"}


@pytest.mark.parametrize("model", ["", "two words", "tab\there"])
def test_a_model_name_with_spaces_or_empty_is_exit_2(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str], model: str
) -> None:
    """``--model ""`` or a name with whitespace cannot be a model: exit 2, nothing sent."""
    done = rmgr(["ask", "hi", "--provider", PROVIDER, "--model", model], tmp_path, sandbox_env)
    assert done.returncode == 2, done.stderr
    assert "is not a model name" in done.stderr
    assert box.log(PROVIDER) == []


# --- long questions in reports ----------------------------------------------------------------------


def test_a_long_question_is_shortened_in_text_and_markdown_but_whole_in_json_and_history(
    tmp_path: Path, sandbox_env: dict[str, str]
) -> None:
    """A 120 KB question: the text and markdown reports show its start and its length, and stay
    short; ``--format json`` and the saved history keep every character."""
    question = ("Should we rewrite the billing system in Rust? " * 3000)[:120_000]
    (tmp_path / "q.txt").write_text(question, encoding="utf-8")
    base = ["analyze", "--file", "q.txt", "--provider", CHEAP, "--perspectives", "security"]

    text = rmgr(base, tmp_path, sandbox_env)
    assert text.returncode == 0, text.stderr
    assert len(text.stdout) < 20_000
    words = " ".join(text.stdout.replace("│", " ").split())  # the box may wrap the question
    assert "(120,000 characters)" in words
    assert "Question: Should we rewrite the billing system in Rust?" in words

    markdown = rmgr([*base, "--format", "markdown"], tmp_path, sandbox_env)
    assert markdown.returncode == 0, markdown.stderr
    assert len(markdown.stdout) < 20_000
    assert "(120,000 characters)" in markdown.stdout

    document = one_json(rmgr([*base, "--format", "json"], tmp_path, sandbox_env))
    assert document["question"] == question

    entries = one_json(rmgr(["history", "list", "--json"], tmp_path, sandbox_env))
    shown = one_json(rmgr(["history", "show", entries[0]["id"], "--format", "json"], tmp_path, sandbox_env))
    assert shown["question"] == question


# --- no live frames off a terminal ------------------------------------------------------------------


def test_no_spinner_or_progress_when_output_is_not_a_terminal(
    tmp_path: Path, sandbox_env: dict[str, str]
) -> None:
    """Piped stdout and stderr (a script, CI): no spinner, no progress line, no escape codes."""
    asked = rmgr(["ask", "hi", "--provider", PROVIDER], tmp_path, sandbox_env)
    analysed = rmgr(
        ["analyze", "Go?", "--provider", PROVIDER, "--perspectives", "security,ux"], tmp_path, sandbox_env
    )
    for done in (asked, analysed):
        assert done.returncode == 0, done.stderr
        assert "\x1b[" not in done.stderr
        assert "Waiting for" not in done.stderr
        assert "Analysing:" not in done.stderr
        assert "[1/2]" not in done.stderr


def run_in_terminal(args: Sequence[str], home: Path, env: Mapping[str, str]) -> tuple[int, str]:
    """``rmgr ARGS`` with stdout and stderr on a pseudo-terminal (stdin ``/dev/null``): its exit
    code and everything it wrote, escape codes included."""
    main, side = os.openpty()
    process = subprocess.Popen(
        [*RMGR, *args],
        env={**clean_env(home, env), "COLUMNS": "100", "TERM": "xterm"},
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=side,
        stderr=side,
    )
    os.close(side)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main)
        code = process.wait(timeout=10)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_ask_spins_and_analyze_shows_progress(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """On a terminal, a slow provider: ``ask`` shows ``Waiting for PROVIDER…`` before the
    answer, ``analyze`` shows ``Analysing: … done · … running · $… spent`` before the report."""
    box.set_mode(PROVIDER, "slow:0.6")
    try:
        code, asked = run_in_terminal(["ask", "hi", "--provider", PROVIDER], tmp_path, sandbox_env)
        assert code == 0, asked
        assert f"Waiting for {PROVIDER}…" in asked
        assert asked.index("Waiting for") < asked.index("This is openai-direct")

        code, analysed = run_in_terminal(
            ["analyze", "Go?", "--provider", PROVIDER, "--perspectives", "security,ux", "--no-cache"],
            tmp_path,
            sandbox_env,
        )
    finally:
        box.set_mode(PROVIDER, "ok")
    assert code == 0, analysed
    assert "Analysing: 0 done · 2 running · $0.000000 spent" in analysed
    assert "Analysing: 2/2 done · 0 running" in analysed
    assert analysed.index("Analysing:") < analysed.index("Multi-Perspective Analysis")


def test_json_on_a_terminal_has_no_live_frames(
    tmp_path: Path, box: SandboxProcess, sandbox_env: dict[str, str]
) -> None:
    """Even on a terminal, ``--json`` / ``--format json`` output gets no spinner or progress."""
    box.set_mode(PROVIDER, "slow:0.3")
    try:
        code, asked = run_in_terminal(["ask", "hi", "--provider", PROVIDER, "--json"], tmp_path, sandbox_env)
        code2, analysed = run_in_terminal(
            ["analyze", "Go?", "--provider", PROVIDER, "--perspectives", "security", "--format", "json"],
            tmp_path,
            sandbox_env,
        )
    finally:
        box.set_mode(PROVIDER, "ok")
    assert (code, code2) == (0, 0), asked + analysed
    assert "Waiting for" not in asked
    assert "Analysing:" not in analysed
