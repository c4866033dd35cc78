"""The analysis: eight perspectives against one when every provider takes a second, and its memory.

    python bench/analysis.py --upstream JSON [--runs 5]

is the timing in a fresh interpreter (``run.py`` starts it): ``rmcli.api.analyze`` without the
answer cache, alternately with one perspective and with all eight, each perspective routed to a
provider that waits one second before it answers (sandbox mode ``slow:1``). It prints each
analysis's wall time. The peak memory is that of a whole ``rmgr analyze`` process
(``ru_maxrss``), against ``python -c pass``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from harness import ROOT, Row, child_env, emit, median, rmgr_argv, run_worker
from upstream import Upstream

QUESTION = "Should we move our nightly batch jobs to an event-driven architecture?"
SLOW = "slow:1"
ONE = ["security"]


def _env(info: dict[str, Any], home: str) -> dict[str, str]:
    return {
        **info["env"],
        "AI_PROVIDER": "glm-direct",
        "AI_FALLBACK_PROVIDER": "anthropic-direct",
        "RECURSIVEMANAGER_HOME": home,
    }


async def _measure(info: dict[str, Any], runs: int) -> dict[str, list[float]]:
    from rmcli import api

    times: dict[str, list[float]] = {"one": [], "all": []}
    with tempfile.TemporaryDirectory() as home:
        env = _env(info, home)
        for run in range(runs + 1):
            for name, chosen in (("one", ONE), ("all", None)):
                started = time.perf_counter()
                result = await api.analyze(QUESTION, perspectives=chosen, use_cache=False, env=env)
                elapsed = time.perf_counter() - started
                if result.status != "ok":
                    raise RuntimeError(f"the analysis ended {result.status}")
                if run:  # the first pair warms the imports
                    times[name].append(elapsed)
    return times


def peak_rss_mb(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    """The peak resident memory of a process running ``argv``, in MB (10^6 bytes)."""
    process = subprocess.Popen(
        argv, cwd=ROOT, env=child_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed (exit {process.returncode}): {stderr[-2000:]}")
    return usage.ru_maxrss * 1024 / 1e6  # Linux reports kilobytes


def bench(runs: int, rss_runs: int) -> list[Row]:
    """Eight perspectives against one, and the peak memory of ``rmgr analyze``."""
    modes = {name: SLOW for name in ("aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct")}
    with Upstream(modes) as upstream:
        times = run_worker("analysis.py", ["--upstream", upstream.json_arg(), "--runs", str(runs)])
        baseline = [peak_rss_mb([sys.executable, "-c", "pass"]) for _ in range(rss_runs)]
        peaks = []
        for _ in range(rss_runs):
            with tempfile.TemporaryDirectory() as home:
                argv = [*rmgr_argv(), "analyze", QUESTION, "--no-cache"]
                peaks.append(peak_rss_mb(argv, _env(upstream.info, home)))
    return [
        Row(
            name="8-perspective analysis, every provider slow:1",
            unit="s",
            samples=times["all"],
            baseline_name="one perspective alone",
            baseline=times["one"],
            ratio=median(times["all"]) / median(times["one"]),
            ratio_label="of one",
            target="< 1.3× one perspective",
            check=lambda r: (r.ratio or 0.0) < 1.3,
            decimals=3,
            note="rmcli.api.analyze, no answer cache, the history saved",
        ),
        Row(
            name="peak RSS of a full analysis (rmgr analyze, 8 perspectives)",
            unit="MB",
            samples=peaks,
            baseline_name="python -c pass",
            baseline=baseline,
            target="< 80 MB",
            check=lambda r: (r.value or 0.0) < 80.0,
            decimals=1,
            note="ru_maxrss of the whole process; the target is read as the absolute peak",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    import anyio

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", required=True, help="the JSON line bench/upstream.py printed")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    emit(anyio.run(_measure, json.loads(args.upstream), args.runs))


if __name__ == "__main__":
    main()
