"""Every request a provider received is in ``rmgr usage``, whatever ended the run; bad input
costs nothing. These drive ``rmgr`` as a person does, against ``rmgr sandbox`` over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from rmcli import api
from tests.cli.helpers import REPO, RMGR, Cli, SandboxProcess, clean_env, sandbox_process

pytestmark = pytest.mark.slow

PROVIDERS = ("aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct")


@pytest.fixture
def box() -> Iterator[SandboxProcess]:
    """A sandbox of this test's own: its request logs count only this test's requests."""
    with sandbox_process() as running:
        yield running


def _sent(box: SandboxProcess) -> int:
    return sum(len(box.log(name)) for name in PROVIDERS)


def _start(cli: Cli, box: SandboxProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*RMGR, *args],
        env=clean_env(cli.home, {**box.env, "AI_FALLBACK_PROVIDER": ""}),
        cwd=cli.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def _wait_for_requests(box: SandboxProcess, count: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _sent(box) < count:
        assert time.monotonic() < deadline, f"only {_sent(box)} of {count} requests arrived"
        time.sleep(0.05)


def _usage(cli: Cli, box: SandboxProcess) -> dict[str, dict[str, object]]:
    code, rows = cli.with_env(box.env).json("usage", "--since", "all", "--json")
    assert code == 0
    return {row["provider"]: row for row in rows}


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_analysis_accounts_every_request_sent_as_cancelled(
    cli: Cli, box: SandboxProcess, signum: int, code: int
) -> None:
    """Ctrl-C (or SIGTERM) with eight requests in flight exits 130 (143), says ``interrupted``,
    and ``rmgr usage`` then shows the eight requests, all cancelled, none failed, at a cost."""
    box.set_mode("glm-direct", "hang")
    run = _start(cli, box, "analyze", "Should we migrate to Kubernetes?", "--provider", "glm-direct")
    _wait_for_requests(box, 8)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=20)
    assert run.returncode == code, stderr
    assert "interrupted" in stderr
    row = _usage(cli, box)["glm-direct"]
    assert (row["requests"], row["cancelled"], row["failures"]) == (8, 8, 0)
    assert isinstance(row["costUsd"], float) and row["costUsd"] > 0


def test_ask_under_sigterm_exits_143_with_its_request_recorded(cli: Cli, box: SandboxProcess) -> None:
    """SIGTERM during ``rmgr ask`` exits 143 after recording the one request it sent."""
    box.set_mode("glm-direct", "hang")
    run = _start(cli, box, "ask", "Is a queue better than cron here?", "--provider", "glm-direct")
    _wait_for_requests(box, 1)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=20)
    assert run.returncode == 143, stderr
    assert "interrupted" in stderr
    row = _usage(cli, box)["glm-direct"]
    assert (row["requests"], row["cancelled"], row["failures"]) == (1, 1, 0)


def test_race_losers_are_cancelled_never_failures(cli: Cli, box: SandboxProcess) -> None:
    """Three asks under ``policies/fastest.toml`` with three healthy providers (two slower):
    usage adds up to the requests the providers saw, with no failure; the losers are cancelled."""
    box.set_mode("anthropic-direct", "slow:2")
    box.set_mode("openai-direct", "slow:2")
    policy = str(REPO / "policies" / "fastest.toml")
    runner = cli.with_env(box.env)
    for _ in range(3):
        done = runner.run("ask", "--policy", policy, "--json", "Which queue should we use?")
        assert done.returncode == 0, done.stderr
    usage = _usage(cli, box)
    assert sum(int(str(row["requests"])) for row in usage.values()) == _sent(box) == 9
    assert all(row["failures"] == 0 for row in usage.values())
    assert usage["glm-direct"]["cancelled"] == 0
    assert usage["anthropic-direct"]["cancelled"] == usage["openai-direct"]["cancelled"] == 3


def test_a_question_that_is_not_utf8_exits_2_and_sends_nothing(cli: Cli, box: SandboxProcess) -> None:
    """A question holding bytes that are not UTF-8 is refused (exit 2, what and where), for ask
    and analyze alike, before any request."""
    for command in ("ask", "analyze"):
        done = subprocess.run(
            [*(os.fsencode(a) for a in RMGR), command.encode(), b"caf\xe9"],
            env=clean_env(cli.home, box.env),
            cwd=cli.home,
            capture_output=True,
            check=False,
            timeout=30,
        )
        assert done.returncode == 2, done.stderr
        assert b"not valid UTF-8" in done.stderr and b"0xe9" in done.stderr
    assert _sent(box) == 0


def test_a_dotenv_that_is_not_utf8_names_its_line(cli: Cli, box: SandboxProcess) -> None:
    """A ``.env`` with bytes that are not UTF-8 exits 2 naming the file and line, and sends nothing."""
    (cli.home / ".env").write_bytes(b"# settings\nGLM_MODEL=caf\xe9\n")
    done = cli.with_env(box.env).run("ask", "hello")
    assert done.returncode == 2
    assert ".env line 2 is not valid UTF-8" in done.stderr
    assert _sent(box) == 0


def test_a_damaged_state_database_is_found_before_anything_is_sent(cli: Cli, box: SandboxProcess) -> None:
    """A ``state.db`` with pages overwritten: ask and analyze exit 2 naming its path, and no
    request reaches a provider."""
    runner = cli.with_env(box.env)

    async def warm_up() -> None:  # a database of many pages, written as rmgr writes it
        async with api.Client(env=clean_env(cli.home, box.env), state_home=cli.home) as client:
            for i in range(30):
                assert (await client.ask(f"warm-up question {i} " + "x" * 2000)).completion is not None

    anyio.run(warm_up)
    box.clear_logs()
    database = Path(cli.home) / "state.db"
    size = database.stat().st_size
    assert size > 8 * 4096
    with database.open("r+b") as file:
        for page in (2, 3, size // 4096 - 2):
            file.seek(page * 4096)
            file.write(b"\xa5" * 4096)
    for args in (("ask", "hello"), ("analyze", "Should we?")):
        done = runner.run(*args)
        assert done.returncode == 2, done.stderr
        assert str(database) in done.stderr
    assert _sent(box) == 0
