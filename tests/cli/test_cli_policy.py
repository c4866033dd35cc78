"""``rmgr policy validate``, ``explain`` and ``list`` as a user (or a CI job) runs them.

validate: exit 0 when every file is valid, 2 when any is invalid or cannot be read; every error
of every file in one run, as ``FILE:LINE: $.path: message`` on stderr sorted by line, or a JSON
array with ``--json``.
"""

from __future__ import annotations

import json
from typing import Any

from tests.cli.helpers import REPO, Cli, write_policy

REPO_POLICIES = sorted(REPO.glob("policies/*.toml"))

TWO_MISTAKES = """\
version = 1

[providers.x]
kind = "openai"
url = "ftp://127.0.0.1/x"
model = "m"

[route]
targets = ["x", "nope-provider"]
"""

LOCAL_PROVIDER = """\
version = 1
name = "local-first"
description = "A local server first, then GLM."

[providers.local-llama]
kind = "openai"
url = "http://127.0.0.1:11434/v1/chat/completions"
model = "llama3.1"
input_usd_per_mtok = 0.0
output_usd_per_mtok = 0.0

[route]
targets = ["local-llama", "glm-direct"]

[limits]
deadline_s = 45
max_usd = 0.25
"""


def check_entry_shape(entry: dict[str, Any]) -> None:
    assert isinstance(entry["file"], str)
    assert isinstance(entry["valid"], bool)
    assert entry["name"] is None or isinstance(entry["name"], str)
    assert isinstance(entry["errors"], list)
    for error in entry["errors"]:
        assert error["line"] is None or isinstance(error["line"], int)
        assert isinstance(error["path"], str) and error["path"].startswith("$")
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["text"], str)


def test_the_repository_policies_are_valid(cli: Cli) -> None:
    """Every policy shipped in policies/ validates, in text and in JSON."""
    assert len(REPO_POLICIES) >= 2
    files = [str(p) for p in REPO_POLICIES]
    done = cli.run("policy", "validate", *files)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for path in REPO_POLICIES:
        assert any(line.startswith(f"{path}: valid") for line in done.stdout.splitlines())

    code, entries = cli.json("policy", "validate", "--json", *files)
    assert code == 0
    assert [e["file"] for e in entries] == files
    for entry, path in zip(entries, REPO_POLICIES, strict=True):
        check_entry_shape(entry)
        assert entry["valid"] is True
        assert entry["errors"] == []
        assert entry["name"] == path.stem


def test_an_invalid_file_exits_2_with_every_error_located(cli: Cli) -> None:
    """One valid and one invalid file: exit 2; each mistake as FILE:LINE: $.path: message."""
    good = str(REPO_POLICIES[0])
    write_policy(cli.home, "bad.toml", TWO_MISTAKES)
    done = cli.run("policy", "validate", good, "bad.toml")
    assert done.returncode == 2
    assert f"{good}: valid" in done.stdout
    errors = done.stderr.splitlines()
    assert any(line.startswith("bad.toml:5: $.providers.x.url: ") for line in errors)
    assert any(line.startswith("bad.toml:9: $.route.targets[1]: ") for line in errors)
    assert "Traceback" not in done.stderr

    code, entries = cli.json("policy", "validate", "--json", good, "bad.toml")
    assert code == 2
    for entry in entries:
        check_entry_shape(entry)
    assert [e["valid"] for e in entries] == [True, False]
    bad = entries[1]
    assert {(e["line"], e["path"]) for e in bad["errors"]} == {
        (5, "$.providers.x.url"),
        (9, "$.route.targets[1]"),
    }
    for error in bad["errors"]:
        assert error["text"] == f"bad.toml:{error['line']}: {error['path']}: {error['message']}"


def test_an_unreadable_file_exits_2(cli: Cli) -> None:
    """A missing file or a folder: exit 2 (even beside an invalid file), named in the message."""
    (cli.home / "folder.toml").mkdir()
    write_policy(cli.home, "bad.toml", TWO_MISTAKES)
    done = cli.run("policy", "validate", str(REPO_POLICIES[0]), "missing.toml", "folder.toml", "bad.toml")
    assert done.returncode == 2
    assert "missing.toml" in done.stderr and "folder.toml" in done.stderr
    assert "Traceback" not in done.stderr

    code, entries = cli.json("policy", "validate", "--json", "missing.toml", str(REPO_POLICIES[0]))
    assert code == 2
    for entry in entries:
        check_entry_shape(entry)
    assert [(e["file"], e["valid"]) for e in entries] == [
        ("missing.toml", False),
        (str(REPO_POLICIES[0]), True),
    ]
    assert "missing.toml" in entries[0]["errors"][0]["message"]


def test_validate_without_a_file_exits_2(cli: Cli) -> None:
    """No file given: exit 2, nothing on stdout, and the message shows the FILE argument."""
    done = cli.run("policy", "validate")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "FILE" in done.stderr


def test_explain_the_seed_order(cli: Cli) -> None:
    """explain names the four targets in order, with the URLs of the environment, and the
    limits, retries and budget the file sets; it needs no key."""
    urls = {
        "AICEO_GATEWAY_URL": "http://127.0.0.1:1/api/glm/submit",
        "GLM_API_URL": "http://127.0.0.1:2/api/paas/v4/chat/completions",
        "ANTHROPIC_API_URL": "http://127.0.0.1:3/v1/messages",
        "OPENAI_API_URL": "http://127.0.0.1:4/v1/chat/completions",
    }
    done = cli.run("policy", "explain", str(REPO / "policies" / "sequential-failover.toml"), env=urls)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith('Policy "sequential-failover"')
    order = [out.index(f"{n}. {name}:") for n, name in enumerate(
        ["aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct"], start=1
    )]  # fmt: skip
    assert order == sorted(order)
    for url in urls.values():
        assert url in out
    assert "120 s" in out  # deadline_s
    assert "$1.00" in out  # max_usd
    assert "rate_limited, server_error or connection" in out
    assert "0.5–8 s" in out


def test_explain_a_policy_defined_provider(cli: Cli) -> None:
    """A provider the policy defines is shown with its own model, URL and prices."""
    path = write_policy(cli.home, "local.toml", LOCAL_PROVIDER)
    done = cli.run("policy", "explain", path.name, env={"GLM_API_URL": "http://127.0.0.1:2/v1/chat"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert 'Policy "local-first": A local server first, then GLM.' in out
    assert "1. local-llama: llama3.1 at http://127.0.0.1:11434/v1/chat/completions" in out
    assert "2. glm-direct:" in out
    assert "45 s" in out and "$0.25" in out


def test_explain_flags_a_target_that_cannot_be_used(cli: Cli) -> None:
    """A target whose URL variable is unset is shown with the reason (explain still exits 0:
    it describes, it does not run)."""
    done = cli.run("policy", "explain", str(REPO / "policies" / "quality-first.toml"))
    assert done.returncode == 0, done.stderr
    assert "ANTHROPIC_API_URL is not set" in done.stdout
    assert "GLM_API_URL is not set" in done.stdout


def test_validate_json_is_one_document(cli: Cli) -> None:
    """--json prints exactly one JSON document on stdout, errors included, nothing on stderr."""
    write_policy(cli.home, "bad.toml", TWO_MISTAKES)
    done = cli.run("policy", "validate", "--json", "bad.toml")
    assert done.returncode == 2
    assert done.stderr == ""
    assert isinstance(json.loads(done.stdout), list)


THREE_MISTAKES = """\
version = 1

[route]
strategy = "fastes"
targets = ["glm-direct"]

[limits]
deadlin_s = 30

[retry]
max_attempts = "3"
"""

OTHER_MISTAKES = """\
version = 1

[limits]
deadline_s = -3

[route]
targets = ["glm-direct", "nope-provider"]
"""


def test_three_mistakes_give_three_located_errors_sorted_by_line(cli: Cli) -> None:
    """A bad value, an unknown key and a wrong type in one file: three ``FILE:LINE:`` errors in
    one run, in the order of the file, and exit 2."""
    write_policy(cli.home, "three.toml", THREE_MISTAKES)
    done = cli.run("policy", "validate", "three.toml")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [
        ["three.toml:4", "$.route.strategy"],
        ["three.toml:8", "$.limits.deadlin_s"],
        ["three.toml:11", "$.retry.max_attempts"],
    ]
    assert "did you mean `fastest`?" in lines[0]
    assert "did you mean `deadline_s`?" in lines[1]
    assert lines[2].endswith("expected an integer, got '3'")


def test_two_bad_files_report_both_each_sorted(cli: Cli) -> None:
    """Two invalid files: every error of each, file by file in the order given, each file's
    errors sorted by line; a wrong value and an unknown provider in different sections are both
    reported at once."""
    write_policy(cli.home, "three.toml", THREE_MISTAKES)
    write_policy(cli.home, "other.toml", OTHER_MISTAKES)
    done = cli.run("policy", "validate", "three.toml", "other.toml")
    assert done.returncode == 2
    where = [line.split(": ", 1)[0] for line in done.stderr.splitlines()]
    assert where == ["three.toml:4", "three.toml:8", "three.toml:11", "other.toml:4", "other.toml:7"]
    assert "other.toml:7: $.route.targets[1]: unknown provider `nope-provider`" in done.stderr

    code, entries = cli.json("policy", "validate", "--json", "three.toml", "other.toml")
    assert code == 2
    assert [[e["line"] for e in entry["errors"]] for entry in entries] == [[4, 8, 11], [4, 7]]


def test_policy_list_shows_every_bundled_policy_with_its_description(cli: Cli) -> None:
    """``policy list`` names every bundled policy with the first line of its leading comment,
    and no line is wider than 80 columns at ``COLUMNS=80``."""
    done = cli.run("policy", "list", env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), done.stdout
    listed = lines[: lines.index("")]  # then a blank line, and how to use one
    rows = [line for line in listed if not line[0].isspace()]
    names = [row.split()[0] for row in rows]
    assert names == [p.stem for p in REPO_POLICIES]
    first = next(line for line in lines if line.startswith("cost-first "))
    assert "The cheapest provider that fits the budget" in first


def test_policy_list_json(cli: Cli) -> None:
    """``policy list --json``: one array of ``{name, file, description}``, one per bundled file."""
    code, entries = cli.json("policy", "list", "--json")
    assert code == 0
    assert [e["name"] for e in entries] == [p.stem for p in REPO_POLICIES]
    assert [e["file"] for e in entries] == [p.name for p in REPO_POLICIES]
    by_name = {e["name"]: e["description"] for e in entries}
    assert by_name["sequential-failover"] == "The seed's fail-over order, made per request."
    assert all(e["description"] for e in entries)


def test_the_policy_group_help_lists_every_subcommand(cli: Cli) -> None:
    """``rmgr policy --help`` lists list, validate, explain and simulate, and the group's line in
    ``rmgr --help`` names them too."""
    done = cli.run("policy", "--help", env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    for command in ("list", "validate", "explain", "simulate"):
        assert f"│ {command} " in done.stdout, command
    top = cli.run("--help", env={"COLUMNS": "200"}).stdout
    policy_line = next(line for line in top.splitlines() if "│ policy " in line)
    for command in ("list", "validate", "explain", "simulate"):
        assert command in policy_line, command
