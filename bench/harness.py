"""What every benchmark shares: figures with their baseline and target, child processes, the table.

A benchmark returns ``Row``s. A row holds the samples of several runs (its figure is their
median, shown with the min–max), optionally the samples of the baseline measured in the same
run, and its target as a predicate on the figure. Benchmarks that time Python code run it in a
child process of their own (``run_worker``), so that each contender starts from a fresh
interpreter with nothing of the others imported and its CPU time is its own.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

LITELLM_ENV = {
    # Never fetch the model price list from the network: the benchmarks talk to 127.0.0.1 only.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
}


def litellm_proxy() -> str | None:
    """The ``litellm`` executable of a ``litellm[proxy]`` install, which may live in a venv of its
    own: ``LITELLM_PROXY``, else ``litellm`` on PATH; None when there is none."""
    given = os.environ.get("LITELLM_PROXY")
    if given:
        return given if os.access(given, os.X_OK) else None
    return shutil.which("litellm")


def litellm_python() -> str | None:
    """An interpreter that imports LiteLLM: this one when it is installed here, else the one of the
    venv ``litellm_proxy()`` belongs to (so that the Router comparisons run without LiteLLM in the
    project's venv); None when neither has it."""
    if litellm_missing() is None:
        return sys.executable
    proxy = litellm_proxy()
    if proxy is None:
        return None
    python = Path(proxy).resolve().parent / "python"
    if not python.is_file():
        return None
    probe = [str(python), "-c", "import importlib.metadata as m; m.version('litellm'); import anyio"]
    done = subprocess.run(probe, capture_output=True, timeout=60, check=False, env=child_env(LITELLM_ENV))
    return str(python) if done.returncode == 0 else None


def litellm_missing() -> str | None:
    """Why the LiteLLM comparisons cannot run here, or None when LiteLLM is installed."""
    try:
        metadata.version("litellm")
    except metadata.PackageNotFoundError:
        return "LiteLLM is not installed (pip install -e '.[bench]')"
    return None


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (which must not be empty)."""
    return float(statistics.median(values))


@dataclass
class Row:
    """One line of the table: a figure, what it is compared with, and whether it meets its target."""

    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    baseline_name: str | None = None
    baseline: list[float] | None = None
    ratio: float | None = None
    ratio_label: str = ""
    target: str = ""
    check: Callable[[Row], bool] | None = None
    note: str = ""
    skipped: str | None = None
    decimals: int = 1

    @property
    def value(self) -> float | None:
        """The median of the samples, or None when there are none."""
        return median(self.samples) if self.samples else None

    @property
    def baseline_value(self) -> float | None:
        """The median of the baseline's samples, or None."""
        return median(self.baseline) if self.baseline else None

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None when the row has no target or was skipped."""
        if self.skipped is not None or self.check is None or not self.samples:
            return None
        return self.check(self)

    def fmt(self, value: float | None) -> str:
        """``value`` in this row's unit and precision."""
        if value is None:
            return "–"
        return f"{value:,.{self.decimals}f}"

    def to_json(self) -> dict[str, Any]:
        """The row as plain data, for ``--json``."""
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.value,
            "min": min(self.samples) if self.samples else None,
            "max": max(self.samples) if self.samples else None,
            "samples": self.samples,
            "baseline": self.baseline_name,
            "baselineMedian": self.baseline_value,
            "baselineSamples": self.baseline,
            "ratio": self.ratio,
            "ratioLabel": self.ratio_label or None,
            "target": self.target or None,
            "met": self.met,
            "note": self.note or None,
            "skipped": self.skipped,
        }


def skipped_row(name: str, reason: str, target: str = "") -> Row:
    """A row that could not be measured here, saying why."""
    return Row(name=name, unit="", target=target, skipped=reason)


def run_worker(
    script: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600.0,
    python: str | None = None,
) -> dict[str, Any]:
    """Run ``bench/SCRIPT`` with ``args`` in a fresh interpreter (``python``, default this one) and
    return the JSON object it prints on its last line of output; its stderr is shown when it fails."""
    argv = [python or sys.executable, str(BENCH / script), *args]
    done = subprocess.run(
        argv, cwd=ROOT, env=child_env(env), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{script} {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def rmgr_argv() -> list[str]:
    """How to start ``rmgr``: the console script next to this interpreter, as users start it, or
    ``python -m rmcli`` where it is not installed."""
    script = Path(sys.executable).parent / "rmgr"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rmcli"]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ours, ``extra``, and this checkout first on the path."""
    parts = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, **(extra or {}), "PYTHONPATH": os.pathsep.join(dict.fromkeys(parts))}


def emit(result: Mapping[str, Any]) -> None:
    """Print a worker's result as the one JSON line ``run_worker`` reads."""
    print(json.dumps(result), flush=True)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("aiohttp", "h11", "httpx", "httpcore", "anyio", "msgspec", "uvicorn", "litellm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    if versions["litellm"] is None and (python := litellm_python()) is not None:  # the proxy's venv
        probe = [python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60, check=False)
        versions["litellm"] = f"{done.stdout.strip()} (LiteLLM's venv)" if done.returncode == 0 else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "load": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (readable as plain text too)."""
    header = ["benchmark", "median", "min–max", "baseline (median)", "ratio", "target", "met?"]
    lines = [header]
    for row in rows:
        if row.skipped is not None:
            lines.append([row.name, "skipped", row.skipped, "", "", row.target, "–"])
            continue
        unit = f" {row.unit}" if row.unit else ""
        spread = f"{row.fmt(min(row.samples))}–{row.fmt(max(row.samples))}" if row.samples else "–"
        base = ""
        if row.baseline_name is not None:
            base = row.baseline_name
            if row.baseline_value is not None:
                base += f": {row.fmt(row.baseline_value)}{unit}"
        ratio = f"{row.ratio:.2f}× {row.ratio_label}".strip() if row.ratio is not None else ""
        met = {True: "yes", False: "NO", None: ""}[row.met]
        lines.append([row.name, f"{row.fmt(row.value)}{unit}", spread, base, ratio, row.target, met])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)) + " |"

    out = [render(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(render(line) for line in lines[1:])
    notes = [f"- {row.name}: {row.note}" for row in rows if row.note]
    if notes:
        out.extend(["", *notes])
    return "\n".join(out)
