"""``rmgr usage``: what every provider was asked, how often it failed, how fast and how dear; and
how full each budget and quota is in its current window."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from returns.result import Failure, Success

from rmcli.commands import read_records
from rmcli.errors import ConfigError
from rmcli.output import emit_json
from rmcli.state.base import State
from rmcli.tables import print_table
from rmcore.quota import CapUsage, describe_amount, format_moment, window_words
from rmcore.timespec import parse_since
from rmcore.usage import AttemptRow, ProviderUsage, summarize, to_json_rows

__all__ = ["caps_json", "usage"]


def usage(*, since: str = "24h", json: bool = False, caps: bool = False) -> int:
    """Per provider: requests, failures, failure rate, p50/p95 latency, tokens and cost; then
    the budgets and quotas in their current windows.

    Every request sent counts (retries, fail-overs and cancelled ones included). Cancelled
    requests (race and hedge losers, interrupted runs) are counted apart and never as failures;
    latency percentiles are over the attempts that ended by themselves, failed ones included.
    With RECURSIVEMANAGER_STATE=redis://... the figures are the whole fleet's. The second table,
    "Budgets and quotas", shows each cap of [budget] and each provider quota that has been
    charged in its current window: how much is used (settled), how much is reserved by requests
    still running, the limit, and when the window resets.

    Parameters
    ----------
    since
        The window of the attempts: 30m, 24h, 7d, 2w, an ISO date or date-time (UTC), or "all".
        (Caps are always shown in their current window.)
    json
        Print ``[{provider, requests, failures, cancelled, failureRate, p50Ms, p95Ms, inputTokens,
        outputTokens, costUsd}]``; with --caps, the caps instead.
    caps
        Show only the budgets and quotas in their current windows (without it the text output
        shows them as a second table, "Budgets and quotas"): a table, or with --json ``[{cap,
        resource, window, used, reserved, limit, resetsAt}]`` (used: settled; reserved: held by
        requests still running; resetsAt in ISO 8601, UTC; amounts in dollars, requests or
        tokens as resource says).
    """
    match parse_since(since, int(time.time() * 1000)):
        case Success(value):
            since_ms = value
        case Failure(problem):
            raise ConfigError(f"--since: {problem}")
    now = time.time()

    async def read(state: State) -> tuple[list[CapUsage], list[AttemptRow]]:
        return await state.caps.usage(now), [] if caps else await state.attempts.since(since_ms)

    windows, rows = read_records(read)
    summary = summarize(rows)
    if json:
        emit_json(caps_json(windows) if caps else to_json_rows(summary))
        return 0
    if not caps:
        _print_attempts(summary, since)
    if windows:
        if not caps:
            print()
        _print_caps(windows, now)
    elif caps:
        print("No budget or quota has been charged in its current window.")
    return 0


def caps_json(windows: Sequence[CapUsage]) -> list[dict[str, Any]]:
    """The rows of ``rmgr usage --caps --json``."""
    return [
        {
            "cap": w.cap_key,
            "resource": w.resource.value,
            "window": w.window,
            "used": w.used,
            "reserved": w.reserved,
            "limit": w.limit,
            "resetsAt": dt.datetime.fromtimestamp(w.resets_at, tz=dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        for w in windows
    ]


def _print_attempts(summary: Sequence[ProviderUsage], since: str) -> None:
    if not summary:
        print(f"No attempts recorded since {since}.")
        return

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}ms"

    rows = [
        [
            u.provider,
            str(u.requests),
            str(u.failures),
            str(u.cancelled),
            f"{u.failure_rate * 100:.1f}%",
            ms(u.p50_ms),
            ms(u.p95_ms),
            f"{u.input_tokens} / {u.output_tokens}",
            f"${u.cost_usd:.6f}",
        ]
        for u in summary
    ]
    print_table(
        f"Provider usage since {since}",
        [
            "Provider",
            "Requests",
            "Failures",
            "Cancelled",
            "Failure rate",
            "p50",
            "p95",
            "Tokens in/out",
            "Cost",
        ],
        rows,
    )


def _print_caps(windows: Sequence[CapUsage], now: float) -> None:
    rows = [
        [
            w.cap_key,
            _window(w),
            describe_amount(w.resource, w.used),
            describe_amount(w.resource, w.reserved),
            describe_amount(w.resource, w.limit),
            f"{format_moment(w.resets_at)} (in {_duration(w.resets_at - now)})",
        ]
        for w in windows
    ]
    print_table("Budgets and quotas", ["Cap", "Window", "Used", "Reserved", "Limit", "Resets at"], rows)


def _window(w: CapUsage) -> str:
    """A window in words: the day or month it is, or a fixed window's length and start."""
    if w.window.isdigit():
        start = int(w.window)
        return f"{window_words(w.resets_at - start)} window from {format_moment(start)}"
    return w.window


def _duration(seconds: float) -> str:
    whole = max(round(seconds), 0)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"
