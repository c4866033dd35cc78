"""``rmgr --help`` and every command's help: generated from the docstrings, 80 columns wide at
most, free of meaningless negations, the exit codes at the top, the shared ``--verbose``
described once, an example per command; a command line cyclopts cannot parse is one ``error:``
line and exit 2; and ``rmgr --help`` stays fast (it imports no command)."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cyclopts.help.help import docstring_parse

from rmcli.app import COMMANDS, GROUPS
from tests.cli.helpers import REPO, Cli, clean_env, script

WIDTH = 80

LEAF_COMMANDS: list[tuple[str, ...]] = [(g, n) if g else (n,) for g, n, _, _ in COMMANDS]
"""Every command that runs something, as the words that name it."""

ALL_HELP: list[tuple[str, ...]] = [
    (),
    *[(g,) for g in GROUPS],
    *LEAF_COMMANDS,
    ("circuits", "reset"),
]
"""Every help page: the top, each group's, each command's, and ``circuits reset``."""

LEFTOVER = re.compile(r"--no-no-|--empty-|--([a-z][a-z-]*) --no-\1\b|\[default: (False|True)\]")
"""A flag's generated negation (``--json --no-json``, ``--no-no-cache``, ``--empty-fail``), or
``[default: False]``: noise in help."""


def _helps(cli: Cli) -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Every help page at ``COLUMNS=80``, two at a time."""

    def one(words: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return cli.run(*words, "--help", env={"COLUMNS": str(WIDTH)})

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(ALL_HELP, pool.map(one, ALL_HELP), strict=True))


@pytest.fixture(scope="module")
def helps(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Every help page, run once for the whole module."""
    return _helps(Cli(tmp_path_factory.mktemp("help")))


def _doc(path: str) -> str:
    """The docstring of the command at import path ``module:attribute`` (an App: its default's)."""
    import importlib

    module, _, name = path.partition(":")
    target = getattr(importlib.import_module(module), name)
    function = getattr(target, "default_command", None) or target
    return function.__doc__ or ""


def test_every_help_fits_80_columns_and_has_no_leftovers(
    helps: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    """At ``COLUMNS=80`` every help page (top, groups, every command and subcommand) exits 0,
    has no line wider than 80 characters, and shows no ``--no-``/``--empty-`` negation and no
    ``[default: False]``."""
    for words, done in helps.items():
        assert done.returncode == 0, (words, done.stderr)
        assert done.stdout.startswith("Usage: rmgr"), words
        wide = [line for line in done.stdout.splitlines() if len(line) > WIDTH]
        assert not wide, (words, wide)
        assert not LEFTOVER.search(done.stdout), (words, [m.group(0) for m in LEFTOVER.finditer(done.stdout)])


def test_the_top_help_lists_the_exit_codes_first_and_describes_verbose_once(
    helps: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    """``rmgr --help`` states exit codes 0, 1, 2 and 3 right after its first line, before the
    commands, and explains ``--verbose`` in full; each command's page gives it one line."""
    top = helps[()].stdout
    paragraphs = [p for p in top.split("\n\n") if p.strip()]
    assert paragraphs[2].lstrip().startswith("Exit codes:"), paragraphs[:3]
    codes = " ".join(paragraphs[2].split())
    for code, meaning in (("0", "ok"), ("1", "failed"), ("2", "bad input"), ("3", "partial")):
        assert f"{code} {meaning}" in codes, code
    assert top.index("Exit codes:") < top.index("Commands")
    flat = " ".join(top.split())
    assert "trace on stderr every HTTP request and response" in flat
    assert "Keys are never printed" in flat
    for words in LEAF_COMMANDS:
        page = helps[words].stdout
        verbose = [i for i, line in enumerate(page.splitlines()) if "--verbose -v" in line]
        assert len(verbose) == 1, words
        assert "every HTTP request" not in " ".join(page.split()), words


def test_the_top_help_lists_every_command_with_its_docstring_line(
    helps: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    """Every command is listed by its group's help (or the top one) with the first line of its
    docstring, each on one line at 80 columns: the one-liners in ``rmgr.app.COMMANDS`` are the
    docstrings' own."""
    for group, name, path, summary in COMMANDS:
        parsed = docstring_parse(_doc(path), "markdown")
        assert parsed.short_description == summary, (name, parsed.short_description)
        listing = helps[(group,) if group else ()].stdout
        assert re.search(rf"│ {re.escape(name)} +{re.escape(summary)} *│", listing), (group, name)


def test_each_command_help_is_its_docstring_with_an_example(
    helps: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    """A command's own help page shows its whole docstring (not only the one-liner it is listed
    with), including a line ``Example: rmgr ...``; so does each group's and ``circuits reset``."""
    for words in [*LEAF_COMMANDS, *[(g,) for g in GROUPS], ("circuits", "reset")]:
        flat = " ".join(helps[words].stdout.split())
        assert re.search(r"Example: (\S+ \| )?(\S+ )*rmgr ", flat), words
    for _, name, path, _ in COMMANDS:
        long = docstring_parse(_doc(path), "markdown").long_description or ""
        assert long, name


def test_compare_describes_its_question(
    helps: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    """``rmgr compare --help`` describes its QUESTION argument."""
    line = next(line for line in helps[("compare",)].stdout.splitlines() if "QUESTION " in line)
    assert re.search(r"QUESTION +\w", line), line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("bogus",), r'^error: unknown command "bogus" — rmgr --help lists what it takes$'),
        (("usage", "--bogus"), r"^error: unknown option: --bogus — rmgr usage --help lists what it takes$"),
        (("ask", "--max-tokens", "x", "hi"), r"^error: invalid value for --max-tokens: .* — rmgr ask --help"),
        (("policy", "explain"), r"^error: .*FILE requires an argument — rmgr policy explain --help"),
        (("completion", "tcsh"), r'^error: invalid value "tcsh" .*bash.*zsh.*fish'),
        (("ask", "two", "words"), r"^error: more words than the command takes: 'words' — quote a question"),
    ],
)
def test_a_command_line_that_does_not_parse_is_one_error_line(
    cli: Cli, args: tuple[str, ...], expected: str
) -> None:
    """An unknown command or option, a bad value or a missing argument: exit 2, nothing on
    stdout, and on stderr one ``error: what — where to look`` line (no box, no traceback)."""
    done = cli.run(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert re.search(expected, done.stderr.rstrip("\n")), done.stderr


def test_a_reader_that_goes_away_is_no_error(cli: Cli) -> None:
    """Output piped to a reader that closed its end (``rmgr policy list | head -1``): exit 1
    with nothing on stderr, not a report of a bug."""
    done = subprocess.Popen(
        [str(script("rmgr")), "policy", "list"],
        env=clean_env(cli.home), cwd=cli.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert done.stdout is not None and done.stderr is not None
    done.stdout.close()  # before the command can have written anything
    assert (done.wait(timeout=30), done.stderr.read()) == (1, b"")


def test_a_bad_config_error_is_prefixed_once(cli: Cli) -> None:
    """A configuration error raised by a command is one ``error:`` line, exit 2."""
    done = cli.run("history", "clear")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and not done.stderr.startswith("error: error")
    assert "add --yes" in done.stderr


def test_the_top_help_imports_no_command_nor_the_http_stack(tmp_path: Path) -> None:
    """``rmgr --help`` loads no command module, nor the HTTP stack: what keeps it starting fast.
    How fast is measured by ``bench/startup.py``, not asserted here (a timed test fails on a busy
    machine: this one did, at 0.30 s over a bare interpreter with the suite's two workers running)."""
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write(' '.join(sorted(sys.modules))))\n"
        "from rmcli.app import main\n"
        "main(['--help'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=clean_env(tmp_path), cwd=REPO, capture_output=True, text=True
    )
    loaded = set(done.stderr.split())
    heavy = {m for m in loaded if m.startswith(("rmcli.commands", "rmcli.api", "httpx", "anyio"))}
    assert not heavy, heavy

