"""The event-stream decoder follows the WHATWG rules, whatever the chunk boundaries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore.wire.sse import SseDecoder, SseEvent
from tests.core.helpers import split


def decode(*chunks: bytes) -> list[SseEvent]:
    decoder = SseDecoder()
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events


def test_data_lines_dispatch_on_a_blank_line_with_the_default_type() -> None:
    """A data line followed by a blank line is one ``message`` event."""
    assert decode(b"data: hello\n\n") == [SseEvent(data="hello")]


def test_event_names_the_type_and_resets_after_dispatch() -> None:
    """``event:`` names the next event only; the one after is ``message`` again."""
    events = decode(b"event: ping\ndata: {}\n\ndata: x\n\n")
    assert [(e.event, e.data) for e in events] == [("ping", "{}"), ("message", "x")]


def test_multiple_data_lines_are_joined_with_newlines() -> None:
    """Several data lines of one event are joined with newlines."""
    assert decode(b"data: a\ndata:b\ndata:  c\n\n") == [SseEvent(data="a\nb\n c")]


def test_only_one_space_after_the_colon_is_dropped() -> None:
    """One space after the colon is dropped, and only one."""
    assert decode(b"data:   x\n\n")[0].data == "  x"


def test_comments_are_ignored() -> None:
    """Lines starting with a colon are comments and dispatch nothing."""
    assert decode(b": keep-alive\n\n: OPENROUTER PROCESSING\ndata: 1\n\n") == [SseEvent(data="1")]


def test_cr_crlf_and_lf_all_end_lines() -> None:
    """CR, CRLF and LF all end lines, even mixed in one stream."""
    expected = [SseEvent(event="e", data="a\nb")]
    assert decode(b"event: e\rdata: a\rdata: b\r\r") == expected
    assert decode(b"event: e\r\ndata: a\r\ndata: b\r\n\r\n") == expected
    assert decode(b"event: e\ndata: a\r\ndata: b\r\r\n") == expected


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    """A CRLF split between two chunks is one line end, not two."""
    assert decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [SseEvent(data="a\nb")]


def test_a_blank_line_without_data_dispatches_nothing_and_forgets_the_event_name() -> None:
    """A blank line after an event name without data dispatches nothing and forgets the name."""
    assert decode(b"event: error\n\ndata: x\n\n") == [SseEvent(data="x")]


def test_an_empty_data_field_still_dispatches_an_empty_event() -> None:
    """``data`` with or without a colon but no value dispatches an event with empty data."""
    assert decode(b"data\n\n") == [SseEvent(data="")]
    assert decode(b"data:\n\n") == [SseEvent(data="")]


def test_id_is_remembered_and_unknown_fields_ignored() -> None:
    """The last ``id`` is carried by the events after it; ``retry`` and unknown fields are ignored."""
    events = decode(b"id: 7\nretry: 10\nfoo: bar\ndata: a\n\ndata: b\n\n")
    assert [(e.id, e.data) for e in events] == [("7", "a"), ("7", "b")]


def test_an_event_without_its_blank_line_is_discarded_at_the_end() -> None:
    """An event not closed by a blank line when the stream ends is discarded."""
    assert decode(b"data: a\n\ndata: [DONE]\n") == [SseEvent(data="a")]
    assert decode(b"data: a\n\ndata: [DONE]") == [SseEvent(data="a")]


def test_a_leading_byte_order_mark_is_dropped_once() -> None:
    """One byte-order mark at the very start is dropped, even split across chunks; a later one is data."""
    assert decode(b"\xef\xbb\xbfdata: a\n\n") == [SseEvent(data="a")]
    assert decode(b"\xef\xbb", b"\xbfdata: \xef\xbb\xbf\n\n") == [SseEvent(data="\ufeff")]


def test_multibyte_characters_split_across_chunks_decode_whole() -> None:
    """Characters split byte by byte across chunks decode whole."""
    data = "data: héllo 中文 🎉\n\n".encode()
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert decode(*chunks) == [SseEvent(data="héllo 中文 🎉")]


def test_invalid_utf8_becomes_replacement_characters() -> None:
    """Invalid UTF-8 becomes U+FFFD instead of raising."""
    assert decode(b"data: \xff\xfe ok\n\n") == [SseEvent(data="\ufffd\ufffd ok")]


STREAM = (
    ": comment\r\n"
    'event: message_start\r\ndata: {"a": "é"}\r\n\r\n'
    "data: 中文\ndata: 🎉 two\n\n"
    "id: 42\revent: x\rdata: last\r\r"
    "data: tail without end\n"
).encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_events_are_the_same_whatever_the_chunk_boundaries(cuts: list[int]) -> None:
    """The events decoded are the same however the stream is split."""
    assert decode(*split(STREAM, cuts)) == decode(STREAM)
    assert [e.data for e in decode(STREAM)] == ['{"a": "é"}', "中文\n🎉 two", "last"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    """Any bytes decode to events with text data, never an exception."""
    for event in decode(*chunks):
        assert isinstance(event.data, str)
