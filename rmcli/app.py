"""The ``rmgr`` command line.

Each command lives in ``rmcli.commands`` and is imported only when it runs, so that ``rmgr
--help`` and ``rmgr policy validate`` start without loading the HTTP stack. ``rmgr --help`` lists
each command with the first line of its docstring, copied into ``COMMANDS`` (reading the
docstring would mean importing the module; a test keeps the copies true); a command's own
``--help`` is its whole docstring. Options that apply to every command (``--verbose``) belong to
a meta app around ``app``; they may be written before or after the command's name, and are
described once, in ``rmgr --help``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import cyclopts

from rmcli import __version__

__all__ = ["COMMANDS", "app", "main"]

HELP = """\
Ask large language models for decisions you can trust.

Exit codes: 0 ok; 1 failed (every route exhausted, budget or deadline hit); 2 bad input or \
configuration; 3 partial (an analysis where some perspectives failed); 130 / 143 interrupted by \
Ctrl-C / SIGTERM (every request sent is still accounted).

Requests are routed across providers by a declarative TOML policy (fail-over, retries, \
deadlines, budget), and every attempt is accounted. Start with rmgr init (a .env and a policy \
to fill in), or try it all with no key: rmgr demo.

--verbose (-v), before or after any command: trace on stderr every HTTP request and response \
(method, URL, status, time to the response's headers, request and response headers with \
credentials redacted) and every routing decision (attempt started and ended, \
back-off, fail-over, skip). Used by ask, analyze, run, compare and health. Keys are never \
printed.
"""


def _shown_default(value: object) -> str | None:
    """How an option's default shows in help: not at all for a flag (``[default: False]`` says
    nothing) or for None; an empty string as ``""``."""
    if value is None or isinstance(value, bool):
        return None
    return '""' if value == "" else str(value)


app = cyclopts.App(
    name="rmgr",
    version=__version__,
    help=HELP,
    # No ``--no-json``, ``--no-no-cache`` or ``--empty-fail``: every flag here is off unless given,
    # and every list empty unless given, so their negations would only clutter the help.
    default_parameter=cyclopts.Parameter(negative=(), show_default=_shown_default),
    print_error=False,
    exit_on_error=False,
)


@app.meta.default
def _launch(
    *tokens: Annotated[str, cyclopts.Parameter(show=False, allow_leading_hyphen=True)],
    verbose: Annotated[
        bool, cyclopts.Parameter(name=["--verbose", "-v"], negative="", show_default=False)
    ] = False,
) -> object:
    """Run the command in ``tokens``, with the options every command shares.

    Parameters
    ----------
    verbose
        Trace HTTP and routing on stderr (see rmgr --help).
    """
    if verbose:
        from rmcli.trace import enable

        enable()
    return app(tokens, result_action="return_value", print_error=False, exit_on_error=False)


_C = "rmcli.commands"

COMMANDS: tuple[tuple[str, str, str, str], ...] = (
    # (group, name, import path, the first line of its docstring)
    ("", "analyze", f"{_C}.analyze:analyze", "Analyse a question from several perspectives at once."),
    ("", "run", f"{_C}.analyze:run", "Analyse a question under a policy: analyze --policy FILE."),
    ("", "compare", f"{_C}.analyze:compare", "Run the analysis on each provider alone, side by side."),
    ("", "ask", f"{_C}.ask:ask", "Ask one question, routed by the policy; the answer streams."),
    ("", "chat", f"{_C}.chat:chat", "Talk with the policy's route: each line read is your turn."),
    ("", "serve", f"{_C}.serve:serve", "Serve the policy's routes as OpenAI and Anthropic HTTP APIs."),
    ("", "providers", f"{_C}.providers:providers", "List the configured providers (never their keys)."),
    ("", "health", f"{_C}.providers:health", "Check providers concurrently: up or not, why, how fast."),
    ("", "usage", f"{_C}.usage:usage", "Requests, failures, latency, tokens and cost, grouped."),
    ("", "circuits", f"{_C}.circuits:app", "Show each provider's circuit breaker; reset closes them."),
    ("", "init", f"{_C}.init:init", "Write a starter .env and policy.toml; never overwrites."),
    ("", "completion", f"{_C}.completion:completion", "Print a shell completion script: bash, zsh or fish."),
    ("", "sandbox", f"{_C}.sandbox:sandbox", "Start local providers that speak the real wire formats."),
    ("", "demo", f"{_C}.sandbox:demo", "Fail-over end to end against the sandbox; no keys needed."),
    ("policy", "list", f"{_C}.policy:list_", "List the bundled policies, each with its description."),
    ("policy", "validate", f"{_C}.policy:validate", "Check policy files; every error as FILE:LINE: $.path."),
    ("policy", "explain", f"{_C}.policy:explain", "Describe a policy's route, limits and budget in words."),
    ("policy", "show", f"{_C}.policy:show", "Print a policy's TOML, to copy a bundled one and edit it."),
    (
        "policy",
        "simulate",
        f"{_C}.policy:simulate",
        "Run a policy against simulated providers; print the trace.",
    ),
    ("history", "list", f"{_C}.history:list_", "List saved analyses, newest first."),
    ("history", "show", f"{_C}.history:show", "Show one saved analysis in full."),
    ("history", "stats", f"{_C}.history:stats", "Count saved analyses by status, with their confidences."),
    ("history", "export", f"{_C}.history:export", "Write an agent's analyses to a JSON file."),
    ("history", "clear", f"{_C}.history:clear", "Delete saved analyses (needs --yes)."),
    ("cache", "stats", f"{_C}.history:cache_stats", "Show the answer cache: entries, hits, misses, size."),
    ("cache", "clear", f"{_C}.history:cache_clear", "Remove every cached answer."),
)
"""Every command, lazily imported: its group (``""`` for the top level), name, import path, and
the first line of its docstring, which ``rmgr --help`` (or the group's) lists."""

GROUPS: dict[str, str] = {
    "policy": (
        "Policies: list, show, validate, explain, simulate (offline).\n\n"
        "No key is read and no request sent. Example: rmgr policy validate policy.toml"
    ),
    "history": ("Saved analyses: list, show, stats, export, clear.\n\nExample: rmgr history list --limit 5"),
    "cache": "The answer cache: stats, clear.\n\nExample: rmgr cache stats --json",
}
"""The command groups and their help."""

_group_apps = {name: cyclopts.App(name=name, help=text) for name, text in GROUPS.items()}
for _group, _name, _path, _summary in COMMANDS:
    (_group_apps[_group] if _group else app).command(_path, name=_name, help=_summary)
for _sub in _group_apps.values():
    app.command(_sub)


def _show_docstrings(tokens: Sequence[str]) -> None:
    """Let each command named in ``tokens`` show its whole docstring as its help.

    A lazy command's registered one-liner (``COMMANDS``) would otherwise stand in for its
    docstring on its own help page too. Only the commands named are imported: they are about to
    run (or to show their help) anyway."""
    try:
        _, apps, _ = app.parse_commands(list(tokens))
    except cyclopts.CycloptsError:
        return
    for sub in apps:
        if sub is not app and sub.default_command is not None and sub.name[0] not in GROUPS:
            sub.help = None


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signum)


def _parse_error(exc: cyclopts.CycloptsError) -> str:
    """A command line cyclopts could not parse, as one ``error:`` line: what was wrong, and
    where the command's options are listed."""
    text = " ".join(str(exc).split())
    # The list of commands cyclopts appends is cut short ("..."): rmgr --help has them all.
    text = text.split(" Available commands:")[0].rstrip(".")
    if text[:1].isupper() and not text[1:2].isupper():
        text = text[0].lower() + text[1:]
    chain = [c for c in (exc.command_chain or ()) if c and c != "rmgr"]
    where = " ".join(["rmgr", *chain, "--help"])
    if isinstance(exc, cyclopts.UnusedCliTokensError):
        words = " ".join(exc.unused_tokens or ())
        return f"more words than the command takes: {words!r} — quote a question of several words, or {where}"
    return f"{text} — {where} lists what it takes"


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``rmgr`` and exit with its code: bad input or configuration (an unknown option
    included) is one ``error:`` line and exit 2; Ctrl-C and SIGTERM print ``interrupted`` and
    exit 130 and 143, after every request in flight is settled in the state
    (``rmcli.interrupt``)."""
    # Before any event loop runs (loading a policy, opening the state), SIGTERM stops the command
    # the way Ctrl-C does; inside a run, ``rmcli.interrupt`` catches both and cancels cleanly.
    signal.signal(signal.SIGTERM, _terminated)
    tokens = sys.argv[1:] if argv is None else list(argv)
    result: Any
    try:
        _show_docstrings(tokens)
        result = app.meta(
            tokens,
            result_action="return_value",
            print_error=False,
            exit_on_error=False,
        )
        sys.stdout.flush()  # here, not at exit: a reader that went away is noticed below
    except KeyboardInterrupt as stop:
        sys.stderr.write("interrupted\n")
        signum = stop.args[0] if stop.args and isinstance(stop.args[0], int) else signal.SIGINT
        raise SystemExit(128 + signum) from None
    except cyclopts.CycloptsError as exc:
        from rmcli.output import err

        err(f"error: {_parse_error(exc)}")
        raise SystemExit(2) from None
    except Exception as exc:
        if _reader_gone(exc):
            _quiet_stdout()
            raise SystemExit(1) from None
        # Imported only now: ``rmgr --help`` never needs them, and these errors can only come
        # from code that has imported them already.
        from rmcli.errors import ConfigError
        from rmcli.interrupt import Interrupted
        from rmcli.output import err, redact
        from rmcli.state.base import StoreError

        if isinstance(exc, Interrupted):
            sys.stderr.write("interrupted\n")
            raise SystemExit(exc.code) from None
        if isinstance(exc, ConfigError | StoreError):
            err(f"error: {_ERROR_PREFIX.sub('', str(exc))}")
            raise SystemExit(2) from None
        # A bug of ours: one line, never a traceback that may quote a header.
        if os.environ.get("RMGR_DEBUG"):
            raise
        err(
            f"error: unexpected {type(exc).__name__}: {redact(str(exc))[:300]} "
            "— this is a bug in rmgr; RMGR_DEBUG=1 shows the traceback"
        )
        raise SystemExit(1) from None
    raise SystemExit(result if isinstance(result, int) else 0)


def _reader_gone(exc: BaseException) -> bool:
    """The output's reader closed the pipe (``rmgr ... | head -1``): no error of ours."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_reader_gone(inner) for inner in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit finds no closed pipe to report.
    The exit status is then 1, with no message, as rich's own help output does (and Python's
    documentation of SIGPIPE advises)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


_ERROR_PREFIX = re.compile(r"^(error|ERROR|Error):\s*")
"""A message that already starts with ``error:`` is not prefixed twice."""
