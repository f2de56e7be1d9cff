"""Server-sent events: an incremental parser of `data` payloads, and the framing we write."""

from __future__ import annotations

DONE = b"[DONE]"


class SSEParser:
    """Feed it byte chunks as they arrive; it returns the `data` payload of each complete event.

    Follows the SSE spec where it matters here: CR, LF and CRLF line ends; several `data:`
    lines joined by LF; comments, `event:`, `id:` and `retry:` lines ignored.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        events: list[bytes] = []
        buffer = self._buffer + chunk
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # may be the first half of a CRLF: keep it for the next chunk
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, rest = buffer.split(b"\n")
        self._buffer = rest + held
        for line in lines:
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        return events


def frame(payload: bytes) -> bytes:
    """One SSE event carrying `payload` as its data."""
    return b"data: " + payload + b"\n\n"


DONE_FRAME = frame(DONE)
