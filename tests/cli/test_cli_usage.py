"""``rmgr usage`` views as a user runs them: grouped by provider, model or day, as text (with a
total row, fitting 80 columns), JSON or CSV; on the SQLite state and on a shared Redis state.

The attempts are written through the state the shell uses (``open_state``), so every figure the
views print is known in advance.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import anyio
import pytest

from rmcli.state import Origin
from rmcore.attempts import AttemptRecord
from rmcore.completion import Usage
from tests.cli.helpers import Cli
from tests.cli.state_backends import Backend

DAY_MS = 86_400_000
TODAY_MS = int(time.time() * 1000) // DAY_MS * DAY_MS + 1_000  # just after 00:00 UTC today
if time.time() * 1000 < TODAY_MS:
    TODAY_MS -= DAY_MS  # the first second of a day: "today" is yesterday's
EARLIER_MS = TODAY_MS - 2 * DAY_MS

SEEDED = [
    # provider, model, outcome, latency ms, started, tokens in/out, cost
    ("glm-direct", "glm-4.7", "ok", 100.0, EARLIER_MS, 10, 20, 0.001),
    ("glm-direct", "glm-4.7", "server_error", 300.0, TODAY_MS, 0, 0, 0.0),
    ("anthropic-direct", "claude-sonnet-4-5", "ok", 200.0, TODAY_MS + 1, 5, 50, 0.002),
    ("openai-direct", "glm-4.7", "cancelled", 50.0, TODAY_MS + 2, 7, 0, 0.00004),
]
PERSPECTIVES = ["security", "security", "cost", None]  # of each SEEDED attempt (None: an ask)


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


@pytest.fixture
def user(store_backend: Backend) -> Cli:
    """``rmgr`` on a state (SQLite, or the Redis database) holding the ``SEEDED`` attempts."""
    store_backend.home.mkdir(parents=True, exist_ok=True)

    async def seed() -> None:
        async with store_backend.open() as state:
            for n, (provider, model, outcome, latency, started, tokens_in, tokens_out, cost) in enumerate(
                SEEDED
            ):
                record = AttemptRecord(
                    provider=provider,
                    model=model,
                    outcome=outcome,
                    status=500 if outcome == "server_error" else 200,
                    latency_ms=latency,
                    started_at_ms=started,
                    usage=Usage(input_tokens=tokens_in, output_tokens=tokens_out),
                    cost_usd=cost,
                )
                perspective = PERSPECTIVES[n]
                command = "ask" if perspective is None else "analyze"
                await state.attempts.settle(f"seed-{n}", Origin("run", command, perspective), record)

    anyio.run(seed)
    return Cli(store_backend.home, store_backend.env)


def test_by_model_as_csv_is_one_machine_readable_row_per_model(user: Cli) -> None:
    """``--by model --format csv``: a header row, then one row per model (the same model on two
    providers is one row), numbers plain enough for any spreadsheet, no total row."""
    done = user.run("usage", "--since", "all", "--by", "model", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        "model,requests,failures,cancelled,failureRate,p50Ms,p95Ms,inputTokens,outputTokens,costUsd"
    )
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["model"] for r in rows] == ["claude-sonnet-4-5", "glm-4.7"]
    glm = rows[1]
    assert (int(glm["requests"]), int(glm["failures"]), int(glm["cancelled"])) == (3, 1, 1)
    assert glm["failureRate"] == "0.333"  # rounded as in JSON: 3 significant digits
    assert (float(glm["p50Ms"]), float(glm["p95Ms"])) == (200.0, 290.0)
    assert (int(glm["inputTokens"]), int(glm["outputTokens"])) == (17, 20)
    assert glm["costUsd"] == "0.00104"
    by_provider = user.run("usage", "--since", "all", "--format", "csv").stdout
    openai = next(r for r in csv.DictReader(io.StringIO(by_provider)) if r["provider"] == "openai-direct")
    assert openai["costUsd"] == "0.00004", "a small cost is written without an exponent"


def test_by_day_as_json_has_one_row_per_utc_day(user: Cli) -> None:
    """``--by day --format json``: rows keyed by ``day`` (YYYY-MM-DD, UTC), oldest first, with
    the fields of ``usage --json``; ``--json`` is the same as ``--format json``."""
    code, rows = user.json("usage", "--since", "all", "--by", "day", "--format", "json")
    assert code == 0
    assert [(r["day"], r["requests"], r["failures"], r["cancelled"]) for r in rows] == [
        (_day(EARLIER_MS), 1, 0, 0),
        (_day(TODAY_MS), 3, 1, 1),
    ]
    assert rows[1]["costUsd"] == pytest.approx(0.00204)
    assert user.json("usage", "--since", "all", "--by", "day", "--json") == (code, rows)


def test_by_provider_json_keeps_the_contract(user: Cli) -> None:
    """Without ``--by``, the JSON rows are the contract's, keyed by ``provider``."""
    code, rows = user.json("usage", "--since", "all", "--json")
    assert code == 0
    keys = ["provider", "requests", "failures", "cancelled", "failureRate", "p50Ms", "p95Ms"]
    assert list(rows[0])[: len(keys)] == keys
    assert [r["provider"] for r in rows] == ["anthropic-direct", "glm-direct", "openai-direct"]


def row(table: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{table}")


def test_the_text_view_ends_with_a_total_row(user: Cli) -> None:
    """The text table has a row per group and a ``Total`` row summing them (requests, failures
    and their rate, cancelled, tokens, cost) with the percentiles over every attempt."""
    table = user.run("usage", "--since", "all", env={"COLUMNS": "200"}).stdout
    assert row(table, "glm-direct")[:3] == ["glm-direct", "2", "1 (50.0%)"]
    total = row(table, "Total")
    assert total == ["Total", "4", "1 (25.0%)", "1", "200 ms", "290 ms", "22 / 70", "$0.0030"]


def test_the_text_view_fits_80_columns_without_breaking_a_cell(user: Cli) -> None:
    """At ``COLUMNS=80`` no line is wider than 80; every provider name and cost stays whole on
    its row (the columns left out are named under the table); grouped by model, the same."""
    for by, names in (("provider", ["anthropic-direct", "glm-direct"]), ("model", ["claude-sonnet-4-5"])):
        out = user.run("usage", "--since", "all", "--by", by, env={"COLUMNS": "80"}).stdout
        assert max(len(line) for line in out.splitlines()) <= 80, out
        for name in names:
            assert row(out, name)[0] == name
        assert row(out, "Total")[-1] == "$0.0030"
        assert "not shown at this width" in out


def test_by_perspective_groups_an_analysis_attempts_and_the_rest_apart(user: Cli) -> None:
    """``--by perspective``: one group per analysis perspective, and the attempts sent outside an
    analysis as ``null`` in JSON, ``(none)`` in text."""
    done = user.run("usage", "--since", "all", "--by", "perspective", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    groups = {row["perspective"]: (row["requests"], row["failures"], row["cancelled"]) for row in rows}
    assert groups == {None: (1, 0, 1), "cost": (1, 0, 0), "security": (2, 1, 0)}
    text = user.run("usage", "--since", "all", "--by", "perspective").stdout
    assert "Usage by perspective" in text and "(none)" in text and "security" in text


def test_bad_combinations_are_refused(user: Cli) -> None:
    """``--json`` with another ``--format`` exits 2, printing nothing on stdout."""
    done = user.run("usage", "--json", "--format", "csv")
    assert done.returncode == 2 and "--json and --format csv" in done.stderr
    assert done.stdout == ""


def _caps(user: Cli, fmt: str) -> Any:
    return user.run("usage", "--caps", "--format", fmt).stdout


def test_caps_as_csv_is_a_header_when_nothing_is_charged(user: Cli) -> None:
    """``--caps --format csv`` with no cap charged prints the header row alone."""
    assert _caps(user, "csv") == "cap,resource,window,used,reserved,limit,resetsAt\n"
