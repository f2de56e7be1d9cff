"""What one client may hold of the gateway: a real `gateway serve` with tight bounds, and raw
sockets that do what a hostile client does (huge or endless heads, trickled bodies, idle and
hoarded connections), from several loopback addresses (127.0.0.x) so that per-client caps can be
told apart."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.gateway import GatewayProcess
from tests.helpers.polling import wait_until

CONFIG = """
reload: {watch: false}
auth: {enabled: false}
server:
  max_header_bytes: 16384
  max_headers: 50
  max_header_line_bytes: 4096
  header_timeout_s: 1
  body_timeout_s: 1
  keep_alive_timeout_s: 1
  max_connections: 24
  max_connections_per_client: 5
pools:
  echo:
    deployments: [{id: echo-dep, backend: echo}]
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    path = tmp_path_factory.mktemp("bounds") / "gateway.yaml"
    path.write_text(CONFIG)
    process = GatewayProcess(path)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The same bounds with patient timeouts: held connections stay until the test lets them go."""
    path = tmp_path_factory.mktemp("capped") / "gateway.yaml"
    path.write_text(CONFIG.replace("header_timeout_s: 1", "header_timeout_s: 60"))
    process = GatewayProcess(path)
    yield process
    process.stop()


def connect(gateway: GatewayProcess, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10, source_address=(source, 0))
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, object], bytes]:
    """The status and JSON error of the gateway's reply, read until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body).get("error", {}) if body.startswith(b"{") else {}, head.lower()


def test_a_header_block_past_the_bound_is_431_and_closed(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /health/liveness HTTP/1.1\r\nhost: x\r\n")
        for i in range(6):
            sock.sendall(b"x-pad-%d: %s\r\n" % (i, b"a" * 3000))
        sock.sendall(b"\r\n")
        status, error, head = answer(sock)
    assert status == 431 and error["code"] == "headers_too_large" and b"connection: close" in head


def test_an_unfinished_header_line_is_refused_before_it_ends(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /health/liveness HTTP/1.1\r\nx-endless: " + b"a" * 20_000)  # no end in sight
        status, error, _ = answer(sock)
    assert status == 431 and error["code"] == "headers_too_large"


def test_too_many_header_fields_and_a_long_request_line_are_refused(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /health/liveness HTTP/1.1\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(60)) + b"\r\n")
        assert answer(sock)[0] == 431
    with connect(gateway) as sock:
        sock.sendall(b"GET /health/liveness?" + b"q" * 5000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        status, error, _ = answer(sock)
    assert status == 414 and error["code"] == "url_too_long"


def test_a_trickled_head_a_trickled_body_and_a_silent_connection_time_out(gateway: GatewayProcess) -> None:
    began = time.monotonic()
    with connect(gateway) as silent, connect(gateway) as trickled, connect(gateway) as body:
        trickled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        body.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"
        )
        for sock in (silent, trickled, body):
            status, error, _ = answer(sock)
            assert status == 408 and error["code"] == "request_timeout"
    assert time.monotonic() - began < 8  # the bounds are 1 s; nothing waited for the client


def test_an_idle_keep_alive_connection_is_closed(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /health/liveness HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while not data.endswith(b'"ok"}'):
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200")
        assert sock.recv(65536) == b""  # closed by the server after keep_alive_timeout_s


def test_connections_are_capped_per_client_and_in_all(capped: GatewayProcess) -> None:
    gateway = capped
    held = [connect(gateway, "127.0.0.2") for _ in range(5)]
    try:
        with connect(gateway, "127.0.0.2") as extra:
            status, error, head = answer(extra)
        assert status == 429 and error["code"] == "too_many_connections" and b"retry-after: 1" in head
        # another client is not held back by the first one's connections
        other = httpx.get(f"{gateway.url}/health/liveness", headers={"connection": "close"})
        assert other.status_code == 200
        for source in ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"):
            held += [connect(gateway, source) for _ in range(5)]
        time.sleep(0.2)  # let the server accept them all: 25 of 24, the oldest idle one was shed
        # at the cap, a client that sends a whole request takes the place of the oldest idle connection
        with connect(gateway, "127.0.0.7") as newcomer:
            newcomer.sendall(b"GET /health/liveness HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            assert answer(newcomer)[0] == 200
        status, error, _ = answer(held[0])
        assert status == 503 and error["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()

    def healthy() -> bool:  # once they are gone, the same client is welcome again
        with connect(gateway, "127.0.0.2") as sock:
            sock.sendall(b"GET /health/liveness HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            return answer(sock)[0] == 200

    wait_until(healthy, what="the connections to be released")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_forty_endless_header_lines_do_not_grow_the_gateway(gateway: GatewayProcess) -> None:
    before = rss_kb(gateway.proc.pid)
    refused = 0
    for n in range(40):
        with connect(gateway, f"127.0.1.{n + 1}") as sock:
            sock.sendall(b"GET /health/liveness HTTP/1.1\r\nx-endless: ")
            try:
                for _ in range(25):  # up to 25 MB of one header line, while the gateway listens
                    sock.sendall(b"a" * (1 << 20))
            except OSError:
                refused += 1  # closed by the gateway long before the line ended
    assert refused == 40
    assert httpx.get(f"{gateway.url}/health/liveness").status_code == 200
    assert rss_kb(gateway.proc.pid) - before < 20 * 1024  # not 40 x 25 MB: at most the bound and a read each


def test_refusals_and_open_connections_are_in_the_metrics(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /health/liveness HTTP/1.1\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(60)) + b"\r\n")
        assert answer(sock)[0] == 431
    with connect(gateway, "127.0.0.9") as held:
        text = httpx.get(f"{gateway.url}/metrics").text
        assert 'gateway_connections_refused_total{reason="headers_too_large"}' in text
        open_now = next(line for line in text.splitlines() if line.startswith("gateway_connections_open "))
        assert float(open_now.split()[1]) >= 2  # this scrape's own connection and the one held
        held.sendall(b"GET /health/liveness HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert answer(held)[0] == 200


def test_a_pipelined_request_is_held_to_the_same_bounds(gateway: GatewayProcess) -> None:
    with connect(gateway) as sock:
        first = b"GET /health/liveness HTTP/1.1\r\nhost: x\r\n\r\n"
        second = b"GET /health/liveness HTTP/1.1\r\nhost: x\r\nx-long: " + b"a" * 6000 + b"\r\n\r\n"
        sock.sendall(first + second)  # one chunk: the second head arrives with the first request
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert b"HTTP/1.1 431" in data  # refused, and the connection closed (the first answer may not have been sent yet)
