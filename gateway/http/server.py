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
  that holds no request in progress (one still sending its head or body, or idle between
  requests), which is answered 503 and closed; when every connection has a request in progress,
  the new one is answered 503. Slow clients cannot crowd out a client that sends whole requests.

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
        self._fields = 0
        self._done = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._complete = False
        """The current request's body has all arrived."""
        self._held: tuple[Any, Any] | None = None
        """(cycle, app) of a request whose application task waits for its body."""

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
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
        self._head_timer = self.loop.call_later(self._b.header_timeout_s, self._late, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._peer is not None:
            left = self.by_peer.get(self._peer, 1) - 1
            if left > 0:
                self.by_peer[self._peer] = left
            else:
                self.by_peer.pop(self._peer, None)
            self._peer = None
        self._cancel_timers()
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
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._b.header_timeout_s, self._late, "head")
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

    def on_message_begin(self) -> None:
        self._fields = 0
        self._complete = False
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self._b.max_header_line_bytes:
            self._stop(414, "url_too_long", self._too_large("The request line"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self._b.max_headers:
            self._stop(431, "headers_too_large", f"The request has more than {self._b.max_headers} header fields.")
        if len(name) + len(value) + 2 > self._b.max_header_line_bytes:
            self._stop(431, "headers_too_large", self._too_large("A header line"))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self._b.max_header_bytes:
            self._stop(431, "headers_too_large", self._too_large("The request's headers"))
        self._body_timer = self.loop.call_later(self._b.body_timeout_s, self._late, "body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._held is None:
            return super().on_body(body)
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
        self.waiting.pop(self, None)  # a whole request: not shed while it is answered
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()
        if self._held is not None:
            cycle, app = self._held
            self._held = None
            super()._start_asgi_task(cycle, app)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """A request's application task starts once its body is complete (a client waiting for
        `100 Continue` is let in at once: the application sends it)."""
        if cycle is self.cycle and not self._complete and not self.expect_100_continue:
            self._held = (cycle, app)
            return
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._done and not self.transport.is_closing():
            self.waiting[self] = None  # idle until its next request: the first to go at the cap

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

    def _late(self, part: str) -> None:
        if self._done:
            return
        if part == "head":
            self._head_timer = None
            if self._in_head:
                late = f"The request's headers did not arrive within {self._b.header_timeout_s:g} s."
                self._refuse(408, "request_timeout", late)
        else:
            self._body_timer = None
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
        self.refused[code] = self.refused.get(code, 0) + 1
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
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
