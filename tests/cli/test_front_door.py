"""The shell's one front door: commands reach runs and state only through ``rmcli.api``."""

from __future__ import annotations

import ast
from pathlib import Path

from rmcli.hooks import Hooks, fan_out

RMCLI = Path(__file__).resolve().parents[2] / "rmcli"
FORBIDDEN_IN_COMMANDS = ("rmcli.runner", "rmcli.analysis", "rmcli.state.sqlite", "rmcli.state.redis")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_command_imports_the_runner_or_a_state_backend() -> None:
    """Every command module parses, calls the API and renders: none imports the runner, the
    analysis driver or a state backend."""
    for module in sorted((RMCLI / "commands").glob("*.py")):
        bad = [
            n for n in _imports(module) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN_IN_COMMANDS)
        ]
        assert not bad, f"{module.name} imports {bad}"


def test_the_api_imports_no_command() -> None:
    """The front door depends on no command module."""
    assert not [n for n in _imports(RMCLI / "api.py") if n.startswith("rmcli.commands")]


def test_the_state_code_stays_within_two_thousand_lines() -> None:
    """The whole state layer (protocols, SQLite, Redis, fallback) reads in one sitting: the
    concerns rebuilt in one (attempts, circuits, caps, cache, history) within 2,000 lines (issue
    14), plus the 11 of ``Attempts.withdraw`` since (issue 19: an attempt given up while its
    record was written is taken back), the 7 of ``Database.run_now`` (issue 19: a group of
    writes committed by the loop, without waiting), the 4 binding None without adapting it and
    the 19 of a cancel-safe ``Attempts.sent`` (issue 19: no shield around each attempt's record),
    the chat conversations in a module of their own within 100."""
    files = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in (RMCLI / "state").glob("*.py")}
    assert files.pop("conversations.py") <= 100
    assert sum(files.values()) <= 2041, files


def test_fan_out_calls_every_hook_in_order_and_skips_missing_ones() -> None:
    """Joined hooks call each given hook in turn; an event no one listens to stays None."""
    heard: list[str] = []
    joined = fan_out(
        Hooks(text=lambda t: heard.append(f"a:{t}")), None, Hooks(text=lambda t: heard.append(f"b:{t}"))
    )
    assert joined.text is not None
    joined.text("x")
    assert heard == ["a:x", "b:x"]
    assert joined.failed_over is None


def test_fan_out_of_one_hook_is_that_hook() -> None:
    """A single listener is called directly, with no wrapper in between."""

    def hook(text: str) -> None:
        pass

    assert fan_out(Hooks(text=hook)).text is hook
