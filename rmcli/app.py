"""The ``rmgr`` command line.

Each command lives in ``rmcli.commands`` and is imported only when it runs, so that ``rmgr
--help`` and ``rmgr policy validate`` start without loading the HTTP stack. Options that apply to
every command (``--verbose``) belong to a meta app around ``app``; they may be written before or
after the command's name.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Annotated

import cyclopts

from rmcli import __version__

__all__ = ["app", "main"]

app = cyclopts.App(
    name="rmgr",
    version=__version__,
    help=(
        "Ask large language models for decisions you can trust: routed across providers by a "
        "declarative TOML policy (fail-over, retries, deadlines, budget), every attempt accounted.\n\n"
        "Exit codes: 0 success; 1 the run failed (every route exhausted, budget or deadline hit); "
        "2 bad input or configuration; 3 partial (an analysis where some perspectives failed); "
        "130 / 143 interrupted by Ctrl-C / SIGTERM (every request sent is still accounted)."
    ),
)


@app.meta.default
def _launch(
    *tokens: Annotated[str, cyclopts.Parameter(show=False, allow_leading_hyphen=True)],
    verbose: Annotated[bool, cyclopts.Parameter(name=["--verbose", "-v"], negative="")] = False,
) -> object:
    """Run the command in ``tokens``, with the options every command shares.

    Parameters
    ----------
    verbose
        Trace on stderr every HTTP request and response (method, URL, status, time to the
        response's headers, request and response headers, credentials shown as `<redacted>`) and
        every routing decision (attempt started and ended, back-off, fail-over, skip). Used by
        ask, analyze, run, compare and health. Keys are never printed.
    """
    if verbose:
        from rmcli.trace import enable

        enable()
    return app(tokens, result_action="return_value")


_C = "rmcli.commands"
app.command(
    f"{_C}.analyze:analyze", name="analyze", help="Analyse a question from several perspectives at once."
)
app.command(
    f"{_C}.analyze:run", name="run", help="The analysis under a policy: rmgr run --policy FILE QUESTION."
)
app.command(f"{_C}.analyze:compare", name="compare", help="The analysis on each provider, side by side.")
app.command(f"{_C}.ask:ask", name="ask", help="One completion through the policy's routing, streamed.")
app.command(
    f"{_C}.providers:providers",
    name="providers",
    help="Configured providers: model, URL, prices, whether a key is set.",
)
app.command(
    f"{_C}.providers:health", name="health", help="Check providers concurrently: up or not, why, how fast."
)
app.command(
    f"{_C}.usage:usage", name="usage", help="Per provider: requests, failures, p50/p95 latency, tokens, cost."
)

policy_app = cyclopts.App(
    name="policy", help="Validate and explain policy files (no key read, no request sent)."
)
policy_app.command(
    f"{_C}.policy:validate", name="validate", help="Check policy files; errors as FILE:LINE: $.path."
)
policy_app.command(
    f"{_C}.policy:explain", name="explain", help="Describe a policy's route, limits and budget."
)
policy_app.command(
    f"{_C}.policy:simulate",
    name="simulate",
    help="Run the policy against simulated providers; print the trace.",
)
app.command(policy_app)

history_app = cyclopts.App(name="history", help="Saved analyses: list, show, stats, export, clear.")
history_app.command(f"{_C}.history:list_", name="list", help="Saved analyses, newest first.")
history_app.command(f"{_C}.history:show", name="show", help="One saved analysis in full.")
history_app.command(f"{_C}.history:stats", name="stats", help="Counts and confidences of saved analyses.")
history_app.command(f"{_C}.history:export", name="export", help="Write an agent's analyses to a JSON file.")
history_app.command(f"{_C}.history:clear", name="clear", help="Delete saved analyses (needs --yes).")
app.command(history_app)

cache_app = cyclopts.App(name="cache", help="The answer cache: stats, clear.")
cache_app.command(f"{_C}.history:cache_stats", name="stats", help="Entries, hits, misses, size.")
cache_app.command(f"{_C}.history:cache_clear", name="clear", help="Remove every cached answer.")
app.command(cache_app)

app.command(
    f"{_C}.sandbox:sandbox",
    name="sandbox",
    help="Start local providers that speak the real wire formats, with fault modes.",
)
app.command(
    f"{_C}.sandbox:demo",
    name="demo",
    help="Fail-over end to end against the sandbox, primary down; no keys needed.",
)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signum)


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``rmgr`` and exit with its code: bad input or configuration is one clear line and exit
    2; Ctrl-C and SIGTERM print ``interrupted`` and exit 130 and 143, after every request in
    flight is settled in the state (``rmcli.interrupt``)."""
    # Before any event loop runs (loading a policy, opening the state), SIGTERM stops the command
    # the way Ctrl-C does; inside a run, ``rmcli.interrupt`` catches both and cancels cleanly.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        result = app.meta(sys.argv[1:] if argv is None else list(argv), result_action="return_value")
    except KeyboardInterrupt as stop:
        sys.stderr.write("interrupted\n")
        signum = stop.args[0] if stop.args and isinstance(stop.args[0], int) else signal.SIGINT
        raise SystemExit(128 + signum) from None
    except Exception as exc:
        # Imported only now: ``rmgr --help`` never needs them, and these errors can only come
        # from code that has imported them already.
        from rmcli.errors import ConfigError
        from rmcli.interrupt import Interrupted
        from rmcli.state.base import StoreError

        if isinstance(exc, Interrupted):
            sys.stderr.write("interrupted\n")
            raise SystemExit(exc.code) from None
        if isinstance(exc, ConfigError | StoreError):
            sys.stderr.write(f"error: {exc}\n")
            raise SystemExit(2) from None
        # A bug of ours: one line, never a traceback that may quote a header.
        from rmcli.output import redact

        if os.environ.get("RMGR_DEBUG"):
            raise
        sys.stderr.write(
            f"error: unexpected {type(exc).__name__}: {redact(str(exc))[:300]} "
            "(this is a bug in rmgr; RMGR_DEBUG=1 shows the traceback)\n"
        )
        raise SystemExit(1) from None
    raise SystemExit(result if isinstance(result, int) else 0)
