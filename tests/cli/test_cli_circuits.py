"""``rmgr circuits``, ``rmgr circuits reset`` and the circuit in ``rmgr health``, as a user runs
them: real ``rmgr`` processes against a sandbox in another process, on the SQLite state and on a
shared Redis state. The sandbox's request log is the witness of what reached the provider."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.cli.helpers import Cli, SandboxProcess, sandbox_process, write_policy
from tests.cli.state_backends import Backend

COOLDOWN_S = 300

POLICY = f"""\
version = 1

[route]
targets = ["glm-direct", "anthropic-direct"]

[retry]
max_attempts = 1

[breaker]
failure_threshold = 2
cooldown_s = {COOLDOWN_S}
"""


def chats(box: SandboxProcess, name: str) -> int:
    """How many chat requests (not health checks) ``name`` received."""
    return sum(1 for r in box.log(name) if r["method"] == "POST")


def circuits(user: Cli, *args: str) -> dict[str, dict[str, Any]]:
    code, rows = user.json("circuits", "--json", *args)
    assert code == 0
    return {row["provider"]: row for row in rows}


def ask(user: Cli) -> dict[str, Any]:
    done = user.run("ask", "--policy", "policy.toml", "hello", "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture
def user(store_backend: Backend) -> Cli:
    """``rmgr`` in the backend's state folder, on its state (SQLite there, or the Redis database)."""
    store_backend.home.mkdir(parents=True, exist_ok=True)
    write_policy(store_backend.home, "policy.toml", POLICY)
    return Cli(store_backend.home, store_backend.env)


def test_two_failures_open_the_circuit_health_says_so_and_a_reset_sends_again(user: Cli) -> None:
    """Two 500s (threshold 2) open glm-direct's circuit: ``circuits --json`` shows it open with
    two failures and its probe due a cooldown after it opened; ``health`` checks it anyway and
    adds the open circuit to its reason (and, once it answers, how to use it now); ``ask`` skips
    it without a request; after ``circuits reset --all`` the next ``ask`` sends it a request and
    is answered by it, and a second reset has nothing to do."""
    with sandbox_process("glm-direct=status:500") as box:
        user = user.with_env(box.env)
        for _ in range(2):
            attempts = [(a["provider"], a["outcome"]) for a in ask(user)["attempts"]]
            assert attempts == [("glm-direct", "server_error"), ("anthropic-direct", "ok")]

        board = circuits(user, "--policy", "policy.toml")
        glm = board["glm-direct"]
        assert (glm["state"], glm["consecutiveFailures"], glm["cooldownS"]) == ("open", 2, COOLDOWN_S)
        assert glm["openedAt"].endswith("Z") and glm["probeAt"].endswith("Z")
        assert COOLDOWN_S - 30 < glm["probeInS"] <= COOLDOWN_S
        assert (board["anthropic-direct"]["state"], board["anthropic-direct"]["consecutiveFailures"]) == (
            "closed",
            0,
        )

        done = user.run("health", "glm-direct", "--policy", "policy.toml", "--json")
        assert done.returncode == 1, done.stderr
        [entry] = json.loads(done.stdout)
        assert (entry["healthy"], entry["reason"], entry["circuit"]) == (False, "HTTP 500", "open")
        assert re.fullmatch(
            r"circuit open until (\d\d:){2}\d\d \(in \d+ min; 2 failures in a row\)", entry["circuitNote"]
        ), entry["circuitNote"]
        table = user.run("health", "glm-direct", "--policy", "policy.toml", env={"COLUMNS": "200"}).stdout
        assert re.search(r"HTTP 500; circuit open until (\d\d:){2}\d\d \(in \d+ min; 2 failures", table), (
            table
        )

        box.set_mode("glm-direct", "ok")
        code, [entry] = user.json("health", "glm-direct", "--policy", "policy.toml", "--json")
        assert (code, entry["healthy"], entry["reason"]) == (0, True, None)
        assert entry["circuitNote"].endswith("; rmgr circuits reset glm-direct to use it now")

        skipped = ask(user)
        assert [(s["provider"], s["reason"]) for s in skipped["skipped"]] == [("glm-direct", "circuit_open")]
        assert chats(box, "glm-direct") == 2

        done = user.run("circuits", "reset", "--all")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "Closed the circuit of glm-direct (it was open, 2 failures in a row).\n"
        assert {row["state"] for row in circuits(user).values()} == {"closed"}

        answered = ask(user)
        assert [(a["provider"], a["outcome"]) for a in answered["attempts"]] == [("glm-direct", "ok")]
        assert chats(box, "glm-direct") == 3

        again = user.run("circuits", "reset", "--all")
        assert (again.returncode, again.stdout) == (0, "Nothing to reset: every circuit is closed.\n")


def test_a_named_reset_closes_only_that_circuit_and_counts_are_cleared(user: Cli) -> None:
    """With both targets failing once under threshold 2, each circuit is closed with one failure
    counted; ``reset glm-direct --json`` clears that one only and reports it as it was."""
    with sandbox_process("glm-direct=status:500", "anthropic-direct=status:500") as box:
        user = user.with_env(box.env)
        assert user.run("ask", "--policy", "policy.toml", "hello").returncode == 1
        board = circuits(user)
        assert [
            (board[n]["state"], board[n]["consecutiveFailures"]) for n in ("glm-direct", "anthropic-direct")
        ] == [
            ("closed", 1),
            ("closed", 1),
        ]
        code, reset = user.json("circuits", "reset", "glm-direct", "--json")
        assert (code, reset) == (
            0,
            {"reset": [{"provider": "glm-direct", "state": "closed", "consecutiveFailures": 1}]},
        )
        board = circuits(user)
        assert (
            board["glm-direct"]["consecutiveFailures"],
            board["anthropic-direct"]["consecutiveFailures"],
        ) == (0, 1)


def test_circuits_on_a_narrow_terminal_fit_80_columns(user: Cli) -> None:
    """At ``COLUMNS=80`` the circuits table and a health table with an open circuit in its
    reason print no line wider than 80, and names and times stay whole."""
    with sandbox_process("glm-direct=status:500") as box:
        user = user.with_env(box.env, COLUMNS="80")
        for _ in range(2):
            ask(user)
        for args in (("circuits", "--policy", "policy.toml"), ("health", "--policy", "policy.toml")):
            out = user.run(*args).stdout
            assert max(len(line) for line in out.splitlines()) <= 80, out
            assert "anthropic-direct" in out and "glm-direct" in out
            assert "open" in out and re.search(r"\b(\d\d:){2}\d\d\b", out), out


def test_without_a_state_every_circuit_is_closed_and_no_state_is_made(cli: Cli) -> None:
    """Before any run, ``circuits`` lists every built-in provider closed, ``reset --all`` says
    there is nothing to reset, and neither creates the state database."""
    code, rows = cli.json("circuits", "--json")
    assert code == 0
    assert [(r["provider"], r["state"], r["consecutiveFailures"]) for r in rows] == [
        (name, "closed", 0) for name in ("aiceo-gateway", "anthropic-direct", "glm-direct", "openai-direct")
    ]
    done = cli.run("circuits", "reset", "--all")
    assert (done.returncode, done.stdout) == (0, "Nothing to reset: every circuit is closed.\n")
    assert cli.state_files == []


def test_resetting_an_unknown_provider_or_nothing_is_bad_input(cli: Cli) -> None:
    """An unknown name exits 2 listing the known providers (a policy's own included); neither
    names nor ``--all``, or both, exit 2 saying what to give."""
    write_policy(
        cli.home,
        "extra.toml",
        'version = 1\n[providers.local]\nkind = "openai"\n'
        'url = "http://127.0.0.1:9/v1/chat/completions"\nmodel = "m"\n',
    )
    done = cli.run("circuits", "reset", "glm-direkt", "--policy", "extra.toml")
    assert done.returncode == 2
    assert "unknown provider 'glm-direkt'" in done.stderr
    assert "known providers: aiceo-gateway, anthropic-direct, glm-direct, local, openai-direct" in done.stderr
    for args in ((), ("glm-direct", "--all")):
        done = cli.run("circuits", "reset", *args)
        assert done.returncode == 2 and done.stderr.startswith("error: circuits reset:"), done.stderr
