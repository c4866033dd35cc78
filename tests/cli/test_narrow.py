"""Every table fits the terminal: at ``COLUMNS=80`` (and 60) no line is wider, names, numbers and
costs are never cut or wrapped inside, and URLs are shortened rather than wrapped. End to end
against the sandbox (``rmgr providers``, ``compare`` of three providers, ``analyze``, the
history views), and ``rmcli.tables`` directly."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from rmcli.tables import Column, fits, print_table, shorten_url
from tests.cli.helpers import Cli, SandboxProcess

WIDTHS = (80, 60)
NAMES = ("aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct")
COMPARED = ("openai-direct", "glm-direct", "anthropic-direct")
QUESTION = "Should we adopt gRPC for our internal services?"
COST = re.compile(r"\$\d[\d,]*(?:\.\d+)?")


def assert_fits(text: str, width: int) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, f"lines wider than {width}:\n" + "\n".join(too_wide) + f"\n\nin:\n{text}"


@pytest.fixture
def user(cli: Cli, sandbox: SandboxProcess) -> Cli:
    """``rmgr`` in its own folder, pointed at the session's sandbox (every provider up)."""
    return cli.with_env(sandbox.env)


@pytest.mark.parametrize("width", WIDTHS)
def test_providers_fits_with_whole_names_and_short_urls(
    user: Cli, sandbox: SandboxProcess, width: int
) -> None:
    """``COLUMNS=W rmgr providers``: no line wider than W; every provider's name is whole on a
    line; every URL is whole or shortened to its scheme, host and port with an ellipsis, never
    wrapped over several lines."""
    done = user.run("providers", env={"COLUMNS": str(width)})

    assert done.returncode == 0, done.stderr
    assert_fits(done.stdout, width)
    for name in NAMES:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", done.stdout), name
        url = sandbox.url(name)
        origin = re.match(r"https?://[^/]+", url)
        assert origin is not None
        shown = [line for line in done.stdout.splitlines() if origin.group(0) in line]
        assert len(shown) == 1, f"{url} should appear once, on one line"
        assert url in shown[0] or f"{origin.group(0)}/…" in shown[0]


def test_providers_at_80_columns_is_a_table(user: Cli) -> None:
    """At 80 columns ``providers`` is still a table (a row per provider), its configuration
    problems listed whole under it."""
    done = user.run("providers", env={"COLUMNS": "80", "GLM_API_URL": ""})

    assert done.returncode == 0, done.stderr
    assert_fits(done.stdout, 80)
    for name in NAMES:
        assert re.search(rf"^│ {re.escape(name)}\s*│", done.stdout, re.MULTILINE), name
    assert "glm-direct: GLM_API_URL is not set" in done.stdout


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxProcess) -> Iterator[dict[int, str]]:
    """``rmgr compare`` of three providers, all eight perspectives, at each width: its stdout."""
    home = tmp_path_factory.mktemp("compare")
    cli = Cli(home, sandbox.env)
    out: dict[int, str] = {}
    for width in WIDTHS:
        done = cli.run("compare", QUESTION, "--providers", ",".join(COMPARED), env={"COLUMNS": str(width)})
        assert done.returncode == 0, done.stderr
        out[width] = done.stdout
    yield out


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_of_three_providers_fits(comparison: dict[int, str], width: int) -> None:
    """``COLUMNS=W rmgr compare ... --providers openai-direct,glm-direct,anthropic-direct``
    prints no line wider than W; each provider's name and cost is whole, and each time is a
    human one (``85 ms``, ``2.0 s``)."""
    out = comparison[width]
    assert_fits(out, width)
    for name in COMPARED:
        assert name in out
    assert len(COST.findall(out)) >= len(COMPARED)
    assert not re.search(r"\d\.\d{4,} s|\d+\.\d+ ms", out), "times must be rounded as a person reads them"


def test_compare_at_80_columns_has_a_column_per_provider(comparison: dict[int, str]) -> None:
    """At 80 columns the comparison is one table: the providers as columns, a row per figure
    and one per perspective, each confidence whole (``0.85``, never ``0.`` / ``85``)."""
    out = comparison[80]
    assert re.search(r"┃\s*┃ +openai-direct ┃ +glm-direct ┃ +anthropic-direct ┃", out)
    for label in ("Status", "Time", "Overall", "security", "emotional", "Tokens in", "Cost"):
        assert re.search(rf"^│ {label}\s*│", out, re.MULTILINE), label
    for perspective in ("security", "architecture", "ux", "growth"):
        assert re.search(rf"^│ {perspective}\s*│ +\d\.\d\d │ +\d\.\d\d │ +\d\.\d\d │$", out, re.MULTILINE)
    assert re.search(r"^│ Cost\s*│ +\$0\.\d+ │ +\$0\.\d+ │ +\$0\.\d+ │$", out, re.MULTILINE)


@pytest.mark.parametrize("width", WIDTHS)
def test_analysis_report_and_history_views_fit(user: Cli, width: int) -> None:
    """The analysis report and ``history list``, ``history stats``, ``cache stats`` print no line
    wider than W; the ids in ``history list`` are whole; times and costs are human figures."""
    env = {"COLUMNS": str(width)}
    report = user.run("analyze", QUESTION + " " + "Think of the team of five. " * 4, env=env)
    assert report.returncode == 0, report.stderr
    assert_fits(report.stdout, width)
    status = re.search(r"Time: (\S+ \S+) · Cost: (\S+)", report.stdout)
    assert status is not None, report.stdout
    assert re.fullmatch(r"\d+ ms|\d+\.\d s", status.group(1)) and COST.fullmatch(status.group(2))
    assert user.run("analyze", "Short one?", "--perspectives", "security", env=env).returncode == 0

    code, saved = user.json("history", "list", "--json")
    assert code == 0 and len(saved) == 2
    listing = user.run("history", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert_fits(listing.stdout, width)
    for entry in saved:
        assert re.search(rf"(?<!\w){entry['id']}(?!\w)", listing.stdout)
    for view in (("history", "stats"), ("cache", "stats")):
        done = user.run(*view, env=env)
        assert done.returncode == 0, done.stderr
        assert_fits(done.stdout, width)


def test_history_list_at_80_columns_is_a_table(user: Cli) -> None:
    """At 80 columns ``history list`` is a table (a row per analysis), not cards; a long
    question is cut with an ellipsis."""
    env = {"COLUMNS": "80"}
    assert user.run("analyze", "Long " * 40, "--perspectives", "security", env=env).returncode == 0
    done = user.run("history", "list", env=env)
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"^│ [0-9a-f]{8,} │ \d{4}-\d\d-\d\d \d\d:\d\d │ ok\s*│ \d\.\d\d\s*│ Long Long", done.stdout, re.M
    )
    assert "…" in done.stdout


# --- rmcli.tables directly -----------------------------------------------------------------------


def test_shorten_url_keeps_scheme_host_port_and_last_segment() -> None:
    """A URL too long for its room keeps its origin and last path segment, then its origin, and
    is cut with an ellipsis only when even that does not fit; one that fits is whole."""
    url = "http://127.0.0.1:43699/api/paas/v4/chat/completions"
    assert shorten_url(url, 80) == url
    assert shorten_url(url, 40) == "http://127.0.0.1:43699/…/completions"
    assert shorten_url(url, 30) == "http://127.0.0.1:43699/…"
    assert shorten_url(url, 10) == "http://12…"
    for width in range(1, 60):
        assert len(shorten_url(url, width)) <= width


@pytest.mark.parametrize("width", [40, 60, 80, 100])
def test_print_table_never_exceeds_the_width_nor_breaks_a_name(
    capsys: pytest.CaptureFixture[str], width: int
) -> None:
    """A table with names, costs, a URL and free text fits each width: at worst as cards. Names
    and costs are never split across lines."""
    rows = [
        ["anthropic-direct", "$0.0012", "http://127.0.0.1:38495/v1/messages", "connection refused " * 4],
        ["my-very-own-provider", "$12.50", "https://example.invalid/a/b/c/d/e/f/g/h", "ok"],
    ]
    print_table(
        "Things", ["Provider", "Cost", Column("URL", url=True), Column("Note", wrap=True)], rows, width=width
    )
    out = capsys.readouterr().out
    assert_fits(out, width)
    for token in ("anthropic-direct", "my-very-own-provider", "$0.0012", "$12.50"):
        assert token in out


def test_print_table_drops_droppable_columns_first(capsys: pytest.CaptureFixture[str]) -> None:
    """A column marked droppable is left out when the table would not fit, and a line says so;
    ``fits`` tells a view whether every column fits."""
    headers = ["Name", Column("Extra", drop=1), "Value"]
    rows = [["glm-direct", "x" * 20, "0.85"]]
    assert fits(headers, rows, width=80) and not fits(headers, rows, width=30)
    print_table(None, headers, rows, width=30)
    out = capsys.readouterr().out
    assert_fits(out, 30)
    assert "Extra" not in out.splitlines()[1]
    assert "not shown at this width: Extra" in " ".join(out.split())
    assert re.search(r"│ glm-direct │ 0\.85\s*│", out)


def test_print_table_unbounded_when_piped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piped with COLUMNS unset, a row stays on one line however long, for grep."""
    monkeypatch.delenv("COLUMNS", raising=False)
    url = "http://127.0.0.1:1/" + "a" * 150
    print_table("T", ["Provider", "URL"], [["glm-direct", url]])
    assert url in capsys.readouterr().out
