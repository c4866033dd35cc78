"""``rmgr completion bash|zsh|fish``: a completion script for each shell, made from the commands
themselves; a bash script that bash accepts and that completes commands and options."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.cli.helpers import Cli


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_a_script_for_rmgr(cli: Cli, shell: str) -> None:
    """Exit 0, a script of many lines on stdout that names ``rmgr`` and knows its commands,
    subcommands and options (``circuits``, ``validate``, ``--policy``); nothing on stderr."""
    done = cli.run("completion", shell)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(done.stdout.splitlines()) > 50
    for word in ("rmgr", "circuits", "validate", "--policy", "init"):
        assert word in done.stdout, (shell, word)


def test_an_unknown_shell_is_bad_input(cli: Cli) -> None:
    """``rmgr completion tcsh``: exit 2, one ``error:`` line naming the shells it knows."""
    done = cli.run("completion", "tcsh")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and "bash" in done.stderr and "fish" in done.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_bash_script_parses_and_completes(cli: Cli) -> None:
    """``bash -n`` accepts the script; sourced, it completes ``rmgr pol`` to ``policy``, the
    subcommands of ``policy``, and the choices of ``analyze --format``."""
    script = cli.run("completion", "bash").stdout
    path = cli.home / "rmgr.bash"
    path.write_text(script, encoding="utf-8")
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, check=False).returncode == 0

    def complete(*words: str) -> list[str]:
        quoted = " ".join(f"'{w}'" for w in words)
        probe = (
            f"source '{path}'; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
            '_rmgr; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("rmgr", "pol") == ["policy"]
    assert sorted(complete("rmgr", "policy", "")) == ["explain", "list", "show", "simulate", "validate"]
    assert sorted(complete("rmgr", "analyze", "--format", "")) == ["json", "markdown", "text"]
