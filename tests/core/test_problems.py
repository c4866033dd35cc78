"""Failures of the core's steps as values (``rmcore.problems``): a kind and a message, printed as
the message alone, and ``collect``, which joins a sequence of results."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from rmcore.problems import PolicyIssue, Problem, ProblemKind, collect

RESULTS = st.lists(
    st.one_of(st.integers().map(Success), st.text(max_size=5).map(Failure)),
    max_size=8,
)


def test_a_problem_prints_as_its_message_alone() -> None:
    """``str(problem)`` is the words a shell always showed, without kind or subject."""
    problem = Problem(kind=ProblemKind.UNKNOWN_PROVIDER, message="unknown provider 'x'", subject="x")
    assert str(problem) == "unknown provider 'x'"
    assert f"{problem}" == "unknown provider 'x'"


def test_an_invalid_policy_carries_every_issue() -> None:
    """An ``invalid_policy`` problem keeps its issues, in order; other problems have none."""
    issues = (
        PolicyIssue(file="p.toml", line=2, path="$.a", message="m"),
        PolicyIssue(file="p.toml", line=None, path="$", message="n"),
    )
    problem = Problem(kind=ProblemKind.INVALID_POLICY, message="p.toml is not valid", issues=issues)
    assert problem.issues == issues
    assert Problem(kind=ProblemKind.NO_PERSPECTIVE, message="none").issues == ()
    assert [str(i) for i in issues] == ["p.toml:2: $.a: m", "p.toml: n"]


def test_kinds_are_their_snake_case_names() -> None:
    """Each problem kind's value is its lower-case name, as it appears in JSON."""
    assert all(kind.value == kind.name.lower() for kind in ProblemKind)


def test_collecting_nothing_is_an_empty_success() -> None:
    """No results collect to ``Success(())``."""
    assert collect([]) == Success(())


@given(st.lists(st.integers(), max_size=10))
def test_collecting_successes_keeps_every_value_in_order(values: list[int]) -> None:
    """When every result succeeds, the values come out in order, as a tuple."""
    assert collect(Success(v) for v in values) == Success(tuple(values))


@given(RESULTS)
def test_the_first_failure_is_the_outcome(results: list[Result[int, str]]) -> None:
    """With any failure among the results, the outcome is the first one."""
    failures = [r for r in results if isinstance(r, Failure)]
    expected = failures[0] if failures else Success(tuple(r.unwrap() for r in results))
    assert collect(results) == expected


def test_results_after_the_first_failure_are_not_looked_at() -> None:
    """``collect`` stops at the first failure: the rest of a generator is never produced."""
    produced: list[int] = []

    def results() -> Iterator[Result[int, str]]:
        for n in range(5):
            produced.append(n)
            yield Failure("stop") if n == 1 else Success(n)

    assert collect(results()) == Failure("stop")
    assert produced == [0, 1]
