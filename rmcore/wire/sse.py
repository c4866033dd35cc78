"""An incremental decoder of server-sent events (``text/event-stream``), fed raw byte chunks.

It follows the WHATWG HTML "event stream interpretation" rules: UTF-8 decoded incrementally
(a chunk may end inside a multi-byte character) with one leading byte-order mark dropped; lines
end with ``\\r\\n``, ``\\n`` or ``\\r`` (a ``\\r\\n`` split across two chunks is one line end);
``event:`` names the event, ``data:`` lines are joined with ``\\n``, ``id:`` sets the last event
id, lines starting with ``:`` are comments, one space after the colon is dropped, and a blank line
dispatches the event. An event not yet dispatched when the stream ends is discarded, as the
standard says: a stream cut mid-event never yields a partial event.

Invalid UTF-8 is replaced by U+FFFD rather than raised: the decoder never fails, the provider
parsers above it decide whether what arrived makes sense.
"""

from __future__ import annotations

import codecs
import re

from rmcore.base import Base

__all__ = ["SseDecoder", "SseEvent"]

_LINE_END = re.compile(r"\r\n|\r|\n")


class SseEvent(Base, frozen=True):
    """One dispatched event: its type (``message`` when no ``event:`` field was given), its
    data (the ``data:`` lines joined with ``\\n``) and the last event id seen so far."""

    data: str
    event: str = "message"
    id: str | None = None


class SseDecoder:
    """Turns byte chunks, split anywhere, into the events they complete."""

    def __init__(self) -> None:
        # utf-8-sig drops one leading byte-order mark, and only at the start of the stream.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._pending: list[str] = []
        self._skip_lf = False
        self._event_type = ""
        self._data: list[str] = []
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Decode ``chunk`` and return the events whose terminating blank line it completed."""
        return self._take(self._decoder.decode(chunk))

    def close(self) -> list[SseEvent]:
        """Flush the decoder at the end of the stream.

        Returns the events completed by bytes still held back (only possible when the last chunk
        ended in an incomplete UTF-8 sequence, which decodes to U+FFFD). A trailing event without
        its blank line is discarded."""
        return self._take(self._decoder.decode(b"", final=True))

    def _take(self, text: str) -> list[SseEvent]:
        if not text:
            return []
        if self._skip_lf:
            # The previous chunk ended with \r: a \n opening this one belongs to the same line end.
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return []
        if not _LINE_END.search(text):
            self._pending.append(text)
            return []
        self._pending.append(text)
        buffer = "".join(self._pending)
        self._skip_lf = buffer.endswith("\r")
        *lines, rest = _LINE_END.split(buffer)
        self._pending = [rest] if rest else []
        events: list[SseEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "event":
            self._event_type = value
        elif field == "data":
            self._data.append(value)
        elif field == "id" and "\0" not in value:
            self._last_id = value
        # "retry" only concerns reconnecting clients; unknown fields are ignored by the standard.
        return None

    def _dispatch(self) -> SseEvent | None:
        event_type, self._event_type = self._event_type, ""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return SseEvent(event=event_type or "message", data=data, id=self._last_id)
