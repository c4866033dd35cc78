"""Tables for the terminal, drawn by rich; every cell is plain text, never markup, never a key.

A table fits the terminal's width. Short cells (names, numbers, costs, times) are never wrapped:
a column of them is as wide as its widest cell. Free text wraps at spaces, URLs are shortened
with an ellipsis (``http://127.0.0.1:8080/…/completions``). When even that does not fit, the
columns marked as droppable go first, and as a last resort each row is printed as a small card
(``Header: value`` lines), which fits any width.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from rmcli.output import safe_text

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Column", "fits", "print_table", "shorten_url", "table_width"]

_UNBOUNDED_WIDTH = 10_000
"""The width given to output that is not a terminal: a table takes only the width it needs."""

ATOMIC_WIDTH = 24
"""A column whose cells are all at most this wide is never wrapped (names, numbers, costs)."""

WRAP_MIN_WIDTH = 16
"""The narrowest a column of free text is made before columns are dropped."""

URL_MIN_WIDTH = 24
"""The narrowest a column of URLs is made before columns are dropped."""

ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    """A column's header and how it behaves when the terminal is narrow.

    ``wrap``: True for free text (wraps at spaces), False for a cell that must stay whole (a
    name, a number, a cost), None to decide from the cells (whole when every cell is at most
    ``ATOMIC_WIDTH`` wide, a URL column when they are URLs, free text otherwise). ``url``: the
    cells are URLs, shortened to fit rather than wrapped. ``drop``: 0 for a column always shown;
    otherwise the column may be left out when the table does not fit, highest first.
    """

    header: str
    wrap: bool | None = None
    url: bool = False
    drop: int = 0
    justify: Literal["left", "right"] = "left"


def table_width(console: Console | None = None) -> int:
    """The width tables are drawn to: the terminal's (``COLUMNS`` when set), or unbounded when
    stdout is a pipe or a file and ``COLUMNS`` is unset, so that ``rmgr providers | grep`` sees
    whole names and URLs."""
    if console is None:
        from rich.console import Console

        console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        return _UNBOUNDED_WIDTH
    return console.width


def shorten_url(url: str, width: int) -> str:
    """``url`` in at most ``width`` characters: whole when it fits, else scheme, host and port
    with the last path segment (``http://127.0.0.1:8080/…/completions``), else scheme, host and
    port with an ellipsis, else cut with an ellipsis."""
    if len(url) <= width:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is not None and parts.scheme and parts.netloc:
        origin = f"{parts.scheme}://{parts.netloc}"
        last = parts.path.rstrip("/").rsplit("/", 1)[-1]
        for candidate in (f"{origin}/{ELLIPSIS}/{last}" if last else "", f"{origin}/{ELLIPSIS}"):
            if candidate and len(candidate) <= width:
                return candidate
    return url[: max(width - 1, 0)] + ELLIPSIS


@dataclass(frozen=True)
class _Shape:
    """How one column is laid out: its narrowest and natural content widths, and whether it may
    wrap (free text) or is shortened (URLs)."""

    column: Column
    least: int
    natural: int
    wraps: bool
    url: bool


def _words_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(word) for word in text.split()), default=0)


def _lines_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.splitlines()), default=0)


def _one_line(text: str) -> str:
    return " / ".join(text.splitlines())


def _looks_like_url(text: str) -> bool:
    return text.startswith(("http://", "https://")) and " " not in text


def _shape(column: Column, cells: Sequence[str]) -> _Shape:
    widest = max((_lines_width(c) for c in cells), default=0)
    header = _words_width(column.header)
    url = column.url or (
        column.wrap is None
        and widest > ATOMIC_WIDTH
        and all(_looks_like_url(c) or c in ("", "-") for c in cells)
    )
    wraps = not url and (column.wrap if column.wrap is not None else widest > ATOMIC_WIDTH)
    natural = max(widest, header)
    if url:
        least = max(header, min(natural, URL_MIN_WIDTH))
    elif wraps:
        # Wrapping happens between words: a word as short as a name is never broken.
        whole = max((w for w in (_words_width(c) for c in cells) if w <= ATOMIC_WIDTH), default=0)
        least = max(header, whole, min(natural, WRAP_MIN_WIDTH))
    else:
        least = natural
    return _Shape(column, least, natural, wraps, url)


def _overhead(count: int) -> int:
    """The width of a boxed table's borders and padding around ``count`` columns."""
    return 3 * count + 1


def _layout(shapes: list[_Shape], width: int) -> tuple[list[int], list[int]] | None:
    """Which columns are shown (indices) and their content widths, or None when no choice fits."""
    kept = list(range(len(shapes)))
    while sum(shapes[i].least for i in kept) + _overhead(len(kept)) > width:
        droppable = [i for i in kept if shapes[i].column.drop > 0]
        if not droppable:
            return None
        kept.remove(max(reversed(droppable), key=lambda i: shapes[i].column.drop))
    widths = [shapes[i].least for i in kept]
    room = width - _overhead(len(kept)) - sum(widths)
    wanting = [(n, shapes[i].natural - shapes[i].least) for n, i in enumerate(kept)]
    wanted = sum(want for _, want in wanting)
    if wanted <= room:
        widths = [shapes[i].natural for i in kept]
    elif wanted > 0:
        for n, want in wanting:
            widths[n] += want * room // wanted
    return kept, widths


def _fit(cell: str, shape: _Shape, width: int) -> str:
    if not shape.url:
        return cell
    return "\n".join(shorten_url(line, width) for line in cell.splitlines())


def _shapes(headers: Sequence[str | Column], cells: Sequence[Sequence[str]]) -> list[_Shape]:
    columns = [h if isinstance(h, Column) else Column(h) for h in headers]
    return [_shape(c, [row[i] for row in cells]) for i, c in enumerate(columns)]


def fits(headers: Sequence[str | Column], rows: Sequence[Sequence[str]], *, width: int | None = None) -> bool:
    """Whether ``print_table`` would draw these rows as a table with every column (no column
    dropped, no cards) at ``width`` (default: ``table_width()``). A view with a second, narrower
    layout asks this to choose."""
    limit = width if width is not None else table_width()
    shapes = _shapes(headers, [[safe_text(cell) for cell in row] for row in rows])
    return sum(s.least for s in shapes) + _overhead(len(shapes)) <= limit


def print_table(
    title: str | None,
    headers: Sequence[str | Column],
    rows: Sequence[Sequence[str]],
    *,
    width: int | None = None,
    notes: Sequence[str] = (),
    lines: bool = False,
) -> None:
    """Print a boxed table on stdout that fits the terminal; cells are shown literally (no rich
    markup is interpreted, control characters are escaped and API keys redacted, as
    ``safe_text`` does).

    ``headers`` are plain names or ``Column``s saying how a column behaves when narrow. Short
    cells are never wrapped, free text wraps at spaces, URLs are shortened; droppable columns
    are left out (a line under the table says which) and, when nothing else fits, each row is
    printed as a card. ``width`` overrides the terminal's (``table_width``). ``notes`` are lines
    printed under the table (wrapped to the width). ``lines`` draws a line between rows (for
    cells of several lines). A table whose headers are all empty has no header row.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    cells = [[safe_text(cell) for cell in row] for row in rows]
    console = Console(highlight=False)
    limit = width if width is not None else table_width(console)
    console = Console(highlight=False, width=limit)
    shapes = _shapes(headers, cells)
    layout = _layout(shapes, limit)
    if layout is None:
        _print_cards(console, title, shapes, cells, limit)
    else:
        kept, widths = layout
        show_header = any(shapes[i].column.header for i in kept)
        table = Table(title=title, title_justify="left", show_lines=lines, show_header=show_header)
        for i, w in zip(kept, widths, strict=True):
            shape = shapes[i]
            table.add_column(
                # A header wraps between its words even over cells that never wrap.
                Text(shape.column.header, no_wrap=False, overflow="fold"),
                width=w,
                no_wrap=not shape.wraps,
                overflow="fold" if shape.wraps else "ellipsis",
                justify=shape.column.justify,
            )
        for row in cells:
            table.add_row(*(Text(_fit(row[i], shapes[i], w)) for i, w in zip(kept, widths, strict=True)))
        console.print(table)
        left_out = [shapes[i].column.header for i in range(len(shapes)) if i not in kept]
        if left_out:
            shown = ", ".join(left_out)
            notes = [*notes, f"(not shown at this width: {shown}; widen the terminal or use --json)"]
    for note in notes:
        console.print(Text(note), overflow="fold")


def _print_cards(
    console: Console, title: str | None, shapes: list[_Shape], cells: list[list[str]], limit: int
) -> None:
    """Each row as its first cell on a line, then indented ``Header  value`` lines: fits any
    width (a label takes at most half of it)."""
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    if title:
        console.print(Text(title, style="italic"), overflow="fold")
    indent = 2
    widest_label = max((_lines_width(s.column.header) for s in shapes[1:]), default=0)
    label_width = min(widest_label, max(limit // 3, 10))
    value_width = max(limit - indent - label_width - 2, 8)
    first = _one_line(shapes[0].column.header)
    for n, row in enumerate(cells):
        if n:
            console.print()
        head = _one_line(row[0])
        console.print(Text(f"{first}: {head}" if first else head, style="bold"), overflow="fold")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(width=label_width, overflow="fold")
        grid.add_column(width=value_width, overflow="fold")
        for shape, cell in zip(shapes[1:], row[1:], strict=True):
            grid.add_row(Text(_one_line(shape.column.header)), Text(_fit(cell, shape, value_width)))
        console.print(Padding(grid, (0, 0, 0, indent)))
