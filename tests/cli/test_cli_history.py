"""``rmgr history`` and ``rmgr cache`` end to end: saved analyses listed, shown, counted, exported
and deleted; the answer cache counted and cleared. Real ``rmgr`` processes on a real state folder.

Each test starts from a copy of the same state folder: two analyses saved by ``rmgr analyze``
against the session's sandbox (one for agent ``default``, one for ``ci``), and an old,
low-confidence ``partial`` one of ``default`` put straight into the state, ten days back, so that
the date and confidence filters have something to leave out.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import pytest

from rmcli import api
from rmcli.state import HistoryEntry
from tests.cli.helpers import Cli, SandboxProcess

QUESTION = "Should we adopt trunk-based development?"
CI_QUESTION = "Should CI run nightly?"
OLD_QUESTION = "Should we rewrite it in Rust?"
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Saved:
    """What a test starts with: the user, the analysis printed by ``rmgr analyze --format json``
    and the ids of the three saved entries."""

    cli: Cli
    document: dict[str, Any]
    recent_id: str
    ci_id: str
    old_id: str


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxProcess) -> Saved:
    """The three analyses, saved once per module in a folder of their own."""
    home = tmp_path_factory.mktemp("seeded")
    user = Cli(home).with_env(sandbox.env, AI_PROVIDER="glm-direct")
    code, document = user.json("analyze", QUESTION, "--perspectives", "security,ux", "--format", "json")
    assert code == 0
    ci = user.run("analyze", CI_QUESTION, "--perspectives", "security", "--agent-id", "ci")
    assert ci.returncode == 0, ci.stderr
    old_document = {
        "question": OLD_QUESTION,
        "status": "partial",
        "perspectives": [],
        "summary": "0 of 1 perspectives answered.",
        "overallConfidence": 0.3,
        "executionTime": 1200.0,
        "timestamp": "2000-01-01T00:00:00.000Z",
        "usage": {"inputTokens": 0, "outputTokens": 0, "costUsd": 0.0},
        "attempts": [],
    }

    async def seed() -> tuple[str, list[HistoryEntry], HistoryEntry]:
        async with api.records(env={}, state_home=home) as state:
            old_id = await state.history.add(
                "default",
                OLD_QUESTION,
                "partial",
                0.3,
                int(time.time() * 1000) - 10 * DAY_MS,
                msgspec.json.encode(old_document),
            )
            recent = await state.history.list("default", since_ms=int(time.time() * 1000) - DAY_MS)
            (ci_entry,) = await state.history.list("ci")
        return old_id, recent, ci_entry

    old_id, recent, ci_entry = anyio.run(seed)
    assert [e.question for e in recent] == [QUESTION]
    return Saved(user, document, recent[0].id, ci_entry.id, old_id)


@pytest.fixture
def saved(seeded: Saved, cli: Cli) -> Saved:
    """A copy of the seeded state folder in this test's own folder, for the test to change."""
    for path in seeded.cli.state_files:
        shutil.copy2(path, cli.home / path.name)
    return dataclasses.replace(seeded, cli=cli.with_env(seeded.cli.env))


def listing(cli: Cli, *args: str) -> list[dict[str, Any]]:
    """``rmgr history list --json ARGS``, which must succeed: its entries."""
    code, entries = cli.json("history", "list", "--json", *args)
    assert code == 0
    assert isinstance(entries, list)
    return entries


def test_list_shows_the_saved_analyses_newest_first(saved: Saved) -> None:
    """``history list``: a table of the agent's analyses, newest first; another agent's are not in
    it; an agent without any gets a plain sentence."""
    done = saved.cli.run("history", "list")

    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 2
    assert re.match(
        rf"│ {saved.recent_id} │ \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC │ default │ ok\s*│ \d\.\d\d", rows[0]
    )
    assert QUESTION in rows[0]
    assert re.match(
        rf"│ {saved.old_id} │ .* │ default │ partial │ 0\.30\s*│ {re.escape(OLD_QUESTION)}", rows[1]
    )
    assert CI_QUESTION not in done.stdout
    nobody = saved.cli.run("history", "list", "--agent-id", "nobody")
    assert (nobody.returncode, nobody.stdout) == (0, "No saved analyses.\n")


def test_list_json_and_its_filters(saved: Saved) -> None:
    """``--json`` entries carry ``{id, agentId, question, status, overallConfidence, timestamp}``;
    ``--min-confidence``, ``--since``, ``--limit``, ``--agent-id`` and ``--all-agents`` filter."""
    entries = listing(saved.cli)

    assert [e["id"] for e in entries] == [saved.recent_id, saved.old_id]
    recent, old = entries
    assert recent == {
        "id": saved.recent_id,
        "agentId": "default",
        "question": QUESTION,
        "status": "ok",
        "overallConfidence": saved.document["overallConfidence"],
        "timestamp": recent["timestamp"],
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", recent["timestamp"])
    assert (old["status"], old["overallConfidence"]) == ("partial", 0.3)
    assert [e["id"] for e in listing(saved.cli, "--min-confidence", "0.5")] == [saved.recent_id]
    assert [e["id"] for e in listing(saved.cli, "--min-confidence", "0.3")] == [saved.recent_id, saved.old_id]
    assert [e["id"] for e in listing(saved.cli, "--since", "1d")] == [saved.recent_id]
    assert [e["id"] for e in listing(saved.cli, "--since", "2w")] == [saved.recent_id, saved.old_id]
    assert [e["id"] for e in listing(saved.cli, "--limit", "1")] == [saved.recent_id]
    assert [e["id"] for e in listing(saved.cli, "--agent-id", "ci")] == [saved.ci_id]
    assert {e["id"] for e in listing(saved.cli, "--all-agents")} == {
        saved.recent_id,
        saved.old_id,
        saved.ci_id,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--min-confidence", "1.5"), "--min-confidence must be between 0 and 1"),
        (("--since", "yesterday"), "--since: cannot read 'yesterday'"),
        (("--limit", "-1"), "--limit must be 0 or more"),
    ],
)
def test_list_refuses_bad_filters(saved: Saved, args: tuple[str, ...], message: str) -> None:
    """A filter that makes no sense is a usage error (exit 2), not an empty list."""
    done = saved.cli.run("history", "list", *args)

    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr


def test_show_by_id_prefix_in_markdown_and_json(saved: Saved) -> None:
    """``history show PREFIX`` finds the analysis by the start of its id: as JSON it is exactly
    the document ``rmgr analyze --format json`` printed; as Markdown, the report, its synthesis
    first."""
    prefix = saved.recent_id[:6]

    code, document = saved.cli.json("history", "show", prefix, "--format", "json")
    markdown = saved.cli.run("history", "show", prefix)

    assert code == 0
    assert document == saved.document
    assert markdown.returncode == 0, markdown.stderr
    lines = markdown.stdout.splitlines()
    assert lines[0] == "# Multi-perspective analysis"
    assert f"> {QUESTION}" in lines
    assert "| Perspective | Confidence | Provider | Finding |" in lines
    assert any(line.startswith("| Security | ") and "glm-direct (glm-4.7)" in line for line in lines)
    assert "## User Experience" in lines
    overall = f"{saved.document['overallConfidence']:.2f}"
    assert f"**Status:** ok · **Overall confidence:** {overall}" in markdown.stdout
    decision = saved.document["synthesis"]["decision"].upper()
    assert lines.index("## Synthesis") < lines.index("| Perspective | Confidence | Provider | Finding |")
    assert f"**Decision:** {decision}" in markdown.stdout and "## Summary" not in lines


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("abc", "no saved analysis has the id 'abc' (give at least 4 characters of the id)"),
        ("ffffffffffff", "no saved analysis has the id 'ffffffffffff' (see rmgr history list)"),
    ],
)
def test_show_unknown_id_is_exit_2(saved: Saved, reference: str, message: str) -> None:
    """An id that names nothing (or too short a prefix) is a usage error that says what to do."""
    done = saved.cli.run("history", "show", reference)

    assert done.returncode == 2
    assert done.stderr == f"error: {message}\n"


def test_stats_json(saved: Saved) -> None:
    """``history stats --json``: counts by status and the confidences of one agent's analyses."""
    code, stats = saved.cli.json("history", "stats", "--json")

    assert code == 0
    recent = saved.document["overallConfidence"]
    assert stats["agentId"] == "default"
    assert stats["totalAnalyses"] == 2
    assert stats["byStatus"] == {"ok": 1, "partial": 1}
    assert stats["withConfidence"] == 2
    assert stats["averageConfidence"] == pytest.approx((recent + 0.3) / 2)
    assert (stats["minConfidence"], stats["maxConfidence"]) == (0.3, recent)
    assert stats["first"] < stats["last"]
    code, everyone = saved.cli.json("history", "stats", "--json", "--all-agents")
    assert (everyone["agentId"], everyone["totalAnalyses"]) == (None, 3)


def test_export_writes_the_file_and_refuses_to_overwrite_it(saved: Saved) -> None:
    """``history export FILE``: ``{agentId, exportedAt, totalAnalyses, analyses}``, oldest first,
    each analysis whole with its id. An existing file is kept unless ``--force``; ``-`` is
    standard output."""
    target = saved.cli.home / "export.json"

    done = saved.cli.run("history", "export", str(target))

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Exported 2 analyses of default to {target}\n"
    exported = json.loads(target.read_text(encoding="utf-8"))
    assert set(exported) == {"agentId", "exportedAt", "totalAnalyses", "analyses"}
    assert (exported["agentId"], exported["totalAnalyses"]) == ("default", 2)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", exported["exportedAt"])
    old, recent = exported["analyses"]
    assert (old["id"], old["question"]) == (saved.old_id, OLD_QUESTION)
    assert recent == {"id": saved.recent_id, **saved.document}

    target.write_text("keep me", encoding="utf-8")
    refused = saved.cli.run("history", "export", str(target))
    assert refused.returncode == 2
    assert "exists; add --force to overwrite it" in refused.stderr
    assert target.read_text(encoding="utf-8") == "keep me"

    forced = saved.cli.run("history", "export", str(target), "--force", "--agent-id", "ci")
    assert forced.returncode == 0, forced.stderr
    assert [a["id"] for a in json.loads(target.read_text(encoding="utf-8"))["analyses"]] == [saved.ci_id]

    to_stdout = saved.cli.run("history", "export", "-")
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert json.loads(to_stdout.stdout)["totalAnalyses"] == 2


def test_clear_needs_yes_and_honours_before(saved: Saved) -> None:
    """``history clear`` deletes nothing without ``--yes``; ``--before 7d`` deletes only what is
    older than a week; then ``--yes`` alone deletes the rest of that agent's, not another's."""
    refused = saved.cli.run("history", "clear")
    assert refused.returncode == 2
    assert "add --yes to confirm" in refused.stderr
    assert len(listing(saved.cli)) == 2

    older = saved.cli.run("history", "clear", "--before", "7d", "--yes")
    assert older.returncode == 0, older.stderr
    assert older.stdout == "Deleted 1 saved analyses of default before 7d\n"
    assert [e["id"] for e in listing(saved.cli)] == [saved.recent_id]

    rest = saved.cli.run("history", "clear", "--yes")
    assert rest.stdout == "Deleted 1 saved analyses of default\n"
    assert listing(saved.cli) == []
    assert [e["id"] for e in listing(saved.cli, "--agent-id", "ci")] == [saved.ci_id]

    everyone = saved.cli.run("history", "clear", "--all-agents", "--yes")
    assert everyone.stdout == "Deleted 1 saved analyses of every agent\n"
    assert listing(saved.cli, "--all-agents") == []


def test_cache_stats_count_hits_and_misses_and_clear_resets_them(saved: Saved) -> None:
    """``cache stats --json`` counts the lookups of every run: the three perspectives and two
    syntheses asked so far were misses; asking the first question again is three hits (two
    perspectives and the synthesis). ``cache clear`` removes the answers and starts the counts
    afresh."""
    code, before = saved.cli.json("cache", "stats", "--json")
    assert code == 0
    assert (before["entries"], before["freshEntries"], before["hits"], before["misses"]) == (5, 5, 0, 5)
    assert before["ttlMs"] == 3_600_000
    assert before["bytes"] > 0

    again = saved.cli.run("analyze", QUESTION, "--perspectives", "security,ux", "--no-history")
    assert again.returncode == 0, again.stderr
    code, after = saved.cli.json("cache", "stats", "--json")
    assert (after["entries"], after["hits"], after["misses"]) == (5, 3, 5)
    assert after["hitRate"] == pytest.approx(0.375)

    table = saved.cli.run("cache", "stats")
    assert re.search(r"Hits / misses\s*│ 3 / 5 \(37\.5%\)", table.stdout)

    cleared = saved.cli.run("cache", "clear")
    assert (cleared.returncode, cleared.stdout) == (0, "Removed 5 cached answers\n")
    code, empty = saved.cli.json("cache", "stats", "--json")
    assert (empty["entries"], empty["hits"], empty["misses"], empty["hitRate"]) == (0, 0, 0, None)


def test_cache_stats_refuses_a_bad_ttl(saved: Saved) -> None:
    """``ANALYSIS_CACHE_TTL_MS`` is checked here too: a non-number is exit 2."""
    done = saved.cli.run("cache", "stats", "--json", env={"ANALYSIS_CACHE_TTL_MS": "abc"})

    assert done.returncode == 2
    assert "ANALYSIS_CACHE_TTL_MS='abc'" in done.stderr
