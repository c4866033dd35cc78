"""``rmgr usage``: what every provider was asked, how often it failed, how fast and how dear."""

from __future__ import annotations

import time

from returns.result import Failure, Success

from rmcli.config import ConfigError
from rmcli.environment import load_environment
from rmcli.output import emit_json
from rmcli.session import open_store
from rmcli.tables import print_table
from rmcore.timespec import parse_since
from rmcore.usage import summarize, to_json_rows

__all__ = ["usage"]


def usage(*, since: str = "24h", json: bool = False) -> int:
    """Per provider: requests, failures, failure rate, p50/p95 latency, tokens and cost.

    Every attempt counts as a request (retries and fail-overs included); latency percentiles are
    over all attempts, failed ones included.

    Parameters
    ----------
    since
        The window: 30m, 24h, 7d, 2w, an ISO date or date-time (UTC), or "all".
    json
        Print ``[{provider, requests, failures, failureRate, p50Ms, p95Ms, inputTokens,
        outputTokens, costUsd}]``.
    """
    match parse_since(since, int(time.time() * 1000)):
        case Success(value):
            since_ms = value
        case Failure(problem):
            raise ConfigError(f"--since: {problem}")
    env = load_environment()
    with open_store(env) as store:
        summary = summarize(store.attempts_since(since_ms))
    if json:
        emit_json(to_json_rows(summary))
        return 0
    if not summary:
        print(f"No attempts recorded since {since}.")
        return 0

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}ms"

    rows = [
        [
            u.provider,
            str(u.requests),
            str(u.failures),
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
        ["Provider", "Requests", "Failures", "Failure rate", "p50", "p95", "Tokens in/out", "Cost"],
        rows,
    )
    return 0
