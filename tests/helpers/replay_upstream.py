"""An upstream that replays recorded answers byte for byte (tests/fixtures/wire/*.json): the status,
the headers, and the body as one piece or as the pieces a server writes one after another."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tests.helpers.spy_upstream import Seen, SpyUpstream, _chunk_raw, _Conn

WIRE = Path(__file__).resolve().parents[1] / "fixtures" / "wire"


@dataclass
class Recorded:
    status: int
    headers: dict[str, str]
    body: str | None = None
    pieces: list[str] | None = None
    """A streamed body: each piece written as it is, in its own chunk of the chunked encoding."""
    http10: bool = False
    """An HTTP/1.0 answer (Python's http.server): no chunked encoding; a body without a
    Content-Length header ends when the server closes the connection."""


def fixture(name: str) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((WIRE / f"{name}.json").read_text()))


@dataclass
class ReplayUpstream(SpyUpstream):
    exchanges: dict[str, Recorded] = field(default_factory=dict)
    current: str = ""
    """The exchange every request gets, until a test names another."""

    def _protocol(self) -> asyncio.Protocol:
        return _Replay(self)


class _Replay(_Conn):
    spy: ReplayUpstream

    async def answer(self, seen: Seen) -> None:
        recorded = self.spy.exchanges[self.spy.current]
        t = cast(asyncio.Transport, self.transport)
        version = "1.0" if recorded.http10 else "1.1"
        head = f"HTTP/{version} {recorded.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in recorded.headers.items())
        if recorded.http10:
            t.write(f"{head}\r\n".encode())
            for piece in recorded.pieces if recorded.pieces is not None else [recorded.body or ""]:
                t.write(piece.encode())
                await asyncio.sleep(0.001)
            t.close()
            return
        if recorded.pieces is None:
            body = (recorded.body or "").encode()
            t.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
            return
        t.write(f"{head}transfer-encoding: chunked\r\n\r\n".encode())
        for piece in recorded.pieces:
            t.write(_chunk_raw(piece.encode()))
            await asyncio.sleep(0.001)  # apart, as a server writes them
        t.write(b"0\r\n\r\n")
