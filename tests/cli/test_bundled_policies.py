"""Bundled policies: shipped inside the package, found by name from any folder.

``--policy NAME`` resolves a path first (relative to the working directory), then a bundled
name (``cost-first`` or ``cost-first.toml``); an unknown name exits 2 and lists the bundled ones.
Every command that takes a policy resolves it the same way (``rmcli.config.policy_text``).
"""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path

import pytest

from rmcli.bundled import bundled_policies, find_bundled
from rmcli.config import ConfigError, load_policy, policy_text
from tests.cli.helpers import REPO, Cli, SandboxProcess, write_policy

NAMES = sorted(p.stem for p in (REPO / "policies").glob("*.toml"))

LOCAL_COST_FIRST = """\
version = 1
name = "my-own-cost-first"

[route]
targets = ["glm-direct"]
"""


def test_the_package_holds_every_policy_of_the_repository() -> None:
    """``importlib.resources`` finds each file of ``policies/`` inside the ``rmcli`` package,
    with the same text, and the repository's ``policies/`` is that same folder."""
    folder = files("rmcli").joinpath("policies")
    assert sorted(p.name for p in bundled_policies()) == NAMES
    assert len(NAMES) >= 8
    for name in NAMES:
        resource = folder.joinpath(f"{name}.toml")
        assert resource.is_file()
        assert resource.read_text(encoding="utf-8") == (REPO / "policies" / f"{name}.toml").read_text(
            encoding="utf-8"
        )
    assert (REPO / "policies").resolve() == (REPO / "rmcli" / "policies").resolve()


def test_the_wheel_includes_the_policies() -> None:
    """pyproject's package data for ``rmcli`` covers every bundled file, so a non-editable
    install (a wheel) carries them all."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["rmcli"]
    for name in NAMES:
        assert any(fnmatch(f"policies/{name}.toml", pattern) for pattern in patterns), name


def test_a_name_with_or_without_toml_finds_the_bundled_policy() -> None:
    """``cost-first`` and ``cost-first.toml`` name the same bundled policy; other names none."""
    by_stem = find_bundled("cost-first")
    assert by_stem is not None and by_stem.name == "cost-first"
    assert find_bundled("cost-first.toml") == by_stem
    assert find_bundled("cost-last") is None


def test_a_file_in_the_working_directory_comes_before_a_bundled_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file called ``cost-first.toml`` in the working directory wins over the bundled one;
    ``cost-first`` (no such file) still finds the bundled one."""
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "cost-first.toml", LOCAL_COST_FIRST)
    assert load_policy(Path("cost-first.toml"), {}).name == "my-own-cost-first"
    assert load_policy(Path("cost-first"), {}).name == "cost-first"
    text, source = policy_text(Path("cost-first"))
    assert source.endswith("cost-first.toml") and "name = \"cost-first\"" in text


def test_an_unknown_name_lists_the_bundled_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that is neither a file nor bundled: a ConfigError naming it and every bundled name."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        policy_text(Path("cost-last"))
    message = str(raised.value)
    assert message.startswith("cost-last: no such policy file")
    for name in NAMES:
        assert name in message


def test_a_missing_path_that_ends_in_a_bundled_name_says_how_to_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``policies/cost-first.toml`` outside the repository is a missing file (a path is never
    silently replaced), and the message says the bundled one is called ``cost-first``."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no such policy file .*give its name alone: cost-first$"):
        policy_text(Path("policies") / "cost-first.toml")


def test_commands_resolve_bundled_names_outside_the_repository(cli: Cli) -> None:
    """From a folder outside the repository, explain, simulate and validate take a bundled name."""
    assert not cli.home.resolve().is_relative_to(REPO)
    explained = cli.run("policy", "explain", "cost-first")
    assert explained.returncode == 0, explained.stderr
    assert explained.stdout.startswith('Policy "cost-first"')
    simulated = cli.run("policy", "simulate", "fastest.toml", "--down", "openai-direct")
    assert simulated.returncode == 0, simulated.stderr
    assert "Simulating fastest (fastest)" in simulated.stdout
    validated = cli.run("policy", "validate", "hedged", "balanced.toml")
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.splitlines()[0].startswith("hedged: valid (hedged: hedged")


def test_policy_show_prints_a_bundled_policy_to_start_ones_own(cli: Cli) -> None:
    """``policy show NAME > policy.toml`` writes the bundled text, comments included, and the copy
    validates as a file of its own; an unknown name exits 2."""
    shown = cli.run("policy", "show", "cost-first")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == find_bundled("cost-first").text()  # type: ignore[union-attr]
    (cli.home / "policy.toml").write_text(shown.stdout, encoding="utf-8")
    assert cli.run("policy", "validate", "policy.toml").returncode == 0
    assert cli.run("policy", "show", "cost-last").returncode == 2


def test_an_unknown_policy_name_exits_2_listing_the_bundled_names(cli: Cli) -> None:
    """``--policy`` with an unknown name: exit 2, one ``error:`` line listing the bundled names,
    nothing sent."""
    done = cli.run("ask", "hi", "--policy", "cost-last")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: cost-last: no such policy file")
    for name in NAMES:
        assert name in done.stderr
    assert "Traceback" not in done.stderr


def test_ask_under_a_bundled_policy_by_name(cli: Cli, sandbox: SandboxProcess) -> None:
    """``rmgr ask --policy cost-first`` from outside the repository answers through the bundled
    policy: its cheapest target (GLM) answers."""
    user = cli.with_env(sandbox.env)
    code, answer = user.json("ask", "Should we adopt gRPC?", "--policy", "cost-first", "--json")
    assert code == 0, answer
    assert answer["provider"] == "glm-direct"
    assert answer["content"]
