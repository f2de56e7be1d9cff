"""The HTTP/1.1 server's own bounds: what one client may hold of the gateway.

uvicorn's httptools protocol, with what it lacks for a server on the open internet:

- the request head (request line and headers) at most `max_header_bytes` in all, `max_headers`
  fields and `max_header_line_bytes` per line: past any of them, 431 (414 for the request line)
  and the connection closes. An unfinished head is judged as it arrives, so a 25 MB header line
  costs the gateway at most the bound plus one read (64-256 KB), never the line;
- `header_timeout_s`: a head must be complete this long after its first byte (or after the
  connection opened): 408 and close (slowloris);
- `body_timeout_s`: a body must be complete this long after its head: 408 and close. The
  application sees a request only once its body is complete (buffered here up to
  `max_body_bytes`; a larger one goes on to the application, which refuses it): a slow client
  holds a buffer, not a task of the application;
- `keep_alive_timeout_s`: an idle keep-alive connection is closed (uvicorn's own timer);
- `max_connections_per_client` per client address: one more is answered 429 at once and
  closed (the peers listed in `forwarded_allow_ips`, a load balancer, are not capped);
- `max_connections` per process: at the cap, a new connection takes the place of the oldest one
  that holds no request in progress (one still sending its head or body, or opened and silent),
  which is answered 503 and closed; when every connection has a request in progress, the new one
  is answered 503. Slow clients cannot crowd out a client that sends whole requests. (A
  keep-alive connection idle after an answer is left to `keep_alive_timeout_s`.)

Every refusal is an OpenAI-shaped JSON error with `Connection: close`. The bounds are read from
`GATEWAY_SERVER_BOUNDS` (JSON of `ServerSettings`), which `gateway serve` sets before uvicorn
starts its workers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import resource
from collections import OrderedDict
from typing import Any, ClassVar

import httptools
import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import ServerSettings

ENV = "GATEWAY_SERVER_BOUNDS"
FD_HEADROOM = 512
"""File descriptors kept free of client connections (upstreams, Redis, files)."""


def bounds_from_env() -> ServerSettings:
    raw = os.environ.get(ENV)
    return msgspec.json.decode(raw, type=ServerSettings) if raw else ServerSettings()


def connection_ceiling(wanted: int) -> int:
    """`max_connections`, lowered to what this process may open (the soft file limit is raised to
    the hard one first): accepting past it would fail with EMFILE for everyone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return max(1, min(wanted, soft - FD_HEADROOM))


def connection_counts() -> tuple[int, dict[str, int]]:
    """Client connections open in this process, and those refused by a bound, by reason."""
    return GuardedProtocol.open, dict(GuardedProtocol.refused)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request already answered."""


class GuardedProtocol(HttpToolsProtocol):
    bounds: ClassVar[ServerSettings | None] = None
    ceiling: ClassVar[int] = 0
    proxies: ClassVar[list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    by_peer: ClassVar[dict[str, int]] = {}
    """Open connections per client address, in this process."""
    refused: ClassVar[dict[str, int]] = {}
    """Connections and requests refused by a bound, by reason (for /metrics)."""
    open: ClassVar[int] = 0
    """Client connections open in this process."""
    _sweeping: ClassVar[asyncio.TimerHandle | None] = None
    clock: ClassVar[float] = 0.0
    """The event loop's time at the last sweep: what the timeouts are measured with (read once a
    sweep, not for every request; the timeouts are checked at the sweeps anyway)."""
    waiting: ClassVar[OrderedDict[GuardedProtocol, None]] = OrderedDict()
    """Connections with no request in progress, the longest-waiting first (shed first at the cap).
    Ordered: a plain dict's first key costs a scan past every key deleted before it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.bounds is None:
            cls.bounds = bounds_from_env()
            cls.ceiling = connection_ceiling(cls.bounds.max_connections)
            cls.proxies = [ipaddress.ip_network(p, strict=False) for p in cls.bounds.forwarded_allow_ips]
        self._b = cls.bounds
        self._peer: str | None = None
        self._in_head = True
        self._head_bytes = 0
        self._since: float | None = None
        """When the current head (or, once it is whole, body) began to arrive; None while idle."""
        self._done = False
        self._complete = False
        """The current request's body has all arrived."""
        self._held: tuple[Any, Any] | None = None
        """(cycle, app) of a request whose application task waits for its body."""

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        GuardedProtocol.open += 1
        peer = self.client[0] if self.client else ""
        if not self._trusted(peer):
            held = self.by_peer.get(peer, 0)
            if held >= self._b.max_connections_per_client:
                return self._refuse(
                    429, "too_many_connections", "This client holds all the connections it may; reuse them or retry shortly."
                )
            self.by_peer[peer] = held + 1
            self._peer = peer
        if len(self.connections) > self.ceiling:
            shed = next(iter(self.waiting), None)
            if shed is None:
                return self._refuse(503, "too_many_connections", "The gateway holds all the connections it may; retry shortly.")
            shed._refuse(503, "too_many_connections", "The gateway is at its connection limit and closed this idle connection.")
        self.waiting[self] = None
        if GuardedProtocol._sweeping is None:
            GuardedProtocol.clock = self.loop.time()
            GuardedProtocol._sweeping = self.loop.call_later(SWEEP_S, _sweep, self.loop)
        self._since = GuardedProtocol.clock  # a new connection has header_timeout_s to send its first head

    def connection_lost(self, exc: Exception | None) -> None:
        GuardedProtocol.open -= 1
        if self._peer is not None:
            left = self.by_peer.get(self._peer, 1) - 1
            if left > 0:
                self.by_peer[self._peer] = left
            else:
                self.by_peer.pop(self._peer, None)
            self._peer = None
        self.waiting.pop(self, None)
        super().connection_lost(exc)
        # Break the cycles through this protocol so that reference counting frees a closed
        # connection: thousands of them churning would otherwise wait for full collections.
        self.cycle = None  # type: ignore[assignment]
        self._held = None
        self.pipeline.clear()

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
            if self._since is None:  # a request begins on an idle connection
                self._since = GuardedProtocol.clock
                self.waiting[self] = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "upgrade_not_supported", "This gateway does not upgrade connections.")
            return
        except httptools.HttpParserError:
            if not self._done:  # not a bound of ours that stopped the parser: the request is not HTTP
                self._refuse(400, "invalid_http", "Invalid HTTP request received.")
            return
        if self._in_head and self._head_bytes > self._b.max_header_bytes:
            self._refuse(431, "headers_too_large", self._too_large("The request's headers"))

    # parser callbacks

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._complete = False
        self._since = GuardedProtocol.clock  # the body's clock
        b = self._b
        if len(self.headers) > b.max_headers:
            self._stop(431, "headers_too_large", f"The request has more than {b.max_headers} header fields.")
        # The bytes read since the head began hold it: below a line's bound, no line can be too
        # long. 0: a pipelined head that came in the chunk of the request before, not counted.
        if self._head_bytes > b.max_header_line_bytes or self._head_bytes == 0:
            self._check_lines()
        self._head_bytes = 0
        HttpToolsProtocol.on_headers_complete(self)

    def _check_lines(self) -> None:
        b = self._b
        if len(self.url) > b.max_header_line_bytes:
            self._stop(414, "url_too_long", self._too_large("The request line"))
        size = len(self.url)
        for name, value in self.headers:
            line = len(name) + len(value) + 4
            if line > b.max_header_line_bytes:
                self._stop(431, "headers_too_large", self._too_large("A header line"))
            size += line
        if size > b.max_header_bytes:
            self._stop(431, "headers_too_large", self._too_large("The request's headers"))

    def on_body(self, body: bytes) -> None:
        if self._held is None:
            return HttpToolsProtocol.on_body(self, body)
        cycle, app = self._held
        cycle.body += body  # no flow control: nothing reads it until it is whole, and it is bounded
        if len(cycle.body) > self._b.max_body_bytes:  # the application answers it (401 without a key, else 413)
            self._held = None
            super()._start_asgi_task(cycle, app)
            cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._complete = True
        self._since = None
        self.waiting.pop(self, None)  # a whole request: not shed, nor timed, while it is answered
        HttpToolsProtocol.on_message_complete(self)
        if self._held is not None:
            cycle, app = self._held
            self._held = None
            HttpToolsProtocol._start_asgi_task(self, cycle, app)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """A request's application task starts once its body is complete (a client waiting for
        `100 Continue` is let in at once: the application sends it)."""
        if cycle is self.cycle and not self._complete and not self.expect_100_continue:
            self._held = (cycle, app)
            return
        HttpToolsProtocol._start_asgi_task(self, cycle, app)

    # refusals

    def _trusted(self, peer: str) -> bool:
        if not self.proxies:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.proxies)

    def _too_large(self, what: str) -> str:
        b = self._b
        return (
            f"{what} are larger than this gateway accepts (at most {b.max_header_bytes} bytes of headers, "
            f"{b.max_header_line_bytes} per line)."
        )

    def _late(self, now: float) -> None:
        """The sweep's check: a head or a body that has taken too long."""
        if self._done or self._since is None:
            return
        if self._in_head:
            if now - self._since > self._b.header_timeout_s:
                late = f"The request's headers did not arrive within {self._b.header_timeout_s:g} s."
                self._refuse(408, "request_timeout", late)
        elif now - self._since > self._b.body_timeout_s:
            if self.cycle is not None and self.cycle.response_started:
                self._close()
            else:
                self._refuse(408, "request_timeout", f"The request's body did not arrive within {self._b.body_timeout_s:g} s.")

    def _stop(self, status: int, code: str, message: str) -> None:
        self._refuse(status, code, message)
        raise _Refused

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer `status` and close: the connection reads nothing more."""
        if self._done:
            return
        GuardedProtocol.refused[code] = GuardedProtocol.refused.get(code, 0) + 1
        kind = "rate_limit_error" if status == 429 else ("api_error" if status == 503 else "invalid_request_error")
        body = msgspec.json.encode({"error": {"message": message, "type": kind, "param": None, "code": code}})
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n"
        )
        if status in (429, 503):
            head += "retry-after: 1\r\n"
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head.encode() + b"\r\n" + body)
        self._close()

    def _close(self) -> None:
        self._done = True
        self.waiting.pop(self, None)
        if self.transport is not None:
            self.transport.close()


SWEEP_S = 0.5
"""How often the header and body timeouts are checked (one pass over the connections without a
request in progress, rather than two timers per request)."""


def _sweep(loop: asyncio.AbstractEventLoop) -> None:
    now = GuardedProtocol.clock = loop.time()
    for protocol in list(GuardedProtocol.waiting):
        protocol._late(now)
    GuardedProtocol._sweeping = loop.call_later(SWEEP_S, _sweep, loop)


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
