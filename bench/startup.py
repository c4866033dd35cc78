"""Start-up and engine benchmarks (not tests): figures as ratios against a baseline run in the same run.

    python bench/startup.py [--runs 15]

Prints the median (min–max) wall time of ``rmgr --help`` and ``rmgr policy validate policies/*.toml``
against ``python -c pass``, and how many decisions per second the pure engine makes on a
simulated fail-over run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - started)
    return times


def engine_decisions_per_second(seconds: float = 1.0) -> float:
    from rmcore.errors import ErrorKind
    from rmcore.plan import RunPlan, TargetPlan
    from rmcore.providers import ProviderKind, ProviderSpec
    from rmcore.requests import ChatRequest
    from rmcore.simulate import SimProvider, SimReply, simulate

    def spec(name: str) -> ProviderSpec:
        return ProviderSpec(name=name, kind=ProviderKind.OPENAI, url="http://127.0.0.1:1/", model="m")

    plan = RunPlan(targets=tuple(TargetPlan(provider=spec(n)) for n in "abcd"))
    sims = {n: SimProvider(replies=(SimReply(latency_s=0.1, kind=ErrorKind.SERVER_ERROR),)) for n in "abc"}
    request = ChatRequest(prompt="Should we migrate to Kubernetes?")
    steps = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        steps += sum(1 for s in simulate(plan, request, sims).steps if s.action is not None)
    return steps / (time.perf_counter() - started)


def show(label: str, times: list[float], base: float | None) -> None:
    med = statistics.median(times)
    ratio = f"  {med / base:5.1f}x python -c pass" if base else ""
    print(f"{label:<45} {med * 1000:7.1f} ms  ({min(times) * 1000:.1f}–{max(times) * 1000:.1f}){ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    policies = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "policies").glob("*.toml"))
    baseline = wall([sys.executable, "-c", "pass"], args.runs)
    base = statistics.median(baseline)
    show("python -c pass", baseline, None)
    show("rmgr --help", wall([sys.executable, "-m", "rmcli", "--help"], args.runs), base)
    show("rmgr policy validate policies/*.toml",
         wall([sys.executable, "-m", "rmcli", "policy", "validate", *policies], args.runs), base)
    print(f"{'engine decisions per second (simulated)':<45} {engine_decisions_per_second():>10,.0f}")


if __name__ == "__main__":
    main()
