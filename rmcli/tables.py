"""Tables for the terminal, drawn by rich; every cell is plain text, never markup, never a key."""

from __future__ import annotations

import os
from collections.abc import Sequence

from rmcli.output import safe_text

__all__ = ["print_table"]

_UNBOUNDED_WIDTH = 10_000
"""The width given to output that is not a terminal: a table takes only the width it needs."""


def print_table(title: str | None, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a boxed table on stdout; cells are shown literally (no rich markup is interpreted,
    control characters are escaped and API keys redacted, as ``safe_text`` does).

    No cell is ever cut short: on a narrow terminal a long cell wraps within its column, and when
    stdout is a pipe or a file (where rich would assume 80 columns) and ``COLUMNS`` is unset,
    every row stays on one line, so that ``rmgr providers | grep`` sees whole names and URLs.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(safe_text(cell)) for cell in row))
    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(highlight=False, width=_UNBOUNDED_WIDTH)
    console.print(table)
