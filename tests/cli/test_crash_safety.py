"""Crash safety of the state store, seen from ``rmgr`` (issue 5): a process killed with SIGKILL in
the middle of a run leaves a store the next run opens and uses, and a ``state.db`` that is not ours
(another application's database, a damaged one, a newer schema) is reported with its path and what
to do, and is never written, overwritten or deleted.

Every run is a real ``python -m rmcli`` process talking loopback HTTP to a sandbox in another
process; the sandbox's request log says how far a run had gone when it was killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from rmcli import api
from rmcli.state.sqlite import SCHEMA_VERSION, open_sqlite
from tests.cli.helpers import (
    RMGR,
    URL_VARIABLES,
    Cli,
    SandboxProcess,
    clean_env,
    run_rmgr,
    sandbox_process,
    write_policy,
)

POLICY = """\
version = 1
name = "crash"

[route]
strategy = "sequential"
targets = ["aiceo-gateway", "glm-direct"]

[limits]
attempt_timeout_s = 30
deadline_s = 60

[retry]
max_attempts = 2
backoff_initial_s = 0.01
backoff_max_s = 0.05

[breaker]
failure_threshold = 1000
"""

WAIT_S = 20.0


@pytest.fixture(scope="module")
def box() -> Iterator[SandboxProcess]:
    """A sandbox of this module's own: its modes are changed and its logs read."""
    with sandbox_process() as running:
        yield running


@pytest.fixture
def crash(box: SandboxProcess, tmp_path: Path) -> Iterator[Cli]:
    """``rmgr`` in this test's folder, pointed at the sandbox, every provider up at the start and
    at the end, logs cleared."""
    for name in URL_VARIABLES:
        box.set_mode(name, "ok")
    box.clear_logs()
    write_policy(tmp_path, "policy.toml", POLICY)
    yield Cli(tmp_path, box.env)
    for name in URL_VARIABLES:
        box.set_mode(name, "ok")


def requests_seen(box: SandboxProcess) -> int:
    """How many requests the sandbox's providers have logged in all."""
    reply = httpx.get(f"{box.control_url}/providers", timeout=5.0)
    reply.raise_for_status()
    return sum(p["requests"] for p in reply.json()["providers"])


def start(cli: Cli, *args: str) -> subprocess.Popen[str]:
    """``rmgr ARGS`` started in ``cli``'s folder, its output captured."""
    return subprocess.Popen(
        [*RMGR, *args],
        env=clean_env(cli.home, cli.env),
        cwd=cli.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def kill_when(process: subprocess.Popen[str], ready: Callable[[], bool]) -> bool:
    """SIGKILL ``process`` as soon as ``ready()``; True when it was still running then."""
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if process.poll() is not None:
            break
        assert time.monotonic() < deadline, "the run never got that far"
        time.sleep(0.005)
    alive = process.poll() is None
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=WAIT_S)
    return alive


def integrity(home: Path) -> str:
    """What ``PRAGMA integrity_check`` says of the state database in ``home``."""
    with contextlib.closing(sqlite3.connect(home / "state.db")) as check:
        result: str = check.execute("PRAGMA integrity_check").fetchone()[0]
    return result


def history_snapshot(home: Path) -> dict[str, bytes]:
    """Every saved analysis: its id and payload (the state opened as the product opens it)."""

    async def read() -> dict[str, bytes]:
        async with api.records(env={}, state_home=home) as state:
            found = {e.id: await state.history.get(e.id) for e in await state.history.list(None)}
        return {entry_id: got[1] for entry_id, got in found.items() if got is not None}

    return anyio.run(read)


def attempt_rows(home: Path) -> list[tuple[object, ...]]:
    """Every recorded attempt, oldest first: its run, provider, outcome and start."""

    async def read() -> list[tuple[object, ...]]:
        async with api.records(env={}, state_home=home) as state:
            return [(r.run_id, r.provider, r.outcome, r.started_at_ms) for r in await state.attempts.since(0)]

    return anyio.run(read)


def assert_next_ask_is_stored(cli: Cli) -> None:
    """The next run opens the store at once, answers from the first target without waiting, and
    its attempt is stored: nothing the killed process held (a lock, a provider's concurrency
    slot, a budget reservation) stands in its way."""
    before = attempt_rows(cli.home)
    started = time.monotonic()
    done = run_rmgr(
        ("ask", "--json", "--policy", "policy.toml", "Is the store still usable?"),
        cli.env,
        home=cli.home,
        timeout=WAIT_S * 3,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "locked" not in done.stderr.lower() and "Traceback" not in done.stderr
    answer = json.loads(done.stdout)
    assert took < 10.0, f"the next run took {took:.1f} s: {answer.get('attempts')}"
    assert answer["provider"] == "aiceo-gateway", answer
    after = attempt_rows(cli.home)
    assert after[: len(before)] == before
    assert [(row[1], row[2]) for row in after[len(before) :]] == [("aiceo-gateway", "ok")]


def test_an_ask_killed_while_its_provider_hangs_leaves_a_usable_store(
    crash: Cli, box: SandboxProcess
) -> None:
    """SIGKILL while the second target hangs: the attempts the run had finished (two 500s) are
    stored whole, the one in flight stands as it was recorded when sent (``cancelled``: the
    provider received it), the analysis saved before is intact, ``PRAGMA integrity_check`` says
    ok, and the next ``ask`` answers and is stored."""
    seeded = crash.run("analyze", "--format", "json", "--policy", "policy.toml", "Seed: adopt a queue?")
    assert seeded.returncode == 0, seeded.stderr
    history = history_snapshot(crash.home)
    rows_before = attempt_rows(crash.home)
    assert len(history) == 1 and len(rows_before) == 9  # eight perspectives and the synthesis

    box.set_mode("aiceo-gateway", "status:500")
    box.set_mode("glm-direct", "hang")
    process = start(crash, "ask", "--json", "--policy", "policy.toml", "Killed while waiting")
    assert kill_when(process, lambda: len(box.log("glm-direct")) >= 1)
    assert process.returncode == -signal.SIGKILL

    rows = attempt_rows(crash.home)  # the product opens it first (and recovers its WAL)
    assert integrity(crash.home) == "ok"
    assert rows[: len(rows_before)] == rows_before
    assert [(row[1], row[2]) for row in rows[len(rows_before) :]] == [
        ("aiceo-gateway", "server_error"),
        ("aiceo-gateway", "server_error"),
        ("glm-direct", "cancelled"),
    ]
    assert history_snapshot(crash.home) == history
    box.set_mode("aiceo-gateway", "ok")
    box.set_mode("glm-direct", "ok")
    assert_next_ask_is_stored(crash)
    assert history_snapshot(crash.home) == history
    assert integrity(crash.home) == "ok"


def test_an_analysis_killed_while_the_gateway_hangs_leaves_the_gateway_usable(
    crash: Cli, box: SandboxProcess
) -> None:
    """SIGKILL while all eight perspectives wait on the hanging gateway (its ``max_concurrency`` is
    8, counted across processes): the store passes ``PRAGMA integrity_check`` and the next ``ask``
    is answered by the gateway at once. The dead process's slots on the gateway must not keep it
    from every other process until their leases run out."""
    box.set_mode("aiceo-gateway", "hang")
    process = start(crash, "analyze", "--format", "json", "--policy", "policy.toml", "Killed mid-analysis")
    assert kill_when(process, lambda: len(box.log("aiceo-gateway")) >= 8)
    attempt_rows(crash.home)
    assert integrity(crash.home) == "ok"
    box.set_mode("aiceo-gateway", "ok")
    assert_next_ask_is_stored(crash)


def test_analyses_killed_at_random_moments_never_damage_the_store(crash: Cli, box: SandboxProcess) -> None:
    """Six ``analyze`` runs, each SIGKILLed after a random number of its 24 requests (1 to 22) while its
    eight perspectives fail over and write attempts, breaker updates, cache entries and, at the
    end, the history: after each kill the store opens, passes ``PRAGMA integrity_check``, every
    row reads back, and the rows and history of earlier runs are unchanged; then an ``ask`` is
    answered and stored."""
    seeded = crash.run("analyze", "--format", "json", "--policy", "policy.toml", "Seed: adopt a queue?")
    assert seeded.returncode == 0, seeded.stderr
    box.set_mode("aiceo-gateway", "status:500")
    box.set_mode("glm-direct", "slow:0.1")
    rng = random.Random(5)
    killed_mid_run = 0
    for round_no in range(6):
        history = history_snapshot(crash.home)
        rows = attempt_rows(crash.home)
        seen = requests_seen(box)
        target = seen + rng.randint(1, 22)
        process = start(
            crash,
            "analyze",
            "--format",
            "json",
            "--no-cache",
            "--policy",
            "policy.toml",
            f"Round {round_no}: split the monolith?",
        )

        def far_enough(target: int = target) -> bool:
            return requests_seen(box) >= target

        killed_mid_run += kill_when(process, far_enough)
        after = attempt_rows(crash.home)
        assert integrity(crash.home) == "ok"
        assert after[: len(rows)] == rows
        now = history_snapshot(crash.home)
        assert {k: v for k, v in now.items() if k in history} == history
    assert killed_mid_run == 6
    box.set_mode("aiceo-gateway", "ok")
    box.set_mode("glm-direct", "ok")
    assert_next_ask_is_stored(crash)


# --- a state.db that is not ours --------------------------------------------------------------


def foreign_database(path: Path) -> None:
    """Another application's SQLite database (in WAL mode, as many are)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
        conn.commit()
        conn.execute("PRAGMA journal_mode = DELETE")


def damaged_database(path: Path) -> None:
    """Our database with its pages after the header overwritten by random bytes."""
    anyio.run(open_sqlite(path.parent).aclose)
    original = path.read_bytes()
    path.write_bytes(original[:100] + random.Random(3).randbytes(len(original) - 100))


def newer_database(path: Path) -> None:
    """Our database, written by a newer version (a higher schema number)."""
    anyio.run(open_sqlite(path.parent).aclose)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()


KINDS: dict[str, tuple[Callable[[Path], None], str]] = {
    "foreign": (foreign_database, "another application"),
    "damaged": (damaged_database, "not a usable recursive-manager state database"),
    "newer": (newer_database, "newer recursive-manager"),
}

COMMANDS: dict[str, tuple[str, ...]] = {
    "ask": ("ask", "--policy", "policy.toml", "hello"),
    "analyze": ("analyze", "--policy", "policy.toml", "Adopt a queue?"),
    "history": ("history", "list"),
}


def digest(folder: Path) -> dict[str, str]:
    """Every file of the folder and a hash of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


@pytest.mark.parametrize(
    ("kind", "command"),
    [(k, c) for k in KINDS for c in ("ask", "analyze")] + [("foreign", "history")],
)
def test_a_state_db_that_is_not_ours_is_reported_and_left_intact(
    crash: Cli, box: SandboxProcess, kind: str, command: str
) -> None:
    """Exit 2 before any request; stderr names the file, says why, and says how to move it aside
    (``mv PATH PATH.bak``); no traceback; every file in the state folder is byte for byte what it
    was. The only files that may appear beside it are SQLite's own ``-shm`` index and an empty
    ``-wal``, which its read-only connection creates for a database in WAL mode: no page is
    written anywhere."""
    make, why = KINDS[kind]
    database = crash.home / "state.db"
    make(database)
    before = digest(crash.home)

    done = crash.run(*COMMANDS[command])

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert str(database) in done.stderr
    assert why in done.stderr
    assert f"mv {database} {database}.bak" in done.stderr
    after = digest(crash.home)
    assert {name: after[name] for name in before} == before
    assert set(after) - set(before) <= {"state.db-shm", "state.db-wal"}
    wal = crash.home / "state.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    assert requests_seen(box) == 0
