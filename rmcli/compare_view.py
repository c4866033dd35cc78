"""How ``rmgr compare`` looks on a terminal: the providers side by side, one column each, and a
row per figure (status, the synthesis's decision, time, overall confidence, each perspective's
confidence, tokens, cost).

Perspectives as rows keep the table as narrow as the providers compared: three providers fit 80
columns whatever the number of perspectives. Errors are listed under the table, whole, rather
than squeezed into a cell. When even that table does not fit, each provider gets a card.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rmcli import figures
from rmcli.tables import Column, fits, print_table

__all__ = ["comparison_table", "print_comparison"]

TITLE = "Provider comparison"


def _figures(row: Mapping[str, Any], ids: Sequence[str]) -> list[str]:
    """One provider's figures, in the order of ``_labels``."""
    usage = row.get("usage") or {}
    perspectives = row.get("perspectives") or {}

    def conf(value: float | None) -> str:
        return "-" if value is None else figures.confidence(value)

    def tokens(key: str) -> str:
        return "-" if key not in usage else str(usage[key])

    return [
        str(row["status"]),
        str(row.get("decision") or "-"),
        figures.duration(row.get("executionTime")),
        conf(row.get("overallConfidence")),
        *(conf(perspectives.get(i)) for i in ids),
        tokens("inputTokens"),
        tokens("outputTokens"),
        figures.cost(row.get("costUsd")),
    ]


def _labels(ids: Sequence[str]) -> list[str]:
    return ["Status", "Decision", "Time", "Overall", *ids, "Tokens in", "Tokens out", "Cost"]


def comparison_table(
    rows: Sequence[Mapping[str, Any]], ids: Sequence[str]
) -> tuple[list[str | Column], list[list[str]]]:
    """The headers (a blank one, then each provider) and rows (one per figure) of the table."""
    columns = [_figures(row, ids) for row in rows]
    headers: list[str | Column] = [Column("", wrap=False)]
    headers += [Column(str(row["provider"]), wrap=False, justify="right") for row in rows]
    table = [[label, *(column[n] for column in columns)] for n, label in enumerate(_labels(ids))]
    return headers, table


def print_comparison(rows: Sequence[Mapping[str, Any]], ids: Sequence[str]) -> None:
    """Print the comparison of ``rows`` (the objects of ``rmgr compare --format json``, without
    ``analysis``) over the perspectives ``ids`` on stdout."""
    notes = [f"{row['provider']}: {row['error']}" for row in rows if row.get("error")]
    notes = [*(["Errors:"] if notes else []), *notes]
    headers, table = comparison_table(rows, ids)
    if fits(headers, table):
        print_table(TITLE, headers, table, notes=notes)
        return
    # Too narrow for a column per provider: a row (and so, at worst, a card) per provider.
    by_provider = [[str(row["provider"]), *_figures(row, ids)] for row in rows]
    print_table(TITLE, ["Provider", *_labels(ids)], by_provider, notes=notes)
