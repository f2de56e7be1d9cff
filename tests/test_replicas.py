"""Three gateway processes sharing one Redis behind a real HAProxy (Debian's `haproxy`; skipped with
a clear message where it is not installed), checking the replicas' readiness. Under steady load
from the official `openai` client, streams and not, one replica gets SIGTERM (it drains: nothing
fails) and another SIGKILL (only what was in flight on it fails, each with a clean error); through
it all a key's budget is charged once per answer, another key's rpm holds to the request, and a
cached answer is a hit on whichever replica serves it."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from gateway.access.control import DEFAULT_MAX_OUTPUT_TOKENS
from gateway.access.keys import hash_key
from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.gateway import GatewayProcess
from tests.helpers.haproxy import HAProxy, need_haproxy
from tests.helpers.polling import wait_until
from tests.helpers.redis_server import RedisServer

pytestmark = pytest.mark.slow
OPEN, LIMITED = "sk-gw-replicas-open-0123456789", "sk-gw-replicas-limited-0123456789"


@dataclass
class Cluster:
    url: str
    replicas: list[GatewayProcess]
    haproxy: HAProxy


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    need_haproxy()
    upstream = FakeUpstream(Behavior(chunks=5, chunk_interval_s=0.03), name="model").start_in_thread()
    config = tmp_path / "replica.yaml"
    config.write_text(f"""
auth:
  enabled: true
  keys:
    - {{alias: open, key_hash: "{hash_key(OPEN)}", budget: {{day: 100000}}}}
    - {{alias: limited, key_hash: "{hash_key(LIMITED)}", rpm: 40}}
redis: {{url: "{redis_server.url}"}}
cache: {{enabled: true, store: redis, semantic: false}}
server: {{drain_delay_s: 1.0, drain_timeout_s: 10}}
pools:
  chat:
    aliases: [gpt-4o-mini]
    deployments: [{{id: model, base_url: "{upstream.base_url}", price: {{input_per_1m: 1000, output_per_1m: 1000}}}}]
""")
    replicas = [GatewayProcess(config) for _ in range(3)]
    proxy = HAProxy(tmp_path, [f"127.0.0.1:{r.port}" for r in replicas], check="/health/readiness")
    url = proxy.url
    wait_until(lambda: _up(url), timeout=10, what="haproxy")
    yield Cluster(url, replicas, proxy)
    proxy.stop()
    for r in replicas:
        if r.proc.poll() is None:
            r.stop()
    upstream.stop()


@dataclass
class Load:
    """`workers` threads sending requests (every other one streamed) until stopped."""

    url: str
    workers: int = 6
    outcomes: list[tuple[float, float, str, str]] = field(default_factory=list)  # start, end, "ok" or the error, kind
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(self.workers)]
        for t in threads:
            t.start()
        return threads

    def _worker(self, i: int) -> None:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=OPEN, max_retries=0, timeout=15, default_headers=UNCACHED)
        n = 0
        while not self._stop.is_set():
            n += 1
            start = time.monotonic()
            try:
                if (i + n) % 2:
                    chunks = list(
                        client.chat.completions.create(
                            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
                        )
                    )
                    assert any(c.choices and c.choices[0].finish_reason for c in chunks), "a stream without its end"
                else:
                    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
                outcome = "ok"
            except Exception as exc:  # the test counts them
                outcome = f"{type(exc).__name__}: {exc}"[:200]
            self.outcomes.append((start, time.monotonic(), outcome, "stream" if (i + n) % 2 else "plain"))

    def stop(self, threads: list[threading.Thread]) -> None:
        self._stop.set()
        for t in threads:
            t.join(30)
            assert not t.is_alive(), "a request hung"


def test_sigterm_costs_nothing_and_sigkill_only_what_was_in_flight(cluster: Cluster) -> None:
    drained, killed, survivor = cluster.replicas
    costs = _costs(cluster.url, survivor)  # what one answer of each kind adds to the key's spend
    spent_before = _spent(survivor, "open")
    load = Load(cluster.url)
    side = Sidelines(cluster.url)
    threads = [*load.run(), *side.run()]
    time.sleep(1.5)
    term_at = time.monotonic()
    drained.proc.send_signal(signal.SIGTERM)
    time.sleep(2.5)  # the drain: readiness 503, the balancer turns away, the listener closes
    kill_at = time.monotonic()
    killed.proc.kill()
    time.sleep(2.0)
    load.stop(threads[: load.workers])
    side.stop(threads[load.workers :])
    assert drained.proc.wait(15) == 0
    before_kill = [o for o in load.outcomes if o[1] < kill_at]
    after_kill = [o for o in load.outcomes if o[0] > kill_at + 0.5]  # started after HAProxy saw it gone
    failed = [o for o in load.outcomes if o[2] != "ok"]
    assert len(before_kill) > 50 and len(after_kill) > 20, (len(before_kill), len(after_kill))
    assert [o for o in before_kill if o[2] != "ok"] == []  # SIGTERM: zero failed requests
    assert [o for o in after_kill if o[2] != "ok"] == []
    # SIGKILL: only requests on that replica failed, each with an error: those in flight at the kill,
    # and any HAProxy sent down a kept-alive connection to it before its next health check.
    assert all(o[0] <= kill_at + 0.5 and kill_at <= o[1] <= kill_at + 0.5 for o in failed), failed
    assert len(failed) <= 2 * load.workers, failed
    assert sum(o[0] > term_at for o in before_kill) > 20  # the load went on through the drain

    # Budgets, limits and the cache held throughout. Each answer was charged once, whichever
    # replica served it; a request cut by the SIGKILL at most its reservation.
    answered = sum(costs[o[3]] for o in load.outcomes if o[2] == "ok")
    wait_until(lambda: _spent(survivor, "open") - spent_before >= answered - 1e-6, what="the settlements")
    spent = _spent(survivor, "open") - spent_before
    cut = len(failed) + side.cached.count("failed")  # the cached requests are the `open` key's too
    assert side.cached.count("failed") <= 3, side.cached  # one at a time, around the kill
    assert answered - 1e-6 <= spent <= answered + cut * RESERVED_AT_MOST
    lost = side.limited.count("failed")
    assert side.limited.count(200) <= 40 <= side.limited.count(200) + lost, side.limited  # rpm 40, to the request
    assert 20 - lost <= side.limited.count(429) <= 20
    served = [c for c in side.cached if c != "failed"]
    assert served[0] == "miss" and set(served[1:]) == {"hit-exact"}, side.cached


RESERVED_AT_MOST = (200 + DEFAULT_MAX_OUTPUT_TOKENS) * 0.001
"""The most a request of the load may reserve, at $0.001 a token: its prompt's estimate (under 200
tokens) and, as it sets no max_tokens, the default output cap. A replica killed holding it never
settles it."""


@dataclass
class Sidelines:
    """Beside the load, through the same HAProxy: 60 requests of the `limited` key (rpm 40), one
    every 0.1 s, and a cacheable request every 0.2 s."""

    url: str
    limited: list[int | str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)  # x-gateway-cache of each answer, or "failed"
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._limited, daemon=True), threading.Thread(target=self._cached, daemon=True)]
        for t in threads:
            t.start()
        return threads

    def _limited(self) -> None:
        for _ in range(60):
            try:
                answer = httpx.post(
                    f"{self.url}/v1/chat/completions", json=CHAT, headers={**_auth(LIMITED), **UNCACHED}, timeout=15
                )
                self.limited.append(answer.status_code)
            except httpx.HTTPError:
                self.limited.append("failed")
            time.sleep(0.1)

    def _cached(self) -> None:
        body = {**CHAT, "temperature": 0, "messages": [{"role": "user", "content": "cached through the chaos"}]}
        while not self._stop.is_set():
            try:
                answer = httpx.post(f"{self.url}/v1/chat/completions", json=body, headers=_auth(OPEN), timeout=15)
                self.cached.append(answer.headers["x-gateway-cache"] if answer.status_code == 200 else "failed")
            except httpx.HTTPError:
                self.cached.append("failed")  # in flight on the replica killed, holding its reservation
            time.sleep(0.2)

    def stop(self, threads: list[threading.Thread]) -> None:
        self._stop.set()
        for t in threads:
            t.join(30)
            assert not t.is_alive(), "a request hung"


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
UNCACHED = {"cache-control": "no-store"}  # every answer of the load comes from the upstream, and is charged


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _spent(replica: GatewayProcess, alias: str) -> float:
    return float(httpx.get(f"{replica.admin_url}/admin/keys/cfg:{alias}", timeout=5).json()["spent"]["day"])


def _costs(url: str, replica: GatewayProcess) -> dict[str, float]:
    """What one answer adds to the `open` key's spend, streamed and not (the load's two kinds)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=OPEN, max_retries=0, timeout=15, default_headers=UNCACHED)
    found = {}
    for kind in ("plain", "stream"):
        before = _spent(replica, "open")
        if kind == "stream":
            list(client.chat.completions.create(model="gpt-4o-mini", messages=CHAT["messages"], stream=True))  # type: ignore[arg-type]
        else:
            client.chat.completions.create(model="gpt-4o-mini", messages=CHAT["messages"])  # type: ignore[arg-type]
        wait_until(lambda before=before: _spent(replica, "open") > before, what="the settlement")
        time.sleep(0.2)
        found[kind] = _spent(replica, "open") - before
    return found


def test_a_rate_limit_and_the_cache_hold_exactly_across_the_replicas(cluster: Cluster) -> None:
    """Round robin spreads the requests over the three; the limit and the cache live in Redis."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count me"}]}

    def send(_: int) -> int:
        return httpx.post(f"{cluster.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {LIMITED}"},
                          timeout=15).status_code  # fmt: skip

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(send, range(60)))
    assert (statuses.count(200), statuses.count(429)) == (40, 20)  # rpm: 40, whichever replica counted
    cached = {**body, "temperature": 0, "messages": [{"role": "user", "content": "cache me across replicas"}]}
    headers = {"authorization": f"Bearer {OPEN}"}
    outcomes = []
    for _ in range(6):
        answer = httpx.post(f"{cluster.url}/v1/chat/completions", json=cached, headers=headers, timeout=15)
        outcomes.append(answer.headers["x-gateway-cache"])
    assert outcomes[0] == "miss" and outcomes[1:] == ["hit-exact"] * 5  # served by each replica in turn


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/readiness", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
