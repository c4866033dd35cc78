"""``rmgr analyze``, ``run``, ``compare`` and ``demo`` end to end, as a user runs them: real
processes, real loopback HTTP, SQLite for real.

The sandbox runs in this test process (on an event loop in a thread) with aiceo-gateway down, so
that each test can script what the other providers answer, read their request logs, and make a
provider fail for some perspectives only. ``rmgr`` itself always runs as a child process.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from rmcli.sandbox import Sandbox, default_reply
from rmcli.sandbox.replies import last_user_text
from tests.cli.helpers import REPO, RMGR, Cli, clean_env, write_policy

QUESTION = "Should we implement A/B testing for our features?"
SEQUENTIAL = str(REPO / "policies" / "sequential-failover.toml")
PRIMARY_FAILED = "WARNING: Primary provider (aiceo-gateway) failed: connection refused"
TRYING_FALLBACK = "INFO: Attempting fallback provider: glm-direct"
TITLES = (
    "Security",
    "Architecture",
    "Simplicity",
    "Financial",
    "Marketing",
    "User Experience",
    "Growth",
    "Emotional Intelligence",
)
IDS = ("security", "architecture", "simplicity", "financial", "marketing", "ux", "growth", "emotional")

FAST_POLICY = """\
version = 1
[route]
targets = ["glm-direct"]
[retry]
backoff_initial_s = 0.01
backoff_max_s = 0.02
[breaker]
failure_threshold = 100
"""
"""glm-direct alone with a quick retry and a breaker that stays closed, so that perspectives
failing on purpose do not open the circuit for the others."""

_TITLE = re.compile(r"from the (.+?) perspective")


class Script:
    """What the sandbox answers, by perspective title: a text, or a 500 for the failing ones;
    the sandbox's own deterministic answer otherwise."""

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        self.failing: set[str] = set()

    def reply(self, provider: str, request: dict[str, Any]) -> str:
        found = _TITLE.search(last_user_text(request))
        title = found.group(1) if found else ""
        if title in self.failing:
            raise RuntimeError(f"{title} is scripted to fail")
        if title in self.answers:
            return self.answers[title]
        return default_reply(provider, request)


@dataclass
class Box:
    """The sandbox running in a thread, and its script."""

    portal: BlockingPortal
    sandbox: Sandbox
    script: Script
    env: dict[str, str]

    def requests(self, name: str) -> int:
        """How many requests provider ``name`` received since the last reset."""

        def count() -> int:
            return len(self.sandbox.requests(name))

        return self.portal.call(count)

    def reset(self) -> None:
        self.script.answers = {}
        self.script.failing = set()
        self.portal.call(self.sandbox.clear_log)


@pytest.fixture(scope="module")
def running_box() -> Iterator[Box]:
    script = Script()
    with start_blocking_portal(backend="asyncio") as portal:
        sandbox = Sandbox({"aiceo-gateway": "down"}, reply=script.reply)
        with portal.wrap_async_context_manager(sandbox):
            yield Box(portal, sandbox, script, sandbox.env())


@pytest.fixture
def box(running_box: Box) -> Box:
    running_box.reset()
    return running_box


@pytest.fixture
def user(cli: Cli, box: Box) -> Cli:
    """A user whose primary (aiceo-gateway) is down and whose fallback is glm-direct."""
    return cli.with_env(box.env, AI_PROVIDER="aiceo-gateway", AI_FALLBACK_PROVIDER="glm-direct")


@pytest.fixture
def direct(cli: Cli, box: Box) -> Cli:
    """A user who asks glm-direct only (no fail-over, no back-off wait)."""
    return cli.with_env(box.env, AI_PROVIDER="glm-direct")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_perspective(p: dict[str, Any]) -> None:
    """The fields DESIGN §3 documents for each perspective, with their types."""
    assert isinstance(p["id"], str)
    assert isinstance(p["perspective"], str)
    assert isinstance(p["analysis"], str) and p["analysis"]
    assert p["confidence"] is None or (is_number(p["confidence"]) and 0 <= p["confidence"] <= 1)
    assert p["reasoning"] is None or isinstance(p["reasoning"], str)
    meta = p["metadata"]
    assert set(meta) >= {"provider", "model", "usage", "costUsd", "latencyMs", "cached"}
    assert isinstance(meta["provider"], str)
    assert isinstance(meta["model"], str)
    assert isinstance(meta["usage"]["inputTokens"], int)
    assert isinstance(meta["usage"]["outputTokens"], int)
    assert is_number(meta["costUsd"])
    assert is_number(meta["latencyMs"])
    assert isinstance(meta["cached"], bool)
    assert "error" in p


def history(cli: Cli, *args: str) -> list[dict[str, Any]]:
    code, entries = cli.json("history", "list", "--json", *args)
    assert code == 0
    assert isinstance(entries, list)
    return entries


# --- the "done when" ----------------------------------------------------------------------


def test_run_with_the_primary_down_prints_the_box_and_the_table(user: Cli, box: Box) -> None:
    """``rmgr run --policy policies/sequential-failover.toml`` with aiceo-gateway down: the box,
    the table, every perspective served by the fallback, the overall confidence a number, and the
    seed's two fail-over lines on stderr (once, not once per perspective)."""
    done = user.run("run", "--policy", SEQUENTIAL, QUESTION)

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Multi-Perspective Analysis" in out
    assert f"Question: {QUESTION}" in out
    assert "Provider: glm-direct (fallback)" in out
    assert re.search(r"Overall Confidence: (0|1)\.\d\d\b", out)
    assert "Status: ok" in out
    assert re.search(r"Perspective\s*┃\s*Confidence\s*┃\s*Provider\s*┃\s*Finding", out)
    for title in TITLES:
        assert re.search(rf"│ {title}\s*│\s*\d\.\d\d\s*│ glm-direct\s*│", out), title
        assert f"── {title} ──" in out
    assert done.stderr.count(PRIMARY_FAILED) == 1
    assert done.stderr.count(TRYING_FALLBACK) == 1
    assert box.requests("glm-direct") == 9  # eight perspectives, then the synthesis
    assert out.index("Decision: ") < out.index("Finding")


def test_run_json_gives_eight_perspectives_with_the_documented_fields(user: Cli) -> None:
    """``--format json``: DESIGN §3's document, 8 perspectives all served by glm-direct, and the
    refused primary among the attempts."""
    code, document = user.json("run", "--policy", SEQUENTIAL, QUESTION, "--format", "json")

    assert code == 0
    assert set(document) >= {
        "question",
        "status",
        "perspectives",
        "summary",
        "overallConfidence",
        "executionTime",
        "timestamp",
        "usage",
        "attempts",
    }
    assert document["question"] == QUESTION
    assert document["status"] == "ok"
    assert [p["id"] for p in document["perspectives"]] == list(IDS)
    assert [p["perspective"] for p in document["perspectives"]] == list(TITLES)
    for p in document["perspectives"]:
        check_perspective(p)
        assert p["error"] is None
        assert is_number(p["confidence"])
        assert p["metadata"]["provider"] == "glm-direct"
        assert p["metadata"]["model"] == "glm-4.7"
        assert p["metadata"]["cached"] is False
    assert is_number(document["overallConfidence"])
    assert is_number(document["executionTime"]) and document["executionTime"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["timestamp"])
    outcomes = {(a["provider"], a["outcome"]) for a in document["attempts"]}
    assert ("aiceo-gateway", "connection") in outcomes
    assert ("glm-direct", "ok") in outcomes
    answered = [a for a in document["attempts"] if a["outcome"] == "ok"]
    assert len(answered) == 9  # eight perspectives, then the synthesis
    assert document["usage"]["inputTokens"] == sum(a["inputTokens"] for a in document["attempts"])
    assert document["usage"]["outputTokens"] == document["synthesis"]["usage"]["outputTokens"] + sum(
        p["metadata"]["usage"]["outputTokens"] for p in document["perspectives"]
    )
    assert document["usage"]["costUsd"] > 0
    assert document["costUsd"] == document["usage"]["costUsd"]


def test_a_second_run_comes_from_the_cache_until_the_ttl(direct: Cli, box: Box) -> None:
    """The second identical run sends no request and says it came from the cache; the hits and
    misses are counted; once the answers are older than ANALYSIS_CACHE_TTL_MS, it asks again."""
    first = direct.run("analyze", QUESTION, "--no-synthesis")
    assert first.returncode == 0, first.stderr
    assert box.requests("glm-direct") == 8
    box.reset()

    second = direct.run("analyze", QUESTION, "--no-synthesis")

    assert second.returncode == 0, second.stderr
    assert box.requests("glm-direct") == 0
    assert "8 from the cache" in second.stdout
    assert second.stdout.count("glm-direct (cached)") == 8
    code, stats = direct.json("cache", "stats", "--json")
    assert code == 0
    assert (stats["entries"], stats["hits"], stats["misses"]) == (8, 8, 8)
    assert stats["hitRate"] == 0.5

    time.sleep(0.06)
    third = direct.run(
        "analyze", QUESTION, "--format", "json", "--no-synthesis", env={"ANALYSIS_CACHE_TTL_MS": "50"}
    )

    assert third.returncode == 0, third.stderr
    assert box.requests("glm-direct") == 8
    assert not any(p["metadata"]["cached"] for p in json.loads(third.stdout)["perspectives"])


def test_no_cache_asks_again(direct: Cli, box: Box) -> None:
    """``--no-cache`` asks every perspective even when fresh answers are cached."""
    args = ("analyze", QUESTION, "--perspectives", "security", "--no-synthesis")
    assert direct.run(*args).returncode == 0
    done = direct.run(*args, "--no-cache", "--format", "json")

    assert done.returncode == 0, done.stderr
    assert box.requests("glm-direct") == 2
    assert json.loads(done.stdout)["perspectives"][0]["metadata"]["cached"] is False


def test_a_provider_failing_for_some_perspectives_gives_a_partial_report(cli: Cli, box: Box) -> None:
    """glm-direct fails for Growth and Marketing only: exit 3, the report is ``partial`` and names
    them, on stderr and in the table."""
    box.script.failing = {"Growth", "Marketing"}
    policy = write_policy(cli.home, "fast.toml", FAST_POLICY)

    done = cli.with_env(box.env).run("analyze", QUESTION, "--policy", str(policy))

    assert done.returncode == 3, done.stderr
    assert "Status: partial" in done.stdout
    assert (
        "WARNING: 2 of 8 perspectives failed: marketing (server_error), growth (server_error)" in done.stderr
    )
    assert re.search(r"│ Growth\s*│ unknown\s*│ glm-direct\s*│ FAILED: server_error", done.stdout)
    assert re.search(r"│ Marketing\s*│ unknown\s*│ glm-direct\s*│ FAILED: server_error", done.stdout)
    assert "Failed: server_error: HTTP 500" in done.stdout
    assert [e["status"] for e in history(cli)] == ["partial"]


def test_fewer_answers_than_min_perspectives_fail_with_exit_1(cli: Cli, box: Box) -> None:
    """``[analysis] min_perspectives = 2`` and only one of two perspectives answering: status
    ``failed``, exit 1."""
    box.script.failing = {"Growth"}
    policy = write_policy(cli.home, "strict.toml", FAST_POLICY + "[analysis]\nmin_perspectives = 2\n")

    done = cli.with_env(box.env).run(
        "analyze", QUESTION, "--policy", str(policy), "--perspectives", "security,growth", "--format", "json"
    )

    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["status"] == "failed"
    assert "error: the analysis failed: fewer than 2 perspective(s) answered" in done.stderr


def test_two_analyses_at_once_both_finish_and_are_both_saved(direct: Cli, box: Box) -> None:
    """Two ``rmgr analyze`` processes started together on the same state folder both succeed,
    both analyses are in the history, and the cache counted every lookup of both."""
    box.portal.call(box.sandbox.set_mode, "glm-direct", "slow:0.1")
    try:
        env = clean_env(direct.home, direct.env)
        processes = [
            subprocess.Popen(
                [*RMGR, "analyze", f"{QUESTION} (team {n})", "--format", "json"],
                env=env,
                cwd=direct.home,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in (1, 2)
        ]
        results = [p.communicate(timeout=30) for p in processes]
    finally:
        box.portal.call(box.sandbox.set_mode, "glm-direct", "ok")

    for process, (out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
        assert json.loads(out)["status"] == "ok"
    questions = sorted(e["question"] for e in history(direct))
    assert questions == [f"{QUESTION} (team 1)", f"{QUESTION} (team 2)"]
    code, stats = direct.json("cache", "stats", "--json")
    assert code == 0
    # Eight perspectives and a synthesis, twice.
    assert (stats["entries"], stats["hits"], stats["misses"]) == (18, 0, 18)


# --- compare --------------------------------------------------------------------------------------


COMPARED = "aiceo-gateway,glm-direct,openai-direct"


def compare_args(cli: Cli, *more: str) -> list[str]:
    """``compare`` of the three providers under a policy whose breaker stays closed: the down
    provider's error is then always the refused connection (a breaker opened by the first
    perspectives would refuse the others with ``circuit_open``, depending on timing)."""
    policy = write_policy(cli.home, "fast.toml", FAST_POLICY)
    return [
        "compare",
        QUESTION,
        "--providers",
        COMPARED,
        "--policy",
        str(policy),
        "--perspectives",
        "security,ux",
        *more,
    ]


def test_compare_shows_three_rows_one_with_its_error(direct: Cli) -> None:
    """``rmgr compare`` against three providers, aiceo-gateway down: a column per provider and a
    row per figure; the down one failed, its error listed whole under the table; exit 3 (not
    every provider answered)."""
    done = direct.run(*compare_args(direct))

    assert done.returncode == 3, done.stderr
    out = done.stdout
    assert re.search(r"┃\s*┃\s*aiceo-gateway ┃\s*glm-direct ┃\s*openai-direct ┃", out)
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert list(rows) == [
        "Status", "Decision", "Time", "Overall", "security", "ux", "Tokens in", "Tokens out", "Cost"
    ]
    assert re.match(r"│ Status\s*│\s*failed │\s*ok │\s*ok │", rows["Status"])
    human_time = r"(?:\d+ ms|\d+\.\d s)"  # 340 ms, 2.0 s: never 0.34 s or 340.123 ms
    assert re.match(rf"│ Time\s*│\s*{human_time} │\s*{human_time} │\s*{human_time} │", rows["Time"])
    for figure in ("Overall", "security", "ux"):
        assert re.match(rf"│ {figure}\s*│\s*- │\s*\d\.\d\d │\s*\d\.\d\d │", rows[figure])
    assert re.match(r"│ Cost\s*│\s*\$0 │\s*\$0\.\d+ │\s*\$0\.\d+ │", rows["Cost"])
    assert re.search(r"aiceo-gateway: connection: connection refused to 127\.0\.0\.1:\d+", out)


def test_compare_json_keeps_each_providers_own_answers(direct: Cli, box: Box) -> None:
    """``rmgr compare --format json``: one object per provider with its status, error, time,
    confidences, usage, cost and whole analysis. Run twice, the second from the cache: each
    provider still shows its own answers, and the down provider is still down (answers are
    never served to a provider that did not write them)."""
    args = compare_args(direct, "--format", "json")
    documents = []
    for _ in range(2):
        code, rows = direct.json(*args)
        assert code == 3
        documents.append(rows)
    assert box.requests("glm-direct") == 3  # two perspectives and the synthesis, then all cached
    assert box.requests("openai-direct") == 3

    first, second = documents
    for rows in documents:
        assert [r["provider"] for r in rows] == ["aiceo-gateway", "glm-direct", "openai-direct"]
        for row in rows:
            assert set(row) >= {
                "provider",
                "status",
                "error",
                "executionTime",
                "overallConfidence",
                "perspectives",
                "usage",
                "costUsd",
                "analysis",
            }
            assert set(row["perspectives"]) == {"security", "ux"}
            assert row["analysis"]["question"] == QUESTION
        down, glm, openai = rows
        assert down["status"] == "failed"
        assert down["error"].startswith("connection: connection refused to 127.0.0.1:")
        assert down["overallConfidence"] is None
        assert all(p["error"]["kind"] == "connection" for p in down["analysis"]["perspectives"])
        for row in (glm, openai):
            assert row["status"] == "ok"
            assert row["error"] is None
            assert is_number(row["overallConfidence"])
            providers = {p["metadata"]["provider"] for p in row["analysis"]["perspectives"]}
            assert providers == {row["provider"]}
    assert first[1]["costUsd"] > 0 and first[1]["usage"]["inputTokens"] > 0
    assert second[1]["costUsd"] == 0 and second[1]["usage"] == {"inputTokens": 0, "outputTokens": 0}
    for before, after in zip(first, second, strict=True):
        assert after["perspectives"] == before["perspectives"]


def test_a_compare_route_keeps_every_providers_answer_in_json_text_and_cache(direct: Cli, box: Box) -> None:
    """Under a ``compare`` route each perspective lists one answer per provider (JSON
    ``answers``, as they arrived; the text report one block per provider), with what each cost;
    run again from the cache, the answers are all still there and cost nothing."""
    policy = write_policy(
        direct.home,
        "compare2.toml",
        'version = 1\n[route]\nstrategy = "compare"\ntargets = ["glm-direct", "openai-direct"]\n'
        "[limits]\nmax_usd = 1.0\n",
    )
    args = ("run", "--policy", str(policy), QUESTION, "--perspectives", "security,ux")
    runs = [direct.json(*args, "--format", "json") for _ in range(2)]
    for n, (code, document) in enumerate(runs):
        assert code == 0
        for p in document["perspectives"]:
            answers = p["answers"]
            # Arrival order (the core's contract): either provider may answer first.
            assert sorted(a["provider"] for a in answers) == ["glm-direct", "openai-direct"]
            assert all(a["analysis"] for a in answers)
            assert [a["costUsd"] > 0 for a in answers] == ([True, True] if n == 0 else [False, False])
    text = direct.run(*args)
    assert text.returncode == 0, text.stderr
    assert text.stdout.count("Answer 2 · Confidence:") == 2
    # Two perspectives and the synthesis (a compare route asks both), then all from the cache.
    assert box.requests("glm-direct") == box.requests("openai-direct") == 3


# --- options and configuration errors -------------------------------------------------------------


def test_perspectives_option_picks_those_perspectives(direct: Cli, box: Box) -> None:
    """``--perspectives security,ux`` asks exactly those two, in that order; ``usage --by
    perspective`` then counts one request for each."""
    code, document = direct.json("analyze", QUESTION, "--perspectives", "ux,security", "--format", "json")

    assert code == 0
    assert [p["id"] for p in document["perspectives"]] == ["ux", "security"]
    assert box.requests("glm-direct") == 3  # and the synthesis
    code, groups = direct.json("usage", "--by", "perspective", "--format", "json")
    assert code == 0
    assert {g["perspective"]: g["requests"] for g in groups} == {"security": 1, "ux": 1, "synthesis": 1}


def test_unknown_perspective_is_exit_2_before_any_request(direct: Cli, box: Box) -> None:
    """An unknown perspective is a usage error (exit 2) naming the known ones; nothing is sent."""
    done = direct.run("analyze", QUESTION, "--perspectives", "security,legal")

    assert done.returncode == 2
    assert done.stdout == ""
    assert "unknown perspective 'legal'" in done.stderr
    assert "security, architecture, simplicity" in done.stderr
    assert box.requests("glm-direct") == 0


@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_a_bad_cache_ttl_is_exit_2(direct: Cli, box: Box, command: str) -> None:
    """``ANALYSIS_CACHE_TTL_MS=abc`` is a configuration error (exit 2, one line), for compare too
    (it used to escape as an "unexpected ExceptionGroup"); nothing is sent."""
    done = direct.run(command, QUESTION, env={"ANALYSIS_CACHE_TTL_MS": "abc"})

    assert done.returncode == 2
    assert done.stderr == "error: ANALYSIS_CACHE_TTL_MS='abc' is not a whole number of milliseconds\n"
    assert box.requests("glm-direct") == 0


def test_markdown_format_escapes_pipes_in_the_table(direct: Cli, box: Box) -> None:
    """``--format markdown``: a heading, a table whose cells keep a ``|`` escaped, and each
    perspective in full."""
    box.script.answers = {
        "Security": '{"findings": "Split traffic | measure | decide.", "recommendation": "Proceed.", '
        '"confidence": 0.8, "reasoning": "Low risk."}'
    }

    done = direct.run("analyze", QUESTION, "--perspectives", "security", "--format", "markdown")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "# Multi-perspective analysis"
    assert f"> {QUESTION}" in lines
    assert "| Perspective | Confidence | Provider | Finding |" in lines
    assert "| Security | 0.80 | glm-direct (glm-4.7) | Split traffic \\| measure \\| decide. |" in lines
    assert "**Recommendation:** Proceed." in lines


def test_no_history_saves_nothing(direct: Cli) -> None:
    """``--no-history`` leaves the history as it was; without it the analysis is saved."""
    assert direct.run("analyze", QUESTION, "--perspectives", "security", "--no-history").returncode == 0
    assert history(direct) == []

    assert direct.run("analyze", QUESTION, "--perspectives", "security", "--agent-id", "ci").returncode == 0
    assert history(direct) == []
    assert [e["agentId"] for e in history(direct, "--agent-id", "ci")] == ["ci"]


def test_terminal_escapes_in_model_output_are_shown_escaped(direct: Cli, box: Box) -> None:
    """Model text with escape sequences is printed as visible ``\\x1b`` text, never raw."""
    box.script.answers = {"Security": "\x1b[31mALERT\x1b[0m all good\x1b]0;pwned\x07\nConfidence: 0.7"}

    done = direct.run("analyze", QUESTION, "--perspectives", "security")

    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert "\x07" not in done.stdout
    assert "\\x1b[31mALERT\\x1b[0m all good\\x1b]0;pwned\\x07" in done.stdout


# --- demo ---------------------------------------------------------------------------------------


def test_demo_runs_the_analysis_with_the_primary_down(cli: Cli) -> None:
    """``rmgr demo``: its own sandbox with aiceo-gateway down; every perspective is served by
    glm-direct; nothing is written to the user's state folder."""
    text = cli.run("demo")
    code, document = cli.json("demo", "--format", "json")

    assert text.returncode == 0, text.stderr
    assert "Provider: glm-direct (fallback)" in text.stdout
    assert PRIMARY_FAILED in text.stderr
    assert TRYING_FALLBACK in text.stderr
    assert code == 0
    assert document["question"] == QUESTION
    assert len(document["perspectives"]) == 8
    assert {p["metadata"]["provider"] for p in document["perspectives"]} == {"glm-direct"}
    assert list(cli.home.iterdir()) == []  # no state.db, no .recursivemanager: nothing at all
