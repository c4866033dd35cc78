"""Finding the line where a path is written, on every TOML layout a policy can take."""

from __future__ import annotations

import textwrap
import tomllib
from typing import Any

import hypothesis.strategies as st
import pytest
import tomli_w
from hypothesis import given, settings

from rmcore.policy import format_path, line_index, locate, parse_path

LAYOUTS = textwrap.dedent(
    """\
    version = 1   # [not.a.table]
    name = "a # b [c]"
    limits.deadline_s = 3

    [route]
    strategy = 'fastest'
    targets = [
        "glm-direct",   # ] a closing bracket in a comment
        { provider = "openai-direct", attempt_timeout_s = 2 },
        { targets = ["aiceo-gateway",
                     "x]y"], strategy = "hedged" },
    ]

    [ providers . "local.llama" ]
    url = \"\"\"http://127.0.0.1
    [fake]
    \"\"\"
    model = '''m'''
    "quoted key" = 1

    [retry]
    on = ["connection",
      # a comment line between elements
      "rate_limited"]
    """
)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("$.version", 1),
        ("$.name", 2),
        ("$.limits", 3),
        ("$.limits.deadline_s", 3),
        ("$.route", 5),
        ("$.route.strategy", 6),
        ("$.route.targets", 7),
        ("$.route.targets[0]", 8),
        ("$.route.targets[1]", 9),
        ("$.route.targets[1].attempt_timeout_s", 9),
        ("$.route.targets[2]", 10),
        ("$.route.targets[2].targets[0]", 10),
        ("$.route.targets[2].targets[1]", 11),
        ("$.route.targets[2].strategy", 11),
        ('$.providers."local.llama"', 14),
        ('$.providers."local.llama".url', 15),
        ('$.providers."local.llama".model', 18),
        ('$.providers."local.llama"."quoted key"', 19),
        ("$.retry.on[0]", 22),
        ("$.retry.on[1]", 24),
    ],
)
def test_locates_every_layout(path: str, line: int) -> None:
    """Every path is found on the line that writes it, whatever the TOML layout (tables, dotted and quoted
    keys, inline tables, arrays over several lines)."""
    assert locate(LAYOUTS, path) == line


def test_the_layouts_are_valid_toml() -> None:
    """The sample above is real TOML, so the scanner is tested on what users can write."""
    data = tomllib.loads(LAYOUTS)
    assert data["providers"]["local.llama"]["url"].startswith("http://127.0.0.1")


def test_falls_back_to_the_deepest_written_prefix() -> None:
    """A path not written is located at its deepest written prefix; one with no written prefix, or not a
    path, has no line."""
    assert locate(LAYOUTS, "$.route.targets[1].weight") == 9
    assert locate(LAYOUTS, "$.route.targets[7]") == 7
    assert locate(LAYOUTS, "$.breaker.cooldown_s") is None
    assert locate(LAYOUTS, "$") is None
    assert locate(LAYOUTS, "not a path") is None


def test_arrays_of_tables_and_tables_below_them() -> None:
    """Entries of ``[[arrays of tables]]``, nested ones included, are counted to find the right entry's
    line."""
    text = textwrap.dedent(
        """\
        [[route.targets]]
        provider = "a"

        [[route.targets]]
        strategy = "fastest"

        [[route.targets.targets]]
        provider = "b"

        [[route.targets.targets]]
        provider = "c"
        weight = 2
        """
    )
    data = tomllib.loads(text)
    assert data["route"]["targets"][1]["targets"][1]["weight"] == 2
    assert locate(text, "$.route.targets[0].provider") == 2
    assert locate(text, "$.route.targets[1]") == 4
    assert locate(text, "$.route.targets[1].targets[0].provider") == 8
    assert locate(text, "$.route.targets[1].targets[1].weight") == 12


def test_dotted_keys_inside_a_table_and_an_inline_table() -> None:
    """Dotted keys, in a table or inside an inline table, are located on their line."""
    text = 'version = 1\n[providers]\nlocal.url = "http://127.0.0.1"\nx = { a.b = 1, "c d".e = 2 }\n'
    assert locate(text, "$.providers.local.url") == 3
    assert locate(text, "$.providers.x.a.b") == 4
    assert locate(text, '$.providers.x."c d".e') == 4


def test_escaped_quotes_in_strings_do_not_end_them() -> None:
    """An escaped quote or a bracket inside a string does not confuse the scan of an array."""
    text = 'a = "say \\"[\\" here"\nb = [\n  "\\\\",\n  2,\n]\n'
    assert tomllib.loads(text)["b"] == ["\\", 2]
    assert locate(text, "$.b[1]") == 4


def test_windows_line_endings() -> None:
    """CRLF line endings count lines like LF."""
    text = "version = 1\r\n[limits]\r\ndeadline_s = 3\r\n"
    assert locate(text, "$.limits.deadline_s") == 3


def test_first_occurrence_wins() -> None:
    """A table named by a dotted key and later by a header is located where it first appears."""
    text = "limits.max_usd = 1\n[route]\n[limits_other]\n"
    assert locate(text, "$.limits") == 1


@pytest.mark.parametrize(
    "segments",
    [
        (),
        ("limits", "deadline_s"),
        ("route", "targets", 3, "weight"),
        ("providers", "a.b", "url"),
        ("q", 'x"y'),
    ],
)
def test_format_and_parse_paths_round_trip(segments: tuple[str | int, ...]) -> None:
    """A path written with ``format_path`` parses back to the same segments, quoting keys that need it."""
    assert parse_path(format_path(segments)) == segments


def test_path_notation() -> None:
    """Paths read ``$.key.key[index]``, keys quoted when not bare; malformed paths do not parse."""
    assert format_path(("providers", "local-llama", "url")) == "$.providers.local-llama.url"
    assert format_path(("providers", "a b")) == '$.providers."a b"'
    assert format_path(("route", "targets", 1)) == "$.route.targets[1]"
    for bad in ["", "limits", "$.", "$[x]", "$.a[1", '$."unterminated']:
        assert parse_path(bad) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=5) | st.integers(0, 99), max_size=5))
def test_any_path_round_trips(segments: list[str | int]) -> None:
    """Any segments, of any text and index, survive formatting and parsing."""
    assert parse_path(format_path(segments)) == tuple(segments)


# -- generated documents -------------------------------------------------------------------------

_keys = st.from_regex(r"[a-z_][a-z0-9_-]{0,6}", fullmatch=True) | st.text(min_size=1, max_size=6)
_scalars = (
    st.integers(-1000, 1000)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.booleans()
    | st.text(max_size=10)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=25,
)


def _leaves(value: Any, path: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, (*path, index))]
    return [(path, value)]


def _written_key(key: str) -> str:
    """How tomli_w writes a key (bare, or as a quoted string)."""
    return tomli_w.dumps({key: 0}).partition(" = ")[0]


def _written_value(value: Any) -> str:
    return tomli_w.dumps({"k": value}).partition(" = ")[2].rstrip("\n")


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _values, min_size=1, max_size=5), st.booleans())
def test_every_leaf_is_located_on_a_line_that_writes_it(document: dict[str, Any], multiline: bool) -> None:
    """For documents written by tomli_w (tables, arrays of tables, multi-line arrays and strings),
    the line located for every leaf path holds that leaf's key, or its value for array items."""
    text = tomli_w.dumps(document, multiline_strings=multiline)
    lines = text.split("\n")  # TOML ends lines at \n only (not at \x85 and the like)
    index = line_index(text)
    for path, value in _leaves(tomllib.loads(text), ()):
        if not path:
            continue
        line = locate(text, format_path(path))
        assert line is not None, (path, text)
        assert path in index
        written = lines[line - 1]
        last = path[-1]
        if isinstance(last, str):
            assert _written_key(last) in written, (path, line, text)
        elif not (isinstance(value, str) and "\n" in value):
            assert _written_value(value).split("\n")[0] in written, (path, line, text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.lists(st.text(max_size=4) | st.integers(0, 5), max_size=4))
def test_scanning_never_raises(text: str, segments: list[str | int]) -> None:
    """Locating any path in any text returns a line of the text or ``None``, never raises."""
    line = locate(text, format_path(segments))
    assert line is None or 1 <= line <= text.count("\n") + 1
