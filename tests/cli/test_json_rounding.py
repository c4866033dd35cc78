"""JSON floats rounded by what they hold, in one place (``rmcli.output.json_ready``, used by
``emit_json``): costs to 6 significant digits, confidences and milliseconds to 3, any other float
without binary noise; ints and everything else untouched."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcli.output import add_secret, emit_json, json_ready

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


def relative_error(rounded: float, value: float) -> float:
    return 0.0 if value == rounded else abs(rounded - value) / abs(value)


def test_the_issue_s_example_and_each_kind_of_field() -> None:
    """``0.6525000000000001`` loses its noise; each field rounds as its name says."""
    document = {
        "failureRate": 0.6525000000000001,
        "hitRate": 0.272727272727273,
        "costUsd": 0.00012345678,
        "inputUsdPerMtok": 0.15000000000000002,
        "overallConfidence": 0.6525000000000001,
        "latencyMs": 12.345678,
        "p95Ms": 12_345.678,
        "executionTime": 1234.5678,
        "startedAtMs": 1_712_345_678_123,
        "inputTokens": 2591,
    }
    assert json_ready(document) == {
        "failureRate": 0.653,
        "hitRate": 0.273,
        "costUsd": 0.000123457,
        "inputUsdPerMtok": 0.15,
        "overallConfidence": 0.653,
        "latencyMs": 12.3,
        "p95Ms": 12346.0,
        "executionTime": 1235.0,
        "startedAtMs": 1_712_345_678_123,
        "inputTokens": 2591,
    }


def test_nested_structures_round_by_the_nearest_named_field() -> None:
    """Inside lists and maps a float rounds as the nearest field holding it; a map's own keys
    take over from there."""
    document = {
        "perspectives": [
            {"confidence": 0.87654, "metadata": {"costUsd": 1.23456789, "latencyMs": 3.14159}},
            {"confidence": None, "error": {"kind": "timeout"}},
        ],
        "latenciesMs": [1.23456, 2.34567],
        "usage": {"inputTokens": 10, "costUsd": 0.1 + 0.2},
        "x": [[0.1 + 0.2]],
    }
    assert json_ready(document) == {
        "perspectives": [
            {"confidence": 0.877, "metadata": {"costUsd": 1.23457, "latencyMs": 3.14}},
            {"confidence": None, "error": {"kind": "timeout"}},
        ],
        "latenciesMs": [1.23, 2.35],
        "usage": {"inputTokens": 10, "costUsd": 0.3},
        "x": [[0.3]],
    }


@dataclass
class _Row:
    provider: str
    costUsd: float
    requests: int


class _Struct(msgspec.Struct, rename="camel"):
    latency_ms: float
    ok: bool


def test_structs_and_dataclasses_are_encoded_as_msgspec_encodes_them() -> None:
    """Dataclasses and msgspec structs (renamed fields included) become dicts, then round."""
    assert json_ready([_Row("a", 0.1234567891, 3), _Struct(latency_ms=0.123456, ok=True)]) == [
        {"provider": "a", "costUsd": 0.123457, "requests": 3},
        {"latencyMs": 0.123, "ok": True},
    ]


@given(
    st.recursive(
        st.integers() | st.booleans() | st.none() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(["costUsd", "confidence", "latencyMs", "n"]), inner, max_size=4)
        ),
    )
)
def test_everything_but_floats_is_untouched(value: Any) -> None:
    """Ints (however large), booleans, None and strings come out exactly as they went in, at
    any depth and under any field name."""
    assert json_ready(value) == value
    assert json.dumps(json_ready(value)) == json.dumps(value)


@pytest.mark.parametrize(
    ("field", "digits"),
    [("costUsd", 6), ("outputUsdPerMtok", 6), ("confidence", 3), ("averageConfidence", 3), ("p50Ms", 3)],
)
@given(value=finite.filter(lambda v: v == 0 or abs(v) > 1e-200))
def test_round_trip_within_the_field_s_relative_error(field: str, digits: int, value: float) -> None:
    """Encoded and decoded, a float is within half a unit of its field's last significant digit
    (a millisecond figure of 1000 ms or more keeps every whole millisecond)."""
    decoded = json.loads(msgspec.json.encode(json_ready({field: value})))[field]
    if field.endswith("Ms") and abs(value) >= 1000:
        assert decoded == float(round(value))
    else:
        assert relative_error(decoded, value) <= 0.5 * 10 ** (1 - digits) * (1 + 1e-9)


@given(value=finite)
def test_other_floats_keep_fifteen_digits(value: float) -> None:
    """A float under no cost, confidence or millisecond name keeps 15 significant digits: every
    digit of a decimal number with that many, without binary noise."""
    decoded = json.loads(msgspec.json.encode(json_ready({"used": value})))["used"]
    assert relative_error(decoded, value) <= 5e-15
    assert float(f"{decoded:.15g}") == decoded


def test_non_finite_floats_stay_as_msgspec_writes_them() -> None:
    """NaN and infinities are not rounded (msgspec writes them as null)."""
    ready = json_ready({"costUsd": math.nan, "latencyMs": math.inf})
    assert math.isnan(ready["costUsd"]) and math.isinf(ready["latencyMs"])


def test_emit_json_prints_rounded_floats_and_still_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    """``emit_json`` prints one line with the rounded floats, and a key it holds redacted."""
    add_secret("sk-rounding-test-0123456789")
    emit_json(
        {"overallConfidence": 0.6525000000000001, "costUsd": 0.1 + 0.2, "note": "sk-rounding-test-0123456789"}
    )
    out = capsys.readouterr().out
    assert out == '{"overallConfidence":0.653,"costUsd":0.3,"note":"<redacted>"}\n'
