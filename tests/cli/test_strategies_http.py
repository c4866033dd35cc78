"""Every route strategy over real loopback HTTP against the sandbox, and the policies shipped for them.

The runner drives the engine against the sandbox's providers in this process (each test states
the conduct it checks, with wall-clock bounds); the shipped policy files are then validated,
explained, simulated and run with ``rmgr`` as a user would.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import httpx
import msgspec
import pytest

from rmcli.runner import Routing, route
from rmcli.sandbox import Sandbox
from rmcore.errors import ErrorKind
from rmcore.events import RunOutcome
from rmcore.plan import RetryRules, RoutePlan, RunLimits, RunPlan, TargetPlan
from rmcore.policy.schema import Strategy
from rmcore.pricing import worst_case_usd
from rmcore.providers import ProviderSpec, builtin_providers
from rmcore.requests import ChatRequest
from tests.cli.helpers import REPO, Cli, SandboxProcess

REQUEST = ChatRequest.ask("Should we migrate to Kubernetes?", max_tokens=200)
POLICIES = REPO / "policies"
SHIPPED = sorted(POLICIES.glob("*.toml"))
NEW_POLICIES = ("balanced", "compare", "cost-first", "fastest", "hedged", "race-then-fallback")


@pytest.fixture
async def box() -> AsyncIterator[Sandbox]:
    """The four sandbox providers, every one ``ok``, streaming without pauses between events."""
    async with Sandbox(stream_delay_s=0.0) as sandbox:
        yield sandbox


def spec(box: Sandbox, name: str) -> ProviderSpec:
    return builtin_providers(box.env())[name]


def target(box: Sandbox, name: str, **limits: float | int) -> TargetPlan:
    return TargetPlan(provider=spec(box, name), **limits)  # type: ignore[arg-type]


def plan(
    strategy: Strategy,
    *targets: TargetPlan | RoutePlan,
    hedge_after_s: float = 2.0,
    max_usd: float = 1.0,
) -> RunPlan:
    return RunPlan(
        targets=targets,
        strategy=strategy,
        hedge_after_s=hedge_after_s,
        limits=RunLimits(deadline_s=20.0, max_usd=max_usd),
        retry=RetryRules(backoff_initial_s=0.05, backoff_max_s=0.1),
    )


async def run(
    box: Sandbox,
    run_plan: RunPlan,
    *,
    seed: int = 7,
    request: ChatRequest = REQUEST,
    client: httpx.AsyncClient | None = None,
) -> RunOutcome:
    """Route ``request`` by ``run_plan`` with the sandbox's keys (on ``client``, or a client of its own)."""
    keys = {var: value for var, value in box.env().items() if var.endswith("_KEY")}
    if client is None:
        async with httpx.AsyncClient(timeout=None) as own:
            return await run(box, run_plan, seed=seed, request=request, client=own)
    routing = Routing(client, lambda s: keys.get(s.key_env or ""))
    return await route(run_plan, request, routing, seed=seed)


def outcomes(outcome: RunOutcome) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome) for a in outcome.attempts]


def started_ms(outcome: RunOutcome, provider: str) -> int:
    return next(a.started_at_ms for a in outcome.attempts if a.provider == provider)


@dataclass
class Relay:
    """A TCP relay in front of one sandbox provider, so a test can see when the client hangs up
    (the sandbox itself only notices when it next writes)."""

    provider: ProviderSpec
    upstream_port: int
    port: int = 0
    connections: int = 0
    client_left: anyio.Event = field(default_factory=anyio.Event)
    left_at: float | None = None

    @property
    def spec(self) -> ProviderSpec:
        """The provider, reached through the relay."""
        url = self.provider.url.replace(f":{self.upstream_port}/", f":{self.port}/", 1)
        return msgspec.structs.replace(self.provider, url=url)

    async def serve(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
        async with client, upstream, anyio.create_task_group() as pipes:
            pipes.start_soon(self._pipe, upstream, client)
            await self._pipe(client, upstream)
            self.left_at = time.monotonic()
            self.client_left.set()
            pipes.cancel_scope.cancel()

    @staticmethod
    async def _pipe(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream) -> None:
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            async for data in source:
                await sink.send(data)


@asynccontextmanager
async def relay(box: Sandbox, name: str) -> AsyncIterator[Relay]:
    """A ``Relay`` in front of sandbox provider ``name`` for the duration of the block."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    tap = Relay(provider=spec(box, name), upstream_port=box.port(name))
    tap.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, tap.serve)
        yield tap
        tg.cancel_scope.cancel()


# --- fastest ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fastest_takes_the_quick_answer_and_hangs_up_on_the_slow_provider(box: Sandbox) -> None:
    """One racer takes 5 s, the other answers at once: the run returns well within a second, the
    slow attempt is recorded ``cancelled``, and its connection is closed then, not after 5 s."""
    box.set_mode("anthropic-direct", "slow:5")
    async with relay(box, "anthropic-direct") as tap:
        started = time.monotonic()
        outcome = await run(
            box, plan(Strategy.FASTEST, TargetPlan(provider=tap.spec), target(box, "glm-direct"))
        )
        elapsed = time.monotonic() - started
        with anyio.fail_after(1.0):
            await tap.client_left.wait()
    assert elapsed < 1.0
    assert outcome.provider == "glm-direct" and outcome.completion is not None
    assert sorted(outcomes(outcome)) == [("anthropic-direct", "cancelled"), ("glm-direct", "ok")]
    assert tap.connections == 1
    assert tap.left_at is not None and tap.left_at - started < 1.0
    cancelled = next(a for a in outcome.attempts if a.outcome == "cancelled")
    assert cancelled.latency_ms < 1000 and cancelled.message == "lost the race"


@pytest.mark.anyio
async def test_fastest_survives_a_racer_that_fails(box: Sandbox) -> None:
    """A racer that fails drops out; the race is won by the one that answers."""
    box.set_mode("glm-direct", "status:401")
    outcome = await run(box, plan(Strategy.FASTEST, target(box, "glm-direct"), target(box, "openai-direct")))
    assert outcome.provider == "openai-direct"
    assert sorted(outcomes(outcome)) == [("glm-direct", "auth"), ("openai-direct", "ok")]


# --- hedged -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hedged_asks_the_second_target_once_the_first_is_late(box: Sandbox) -> None:
    """Primary slow (5 s), hedge_after_s 0.3: the second target starts at 0.3 s and its answer
    wins shortly after; the primary is cancelled."""
    box.set_mode("anthropic-direct", "slow:5")
    started = time.monotonic()
    outcome = await run(
        box,
        plan(Strategy.HEDGED, target(box, "anthropic-direct"), target(box, "glm-direct"), hedge_after_s=0.3),
    )
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.0
    assert outcome.provider == "glm-direct" and outcome.fallback_used
    assert sorted(outcomes(outcome)) == [("anthropic-direct", "cancelled"), ("glm-direct", "ok")]
    assert started_ms(outcome, "glm-direct") - started_ms(outcome, "anthropic-direct") >= 299
    assert len(box.requests("glm-direct")) == 1


@pytest.mark.anyio
async def test_hedged_never_asks_the_second_target_when_the_first_is_quick(box: Sandbox) -> None:
    """Primary answers at 0.1 s, before the 0.3 s hedge: the second target is never contacted."""
    box.set_mode("anthropic-direct", "slow:0.1")
    outcome = await run(
        box,
        plan(Strategy.HEDGED, target(box, "anthropic-direct"), target(box, "glm-direct"), hedge_after_s=0.3),
    )
    assert outcome.provider == "anthropic-direct" and not outcome.fallback_used
    assert outcomes(outcome) == [("anthropic-direct", "ok")]
    await anyio.sleep(0.3)  # past the moment the hedge would have fired
    assert box.requests("glm-direct") == []
    assert box.connections("glm-direct") == 0


@pytest.mark.anyio
async def test_hedged_moves_on_at_once_when_the_first_fails(box: Sandbox) -> None:
    """A failure does not wait for the hedge timer: the next target starts straight away."""
    box.set_mode("anthropic-direct", "status:503")
    started = time.monotonic()
    outcome = await run(
        box,
        plan(Strategy.HEDGED, target(box, "anthropic-direct"), target(box, "glm-direct"), hedge_after_s=5.0),
    )
    assert time.monotonic() - started < 1.0
    assert outcomes(outcome) == [("anthropic-direct", "overloaded"), ("glm-direct", "ok")]


# --- cheapest -----------------------------------------------------------------------------------


def dearest_first(box: Sandbox) -> tuple[TargetPlan, ...]:
    return tuple(target(box, n, max_attempts=1) for n in ("openai-direct", "anthropic-direct", "glm-direct"))


@pytest.mark.anyio
async def test_cheapest_tries_the_targets_in_order_of_worst_case_cost(box: Sandbox) -> None:
    """Written dearest first; tried glm-direct, then anthropic-direct, then openai-direct."""
    for name in ("glm-direct", "anthropic-direct"):
        box.set_mode(name, "status:500")
    outcome = await run(box, plan(Strategy.CHEAPEST, *dearest_first(box)))
    assert outcomes(outcome) == [
        ("glm-direct", "server_error"),
        ("anthropic-direct", "server_error"),
        ("openai-direct", "ok"),
    ]


@pytest.mark.anyio
async def test_cheapest_with_every_provider_up_only_asks_the_cheapest(box: Sandbox) -> None:
    """Every provider up: only the cheapest is asked; the dearer ones get no connection."""
    outcome = await run(box, plan(Strategy.CHEAPEST, *dearest_first(box)))
    assert outcomes(outcome) == [("glm-direct", "ok")]
    assert box.connections("anthropic-direct") == box.connections("openai-direct") == 0


@pytest.mark.anyio
async def test_cheapest_skips_a_target_whose_worst_case_exceeds_the_budget(box: Sandbox) -> None:
    """A budget between anthropic-direct's and openai-direct's worst case: when the cheaper two
    fail, openai-direct is skipped (budget) and never receives a request."""
    anthropic = worst_case_usd(REQUEST, spec(box, "anthropic-direct"))
    openai = worst_case_usd(REQUEST, spec(box, "openai-direct"))
    assert anthropic < openai
    for name in ("glm-direct", "anthropic-direct"):
        box.set_mode(name, "status:500")
    outcome = await run(box, plan(Strategy.CHEAPEST, *dearest_first(box), max_usd=(anthropic + openai) / 2))
    assert not outcome.ok
    assert outcomes(outcome) == [("glm-direct", "server_error"), ("anthropic-direct", "server_error")]
    assert [(s.provider, s.kind) for s in outcome.skipped] == [("openai-direct", ErrorKind.BUDGET)]
    assert box.requests("openai-direct") == [] and box.connections("openai-direct") == 0


# --- compare ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_compare_keeps_every_answer_and_records_the_provider_that_failed(box: Sandbox) -> None:
    """Compare asks every target: each answer is kept with its provider, and the provider that failed is
    recorded with its failure."""
    box.set_mode("openai-direct", "down")
    outcome = await run(
        box,
        plan(
            Strategy.COMPARE,
            target(box, "glm-direct"),
            target(box, "anthropic-direct"),
            target(box, "openai-direct", max_attempts=1),
        ),
    )
    assert outcome.ok
    answered = sorted(a.provider for a in outcome.answers)
    assert answered == ["anthropic-direct", "glm-direct"]
    for answer in outcome.answers:
        assert answer.completion.content.startswith(f"This is {answer.provider}")
    assert sorted(outcomes(outcome)) == [
        ("anthropic-direct", "ok"),
        ("glm-direct", "ok"),
        ("openai-direct", "connection"),
    ]


@pytest.mark.anyio
async def test_compare_waits_for_the_slow_provider_instead_of_cancelling_it(box: Sandbox) -> None:
    """Compare waits for a slow provider's answer rather than cancelling it once another has answered."""
    box.set_mode("anthropic-direct", "slow:0.4")
    started = time.monotonic()
    outcome = await run(
        box, plan(Strategy.COMPARE, target(box, "glm-direct"), target(box, "anthropic-direct"))
    )
    assert time.monotonic() - started >= 0.4
    assert sorted(a.provider for a in outcome.answers) == ["anthropic-direct", "glm-direct"]
    assert "cancelled" not in {o for _, o in outcomes(outcome)}


# --- weighted -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_weighted_spreads_first_choices_by_weight(box: Sandbox) -> None:
    """Weights 6/3/1 over 200 seeded runs: each provider is asked first about 60/30/10 % of the
    time (±8 points), and each run's answer comes from its first choice."""
    weights = {"glm-direct": 6.0, "anthropic-direct": 3.0, "openai-direct": 1.0}
    weighted = plan(Strategy.WEIGHTED, *(target(box, n, weight=w) for n, w in weights.items()))
    runs = 200
    request = msgspec.structs.replace(REQUEST, stream=False, max_tokens=20)
    async with httpx.AsyncClient(timeout=None) as client:
        results = [
            await run(box, weighted, seed=seed, request=request, client=client) for seed in range(runs)
        ]
    assert all(len(r.attempts) == 1 and r.provider == r.attempts[0].provider for r in results)
    firsts = Counter(r.attempts[0].provider for r in results)
    for name, weight in weights.items():
        assert abs(firsts[name] / runs - weight / 10.0) <= 0.08, firsts
    assert sum(len(box.requests(n)) for n in weights) == runs


@pytest.mark.anyio
async def test_weighted_falls_back_through_the_drawn_order(box: Sandbox) -> None:
    """The provider drawn first is down: the run goes on down the same drawn order."""
    box.set_mode("glm-direct", "down")
    targets = [
        target(box, n, weight=w, max_attempts=1) for n, w in (("glm-direct", 1000.0), ("openai-direct", 1.0))
    ]
    outcome = await run(box, plan(Strategy.WEIGHTED, *targets))
    assert outcomes(outcome) == [("glm-direct", "connection"), ("openai-direct", "ok")]


# --- nested -------------------------------------------------------------------------------------


def race_then_fallback(box: Sandbox) -> RunPlan:
    race = RoutePlan(
        strategy=Strategy.FASTEST,
        targets=(
            target(box, "anthropic-direct", max_attempts=1),
            target(box, "openai-direct", max_attempts=1),
        ),
    )
    return plan(Strategy.SEQUENTIAL, race, target(box, "glm-direct"))


@pytest.mark.anyio
async def test_nested_race_is_won_without_touching_the_fallback(box: Sandbox) -> None:
    """A nested race won by its quick racer: the slow one is cancelled and the fallback after the race is
    never contacted."""
    box.set_mode("anthropic-direct", "slow:5")
    started = time.monotonic()
    outcome = await run(box, race_then_fallback(box))
    assert time.monotonic() - started < 1.0
    assert outcome.provider == "openai-direct"
    assert sorted(outcomes(outcome)) == [("anthropic-direct", "cancelled"), ("openai-direct", "ok")]
    assert box.connections("glm-direct") == 0


@pytest.mark.anyio
async def test_nested_race_lost_by_both_falls_back_to_the_cheap_provider(box: Sandbox) -> None:
    """Both racers of a nested race fail: the run goes on to the fallback target after the race, which
    answers."""
    box.set_mode("anthropic-direct", "down")
    box.set_mode("openai-direct", "status:503")
    outcome = await run(box, race_then_fallback(box))
    assert outcome.provider == "glm-direct" and outcome.fallback_used
    assert sorted(outcomes(outcome)[:2]) == [
        ("anthropic-direct", "connection"),
        ("openai-direct", "overloaded"),
    ]
    assert outcomes(outcome)[2:] == [("glm-direct", "ok")]


# --- the shipped policies -----------------------------------------------------------------------


def test_the_new_policies_are_shipped_valid_and_commented(cli: Cli) -> None:
    """Each strategy has its policy file; every shipped file validates; each new one opens with a
    comment block that names it, explains it and shows how to try it."""
    names = {p.stem for p in SHIPPED}
    assert set(NEW_POLICIES) <= names
    done = cli.run("policy", "validate", *(str(p) for p in SHIPPED))
    assert done.returncode == 0, done.stderr
    strategies = set()
    for name in NEW_POLICIES:
        text = (POLICIES / f"{name}.toml").read_text(encoding="utf-8")
        header = text.split("\nversion = 1", 1)[0].splitlines()
        assert header[0].startswith(f"# {name}: "), name
        assert sum(line.startswith("# ") for line in header) >= 8, name
        assert f"rmgr policy simulate policies/{name}.toml" in text, name
        policy = tomllib.loads(text)
        assert policy["name"] == name and policy["description"]
        strategies.add(policy["route"]["strategy"])
    assert strategies == {"cheapest", "fastest", "hedged", "compare", "weighted", "sequential"}


def test_race_then_fallback_races_two_premium_providers_then_falls_back() -> None:
    """The shipped race-then-fallback policy races anthropic-direct and openai-direct, then falls back to
    glm-direct."""
    route_table = tomllib.loads((POLICIES / "race-then-fallback.toml").read_text(encoding="utf-8"))["route"]
    race, fallback = route_table["targets"]
    assert route_table["strategy"] == "sequential"
    assert race["strategy"] == "fastest" and race["targets"] == ["anthropic-direct", "openai-direct"]
    assert fallback == "glm-direct"


@pytest.mark.parametrize(
    ("name", "route_line"),
    [
        ("cost-first", "Route (cheapest):"),
        ("fastest", "Route (fastest):"),
        ("hedged", "Route (hedged):"),
        ("compare", "Route (compare):"),
        ("balanced", "Route (weighted):"),
        ("race-then-fallback", "1. a nested route (fastest)"),
    ],
)
def test_explain_reads_each_new_policy(cli: Cli, sandbox: SandboxProcess, name: str, route_line: str) -> None:
    """``rmgr policy explain`` describes each new policy: its name, its route, a usable plan, its budget
    and deadline."""
    done = cli.with_env(sandbox.env).run("policy", "explain", str(POLICIES / f"{name}.toml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f'Policy "{name}": ')
    assert route_line in done.stdout
    assert "not usable" not in done.stdout
    assert "Budget: $" in done.stdout and "Deadline:" in done.stdout


def test_cost_first_is_the_cheapest_within_ten_cents(cli: Cli) -> None:
    """The shipped cost-first policy routes cheapest first within a $0.10 budget, as ``explain`` says."""
    policy = tomllib.loads((POLICIES / "cost-first.toml").read_text(encoding="utf-8"))
    assert policy["route"]["strategy"] == "cheapest"
    assert policy["limits"]["max_usd"] == 0.10
    done = cli.run("policy", "explain", str(POLICIES / "cost-first.toml"))
    assert "Budget: $0.10 for the whole run." in done.stdout


def test_simulate_cost_first_with_glm_down_reads_as_a_story(cli: Cli) -> None:
    """GLM (the cheapest) refuses connections: it is tried twice, then left for Anthropic (the next
    cheapest), which answers; OpenAI (the dearest) is never called."""
    done = cli.run("policy", "simulate", str(POLICIES / "cost-first.toml"), "--down", "glm-direct")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Simulating cost-first (cheapest); every time is virtual."
    expected = [
        "call glm-direct (attempt 1)",
        "attempt 1: failed: connection",
        "call glm-direct (attempt 2)",
        "leave glm-direct (connection) for anthropic-direct",
        "call anthropic-direct (attempt 1)",
        "answered by anthropic-direct",
    ]
    found = [next(i for i, line in enumerate(lines) if fragment in line) for fragment in expected]
    assert found == sorted(found), done.stdout
    assert "openai-direct" not in done.stdout
    assert lines[-1].startswith("Total: ") and "of the $0.1 budget; answered by anthropic-direct" in lines[-1]


def test_simulate_cost_first_skips_what_the_budget_cannot_cover(cli: Cli) -> None:
    """With max_tokens 4096 OpenAI's worst case (~$0.12) exceeds the $0.10: once the cheaper two
    fail it is skipped, not called."""
    done = cli.run(
        "policy",
        "simulate",
        str(POLICIES / "cost-first.toml"),
        "--max-tokens",
        "4096",
        "--status",
        "glm-direct=500",
        "--status",
        "anthropic-direct=503",
    )
    assert done.returncode == 1
    assert "skip openai-direct (budget)" in done.stdout
    assert "call openai-direct" not in done.stdout


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_policy_answers_against_the_sandbox(
    cli: Cli, sandbox: SandboxProcess, path: Path
) -> None:
    """``rmgr ask --policy FILE "hello" --json`` with the sandbox's environment: exit 0, answered
    by one of the policy's providers; a compare policy returns every provider's answer."""
    done = cli.with_env(sandbox.env).run("ask", "--policy", str(path), "hello", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    text = path.read_text(encoding="utf-8")
    assert f'"{result["provider"]}"' in text
    assert result["content"].startswith(f"This is {result['provider']}")
    route_table = tomllib.loads(text)["route"]
    if route_table["strategy"] == "compare":
        assert sorted(a["provider"] for a in result["answers"]) == sorted(route_table["targets"])
