"""Where in a TOML text a value is written: ``$.route.targets[1].attempt_timeout_s`` → line 14.

``tomllib`` gives values without positions, and msgspec reports a path, not a line. This module
scans the text once, the way a TOML reader walks it, and records the 1-based line where every key,
table and array element begins. It understands ``[table]`` and ``[[array.of.tables]]`` headers
(quoted keys too), dotted keys, inline tables and arrays spanning several lines; strings and
comments are skipped so that brackets inside them do not count. It never raises: on text that is
not valid TOML it records what it can.

Paths use one notation throughout the policy package: ``$`` for the document, ``.key`` for a bare
key (``[A-Za-z0-9_-]+``), ``."quoted key"`` (JSON escapes) for any other key, ``[N]`` for an array
index.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from typing import TypeAlias

__all__ = ["PathKey", "format_path", "line_index", "locate", "parse_path"]

PathKey: TypeAlias = tuple[str | int, ...]
"""A path as segments: table keys (``str``) and array indices (``int``)."""

_BARE_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = frozenset(",]}#\n\r")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", "e": "\x1b", '"': '"', "\\": "\\"}


def format_path(segments: Sequence[str | int]) -> str:
    """``("limits", "deadline_s")`` → ``$.limits.deadline_s``; odd keys are quoted."""
    out = ["$"]
    for seg in segments:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif _BARE_KEY.fullmatch(seg):
            out.append(f".{seg}")
        else:
            out.append("." + json.dumps(seg, ensure_ascii=False))
    return "".join(out)


def parse_path(path: str) -> PathKey | None:
    """The segments of a path written by :func:`format_path`, or ``None`` if it is not one."""
    if not path.startswith("$"):
        return None
    segments: list[str | int] = []
    pos = 1
    while pos < len(path):
        if path.startswith('."', pos):
            try:
                key, end = json.JSONDecoder().raw_decode(path, pos + 1)
            except json.JSONDecodeError:
                return None
            segments.append(str(key))
            pos = end
        elif path[pos] == ".":
            match = _BARE_KEY.match(path, pos + 1)
            if match is None:
                return None
            segments.append(match.group())
            pos = match.end()
        elif path[pos] == "[":
            close = path.find("]", pos)
            if close < 0 or not path[pos + 1 : close].isdigit():
                return None
            segments.append(int(path[pos + 1 : close]))
            pos = close + 1
        else:
            return None
    return tuple(segments)


def line_index(text: str) -> dict[PathKey, int]:
    """Every path written in ``text`` (keys, implicit parent tables, array elements) mapped to the
    1-based line where it first appears."""
    scanner = _Scanner(text)
    scanner.document()
    return scanner.found


def locate(text: str, path: str) -> int | None:
    """The 1-based line of ``path`` in ``text``, else of its deepest written prefix; ``None`` when
    not even the first segment is written (or ``path`` is ``$`` or not a path)."""
    segments = parse_path(path)
    if not segments:
        return None
    index = line_index(text)
    for end in range(len(segments), 0, -1):
        line = index.get(segments[:end])
        if line is not None:
            return line
    return None


class _Scanner:
    """A forgiving single-pass TOML walker that records where paths begin."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.found: dict[PathKey, int] = {}
        self.array_tables: dict[PathKey, int] = {}  # [[header]] path → elements seen so far

    # -- characters ------------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> str:
        index = self.pos + ahead
        return self.text[index] if index < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        end = min(self.pos + count, len(self.text))
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t"):
            self.advance()

    def skip_comment(self) -> None:
        if self.peek() == "#":
            end = self.text.find("\n", self.pos)
            self.advance((len(self.text) if end < 0 else end) - self.pos)

    def skip_trivia(self) -> None:
        """Spaces, newlines and comments."""
        while True:
            self.skip_spaces()
            self.skip_comment()
            if self.peek() in ("\n", "\r"):
                self.advance()
            else:
                return

    def record(self, path: PathKey, line: int) -> None:
        """Record ``path`` and each of its prefixes at ``line`` unless already seen earlier."""
        for end in range(1, len(path) + 1):
            self.found.setdefault(path[:end], line)

    # -- grammar ---------------------------------------------------------------------------------

    def document(self) -> None:
        table: PathKey = ()
        while True:
            self.skip_trivia()
            if not self.peek():
                return
            line = self.line
            if self.peek() == "[":
                table = self.header(line)
                continue
            keys = self.key()
            if not keys:
                self.advance()  # not a key: skip the character and carry on
                continue
            path = table + keys
            self.record(path, line)
            self.value_after_equals(path)

    def header(self, line: int) -> PathKey:
        """``[a.b]`` or ``[[a.b]]``: the path of the table that the following keys belong to."""
        is_array = self.peek(1) == "["
        self.advance(2 if is_array else 1)
        keys = self.key()
        self.skip_spaces()
        for _ in range(2 if is_array else 1):
            if self.peek() == "]":
                self.advance()
        resolved: list[str | int] = []
        for position, key in enumerate(keys):
            resolved.append(key)
            if is_array and position == len(keys) - 1:
                break
            seen = self.array_tables.get(tuple(resolved), 0)
            if seen:
                resolved.append(seen - 1)  # a header below [[x]] refers to x's latest element
        path = tuple(resolved)
        if is_array:
            index = self.array_tables.get(path, 0)
            self.array_tables[path] = index + 1
            path = (*path, index)
        self.record(path, line)
        return path

    def key(self) -> PathKey:
        """A possibly dotted key: bare and quoted parts separated by dots."""
        parts: list[str] = []
        while True:
            self.skip_spaces()
            char = self.peek()
            if char in ('"', "'"):
                parts.append(self.string())
            else:
                start = self.pos
                while self.peek() in _BARE_CHARS:
                    self.advance()
                if self.pos == start:
                    break
                parts.append(self.text[start : self.pos])
            self.skip_spaces()
            if self.peek() != ".":
                break
            self.advance()
        return tuple(parts)

    def value_after_equals(self, path: PathKey) -> None:
        self.skip_spaces()
        if self.peek() != "=":
            return
        self.advance()
        self.skip_spaces()
        self.value(path)

    def value(self, path: PathKey) -> None:
        char = self.peek()
        if char in ('"', "'"):
            self.string()
        elif char == "[":
            self.array(path)
        elif char == "{":
            self.inline_table(path)
        else:
            while self.peek() and self.peek() not in _SCALAR_END:
                self.advance()

    def array(self, path: PathKey) -> None:
        self.advance()  # [
        index = 0
        while True:
            self.skip_trivia()
            char = self.peek()
            if not char:
                return
            if char == "]":
                self.advance()
                return
            if char == ",":
                self.advance()
                index += 1
                continue
            if char == "}":  # stray closer: not ours to consume
                return
            start = self.pos
            self.record((*path, index), self.line)
            self.value((*path, index))
            if self.pos == start:
                self.advance()

    def inline_table(self, path: PathKey) -> None:
        self.advance()  # {
        while True:
            self.skip_trivia()
            char = self.peek()
            if not char:
                return
            if char == "}":
                self.advance()
                return
            if char == ",":
                self.advance()
                continue
            if char == "]":  # stray closer: not ours to consume
                return
            line = self.line
            keys = self.key()
            if not keys:
                self.advance()
                continue
            self.record((*path, *keys), line)
            self.value_after_equals((*path, *keys))

    def string(self) -> str:
        """A basic or literal string, single- or multi-line; returns its (unescaped) value."""
        quote = self.peek()
        if self.text.startswith(quote * 3, self.pos):
            self.advance(3)
            end = self._find_close(quote * 3, multiline=True)
            raw = self.text[self.pos : end]
            self.advance(end - self.pos + 3)
            while self.peek() == quote:  # up to two quotes may end the content
                self.advance()
        else:
            self.advance()
            end = self._find_close(quote, multiline=False)
            raw = self.text[self.pos : end]
            self.advance(end - self.pos + 1)
        return _unescape(raw) if quote == '"' else raw

    def _find_close(self, closer: str, *, multiline: bool) -> int:
        """Index of the closing quote(s); the end of the line (single-line) or text if none."""
        escapes = closer[0] == '"'
        index = self.pos
        while index < len(self.text):
            char = self.text[index]
            if escapes and char == "\\":
                index += 2
                continue
            if not multiline and char == "\n":
                return index - 1 if index > self.pos else self.pos
            if self.text.startswith(closer, index):
                return index
            index += 1
        return len(self.text)


def _unescape(raw: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char != "\\" or index + 1 >= len(raw):
            out.append(char)
            index += 1
            continue
        code = raw[index + 1]
        width = {"u": 4, "U": 8}.get(code)
        if width is not None:
            digits = raw[index + 2 : index + 2 + width]
            try:
                out.append(chr(int(digits, 16)))
            except (ValueError, OverflowError):
                out.append(raw[index : index + 2 + width])
            index += 2 + width
        else:
            out.append(_ESCAPES.get(code, code))
            index += 2
    return "".join(out)
