"""How an analysis looks on a terminal: the seed's box, a table, then each perspective in full;
live progress while it runs. Every piece of model text is shown literally (no markup, no escape
sequences)."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from rmcli import figures
from rmcli.analysis import AnalysisRun
from rmcli.hooks import Hooks
from rmcli.notices import announce_backoff, announce_failed_over, announce_skipped
from rmcli.output import safe_text
from rmcli.question import shorten_question
from rmcli.spinner import LiveLine, wants_live
from rmcli.synthesis_view import synthesis_failed_line, synthesis_text_lines
from rmcli.tables import Column, print_table
from rmcore.attempts import AttemptRecord
from rmcore.events import Backoff, FailedOver, TargetSkipped
from rmcore.perspectives import Perspective
from rmcore.report import PerspectiveResult, one_line

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["LiveProgress", "print_text", "providers_line"]


def _confidence(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


def providers_line(run: AnalysisRun, first_provider: Callable[[str], str]) -> str:
    """Which providers answered, and whether a fallback served (the seed's "glm-direct (fallback)"):
    a provider is marked when it answered a perspective whose route, ``first_provider(id)``, puts
    another target first."""
    answered = [r for r in run.results if r.error_kind is None and r.provider]
    used = list(dict.fromkeys(r.provider for r in answered if r.provider))
    if not used:
        return "none answered"
    fallbacks = {r.provider for r in answered if r.provider != first_provider(r.id)}
    return ", ".join(f"{p} (fallback)" if p in fallbacks else p for p in used)


def print_text(run: AnalysisRun, first_provider: Callable[[str], str]) -> None:
    """The whole report on stdout."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=False)
    cached = sum(r.cached for r in run.results)
    head = Text()
    head.append(f"Question: {safe_text(shorten_question(run.question))}\n")
    head.append(f"Provider: {providers_line(run, first_provider)}\n")
    head.append(f"Overall Confidence: {_confidence(run.overall)}\n")
    head.append(
        f"Status: {run.status} · Time: {figures.duration(run.execution_ms)}"
        f" · Cost: {figures.cost(run.cost_usd)}" + (f" · {cached} from the cache" if cached else "")
    )
    console.print(Panel(head, title="Multi-Perspective Analysis", title_align="left", expand=False))
    chair = run.synthesis
    if chair is not None:
        if chair.synthesis is not None:
            lines = synthesis_text_lines(chair.synthesis, min(console.width, 100))
            who = f"(the synthesis, by {chair.provider}" + (", cached)" if chair.cached else ")")
            lines[0] = f"{lines[0]} {safe_text(who)}"
        else:
            lines = [synthesis_failed_line(chair.error_kind or "failed", chair.error_message or "")]
        for line in lines:
            console.print(Text(line))
        console.print()

    rows = []
    for r in run.results:
        if r.error_kind is not None:
            finding = f"FAILED: {r.error_kind}: {one_line(r.error_message or '', 80)}"
        else:
            finding = one_line(r.recommendation or r.analysis or "", 80)
        provider = (r.provider or "-") + (" (cached)" if r.cached else "")
        rows.append([r.perspective, _confidence(r.confidence), provider, finding])
    print_table(
        None,
        [
            Column("Perspective", wrap=False),
            Column("Confidence", wrap=False),
            "Provider",
            Column("Finding", wrap=True),
        ],
        rows,
    )
    if chair is None or chair.synthesis is None:  # the keyword summary stands in for the synthesis
        console.print(Text("Summary", style="bold"))
        console.print(Text(safe_text(run.summary)))
    for r in run.results:
        console.print()
        console.print(Text(f"── {r.perspective} ──", style="bold"))
        if r.error_kind is not None:
            console.print(Text(f"Failed: {r.error_kind}: {safe_text(r.error_message or '')}"))
            continue
        console.print(
            Text(f"Confidence: {_confidence(r.confidence)} · {safe_text(f'{r.provider} ({r.model})')}")
        )
        console.print(Text(safe_text(r.analysis or "")))
        if r.recommendation and r.recommendation not in (r.analysis or ""):
            console.print(Text(f"Recommendation: {safe_text(r.recommendation)}"))
        if r.reasoning and r.reasoning not in (r.analysis or ""):
            console.print(Text(f"Reasoning: {safe_text(r.reasoning)}"))
        if "no_confidence" in r.flags:
            console.print(Text("(the answer stated no confidence: it is reported as unknown)"))
        for n, a in enumerate(r.answers[1:], start=2):
            who = safe_text(f"{a.provider} ({a.model})")
            console.print()
            console.print(Text(f"Answer {n} · Confidence: {_confidence(a.confidence)} · {who}", style="bold"))
            console.print(Text(safe_text(a.analysis or "")))


class LiveProgress:
    """What a person sees while an analysis runs, on stderr.

    Fail-over notices, each distinct one once (eight perspectives would otherwise repeat the
    same line eight times). On a terminal (``live``) also, from ``start`` to ``stop``, one line
    redrawn in place, ``Analysing: 2/8 done · 3 running · 1 failed · $0.000412 spent · 4.2 s``,
    and above it a line per perspective as it ends. ``live`` defaults to
    ``rmcli.spinner.wants_live()``; ``console`` replaces stderr's (tests give one on a
    ``StringIO``).
    """

    def __init__(
        self,
        *,
        live: bool | None = None,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live = wants_live() if live is None else live
        self.seen: set[tuple[str, str, str]] = set()
        self._clock = clock
        self._since = clock()
        self._started: set[str] = set()
        self._ended: set[str] = set()
        self._failed = 0
        self._total: int | None = None
        self._spent = 0.0
        self._deciding = False
        self._line = LiveLine(self.status, console=console)

    def hooks(self) -> Hooks:
        """The hooks that show this progress."""
        return Hooks(
            failed_over=self.failed_over,
            skipped=self.skipped,
            backing_off=self.backing_off,
            attempt_ended=self.attempt_ended,
            perspective_started=self.started,
            perspective_finished=self.finished,
            synthesis_started=self.deciding,
        )

    def start(self) -> None:
        """Show the progress line (on a terminal); the clock starts now."""
        if self.live:
            self._since = self._clock()
            self._line.start()

    def stop(self) -> None:
        """Erase the progress line: the report follows. Safe to call more than once."""
        self._line.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def status(self) -> str:
        """The progress line: perspectives done (of how many, once known), running, failed; the
        money spent so far; the time since ``start``."""
        done = len(self._ended)
        running = len(self._started - self._ended)
        counted = f"{done}/{self._total}" if self._total is not None else f"{done}"
        parts = [f"Analysing: {counted} done", f"{running} running"]
        if self._deciding:
            parts = [f"Deciding: the synthesis over {counted} perspectives"]
        if self._failed:
            parts.append(f"{self._failed} failed")
        parts.append(f"${self._spent:.6f} spent")
        parts.append(f"{self._clock() - self._since:.1f} s")
        return " · ".join(parts)

    def _first(self, key: tuple[str, str, str]) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def failed_over(self, notice: FailedOver) -> None:
        if self._first((notice.from_provider, notice.to_provider, notice.error.kind.value)):
            announce_failed_over(notice)

    def skipped(self, notice: TargetSkipped) -> None:
        if self._first((notice.skipped.provider, "", notice.skipped.kind.value)):
            announce_skipped(notice)

    def backing_off(self, notice: Backoff, seconds: float) -> None:
        if self._first((notice.provider, "retry", notice.reason)):
            announce_backoff(notice, seconds)

    def attempt_ended(self, record: AttemptRecord) -> None:
        self._spent += record.cost_usd

    def deciding(self) -> None:
        self._deciding = True

    def started(self, perspective: Perspective) -> None:
        self._started.add(perspective.id)

    def finished(self, result: PerspectiveResult, done: int, total: int) -> None:
        self._ended.add(result.id)
        self._total = total
        if result.error_kind is not None:
            self._failed += 1
        if not self.live:
            return
        if result.error_kind is not None:
            what = f"✗ failed: {result.error_kind}"
        else:
            source = "cache" if result.cached else result.provider
            what = f"✓ {_confidence(result.confidence)} ({source}, {result.latency_ms / 1000:.1f} s)"
        self._line.print(f"[{done}/{total}] {result.perspective:<16}  {what}")
