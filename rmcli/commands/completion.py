"""``rmgr completion bash|zsh|fish``: a shell completion script for ``rmgr``, made by cyclopts
from the commands and options themselves, so it never falls behind them."""

from __future__ import annotations

from typing import Literal

__all__ = ["completion"]

Shell = Literal["bash", "zsh", "fish"]


def completion(shell: Shell, /) -> int:
    """Print a shell completion script: bash, zsh or fish.

    It completes every command, subcommand and option (and the choices of those that have
    them). Nothing is installed: save the script where your shell looks, as the README shows.
    Example: rmgr completion bash > ~/.local/share/bash-completion/completions/rmgr

    Parameters
    ----------
    shell
        The shell the script is for: bash, zsh or fish.
    """
    from rmcli.app import app

    script = app.generate_completion(prog_name="rmgr", shell=shell)
    print(script.rstrip("\n"))
    return 0
