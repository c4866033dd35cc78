"""Start-up and engine benchmarks (not tests): figures as ratios against a baseline run in the same run.

    python bench/startup.py [--runs 15]

Prints the median (min–max) wall time of ``rmgr --help`` and ``rmgr policy validate policies/*.toml``
against ``python -c pass`` and ``python -c "import litellm"`` (when LiteLLM is installed), and
how many decisions per second the pure engine makes on a simulated fail-over run.
``bench/run.py`` runs these with every other benchmark.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

from harness import LITELLM_ENV, ROOT, Row, child_env, litellm_missing, median, rmgr_argv, skipped_row, table

HELP_TARGET_S = 0.25
LITELLM_FACTOR = 10.0


def wall(argv: Sequence[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    """The wall times of ``runs`` runs of ``argv``, in seconds; a failing run is an error."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            list(argv), cwd=ROOT, env=child_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return times


def cache_bytecode(commands: Iterable[Sequence[str]]) -> None:
    """Run each command once with Python's default of writing bytecode, so that the timed runs
    start as they do on a user's machine: with this checkout's modules compiled. A machine whose
    environment sets ``PYTHONDONTWRITEBYTECODE`` (this project's sandboxes do) would otherwise
    time the compiling of every module each run (``rmgr policy validate``: 280 against 150 ms)."""
    env = {key: value for key, value in child_env().items() if key != "PYTHONDONTWRITEBYTECODE"}
    for argv in commands:
        subprocess.run(list(argv), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def engine_decisions_per_second(seconds: float = 1.0) -> float:
    """Actions the pure engine decides per second of CPU while a simulated run fails over three
    providers (each a server error after 0.1 s) to a fourth that answers. CPU time, not wall
    time: the engine is pure computation in one thread, so the two agree on an idle machine, and
    CPU time stays right when other processes share the cores."""
    from rmcore.errors import ErrorKind
    from rmcore.plan import RunPlan, TargetPlan
    from rmcore.providers import ProviderKind, ProviderSpec
    from rmcore.requests import ChatRequest
    from rmcore.simulate import SimProvider, SimReply, simulate

    def spec(name: str) -> ProviderSpec:
        return ProviderSpec(name=name, kind=ProviderKind.OPENAI, url="http://127.0.0.1:1/", model="m")

    plan = RunPlan(targets=tuple(TargetPlan(provider=spec(n)) for n in "abcd"))
    sims = {n: SimProvider(replies=(SimReply(latency_s=0.1, kind=ErrorKind.SERVER_ERROR),)) for n in "abc"}
    request = ChatRequest.ask("Should we migrate to Kubernetes?")
    steps = 0
    started = time.process_time()
    while time.process_time() - started < seconds:
        steps += sum(1 for s in simulate(plan, request, sims).steps if s.action is not None)
    return steps / (time.process_time() - started)


def _ms(times: list[float]) -> list[float]:
    return [t * 1000 for t in times]


def bench(runs: int, litellm_runs: int) -> list[Row]:
    """Start-up of ``rmgr`` against ``python -c pass`` and importing LiteLLM."""
    policies = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "policies").glob("*.toml"))
    commands = {
        "rmgr --help": [*rmgr_argv(), "--help"],
        "rmgr policy validate policies/*.toml": [*rmgr_argv(), "policy", "validate", *policies],
    }
    cache_bytecode(commands.values())
    bare = _ms(wall([sys.executable, "-c", "pass"], runs))
    missing = litellm_missing()
    litellm = (
        None if missing else _ms(wall([sys.executable, "-c", "import litellm"], litellm_runs, LITELLM_ENV))
    )
    rows = [Row(name="python -c pass", unit="ms", samples=bare)]
    if litellm is not None:
        rows.append(Row(name='python -c "import litellm"', unit="ms", samples=litellm, decimals=0))
    for name, argv in commands.items():
        times = _ms(wall(argv, runs))
        rows.append(
            Row(
                name=name,
                unit="ms",
                samples=times,
                baseline_name="python -c pass",
                baseline=bare,
                ratio=median(times) / median(bare),
                ratio_label="of python -c pass",
                target=f"< {HELP_TARGET_S * 1000:.0f} ms",
                check=lambda r: (r.value or 0.0) < HELP_TARGET_S * 1000,
            )
        )
        if litellm is None:
            rows.append(
                skipped_row(f"{name} vs importing LiteLLM", missing or "", f"≥ {LITELLM_FACTOR:.0f}× faster")
            )
        else:
            rows.append(
                Row(
                    name=f"{name} vs importing LiteLLM",
                    unit="ms",
                    samples=times,
                    baseline_name='python -c "import litellm"',
                    baseline=litellm,
                    ratio=median(litellm) / median(times),
                    ratio_label="faster",
                    target=f"≥ {LITELLM_FACTOR:.0f}× faster",
                    check=lambda r: (r.ratio or 0.0) >= LITELLM_FACTOR,
                )
            )
    return rows


def engine_bench(runs: int, seconds: float) -> list[Row]:
    """The pure engine's decisions per second, ``runs`` times."""
    rates = [engine_decisions_per_second(seconds) for _ in range(runs)]
    return [
        Row(
            name="pure engine, decisions per CPU second (simulated fail-over)",
            unit="/s",
            samples=rates,
            target="> 50,000",
            check=lambda r: (r.value or 0.0) > 50_000,
            decimals=0,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(table(bench(args.runs, min(args.runs, 5)) + engine_bench(3, 1.0)))


if __name__ == "__main__":
    main()
