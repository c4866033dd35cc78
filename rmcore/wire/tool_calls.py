"""Tool calls that arrive in pieces, assembled: the part of a streamed reply that is not text.

OpenAI streams a call as ``delta.tool_calls[i]`` pieces keyed by ``index``: the first carries the
call's ``id`` and function ``name``, every piece a slice of the ``arguments`` text. Anthropic
streams one as a ``tool_use`` content block: ``content_block_start`` (id, name), then
``input_json_delta`` slices of the input's JSON text, then ``content_block_stop``. Both come down
to the same steps: a call begins (under a key), its arguments grow, it closes. A call still open
when the stream is cut tells the truncation message where it was cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from returns.result import Failure, Result, Success

from rmcore.requests import ToolCall

__all__ = ["ToolCallAssembly"]


@dataclass
class _Pending:
    """One call being assembled."""

    id: str = ""
    name: str = ""
    pieces: list[str] = field(default_factory=list)
    default_arguments: str = ""
    closed: bool = False


class ToolCallAssembly:
    """The tool calls of one streamed reply, assembled from their pieces in order of first sight.

    A piece may repeat the id or the name (some OpenAI-compatible servers resend them): the first
    non-empty one is kept. A call whose id never came is given ``call_<key>`` (deterministic, so
    that a tool result can still answer it).
    """

    def __init__(self) -> None:
        self._calls: dict[int, _Pending] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def piece(self, key: int, *, id: str | None = None, name: str | None = None, arguments: str = "") -> None:
        """A piece of the call under ``key``: its id or name (when it brings them), a slice of its
        arguments. The first piece under a key begins the call."""
        call = self._calls.setdefault(key, _Pending())
        if id and not call.id:
            call.id = id
        if name and not call.name:
            call.name = name
        if arguments:
            call.pieces.append(arguments)

    def begin(self, key: int, *, id: str, name: str, default_arguments: str = "") -> None:
        """A call begins whole (Anthropic's ``content_block_start``): ``default_arguments`` are its
        arguments if no slice follows."""
        self.piece(key, id=id, name=name)
        self._calls[key].default_arguments = default_arguments

    def close(self, key: int) -> None:
        """The call under ``key`` is complete (a key never begun is ignored)."""
        if key in self._calls:
            self._calls[key].closed = True

    def close_all(self) -> None:
        """Every call is complete (OpenAI: a finish reason arrived)."""
        for call in self._calls.values():
            call.closed = True

    def open_call(self) -> str | None:
        """The name (or ``#key``) of a call begun and not closed, if any."""
        for key, call in self._calls.items():
            if not call.closed:
                return call.name or f"#{key}"
        return None

    def arguments_text(self) -> str:
        """Every argument slice received so far, joined (to estimate output tokens)."""
        return "".join("".join(c.pieces) for c in self._calls.values())

    def calls(self) -> Result[tuple[ToolCall, ...], str]:
        """The assembled calls, in order of their keys' first sight; a call that never got a name
        is an error (what it is, in words)."""
        assembled = []
        for key, call in self._calls.items():
            if not call.name:
                return Failure(f"tool call {key} has no function name")
            arguments = "".join(call.pieces) if call.pieces else call.default_arguments
            assembled.append(ToolCall(id=call.id or f"call_{key}", name=call.name, arguments=arguments))
        return Success(tuple(assembled))
