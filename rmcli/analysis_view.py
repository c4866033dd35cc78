"""How an analysis looks on a terminal: the seed's box, a table, then each perspective in full;
live progress while it runs. Every piece of model text is shown literally (no markup, no escape
sequences)."""

from __future__ import annotations

import sys

from rmcli.analysis import AnalysisRun
from rmcli.hooks import Hooks
from rmcli.notices import announce_backoff, announce_failed_over, announce_skipped
from rmcli.output import err, safe_text
from rmcore.events import Backoff, FailedOver, TargetSkipped
from rmcore.report import PerspectiveResult, one_line

__all__ = ["LiveProgress", "print_text", "providers_line"]


def _confidence(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


def providers_line(run: AnalysisRun, first_provider: str) -> str:
    """Which providers answered, and whether a fallback served (the seed's "glm-direct (fallback)")."""
    used = list(dict.fromkeys(r.provider for r in run.results if r.error_kind is None and r.provider))
    if not used:
        return "none answered"
    return ", ".join(f"{p} (fallback)" if p != first_provider else p for p in used)


def print_text(run: AnalysisRun, first_provider: str) -> None:
    """The whole report on stdout."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=False)
    cached = sum(r.cached for r in run.results)
    head = Text()
    head.append(f"Question: {safe_text(run.question.strip())}\n")
    head.append(f"Provider: {providers_line(run, first_provider)}\n")
    head.append(f"Overall Confidence: {_confidence(run.overall)}\n")
    head.append(
        f"Status: {run.status} · Time: {run.execution_ms / 1000:.2f} s · Cost: ${run.cost_usd:.6f}"
        + (f" · {cached} from the cache" if cached else "")
    )
    console.print(Panel(head, title="Multi-Perspective Analysis", title_align="left", expand=False))

    table = Table(show_lines=False)
    for column in ("Perspective", "Confidence", "Provider", "Finding"):
        table.add_column(column)
    for r in run.results:
        if r.error_kind is not None:
            finding = f"FAILED: {r.error_kind}: {one_line(r.error_message or '', 80)}"
        else:
            finding = one_line(r.recommendation or r.analysis or "", 80)
        provider = (r.provider or "-") + (" (cached)" if r.cached else "")
        table.add_row(
            Text(r.perspective), Text(_confidence(r.confidence)), Text(provider), Text(safe_text(finding))
        )
    console.print(table)
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


class LiveProgress:
    """Fail-over notices on stderr (each distinct one once: eight perspectives would otherwise
    repeat the same line eight times), and on a terminal a line per perspective as it ends."""

    def __init__(self, *, live: bool | None = None) -> None:
        self.live = sys.stderr.isatty() if live is None else live
        self.seen: set[tuple[str, str, str]] = set()

    def hooks(self) -> Hooks:
        """The hooks that show this progress."""
        return Hooks(
            failed_over=self.failed_over,
            skipped=self.skipped,
            backing_off=self.backing_off,
            perspective_finished=self.finished,
        )

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

    def finished(self, result: PerspectiveResult, done: int, total: int) -> None:
        if not self.live:
            return
        if result.error_kind is not None:
            what = f"✗ failed: {result.error_kind}"
        else:
            source = "cache" if result.cached else result.provider
            what = f"✓ {_confidence(result.confidence)} ({source}, {result.latency_ms / 1000:.1f} s)"
        err(f"[{done}/{total}] {result.perspective:<16}  {what}")
