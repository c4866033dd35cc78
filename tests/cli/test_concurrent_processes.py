"""Eight ``rmgr`` processes at once on one state folder (issue 5): the store's busy timeout, its
retries and its short transactions keep every process's rows, and no "database is locked" ever
reaches a user.

Every process is a real ``python -m rmcli`` talking loopback HTTP to a sandbox in another process.
The route fails over (the gateway answers 500, retried once) so that each run writes several
attempts and several circuit-breaker updates, and the fallback answers after a short wait so that
the runs overlap (the test checks that they did): all eight write to the same ``state.db`` at the
same moments.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from collections import Counter
from typing import Any

import anyio

from rmcli import api
from rmcli.state import HistoryEntry
from rmcore.usage import AttemptRow
from tests.cli.helpers import RMGR, RUN_TIMEOUT_S, Cli, clean_env, sandbox_process, write_policy

PROCESSES = 8
ANALYSES = 2
"""Of the eight, this many run ``analyze`` (eight perspectives each); the rest run ``ask``."""

POLICY = """\
version = 1
name = "eight-at-once"

[route]
strategy = "sequential"
targets = ["aiceo-gateway", "glm-direct", "anthropic-direct"]

[limits]
deadline_s = 30

[retry]
max_attempts = 2
backoff_initial_s = 0.01
backoff_max_s = 0.05

[breaker]
# High enough that no circuit opens: every run sends the same requests, so the rows can be counted.
failure_threshold = 1000
"""

AttemptKey = tuple[object, ...]


def attempt_key(
    provider: str,
    model: str,
    outcome: str,
    status: int | None,
    started_at_ms: int,
    input_tokens: int,
    output_tokens: int,
) -> AttemptKey:
    """An attempt as the fields both the JSON reports and the state hold, to compare them."""
    return (
        provider,
        model,
        outcome,
        -1 if status is None else status,
        started_at_ms,
        input_tokens,
        output_tokens,
    )


def reported_attempts(document: dict[str, Any]) -> list[AttemptKey]:
    """The attempts a run's ``--json`` document reports."""
    return [
        attempt_key(
            a["provider"],
            a["model"],
            a["outcome"],
            a["status"],
            a["startedAtMs"],
            a["inputTokens"],
            a["outputTokens"],
        )
        for a in document["attempts"]
    ]


def test_eight_processes_at_once_lose_no_row_and_never_say_locked(cli: Cli) -> None:
    """Eight ``rmgr`` processes (six ``ask``, two ``analyze``) start together on one state folder:
    each exits 0 with its JSON; none prints "database is locked" (or any "locked") nor a traceback;
    the store then holds exactly the attempts the eight reported, field for field, which are exactly
    the requests the sandbox logged, and both analyses are in the history; the database passes
    ``PRAGMA integrity_check``."""
    policy = write_policy(cli.home, "policy.toml", POLICY)
    with sandbox_process("aiceo-gateway=status:500", "glm-direct=slow:1") as box:
        commands = []
        for i in range(PROCESSES):
            if i < PROCESSES - ANALYSES:
                args = [
                    "ask",
                    "--json",
                    "--policy",
                    str(policy),
                    f"Process {i}: is a queue better than cron?",
                ]
            else:
                args = [
                    "analyze",
                    "--no-synthesis",  # the perspectives' rows are counted below
                    "--format",
                    "json",
                    "--policy",
                    str(policy),
                    "--agent-id",
                    f"proc-{i}",
                    f"Process {i}: should we split the monolith?",
                ]
            commands.append(args)
        env = clean_env(cli.home, box.env)
        running = [
            subprocess.Popen(
                [*RMGR, *args],
                env=env,
                cwd=cli.home,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
            )
            for args in commands
        ]
        finished = []
        try:
            for process in running:
                stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S * 2)
                finished.append((process.returncode, stdout, stderr))
        finally:
            for process in running:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        logged = Counter(
            entry["provider"]
            for name in ("aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct")
            for entry in box.log(name)
            if entry["method"] == "POST"
        )

    reported: list[AttemptKey] = []
    windows: list[tuple[float, float]] = []
    for (code, stdout, stderr), args in zip(finished, commands, strict=True):
        assert "locked" not in (stdout + stderr).lower(), (args, stderr)
        assert "Traceback" not in stderr, stderr
        assert code == 0, (args, code, stderr)
        document = json.loads(stdout)
        reported.extend(reported_attempts(document))
        windows.append(
            (
                min(a["startedAtMs"] for a in document["attempts"]),
                max(a["startedAtMs"] + a["latencyMs"] for a in document["attempts"]),
            )
        )
        if args[0] == "ask":
            assert document["provider"] == "glm-direct" and document["fallbackUsed"] is True
            assert [a["outcome"] for a in document["attempts"]] == ["server_error", "server_error", "ok"]
        else:
            assert document["status"] == "ok"
            assert len(document["perspectives"]) == 8

    # They did run at once: at some moment most of them had a request in flight.
    busiest = max(sum(start <= moment <= end for start, end in windows) for moment, _ in windows)
    print(f"at most {busiest} of the {PROCESSES} processes had a request in flight at once")
    assert busiest >= PROCESSES // 2, windows

    async def read() -> tuple[list[AttemptRow], list[HistoryEntry]]:
        async with api.records(env={}, state_home=cli.home) as state:
            return await state.attempts.since(0), await state.history.list(None)

    rows, history = anyio.run(read)
    stored = [
        attempt_key(
            r.provider, r.model, r.outcome, r.status, r.started_at_ms, r.input_tokens, r.output_tokens
        )
        for r in rows
    ]
    assert Counter(stored) == Counter(reported)
    assert len(stored) == (PROCESSES - ANALYSES) * 3 + ANALYSES * 8 * 3
    assert Counter(r.provider for r in rows) == logged
    assert sorted(entry.agent_id for entry in history) == [
        f"proc-{i}" for i in range(PROCESSES - ANALYSES, PROCESSES)
    ]
    with contextlib.closing(sqlite3.connect(cli.home / "state.db")) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
