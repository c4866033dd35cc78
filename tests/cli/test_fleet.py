"""A fleet of ``rmgr`` processes sharing one state: budgets, quotas and circuit breakers hold
across all of them, and an outage of the state itself is met with the documented conduct.

Each process is a real ``python -m rmcli`` talking loopback HTTP to a sandbox in another process
(whose request log is the witness of what reached a provider). On Redis every process stands
for a host: its own state folder, only ``RECURSIVEMANAGER_STATE`` in common. On SQLite they are
processes of one machine sharing its state folder.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from rmcli.state import STATE_VARIABLE, AttemptClaim, State
from rmcore.quota import CapUsage, Charge, Period, Resource, window_of
from tests.cli.helpers import SandboxProcess, run_rmgr, sandbox_process, write_policy
from tests.cli.state_backends import Backend, RedisServer

PROCESSES = 8
RESETS_AT = re.compile(r"it resets at \d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? UTC")


@pytest.fixture(scope="module")
def box() -> Iterator[SandboxProcess]:
    """One sandbox for this module's tests; each sets the modes it needs and clears the logs."""
    with sandbox_process() as running:
        yield running


@pytest.fixture
def sandbox(box: SandboxProcess) -> SandboxProcess:
    """The module's sandbox with glm-direct and anthropic-direct up and the logs cleared."""
    for name in ("glm-direct", "anthropic-direct"):
        box.set_mode(name, "ok")
    box.clear_logs()
    return box


@dataclass(frozen=True)
class Done:
    """How one process ended, and how long it took."""

    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def result(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.stdout)
        return document


@dataclass(frozen=True)
class Fleet:
    """Processes sharing one state: on Redis each in a state folder of its own (a host), on
    SQLite all in one (a machine)."""

    backend: Backend
    root: Path

    def home(self, host: int) -> Path:
        """The state folder of ``host`` (made when missing)."""
        home = self.backend.home if self.backend.name == "sqlite" else self.root / f"host-{host}"
        home.mkdir(parents=True, exist_ok=True)
        return home

    def state(self) -> AbstractAsyncContextManager[State]:
        """A connection of the test's own to the shared state (closed after)."""
        return self.backend.open()

    def cap_window(self, key: str) -> CapUsage:
        """The cap window ``key`` as the shared state holds it now."""

        async def read() -> CapUsage:
            async with self.state() as state:
                return await cap_window(state, key)

        return anyio.run(read)

    def run(self, host: int, args: Sequence[str], env: Mapping[str, str]) -> Done:
        """``rmgr ARGS`` on ``host``, sharing the fleet's state."""
        started = time.monotonic()
        done = run_rmgr(args, {**env, **self.backend.env}, home=self.home(host), timeout=60)
        return Done(done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    def run_all(self, args: Sequence[str], env: Mapping[str, str], hosts: Sequence[int]) -> list[Done]:
        """``rmgr ARGS`` on every host of ``hosts`` at once."""
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            return list(pool.map(lambda host: self.run(host, args, env), hosts))


@pytest.fixture
def fleet(store_backend: Backend, tmp_path: Path) -> Fleet:
    """Processes sharing each state store in turn: SQLite (one machine), Redis (hosts)."""
    return Fleet(store_backend, tmp_path)


@pytest.fixture
def hosts(redis_server: RedisServer, tmp_path: Path) -> Fleet:
    """Hosts sharing a Redis database (the session's server, flushed for this test)."""
    redis_server.flush()
    return Fleet(Backend("redis", redis_server.url(), tmp_path / "unused"), tmp_path)


async def cap_window(state: State, key: str) -> CapUsage:
    """The one current window of the cap ``key``."""
    [found] = [w for w in await state.caps.usage(time.time()) if w.cap_key == key]
    return found


class Sampler:
    """Reads a cap's window every few milliseconds while processes run, from a connection of its
    own: the most it ever held (settled plus reserved)."""

    def __init__(self, fleet: Fleet, key: str) -> None:
        self.fleet, self.key = fleet, key
        self.peak = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        anyio.run(self._sample)

    async def _sample(self) -> None:
        async with self.fleet.state() as state:
            while not self._stop.is_set():
                for window in await state.caps.usage(time.time()):
                    if window.cap_key == self.key:
                        self.peak = max(self.peak, window.used + window.reserved)
                self.samples += 1
                await anyio.sleep(0.005)


def ask(policy: Path, prompt: str, *extra: str) -> list[str]:
    """The arguments of ``rmgr ask --json`` under ``policy`` with at most 100 answer tokens."""
    return ["ask", "--policy", str(policy), "--max-tokens", "100", "--json", *extra, prompt]


# --- one daily budget -----------------------------------------------------------------------------

BUDGET_POLICY = """\
version = 1
name = "fleet-budget"

[route]
targets = ["glm-direct"]

[limits]
max_usd = 10

[retry]
max_attempts = 1

[providers.glm-direct]
input_usd_per_mtok = 0.0
output_usd_per_mtok = 10000.0   # $0.01 an answer token: a 100-token answer's worst case is $1.00

[budget]
daily_usd = 3.5
"""
BUDGET_KEY = "policy:fleet-budget:usd:day"


def test_eight_processes_spend_up_to_one_daily_budget_and_never_past_it(
    fleet: Fleet, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    """Eight processes share a $3.50 daily budget; each request's worst case is $1.00 and the
    provider takes 3 s to answer, so at most three fit at once. What the cap holds (settled plus
    reserved) never passes $3.50 at any moment sampled; the settled spend is exactly what the
    answered processes paid, more than zero and at most the cap, with no reservation left; the
    refused processes exit 1 naming the cap and when it resets, and sent nothing."""
    sandbox.set_mode("glm-direct", "slow:3")
    policy = write_policy(tmp_path, "budget.toml", BUDGET_POLICY)
    with Sampler(fleet, BUDGET_KEY) as sampler:
        runs = fleet.run_all(ask(policy, "Which queue should we use?"), sandbox.env, range(PROCESSES))
    answered = [r for r in runs if r.code == 0]
    refused = [r for r in runs if r.code != 0]
    assert answered and refused, [r.stderr for r in runs]
    for run in refused:
        assert run.code == 1, run.stderr
        assert (
            f"error: budget: every target failed: glm-direct: budget (the daily budget {BUDGET_KEY}"
            in run.stderr
        )
        assert RESETS_AT.search(run.stderr), run.stderr
        assert run.result["attempts"] == []
    assert len(sandbox.log("glm-direct")) == len(answered)
    assert sampler.samples > 10 and sampler.peak <= 3.5 + 1e-9
    window = fleet.cap_window(BUDGET_KEY)
    paid = sum(r.result["costUsd"] for r in answered)
    assert 0 < window.used <= 3.5 and window.used == pytest.approx(paid)
    assert window.reserved == 0.0
    if fleet.backend.name == "redis":
        assert all(not (fleet.home(i) / "state.db").exists() for i in range(PROCESSES)), (
            "nothing on the hosts"
        )


# --- a request quota -------------------------------------------------------------------------------

QUOTA_POLICY = """\
version = 1
name = "fleet-quota"

[route]
targets = ["glm-direct"]

[retry]
max_attempts = 1

[providers.glm-direct]
requests_per_window = 3
quota_window_s = 3153600000   # a century: the test never straddles two windows
"""
QUOTA_KEY = "provider:glm-direct:requests:3153600000s"


def test_a_quota_of_three_requests_admits_exactly_three_across_processes(
    fleet: Fleet, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    """Eight processes at once against a quota of 3 requests per window: exactly three requests
    reach the provider and are answered; the other five exit 1 with ``quota``, saying which
    quota is used up and when its window resets."""
    policy = write_policy(tmp_path, "quota.toml", QUOTA_POLICY)
    runs = fleet.run_all(ask(policy, "Monolith or services?"), sandbox.env, range(PROCESSES))
    assert sorted(r.code for r in runs) == [0] * 3 + [1] * 5, [(r.code, r.stderr) for r in runs]
    assert len(sandbox.log("glm-direct")) == 3
    for run in runs:
        if run.code == 1:
            assert f"request quota {QUOTA_KEY} (3 of 3 requests used)" in run.stderr
            assert "error: quota:" in run.stderr and RESETS_AT.search(run.stderr)
            assert [s["reason"] for s in run.result["skipped"]] == ["quota"]
    window = fleet.cap_window(QUOTA_KEY)
    assert (window.used, window.reserved, window.limit) == (3.0, 0.0, 3.0)


# --- circuit breakers -------------------------------------------------------------------------------

COOLDOWN_S = 8.0
"""Long enough that seven processes started at once on a loaded 2-core CI machine end before it."""
BREAKER_POLICY = f"""\
version = 1
name = "fleet-breaker"

[route]
targets = ["glm-direct", "anthropic-direct"]

[retry]
max_attempts = 1

[breaker]
failure_threshold = 1
cooldown_s = {COOLDOWN_S}
"""


def test_a_circuit_opened_by_one_host_is_skipped_by_the_others_and_probed_once(
    hosts: Fleet, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    """One host meets glm-direct's 500 and opens its circuit; seven other hosts started at once
    answer from the fallback without a request to glm-direct; after the cooldown, of eight
    hosts started at once exactly one sends glm-direct a request (the one half-open probe
    across the fleet, not one per host). (Processes of one machine on SQLite:
    ``test_breaker_cli``.)"""
    fleet = hosts
    sandbox.set_mode("glm-direct", "status:500")
    policy = write_policy(tmp_path, "breaker.toml", BREAKER_POLICY)
    args = ask(policy, "Rewrite it in Rust?")
    first = fleet.run(0, args, sandbox.env)
    opened = time.monotonic()
    assert first.code == 0 and first.result["provider"] == "anthropic-direct", first.stderr
    assert len(sandbox.log("glm-direct")) == 1

    others = fleet.run_all(args, sandbox.env, range(1, PROCESSES))
    assert time.monotonic() - opened < COOLDOWN_S - 0.5, "the burst must end before the cooldown"
    for run in others:
        assert run.code == 0 and run.result["provider"] == "anthropic-direct", run.stderr
        assert [(s["provider"], s["reason"]) for s in run.result["skipped"]] == [
            ("glm-direct", "circuit_open")
        ]
    assert len(sandbox.log("glm-direct")) == 1, "an open circuit sends nothing, on any host"

    time.sleep(max(opened + COOLDOWN_S + 0.2 - time.monotonic(), 0.0))
    burst = fleet.run_all(args, sandbox.env, range(PROCESSES))
    assert all(r.code == 0 for r in burst), [r.stderr for r in burst]
    assert len(sandbox.log("glm-direct")) == 2, "exactly one probe across every process"
    probes = [r for r in burst if r.result["attempts"][0]["provider"] == "glm-direct"]
    assert len(probes) == 1


# --- the shared state goes away ------------------------------------------------------------------

OUTAGE_POLICY = """\
version = 1
name = "fleet-outage"

[route]
targets = ["glm-direct"]

[limits]
deadline_s = 8
max_usd = 10

[retry]
max_attempts = 2
backoff_initial_s = 0.1
backoff_max_s = 0.2

[breaker]
failure_threshold = 100

[providers.glm-direct]
input_usd_per_mtok = 0.0
output_usd_per_mtok = 10000.0

[budget]
daily_usd = 8.5   # the eight first attempts' worst cases ($1.00 each) fit at once
on_state_unavailable = "{conduct}"
"""
OUTAGE_KEY = "policy:fleet-outage:usd:day"
DEADLINE_S = 8.0
RETRY_AFTER_S = 4.0
"""Longer than the eight processes take to start, so that every first request is answered
before Redis is killed and every retry comes after."""
START_SLACK_S = 3.0
"""A process's own start-up and shut-down, on top of its run's deadline."""


def wait_for_requests(box: SandboxProcess, name: str, count: int, within_s: float = 20.0) -> None:
    """Wait until ``name`` has logged ``count`` requests (failing after ``within_s``)."""
    give_up = time.monotonic() + within_s
    while len(box.log(name)) < count:
        assert time.monotonic() < give_up, f"only {len(box.log(name))} of {count} requests arrived"
        time.sleep(0.02)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which the test kills and restarts."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("conduct", ["fail_closed", "fail_open"])
def test_redis_killed_in_the_middle_of_a_run(
    own_redis: RedisServer, sandbox: SandboxProcess, tmp_path: Path, conduct: str
) -> None:
    """Eight processes each send a first request (answered 429, Retry-After 4 s); Redis is
    killed while they wait to retry. Every process ends within its deadline. Failing closed,
    none starts its retry: each exits 1 saying the shared state is unreachable and no paid
    request starts. Failing open (all on one host here, whose own state already counts $6.00
    of the $8.50 daily cap from an earlier outage), the retries are counted in that host's
    state, which holds them to the cap: it never settles past $8.50, the processes it refuses
    say so, the others answer with a warning. Once Redis is back on the same port, a run
    succeeds with no repair, its spend in Redis."""
    sandbox.set_mode("glm-direct", f"ratelimit:{RETRY_AFTER_S}")
    policy = write_policy(tmp_path, "outage.toml", OUTAGE_POLICY.format(conduct=conduct))
    url = own_redis.url()
    env = {**sandbox.env, STATE_VARIABLE: url}
    one_host = tmp_path / "host"
    homes = [one_host if conduct == "fail_open" else tmp_path / f"host-{i}" for i in range(PROCESSES)]
    for home in homes:
        home.mkdir(exist_ok=True)
    if conduct == "fail_open":
        day, resets_at = window_of(Period.DAY, None, time.time())
        spent = Charge(
            cap_key=OUTAGE_KEY, resource=Resource.USD, window=day, resets_at=resets_at, amount=6.0, limit=8.5
        )
        claim = AttemptClaim(holder="an earlier outage", lease_s=60.0, charges=(spent,))

        async def spend_earlier() -> None:
            async with Backend("sqlite", "sqlite", one_host).open() as local:
                assert await local.caps.begin(claim, time.time()) is None
                await local.caps.end(claim, [spent], time.time())

        anyio.run(spend_earlier)

    def run(home: Path) -> Done:
        started = time.monotonic()
        done = run_rmgr(ask(policy, "Cache or recompute?"), env, home=home, timeout=60)
        return Done(done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=PROCESSES) as pool:
        running = [pool.submit(run, home) for home in homes]
        wait_for_requests(sandbox, "glm-direct", PROCESSES)
        own_redis.stop()
        killed_at = time.time()
        if conduct == "fail_open":
            sandbox.set_mode("glm-direct", "ok")
        runs = [future.result() for future in running]

    assert all(r.seconds < DEADLINE_S + START_SLACK_S for r in runs), [r.seconds for r in runs]
    shown = url.removeprefix("redis://")
    if conduct == "fail_closed":
        assert [r for r in sandbox.log("glm-direct") if r["at"] >= killed_at] == [], "no retry was sent"
        assert len(sandbox.log("glm-direct")) == PROCESSES
        for r in runs:
            assert r.code == 1, r.stderr
            assert f"the shared state (redis://{shown}) is unreachable" in r.stderr
            assert "the policy fails closed, so no paid request starts" in r.stderr
            [skip] = r.result["skipped"]
            assert (skip["provider"], skip["reason"]) == ("glm-direct", "budget")
            assert "is unreachable" in skip["message"]
    else:
        answered = [r for r in runs if r.code == 0]
        refused = [r for r in runs if r.code != 0]
        assert answered and refused, [r.stderr for r in runs]
        for r in runs:
            assert "the policy fails open" in r.stderr, r.stderr
        for r in refused:
            assert r.code == 1 and f"daily budget {OUTAGE_KEY} ($" in r.stderr and "of $8.50 used" in r.stderr
        window = Fleet(Backend("sqlite", "sqlite", one_host), tmp_path).cap_window(OUTAGE_KEY)
        assert 6.0 < window.used <= 8.5 and window.reserved == 0.0
        assert window.used - 6.0 == pytest.approx(sum(r.result["costUsd"] for r in answered))
        assert len(sandbox.log("glm-direct")) == PROCESSES + len(answered)

    own_redis.start()
    sandbox.set_mode("glm-direct", "ok")
    (tmp_path / "host-after").mkdir()
    after = run(tmp_path / "host-after")
    assert after.code == 0, after.stderr
    assert "WARNING" not in after.stderr
    window = Fleet(Backend("redis", url, tmp_path), tmp_path).cap_window(OUTAGE_KEY)
    assert window.used == pytest.approx(after.result["costUsd"]) and window.reserved == 0.0


# --- any host sees the fleet's view -----------------------------------------------------------------

VIEW_POLICY = """\
version = 1
name = "fleet-view"

[route]
targets = ["glm-direct", "anthropic-direct"]

[retry]
max_attempts = 1

[breaker]
failure_threshold = 1
cooldown_s = 600

[budget]
daily_usd = 5.0
"""


def test_usage_and_health_on_another_host_show_what_the_first_recorded(
    redis_server: RedisServer, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    """Host A's run (glm-direct fails and opens its circuit, anthropic-direct answers) is what
    host B, with only ``RECURSIVEMANAGER_STATE`` in common, sees: ``rmgr usage`` counts both
    attempts and shows the daily budget's use, ``rmgr usage --caps --json`` lists it, and
    ``rmgr health`` shows glm-direct's circuit open. Host B writes nothing in its folder."""
    redis_server.flush()
    sandbox.set_mode("glm-direct", "status:500")
    policy = write_policy(tmp_path, "view.toml", VIEW_POLICY)
    env = {**sandbox.env, STATE_VARIABLE: redis_server.url()}
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    host_a.mkdir()
    host_b.mkdir()
    first = run_rmgr(ask(policy, "Build or buy?"), env, home=host_a)
    assert first.returncode == 0, first.stderr
    cost = json.loads(first.stdout)["costUsd"]

    usage = run_rmgr(["usage", "--json"], env, home=host_b)
    assert usage.returncode == 0, usage.stderr
    rows = {row["provider"]: row for row in json.loads(usage.stdout)}
    assert (rows["glm-direct"]["requests"], rows["glm-direct"]["failures"]) == (1, 1)
    assert rows["anthropic-direct"]["costUsd"] == pytest.approx(cost)

    caps = run_rmgr(["usage", "--caps", "--json"], env, home=host_b)
    [budget] = json.loads(caps.stdout)
    assert budget["cap"] == "policy:fleet-view:usd:day" and budget["resource"] == "usd"
    assert (budget["used"], budget["reserved"], budget["limit"]) == (pytest.approx(cost), 0.0, 5.0)
    assert budget["resetsAt"].endswith("T00:00:00Z")

    text = run_rmgr(["usage"], {**env, "COLUMNS": "250"}, home=host_b)
    assert "Budgets and quotas" in text.stdout and "policy:fleet-view:usd:day" in text.stdout

    health = run_rmgr(["health", "glm-direct", "anthropic-direct", "--json"], env, home=host_b)
    circuits = {e["provider"]: e["circuit"] for e in json.loads(health.stdout)}
    assert circuits == {"glm-direct": "open", "anthropic-direct": "closed"}
    wide = {**env, "COLUMNS": "250"}
    table = run_rmgr(["health", "glm-direct", "--policy", str(policy)], wide, home=host_b)
    assert re.search(r"circuit open until (\d\d:){2}\d\d \(in \d+ min; 1 failure in a row\)", table.stdout)
    assert list(host_b.iterdir()) == []


def test_the_policies_of_these_tests_are_valid(tmp_path: Path) -> None:
    """A typo in a policy here would silently test the defaults."""
    texts = {
        "budget": BUDGET_POLICY,
        "quota": QUOTA_POLICY,
        "breaker": BREAKER_POLICY,
        "closed": OUTAGE_POLICY.format(conduct="fail_closed"),
        "open": OUTAGE_POLICY.format(conduct="fail_open"),
        "view": VIEW_POLICY,
    }
    paths = [str(write_policy(tmp_path, f"{name}.toml", text)) for name, text in texts.items()]
    done = run_rmgr(["policy", "validate", *paths], home=tmp_path)
    assert done.returncode == 0, done.stderr


def test_usage_caps_on_a_state_with_no_caps_charged(tmp_path: Path) -> None:
    """``--caps`` alone: a sentence when no cap window is current; ``[]`` with --json; the
    providers' JSON keeps its contract shape (a list, here empty)."""
    text = run_rmgr(["usage", "--caps"], home=tmp_path)
    assert text.returncode == 0 and "No budget or quota has been charged" in text.stdout
    assert json.loads(run_rmgr(["usage", "--caps", "--json"], home=tmp_path).stdout) == []
    assert json.loads(run_rmgr(["usage", "--json"], home=tmp_path).stdout) == []
