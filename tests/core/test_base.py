"""The struct base of every core value (``rmcore.base``): frozen, and strict about unknown fields."""

from __future__ import annotations

import msgspec
import pytest

from rmcore.base import Base


class Point(Base, frozen=True):
    """A value of the core, as every struct of ``rmcore`` is declared."""

    x: int
    y: int = 0


def test_values_are_frozen() -> None:
    """A value cannot be changed once built, so it can be shared without copies."""
    point = Point(x=1)
    with pytest.raises(AttributeError):
        point.x = 2  # type: ignore[misc]


def test_frozen_values_are_hashable_and_compare_by_value() -> None:
    """Two values with equal fields are equal and hash alike (usable as keys and in sets)."""
    assert Point(x=1, y=2) == Point(x=1, y=2)
    assert len({Point(x=1, y=2), Point(x=1, y=2), Point(x=2)}) == 2


def test_a_subclass_is_frozen_even_without_saying_so() -> None:
    """Frozenness is inherited: a struct deriving from ``Base`` cannot be changed either."""

    class Loose(Base):
        x: int

    loose = Loose(x=1)
    with pytest.raises(AttributeError):
        loose.x = 2  # type: ignore[misc]


def test_an_unknown_field_is_an_error_never_ignored() -> None:
    """Decoding JSON (or converting a table) with a field the struct does not have fails."""
    with pytest.raises(msgspec.ValidationError, match="unknown field `z`"):
        msgspec.json.decode(b'{"x": 1, "z": 3}', type=Point)
    with pytest.raises(msgspec.ValidationError, match="unknown field `z`"):
        msgspec.convert({"x": 1, "z": 3}, Point)


def test_a_value_round_trips_through_json() -> None:
    """What is encoded decodes back to an equal value."""
    point = Point(x=3, y=-4)
    assert msgspec.json.decode(msgspec.json.encode(point), type=Point) == point
