"""Graceful drain (gateway/http/drain.py), on a real `gateway serve` process and a slow real upstream:
SIGTERM turns readiness 503 at once while the listener still serves, then closes it; what is in
flight finishes; a stream still open at the drain deadline ends with an error event; exit 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.gateway import GatewayProcess
from tests.helpers.polling import wait_until

CHAT = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(Behavior(chunks=10, chunk_interval_s=0.2), name="slow").start_in_thread()  # a 2 s stream
    yield server
    server.stop()


def gateway(tmp_path: Path, upstream: FakeUpstream, delay_s: float, timeout_s: float) -> GatewayProcess:
    path = tmp_path / "drain.yaml"
    path.write_text(f"""
auth: {{enabled: false}}
server: {{drain_delay_s: {delay_s}, drain_timeout_s: {timeout_s}}}
pools:
  slow:
    deployments: [{{id: slow, base_url: "{upstream.base_url}"}}]
""")
    return GatewayProcess(path)


class Stream(threading.Thread):
    """One streamed request read to its end in a thread: its events, and how it ended."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.events, self.error = url, [], None  # type: tuple[str, list[str], Exception | None]
        self.started = threading.Event()

    def run(self) -> None:
        try:
            with httpx.stream("POST", f"{self.url}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        self.started.set()
        except Exception as exc:  # the test reads it
            self.error = exc
        self.started.set()


def test_sigterm_drains_readiness_first_then_the_listener_and_lets_streams_finish(tmp_path: Path, upstream: FakeUpstream) -> None:
    process = gateway(tmp_path, upstream, delay_s=1.5, timeout_s=10)
    streams = [Stream(process.url) for _ in range(4)]
    for s in streams:
        s.start()
    for s in streams:
        assert s.started.wait(10)
    sent = time.monotonic()
    process.proc.send_signal(signal.SIGTERM)
    wait_until(
        lambda: httpx.get(f"{process.url}/health/readiness", timeout=1).status_code == 503, timeout=1, what="readiness 503"
    )
    assert time.monotonic() - sent < 1.0
    answer = httpx.post(f"{process.url}/v1/chat/completions", json=CHAT, timeout=10)  # the listener still serves
    assert answer.status_code == 200
    wait_until(lambda: _refused(process.url), timeout=5, what="the listener to close")
    assert time.monotonic() - sent >= 1.4
    for s in streams:
        s.join(15)
        assert s.error is None and s.events[-1] == "[DONE]"
        assert not any("error" in json.loads(e) for e in s.events[:-1])  # whole answers, no error event
    assert process.proc.wait(15) == 0
    assert "draining: readiness is 503" in process.logs()


def test_a_stream_open_at_the_drain_deadline_ends_with_an_error_event_and_the_process_exits_0(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.behavior = Behavior(chunks=100, chunk_interval_s=0.2)  # 20 s: longer than the drain
    process = gateway(tmp_path, upstream, delay_s=0.2, timeout_s=1)
    stream = Stream(process.url)
    stream.start()
    assert stream.started.wait(10)
    process.proc.send_signal(signal.SIGTERM)
    stream.join(15)
    assert stream.error is None and stream.events[-1] == "[DONE]"
    error = json.loads(stream.events[-2])["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "api_error"
    assert len(stream.events) < 50  # ended by the drain, not by the upstream
    assert process.proc.wait(15) == 0


def test_sigint_skips_the_delay(tmp_path: Path, upstream: FakeUpstream) -> None:
    process = gateway(tmp_path, upstream, delay_s=30, timeout_s=5)
    sent = time.monotonic()
    process.proc.send_signal(signal.SIGINT)
    assert process.proc.wait(10) == 0
    assert time.monotonic() - sent < 5


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/health/liveness", timeout=0.5)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False
