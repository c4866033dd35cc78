"""A document against the schema's shape: every misfit at once, each with its full path."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import msgspec
from hypothesis import given, settings

from rmcore.policy import Policy
from rmcore.policy.shape import ShapeIssue, did_you_mean, shape_issues

Mistake = tuple[str, str, Any, tuple[str | int, ...]]
"""One independent mistake: (section, key, wrong value, the path reported)."""

MISTAKES: list[Mistake] = [
    ("limits", "deadlin_s", 30, ("limits", "deadlin_s")),
    ("limits", "deadline_s", -1, ("limits", "deadline_s")),
    ("retry", "max_attempts", "3", ("retry", "max_attempts")),
    ("retry", "on", ["connection", "nope"], ("retry", "on", 1)),
    ("route", "strategy", "fastes", ("route", "strategy")),
    ("breaker", "cooldown_s", "soon", ("breaker", "cooldown_s")),
    ("health", "check_before_use", "yes", ("health", "check_before_use")),
    ("analysis", "max_concurrency", 0, ("analysis", "max_concurrency")),
    ("budget", "on_state_unavailable", "fail_shut", ("budget", "on_state_unavailable")),
]


def paths(found: tuple[ShapeIssue, ...]) -> list[tuple[str | int, ...]]:
    return [issue.path for issue in found]


def test_a_valid_document_has_no_misfit() -> None:
    """A document msgspec converts has no issue (the fast path)."""
    assert shape_issues({"version": 1, "limits": {"deadline_s": 5}}) == ()


def test_three_independent_mistakes_are_three_issues_in_document_order() -> None:
    """An unknown key, a wrong type and a bad value in three tables: three issues, in the
    document's order, each at its own path and with TOML's words."""
    found = shape_issues(
        {
            "version": 1,
            "limits": {"deadlin_s": 30},
            "retry": {"max_attempts": "3"},
            "route": {"strategy": "fastes"},
        }
    )
    assert paths(found) == [("limits", "deadlin_s"), ("retry", "max_attempts"), ("route", "strategy")]
    assert [issue.unknown_key for issue in found] == [True, False, False]
    assert found[0].message == "unknown key `deadlin_s`; did you mean `deadline_s`?"
    assert found[1].message == "expected an integer, got '3'"
    assert found[2].message.startswith("invalid value 'fastes': expected one of sequential")


def test_mistakes_in_one_table_are_each_reported() -> None:
    """Two wrong keys of the same table are two issues, not one."""
    found = shape_issues({"version": 1, "limits": {"deadline_s": 0, "max_usd": "lots"}})
    assert paths(found) == [("limits", "deadline_s"), ("limits", "max_usd")]


def test_every_bad_item_of_an_array_is_reported_by_index() -> None:
    """Each wrong item of an array is its own issue, at its index."""
    found = shape_issues({"version": 1, "retry": {"on": ["conection", "connection", "timeot"]}})
    assert paths(found) == [("retry", "on", 0), ("retry", "on", 2)]


def test_entries_of_tables_of_tables_are_each_reported() -> None:
    """Two providers each with a mistake, and a nested target with one: every one, named."""
    found = shape_issues(
        {
            "version": 1,
            "providers": {"one": {"url": 8080}, "two": {"modle": "m"}},
            "route": {"targets": ["glm-direct", {"targets": [{"provider": "x", "weight": 0}]}]},
        }
    )
    assert paths(found) == [
        ("providers", "one", "url"),
        ("providers", "two", "modle"),
        ("route", "targets", 1, "targets", 0, "weight"),
    ]


def test_a_missing_required_key_is_reported_beside_other_mistakes() -> None:
    """A missing ``version`` and a mistake elsewhere: both."""
    found = shape_issues({"limits": {"deadline_s": -1}})
    assert paths(found) == [("limits", "deadline_s"), ("version",)]
    assert found[1].message.startswith("missing required key; a policy starts with")


def test_a_wrong_whole_value_is_reported_where_its_entries_are_fine() -> None:
    """An empty target list is wrong as a whole: one issue at the list itself."""
    found = shape_issues({"version": 1, "route": {"targets": []}})
    assert [(i.path, i.message) for i in found] == [(("route", "targets"), "must not be empty")]


def test_strings_in_provider_tables_are_not_echoed() -> None:
    """A string misplaced in a provider table might be a key: the message never quotes it."""
    [issue] = shape_issues({"version": 1, "providers": {"glm-direct": {"input_usd_per_mtok": "sk-x"}}})
    assert "sk-x" not in issue.message


def test_did_you_mean() -> None:
    """A close word is suggested; a far one is not."""
    assert did_you_mean("deadlin_s", ["deadline_s", "max_usd"]) == "; did you mean `deadline_s`?"
    assert did_you_mean("zzz", ["deadline_s"]) == ""


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(MISTAKES), unique_by=lambda m: m[0], min_size=1))
def test_independent_mistakes_are_each_found(chosen: list[Mistake]) -> None:
    """Any set of mistakes in distinct sections of a valid document gives one issue each, at
    the mistake's path."""
    document: dict[str, Any] = {"version": 1}
    for section, key, value, _ in chosen:
        document[section] = {key: value}
    assert sorted(map(str, paths(shape_issues(document)))) == sorted(str(m[3]) for m in chosen)


_keys = st.sampled_from(["version", "limits", "retry", "route", "targets", "deadline_s", "on", "x"])
_values = st.recursive(
    st.integers(-3, 3) | st.text(max_size=4) | st.booleans() | st.sampled_from(["glm-direct", "p95"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_issues_exactly_when_msgspec_refuses(document: dict[str, Any]) -> None:
    """Whatever the document: no issue when msgspec converts it, at least one when it does not."""
    try:
        msgspec.convert(document, Policy)
        converts = True
    except msgspec.ValidationError:
        converts = False
    assert (shape_issues(document) == ()) == converts
