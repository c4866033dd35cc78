"""``rmgr usage``: what every provider (or model, or day) was asked, how often it failed, how fast
and how dear; and how full each budget and quota is in its current window."""

from __future__ import annotations

import csv
import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

import cyclopts
import msgspec
from returns.result import Failure, Success

from rmcli import figures
from rmcli.circuit_view import duration
from rmcli.commands import read_records
from rmcli.errors import ConfigError
from rmcli.output import emit_json, json_ready
from rmcli.state.base import State
from rmcli.tables import Column, print_table
from rmcore.quota import CapUsage, describe_amount, format_moment, window_words
from rmcore.timespec import parse_since
from rmcore.usage import AttemptRow, ProviderUsage, summarize, to_json_rows

__all__ = ["caps_json", "group_rows", "usage"]

By = Literal["provider", "model", "day", "perspective"]
Format = Literal["text", "json", "csv"]
Flag = Annotated[bool, cyclopts.Parameter(negative="")]

_GROUP_KEYS: dict[str, Callable[[AttemptRow], str]] = {
    "provider": lambda row: row.provider,
    "model": lambda row: row.model,
    "day": lambda row: dt.datetime.fromtimestamp(row.started_at_ms / 1000, tz=dt.UTC).date().isoformat(),
    "perspective": lambda row: row.perspective or _NO_PERSPECTIVE,
}
_HEADINGS = {"provider": "Provider", "model": "Model", "day": "Day (UTC)", "perspective": "Perspective"}
_NO_PERSPECTIVE = "(none)"
"""The group of attempts sent outside an analysis (``ask``, ``run``), or recorded before rmgr kept
the perspective: ``null`` in JSON, empty in CSV."""


def usage(
    *,
    since: str = "24h",
    by: By = "provider",
    format: Format | None = None,
    json: Flag = False,
    caps: Flag = False,
) -> int:
    """Requests, failures, latency, tokens and cost, grouped.

    Per provider (or model, day, or analysis perspective): requests, failures, failure rate,
    p50/p95 latency, tokens and cost, with a total row; then the budgets and quotas in their
    current windows. Every request sent counts (retries, fail-overs and cancelled ones included). Cancelled
    requests (race and hedge losers, interrupted runs) are counted apart and never as failures;
    latency is each attempt's latencyMs as the accounting records it, from the request written to
    its end, and the percentiles are over the attempts that ended by themselves, failed ones
    included. With RECURSIVEMANAGER_STATE=redis://... the figures are the whole fleet's. The
    second table, "Budgets and quotas", shows each cap of [budget] and each provider quota
    charged in its current window: used (settled), reserved by requests still running, the
    limit, and when the window resets. On a narrow terminal the columns that do not fit are left
    out (a line says which; --format csv or json has them all). Exit code 0, 2 for a bad
    option.

    Example: rmgr usage --since 7d --by model --format csv

    Parameters
    ----------
    since
        The window of the attempts: 30m, 24h, 7d, 2w, an ISO date or date-time (UTC), or "all".
        (Caps are always shown in their current window.)
    by
        Group the attempts by provider, model, day (UTC), or perspective (the analysis
        perspective that sent them; "(none)" for ask and run, and for attempts recorded before
        rmgr kept it).
    format
        text (tables), json (``[{provider, requests, failures, cancelled, failureRate, p50Ms,
        p95Ms, inputTokens, outputTokens, costUsd}]``, the first key named after --by: model,
        day as YYYY-MM-DD, or perspective, null outside an analysis), or csv (a header row, then
        one row per group, the same fields; no total row). With --caps, the caps in that format.
    json
        The same as --format json.
    caps
        Show only the budgets and quotas in their current windows (without it the text output
        shows them as a second table, "Budgets and quotas"): a table, or as json or csv ``[{cap,
        resource, window, used, reserved, limit, resetsAt}]`` (used: settled; reserved: held by
        requests still running; resetsAt in ISO 8601, UTC; amounts in dollars, requests or
        tokens as resource says).
    """
    if json and format not in (None, "json"):
        raise ConfigError(f"--json and --format {format} ask for two formats — give one of them")
    chosen: Format = "json" if json else format or "text"
    match parse_since(since, int(time.time() * 1000)):
        case Success(value):
            since_ms = value
        case Failure(problem):
            raise ConfigError(f"--since: {problem}")
    now = time.time()

    async def read(state: State) -> tuple[list[CapUsage], list[AttemptRow]]:
        return await state.caps.usage(now), [] if caps else await state.attempts.since(since_ms)

    windows, rows = read_records(read)
    if chosen != "text":
        records = caps_json(windows) if caps else _json_rows(group_rows(rows, by), by)
        if chosen == "json":
            emit_json(records)
        else:
            _write_csv(records, _csv_fields(by, caps))
        return 0
    if not caps:
        _print_attempts(rows, by, since)
    if windows:
        if not caps:
            print()
        _print_caps(windows, now)
    elif caps:
        print("No budget or quota has been charged in its current window.")
    return 0


def group_rows(rows: Sequence[AttemptRow], by: str) -> list[ProviderUsage]:
    """The usage of each group of ``rows`` (``by`` provider, model or UTC day), sorted by group;
    each ``ProviderUsage``'s ``provider`` holds the group's name. The statistics are
    ``rmcore.usage.summarize``'s, computed on rows relabelled with their group."""
    key = _GROUP_KEYS[by]
    return summarize(msgspec.structs.replace(row, provider=key(row)) for row in rows)


def _json_rows(groups: Sequence[ProviderUsage], by: str) -> list[dict[str, Any]]:
    """The rows of ``--format json``: ``rmcore.usage.to_json_rows`` with the group's key named
    after ``by`` (``provider`` stays the first key of the contract)."""
    rows = [{by: row.pop("provider"), **row} for row in to_json_rows(groups)]
    if by == "perspective":
        for row in rows:
            row[by] = None if row[by] == _NO_PERSPECTIVE else row[by]
    return rows


_ATTEMPT_FIELDS = (
    "requests",
    "failures",
    "cancelled",
    "failureRate",
    "p50Ms",
    "p95Ms",
    "inputTokens",
    "outputTokens",
    "costUsd",
)
_CAP_FIELDS = ("cap", "resource", "window", "used", "reserved", "limit", "resetsAt")


def _csv_fields(by: str, caps: bool) -> list[str]:
    return list(_CAP_FIELDS) if caps else [by, *_ATTEMPT_FIELDS]


def _write_csv(records: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    """``records`` as CSV on stdout: a header row, then one row each; numbers rounded as in JSON,
    written plainly (``0.00054``, never ``5.4e-04``), an unknown value empty."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(fields)
    for record in json_ready(list(records)):
        writer.writerow(["" if record[f] is None else _plain(record[f]) for f in fields])


def _plain(value: object) -> object:
    """A float in its shortest exact form, without an exponent (``5e-05`` is ``0.00005``)."""
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    return value


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


def _print_attempts(rows: Sequence[AttemptRow], by: str, since: str) -> None:
    """One row per group and a total row. At 80 columns the cancelled count and then the tokens
    are left out (said under the table); no name, number or cost is ever wrapped."""
    groups = group_rows(rows, by)
    if not groups:
        print(f"No attempts recorded since {since}.")
        return
    (total,) = summarize(msgspec.structs.replace(row, provider="Total") for row in rows)
    headers = [
        Column(_HEADINGS[by], wrap=False),
        Column("Requests", wrap=False, justify="right"),
        Column("Failed", wrap=False, justify="right"),
        Column("Cancelled", wrap=False, justify="right", drop=3),
        Column("p50", wrap=False, justify="right"),
        Column("p95", wrap=False, justify="right", drop=1),
        Column("Tokens in/out", wrap=False, justify="right", drop=2),
        Column("Cost", wrap=False, justify="right"),
    ]
    cells = [
        [
            u.provider,
            str(u.requests),
            f"{u.failures} ({u.failure_rate * 100:.1f}%)",
            str(u.cancelled),
            figures.duration(u.p50_ms),
            figures.duration(u.p95_ms),
            f"{u.input_tokens} / {u.output_tokens}",
            figures.cost(u.cost_usd),
        ]
        for u in [*groups, total]
    ]
    title = f"Usage by {by} since {since}"
    print_table(title, headers, cells, notes=["Latency: from each request written to its end."])


def _print_caps(windows: Sequence[CapUsage], now: float) -> None:
    rows = [
        [
            w.cap_key,
            _window(w),
            describe_amount(w.resource, w.used),
            describe_amount(w.resource, w.reserved),
            describe_amount(w.resource, w.limit),
            f"{format_moment(w.resets_at)} (in {duration(w.resets_at - now)})",
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
