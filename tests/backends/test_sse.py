from __future__ import annotations

from backends.sse import SSEParser


def feed_all(chunks: list[bytes]) -> list[bytes]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_events_split_anywhere() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    for size in range(1, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert feed_all(chunks) == [b'{"a":1}', b'{"b":2}', b"[DONE]"]


def test_crlf_multiline_comments_and_fields() -> None:
    stream = b": keep-alive\r\nevent: message\r\nid: 7\r\ndata: line1\r\ndata:line2\r\n\r\ndata: x\r\rdata: y\n\n"
    for size in (1, 2, 3, 100):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert feed_all(chunks) == [b"line1\nline2", b"x", b"y"]


def test_incomplete_event_is_held_back() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: partial") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [b"partial"]
