"""A line that moves on stderr while a person waits: ``rmgr ask``'s spinner until the first words
of the answer, and the line under ``rmgr analyze``'s progress.

Only on a terminal: a command decides with ``wants_live`` (never for JSON output, never when
stdout or stderr is a pipe or a file), so logs and scripts never see a frame of it. While it
runs, whatever the process writes to stderr (fail-over notices) is printed above the line,
which is erased when it stops. rich is imported only when a line is really shown.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["LiveLine", "Spinner", "wants_live"]

REFRESH_PER_SECOND = 8


def wants_live(*, as_json: bool = False) -> bool:
    """Whether a live line may be drawn: not for JSON, and only when stdout and stderr are both
    terminals (a redirected report or a CI log gets no frames)."""
    return not as_json and sys.stdout.isatty() and sys.stderr.isatty()


class LiveLine:
    """One line redrawn on stderr (``REFRESH_PER_SECOND`` times a second) from ``render()``, a
    spinner in front of it; ``print`` writes a line above it. Started and stopped explicitly
    (or as a context manager); ``stop`` erases it and may be called any number of times."""

    def __init__(self, render: Callable[[], str], *, console: Console | None = None) -> None:
        self._render = render
        self._console = console
        self._live: Live | None = None
        self._spinner: object | None = None

    @property
    def running(self) -> bool:
        """Whether the line is on screen."""
        return self._live is not None

    def start(self) -> None:
        """Show the line (once; a second call does nothing)."""
        if self._live is not None:
            return
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner as RichSpinner

        console = self._console or Console(stderr=True, highlight=False)
        self._spinner = RichSpinner("dots")
        self._live = Live(
            console=console,
            get_renderable=self._frame,
            transient=True,
            refresh_per_second=REFRESH_PER_SECOND,
            redirect_stdout=False,
            redirect_stderr=True,
        )
        self._live.start()

    def _frame(self) -> RenderableType:
        from rich.spinner import Spinner as RichSpinner
        from rich.text import Text

        from rmcli.output import safe_text

        assert isinstance(self._spinner, RichSpinner)
        self._spinner.update(text=Text(safe_text(self._render()), no_wrap=True, overflow="ellipsis"))
        return self._spinner

    def print(self, line: str) -> None:
        """Write ``line`` above the live line (or on stderr when it is not shown)."""
        from rmcli.output import err, safe_text

        if self._live is None:
            err(line)
            return
        from rich.text import Text

        self._live.refresh()  # the line redrawn under ``line`` is then the current one
        self._live.console.print(Text(safe_text(line)), highlight=False)

    def stop(self) -> None:
        """Erase the line; what was printed above it stays."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


class Spinner:
    """``rmgr ask``'s spinner: ``Waiting for PROVIDER… 1.2 s`` on stderr from the request until
    the first streamed words or the whole answer (a provider that does not stream, such as the
    AICEO gateway, answers all at once). With ``live`` False every method does nothing."""

    def __init__(
        self,
        *,
        live: bool,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live = live
        self._clock = clock
        self._since = clock()
        self._label = "Waiting for the answer"
        self._line = LiveLine(self.text, console=console)

    @property
    def running(self) -> bool:
        """Whether the spinner is on screen."""
        return self._line.running

    def text(self) -> str:
        """What the spinner says now."""
        return f"{self._label}… {self._clock() - self._since:.1f} s"

    def start(self) -> None:
        """Start spinning (on a terminal); the clock starts now."""
        if self.live:
            self._since = self._clock()
            self._line.start()

    def waiting_for(self, provider: str) -> None:
        """Say which provider the answer is awaited from (a fail-over changes it)."""
        self._label = f"Waiting for {provider}"

    def stop(self) -> None:
        """Erase the spinner: the answer (or an error) is about to be printed."""
        self._line.stop()
