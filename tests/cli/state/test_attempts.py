"""Attempts on every backend: recorded when sent, settled when they end, read back in order, and
written by processes at once without loss."""

from __future__ import annotations

import pytest

from rmcli.state import Origin, State
from rmcore.attempts import AttemptRecord
from rmcore.completion import Usage
from rmcore.usage import AttemptRow
from tests.cli.state.backends import WAIT_FOR_GO, Backend, run_workers

pytestmark = pytest.mark.anyio

RUN = Origin("run", "ask")


def record(
    provider: str = "glm-direct", *, outcome: str = "ok", started_at_ms: int = 1_000, cost_usd: float = 0.0025
) -> AttemptRecord:
    return AttemptRecord(
        provider=provider,
        model="glm-4.7",
        outcome=outcome,
        status=200 if outcome == "ok" else 503,
        latency_ms=120.5,
        started_at_ms=started_at_ms,
        usage=Usage(input_tokens=11, output_tokens=22, estimated=True),
        cost_usd=cost_usd,
    )


async def settled(state: State, *records: AttemptRecord, run_id: str = "run-1") -> None:
    for n, one in enumerate(records):
        await state.attempts.settle(f"{run_id}-{n}", Origin(run_id, "ask"), one)


async def test_an_attempt_reads_back_field_for_field(state: State) -> None:
    """Every field the usage statistics need survives the trip through the state."""
    await settled(
        state, record(started_at_ms=5_000), record("openai-direct", outcome="overloaded", started_at_ms=6_000)
    )
    common = dict(
        model="glm-4.7", latency_ms=120.5, input_tokens=11, output_tokens=22, cost_usd=0.0025, run_id="run-1"
    )
    assert await state.attempts.since(0) == [
        AttemptRow(provider="glm-direct", outcome="ok", status=200, started_at_ms=5_000, **common),  # type: ignore[arg-type]
        AttemptRow(provider="openai-direct", outcome="overloaded", status=503, started_at_ms=6_000, **common),  # type: ignore[arg-type]
    ]


async def test_a_sent_attempt_counts_as_cancelled_until_it_is_settled(state: State) -> None:
    """``sent`` leaves one row as the attempt stands if nothing more is heard of it; ``settle``
    replaces that row (keeping its place), and a second ``sent`` of the same key changes nothing."""
    await state.attempts.sent("k1", RUN, record(outcome="cancelled", started_at_ms=10, cost_usd=0.5))
    await state.attempts.sent("k2", RUN, record("other", outcome="cancelled", started_at_ms=10))
    await state.attempts.sent("k1", RUN, record(outcome="timeout", started_at_ms=10))
    assert [(r.provider, r.outcome, r.cost_usd) for r in await state.attempts.since(0)] == [
        ("glm-direct", "cancelled", 0.5),
        ("other", "cancelled", 0.0025),
    ]
    await state.attempts.settle("k1", RUN, record(outcome="ok", started_at_ms=10, cost_usd=0.25))
    assert [(r.provider, r.outcome, r.cost_usd) for r in await state.attempts.since(0)] == [
        ("glm-direct", "ok", 0.25),
        ("other", "cancelled", 0.0025),
    ]


async def test_a_withdrawn_attempt_is_gone_and_the_others_stay(state: State) -> None:
    """``withdraw`` removes what ``sent`` recorded (the request never left after all); a key never
    sent, or withdrawn already, changes nothing."""
    await state.attempts.sent("k1", RUN, record(outcome="cancelled", started_at_ms=10))
    await state.attempts.sent("k2", RUN, record("other", outcome="cancelled", started_at_ms=11))
    await state.attempts.withdraw("k1")
    await state.attempts.withdraw("k1")
    await state.attempts.withdraw("never")
    assert [r.provider for r in await state.attempts.since(0)] == ["other"]
    await state.attempts.settle("k2", RUN, record("other", outcome="ok", started_at_ms=11))
    assert [(r.provider, r.outcome) for r in await state.attempts.since(0)] == [("other", "ok")]


async def test_settling_an_attempt_never_sent_here_records_it(state: State) -> None:
    """A settle whose ``sent`` reached another store (or none) records the attempt afresh, once."""
    await state.attempts.settle("k", RUN, record(outcome="timeout"))
    await state.attempts.settle("k", RUN, record(outcome="server_error"))
    assert [row.outcome for row in await state.attempts.since(0)] == ["server_error"]


async def test_since_is_inclusive_and_ordered_oldest_first(state: State) -> None:
    """Attempts started at or after the moment come back, oldest first."""
    await settled(state, *(record(started_at_ms=t) for t in (300, 100, 200, 400)))
    assert [row.started_at_ms for row in await state.attempts.since(200)] == [200, 300, 400]
    assert await state.attempts.since(401) == []


async def test_attempts_of_the_same_millisecond_keep_their_order(state: State) -> None:
    """Attempts started in the same millisecond come back in the order they were sent."""
    await settled(state, record("b", started_at_ms=5), record("a", started_at_ms=5), run_id="r1")
    await settled(state, record("c", started_at_ms=5), record("d", started_at_ms=4), run_id="r2")
    assert [row.provider for row in await state.attempts.since(0)] == ["d", "b", "a", "c"]


async def test_provider_filter(state: State) -> None:
    """Only the providers asked for; an empty collection selects nothing."""
    await settled(state, record("a"), record("b"), record("c"), record("a"))
    assert [row.provider for row in await state.attempts.since(0, ["a", "c"])] == ["a", "c", "a"]
    assert [row.provider for row in await state.attempts.since(0, {"b"})] == ["b"]
    assert await state.attempts.since(0, []) == []
    assert len(await state.attempts.since(0, None)) == 4


async def test_attempts_survive_closing_and_reopening(backend: Backend) -> None:
    """What one state recorded, another opened later reads."""
    async with backend.open() as first:
        await first.attempts.settle("a", Origin("r1", "ask"), record(started_at_ms=1))
    async with backend.open() as second:
        await second.attempts.sent("b", Origin("r2", "ask"), record(started_at_ms=2))
        assert [row.run_id for row in await second.attempts.since(0)] == ["r1", "r2"]


WRITER = (
    WAIT_FOR_GO
    + """
from rmcore.attempts import AttemptRecord, Origin

async def main(worker: int) -> None:
    async with await open_it() as state:
        wait_for_go()
        for i in range(25):
            at = worker * 1000 + i
            one = AttemptRecord(provider=f"p{worker}", model="m", outcome="cancelled", started_at_ms=at)
            await state.attempts.sent(f"{worker}-{i}", Origin(f"run-{worker}", "ask"), one)
            await state.attempts.settle(f"{worker}-{i}", Origin(f"run-{worker}", "ask"), AttemptRecord(
                provider=f"p{worker}", model="m", outcome="ok", started_at_ms=worker * 1000 + i))

anyio.run(main, int(sys.argv[4]))
"""
)


async def test_eight_processes_writing_at_once_lose_nothing(backend: Backend, tmp_path: object) -> None:
    """Eight OS processes open the same new state at the same moment and each send and settle 25
    attempts: exactly 200 rows, all settled, in order, and no process fails."""
    go = backend.home.parent / "go"
    run_workers(WRITER, [[backend.spec, str(backend.home), str(n)] for n in range(8)], go)
    async with backend.open() as state:
        rows = await state.attempts.since(0)
    assert len(rows) == 200
    assert {row.outcome for row in rows} == {"ok"}
    for n in range(8):
        assert [row.started_at_ms for row in rows if row.provider == f"p{n}"] == [
            n * 1000 + i for i in range(25)
        ]
