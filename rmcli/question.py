"""Where a question comes from, and how a long one is shown.

A command's question (``ask``'s prompt, ``analyze``'s decision) is an argument, ``-`` for the
whole of stdin, or ``--file PATH``; a prompt argument with text piped in (or with ``--file``) is
the prompt, a blank line, then that text as context, the way ``cat f | llm "explain"`` works.
Whatever the source, the text must be UTF-8 and hold more than whitespace: otherwise the command
stops with a ``ConfigError`` (exit 2) naming the source and, for bad bytes, the byte and where.
Nothing here limits the size: a file or a pipe is read whole, never through the argument list.
"""

from __future__ import annotations

import os
import re
import select
import stat
import sys
from pathlib import Path
from typing import BinaryIO

from rmcli.config import check_text
from rmcli.errors import ConfigError
from rmcli.output import err

__all__ = [
    "SHORT_QUESTION_CHARS",
    "SHORT_QUESTION_LINES",
    "STDIN",
    "join_context",
    "read_question",
    "shorten_question",
    "stdin_is_piped",
]

STDIN = "-"
"""The argument that means: read the question from stdin."""

SHORT_QUESTION_CHARS = 200
"""How much of a long question a text or markdown report shows (JSON and history keep it all)."""

SHORT_QUESTION_LINES = 6
"""How many lines of a long question a text or markdown report shows."""

WAIT_NOTICE_S = 3.0
"""How long a piped stdin may stay silent before ``rmgr`` says it is waiting for it."""

_UTF8_BOM = b"\xef\xbb\xbf"

# An argument that can only be a mistyped option (``--jsn``): cyclopts hands it over as the
# question, because the question may be ``-``.
_OPTION_LIKE = re.compile(r"--?[A-Za-z][A-Za-z0-9_-]*(=\S*)?")

_NONE_GIVEN = "no {what} given — write it as an argument, - to read stdin, or --file PATH"


def stdin_is_piped(stream: BinaryIO | None = None) -> bool:
    """Whether stdin is a pipe, a file or a socket someone writes into (``echo q | rmgr ask``,
    ``rmgr ask < q.txt``): not a terminal, and not a device such as ``/dev/null``."""
    stream = stream if stream is not None else _stdin()
    if stream is None:
        return False
    try:
        fd = stream.fileno()
        if os.isatty(fd):
            return False
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def _stdin() -> BinaryIO | None:
    return getattr(sys.stdin, "buffer", None) if sys.stdin is not None else None


def _decode(data: bytes, source: str) -> str:
    """``data`` as text, or a ConfigError naming ``source``, the first bad byte and its offset."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}) — "
            "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8) and try again"
        ) from None


def _require_words(text: str, source: str) -> str:
    if not text:
        raise ConfigError(f"{source} is empty — write the question in it")
    if not text.strip():
        raise ConfigError(f"{source} holds only whitespace — write the question in it")
    return text


def _read_file(path: Path) -> str:
    source = f"--file {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file — check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a folder — name the file that holds the question") from None
    except PermissionError:
        raise ConfigError(f"{source}: permission denied — make the file readable") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot be read ({exc.strerror or exc})") from None
    return _require_words(_decode(data, source), source)


def _wait_for(stream: BinaryIO) -> None:
    """Say on stderr that ``rmgr`` waits for stdin when nothing came within ``WAIT_NOTICE_S``:
    a pipe left open by whoever started ``rmgr`` would otherwise look like a hang."""
    try:
        ready, _, _ = select.select([stream.fileno()], [], [], WAIT_NOTICE_S)
    except (OSError, ValueError):  # no select on this stream (or platform): just read it
        return
    if not ready:
        err("INFO: waiting for the text piped into stdin; it ends when the pipe closes (</dev/null skips it)")


def _read_stdin(stream: BinaryIO | None, *, wait_notice: bool) -> str:
    if stream is None:
        raise ConfigError("stdin is closed — pipe the question in, or use --file PATH")
    try:
        if os.isatty(stream.fileno()):
            err("INFO: reading the question from stdin; end it with Ctrl-D")
        elif wait_notice:
            _wait_for(stream)
    except (OSError, ValueError):
        pass
    try:
        data = stream.read()
    except OSError as exc:
        raise ConfigError(f"stdin cannot be read ({exc.strerror or exc})") from None
    return _decode(data, "stdin")


def join_context(prompt: str, context: str) -> str:
    """The prompt, a blank line, then the context (its trailing newlines dropped): what is sent
    for ``cat f | rmgr ask "explain"``."""
    return f"{prompt.rstrip()}\n\n{context.rstrip(chr(10) + chr(13))}"


def read_question(
    argument: str | None,
    file: Path | None = None,
    *,
    stdin: BinaryIO | None = None,
    piped: bool | None = None,
    what: str = "question",
) -> str:
    """The question a command was given, checked (UTF-8, not empty, not only whitespace).

    ``argument`` is the positional argument: the question, ``-`` (all of stdin), or None.
    ``file`` is ``--file``. A question argument with ``--file``, or with text piped into stdin,
    gets that text appended as context (``join_context``). ``stdin`` and ``piped`` replace the
    process's stdin and whether it is piped (for tests); ``what`` names the text in messages
    (``question``, ``prompt``). Every problem is a ``ConfigError``.
    """
    if argument is not None and argument != STDIN and _OPTION_LIKE.fullmatch(argument):
        raise ConfigError(
            f"unknown option {argument} — see --help; a {what} that looks like an option can be "
            "given on stdin (-) or with --file"
        )
    stream = stdin if stdin is not None else _stdin()
    if file is not None:
        if argument == STDIN:
            raise ConfigError("both - and --file given — read the question from one of them")
        text = _read_file(file)
        if argument is None:
            return text
        _check_argument(argument, what)
        return join_context(argument, text)
    if argument == STDIN:
        return _require_words(_read_stdin(stream, wait_notice=False), "stdin")
    is_piped = stdin_is_piped(stream) if piped is None else piped
    if argument is None:
        if not is_piped:
            raise ConfigError(_NONE_GIVEN.format(what=what))
        return _require_words(_read_stdin(stream, wait_notice=True), "stdin")
    _check_argument(argument, what)
    if not is_piped:
        return argument
    context = _read_stdin(stream, wait_notice=True)
    if not context.strip():
        err("WARNING: the text piped into stdin is empty; asking with the argument alone")
        return argument
    return join_context(argument, context)


def _check_argument(argument: str, what: str) -> None:
    if not argument.strip():
        raise ConfigError(f"the {what} is empty — write it as an argument, - to read stdin, or --file PATH")
    check_text(f"the {what}", argument)


def shorten_question(
    text: str, max_chars: int = SHORT_QUESTION_CHARS, max_lines: int = SHORT_QUESTION_LINES
) -> str:
    """``text`` for a report a person reads: whole when short, else its first ``max_chars``
    characters (at most ``max_lines`` lines) and ``… (N characters)``. JSON and the history keep
    the whole text."""
    text = text.strip()
    kept = text.splitlines(keepends=True)[:max_lines]
    end = min(sum(map(len, kept)), max_chars)
    if end >= len(text):
        return text
    shown = text[:end]
    return f"{shown.rstrip()}… ({len(text):,} characters)"
