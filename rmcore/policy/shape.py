"""A policy document against the schema's shape: every unknown key, wrong type and value out of
range, all at once, each with its full path and a message in TOML's terms.

``msgspec.convert`` stops at the first error. :func:`shape_issues` converts the whole document
first (the fast path: a valid document costs one conversion); only when that fails does it walk
the document key by key beside the schema, converting each value on its own, so that independent
mistakes (an unknown key in ``[limits]``, a string in ``[retry]``, an unknown strategy in
``[route]``) are each reported. A value whose own conversion fails is looked into when it is a
table or an array the schema describes (its entries checked one by one); otherwise msgspec's
message about it is rewritten: the full path (msgspec leaves out dict keys and the name of an
unknown field), the value found, and a "did you mean" for typos.

Pure: a mapping in, values out.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

import msgspec
import msgspec.inspect as mi

from rmcore.base import Base
from rmcore.policy.locate import PathKey
from rmcore.policy.schema import Policy

__all__ = ["ShapeIssue", "did_you_mean", "shape_issues"]

_MISSING: Any = object()
_HIDDEN: Any = object()
_MSGSPEC_AT = re.compile(r"^(.*?)(?: - at `(\$[^`]*)`)?$", re.DOTALL)
_MSGSPEC_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|(\[\.\.\.\])")
_TYPE_WORDS = {
    "object": "a table",
    "array": "an array",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}


class ShapeIssue(Base, frozen=True):
    """One place where the document does not fit the schema."""

    path: PathKey
    """Where, as segments: table keys and array indices."""
    message: str
    """Why, in TOML's terms (``expected a number, got 'two minutes'``)."""
    unknown_key: bool = False
    """True for a key the schema does not have: leaving it out changes nothing else."""


def shape_issues(data: dict[str, Any]) -> tuple[ShapeIssue, ...]:
    """Every way the TOML document ``data`` does not fit :class:`Policy`, in the document's key
    order (empty when ``msgspec.convert(data, Policy)`` succeeds)."""
    return tuple(_walk(data, Policy, (), data))


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean `x`?"`` for the choice closest to ``word``, or ``""`` if none is close."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


# -- the walk ------------------------------------------------------------------------------------


def _walk(value: Any, annotation: Any, path: PathKey, data: Any) -> list[ShapeIssue]:
    """The issues of ``value`` (at ``path`` of ``data``) against the type ``annotation``."""
    try:
        msgspec.convert(value, annotation)
        return []
    except msgspec.ValidationError as error:
        first = str(error)
    found: list[ShapeIssue] = []
    inner = _container(annotation, value)
    if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
        fields = {f.encode_name: f for f in msgspec.structs.fields(inner)}
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                found.append(_unknown_key(path, key))
            else:
                found.extend(_walk(item, field.type, (*path, key), data))
        for name, field in fields.items():
            if field.required and name not in value:
                found.append(ShapeIssue(path=(*path, name), message=_missing((*path, name))))
    elif isinstance(inner, _Entries):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            found.extend(_walk(item, inner.annotation, (*path, key), data))
    if not found:
        # The entries are fine on their own (or the value is not a container): the value as a
        # whole is wrong, e.g. an empty array where one target is needed.
        where, message = _explain(data, first, path)
        found.append(
            ShapeIssue(path=where, message=message, unknown_key=message.startswith("unknown key"))
        )
    return found


class _Entries(typing.NamedTuple):
    """A dict's values or an array's items, all of type ``annotation``."""

    annotation: Any


def _container(annotation: Any, value: Any) -> type | _Entries | None:
    """What ``annotation`` expects inside ``value`` when both are a table or both an array: a
    struct class, the type of a dict's values or of an array's items; ``None`` otherwise."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _container(typing.get_args(annotation)[0], value)
    if origin is typing.Union or origin is types.UnionType:
        for member in typing.get_args(annotation):
            found = _container(member, value)
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
            return annotation
        if origin is dict:
            return _Entries(typing.get_args(annotation)[1])
    if isinstance(value, list) and origin in (tuple, list):
        args = typing.get_args(annotation)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return _Entries(args[0])
    return None


# -- msgspec's messages in TOML's terms ----------------------------------------------------------


def _explain(data: Any, error: str, prefix: PathKey = ()) -> tuple[PathKey, str]:
    """msgspec's ``error`` about the value at ``prefix`` of the document ``data`` → (full path,
    message in TOML's terms)."""
    match = _MSGSPEC_AT.match(error)
    assert match is not None  # the pattern matches every string
    message, at = match.group(1), match.group(2) or "$"
    path: list[str | int] = list(prefix)
    for segment in _MSGSPEC_SEGMENT.finditer(at):
        key, index, hidden = segment.groups()
        if hidden:
            # msgspec writes a table's key as [...]: find the entry that fails on its own.
            return _explain_table_entry(data, tuple(path), message)
        path.append(key if key is not None else int(index))
    return _rewrite(data, tuple(path), message)


def _explain_table_entry(data: Any, path: PathKey, fallback: str) -> tuple[PathKey, str]:
    table = _value_at(data, path)
    entry_type = _unwrap(_type_at((*path, "")))
    if isinstance(table, dict) and isinstance(entry_type, mi.StructType):
        for key, value in table.items():
            try:
                msgspec.convert(value, entry_type.cls)
            except msgspec.ValidationError as error:
                return _explain(data, str(error), (*path, key))
    return path, fallback


def _missing(path: PathKey) -> str:
    if path == ("version",):
        return "missing required key; a policy starts with `version = 1`"
    return "missing required key"


def _rewrite(data: Any, path: PathKey, message: str) -> tuple[PathKey, str]:
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", message, re.DOTALL)
    if unknown:
        issue = _unknown_key(path, unknown.group(1))
        return issue.path, issue.message
    missing = re.fullmatch(r"Object missing required field `(.*)`", message, re.DOTALL)
    if missing:
        return (*path, missing.group(1)), _missing((*path, missing.group(1)))
    value = _value_at(data, path)
    if path[:1] == ("providers",) and not _named_value(path) and isinstance(value, str):
        value = _HIDDEN  # a misplaced string in a provider table might be a pasted key: never echo it
    got = "" if value is _MISSING else f", got {_show(value)}"
    if message.startswith("Invalid enum value"):
        node = _type_at(path)
        choices = _choices(node)
        expected = f"one of {', '.join(choices)}" if len(choices) > 1 else ", ".join(map(repr, choices))
        if _accepts_number(node):
            expected = f"a number or {expected}"
        hint = did_you_mean(str(value), choices)
        return path, f"invalid value {_show(value)}: expected {expected}{hint}"
    if re.fullmatch(r"Expected `(\w+)` of length >= 1", message):
        return path, "must not be empty"
    bound = re.fullmatch(r"Expected `(\w+)` (>=|>|<=|<) (\S+)", message)
    if bound:
        limit = bound.group(3).removesuffix(".0")
        return path, f"must be {bound.group(2)} {limit}{got}"
    wrong = re.fullmatch(r"Expected `([^`]*)`, got `(\w+)`", message)
    if wrong:
        # TOML has no null: an optional key is simply left out, so "or nothing" would mislead.
        kinds = [t for t in wrong.group(1).split(" | ") if t != "null"]
        expected = " or ".join(_TYPE_WORDS.get(t, t) for t in kinds)
        return path, f"expected {expected}{got}"
    return path, message


def _named_value(path: PathKey) -> bool:
    """True when the value at ``path`` of a provider table is one of a fixed set of names
    (its ``kind``, a capability it ``supports``): echoing it cannot leak a pasted key."""
    return path[-1:] == ("kind",) or path[-2:-1] == ("supports",)


def _unknown_key(path: PathKey, key: str) -> ShapeIssue:
    struct = _unwrap(_type_at(path))
    fields = [f.encode_name for f in struct.fields] if isinstance(struct, mi.StructType) else []
    hint = did_you_mean(key, fields)
    if not hint and fields:
        hint = f" (known keys here: {', '.join(fields)})"
    return ShapeIssue(path=(*path, key), message=f"unknown key `{key}`{hint}", unknown_key=True)


def _show(value: Any) -> str:
    """A value as a person reading the TOML would recognise it."""
    if value is _HIDDEN:
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, str | int | float) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_at(data: Any, path: PathKey) -> Any:
    for segment in path:
        in_list = isinstance(data, list) and isinstance(segment, int) and 0 <= segment < len(data)
        in_table = isinstance(data, dict) and isinstance(segment, str) and segment in data
        if not (in_list or in_table):
            return _MISSING
        data = data[segment]
    return data


# -- the schema's types, by path -----------------------------------------------------------------


def _type_at(path: PathKey) -> mi.Type | None:
    """The schema's type at ``path`` (unions resolved towards the member that has the segment)."""
    current: mi.Type | None = mi.type_info(Policy)
    for segment in path:
        current = _child(current, segment)
    return current


def _child(node: mi.Type | None, segment: str | int) -> mi.Type | None:
    node = _strip(node)
    if isinstance(node, mi.UnionType):
        for member in node.types:
            found = _child(member, segment)
            if found is not None:
                return found
        return None
    if isinstance(segment, str) and isinstance(node, mi.StructType):
        return next((f.type for f in node.fields if f.encode_name == segment), None)
    if isinstance(segment, str) and isinstance(node, mi.DictType):
        return node.value_type
    if isinstance(segment, int) and isinstance(node, mi.VarTupleType | mi.ListType):
        return node.item_type
    return None


def _strip(node: mi.Type | None) -> mi.Type | None:
    while isinstance(node, mi.Metadata):
        node = node.type
    return node


def _unwrap(node: mi.Type | None) -> mi.Type | None:
    """The struct (or other non-None member) behind metadata and ``X | None``."""
    node = _strip(node)
    if isinstance(node, mi.UnionType):
        members = [m for m in (_strip(t) for t in node.types) if not isinstance(m, mi.NoneType)]
        structs = [m for m in members if isinstance(m, mi.StructType)]
        return structs[0] if structs else (members[0] if len(members) == 1 else node)
    return node


def _accepts_number(node: mi.Type | None) -> bool:
    node = _strip(node)
    members = node.types if isinstance(node, mi.UnionType) else (node,)
    return any(isinstance(_strip(m), mi.FloatType | mi.IntType) for m in members)


def _choices(node: mi.Type | None) -> list[str]:
    node = _strip(node)
    members = node.types if isinstance(node, mi.UnionType) else (node,)
    out: list[str] = []
    for member in (_strip(m) for m in members):
        if isinstance(member, mi.EnumType):
            out.extend(str(item.value) for item in member.cls)
        elif isinstance(member, mi.LiteralType):
            out.extend(str(v) for v in member.values)
    return out
