"""The response cache in Redis: two gateway processes share it, and losing Redis loses no request.

Real parts throughout: a `redis-server` of the test's own, two `gateway serve` processes, a loopback
upstream, the official openai client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers.errors import assert_openai_error
from tests.helpers.fake_upstream import FakeUpstream
from tests.helpers.gateway import GatewayProcess
from tests.helpers.polling import wait_until
from tests.helpers.redis_ha import SharedRedis
from tests.helpers.redis_server import RedisServer

MODEL = "gpt-4o-mini"


def _shared(tmp_path: Path, url: str) -> Iterator[tuple[Path, FakeUpstream]]:
    upstream = FakeUpstream(name="shared-cache-upstream").start_in_thread()
    path = tmp_path / "gateway.yaml"
    path.write_text(f"""
reload: {{watch: false}}
redis: {{url: "{url}"}}
cache:
  enabled: true
  store: redis
  store_retry_s: 0.2
auth: {{enabled: false}}
pools:
  small:
    aliases: [{MODEL}]
    deployments: [{{id: up, base_url: "{upstream.base_url}"}}]
""")
    yield path, upstream
    upstream.stop()


@pytest.fixture
def shared(tmp_path: Path, shared_redis: SharedRedis) -> Iterator[tuple[Path, FakeUpstream]]:
    """A config on Redis of each kind (one server, a cluster, Sentinel)."""
    yield from _shared(tmp_path, shared_redis.url)


@pytest.fixture
def single(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Path, FakeUpstream]]:
    """A config on one `redis-server`, which the test may stop and start."""
    yield from _shared(tmp_path, redis_server.url)


def ask(gateway: GatewayProcess, text: str) -> httpx.Response:
    body = {"model": MODEL, "temperature": 0, "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)


def metric(gateway: GatewayProcess, name: str) -> float:
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


def test_two_gateways_share_one_cache(shared: tuple[Path, FakeUpstream]) -> None:
    path, upstream = shared
    one = GatewayProcess(path)
    try:
        stored = ask(one, "How do I reset my password?")
        assert stored.headers["x-gateway-cache"] == "miss"
        two = GatewayProcess(path)  # starts after the entry exists: builds its index from Redis
        try:
            before = upstream.requests
            exact = ask(two, "How do I reset my password?")
            assert exact.headers["x-gateway-cache"] == "hit-exact" and upstream.requests == before
            assert exact.json()["choices"] == stored.json()["choices"]
            client = openai.OpenAI(base_url=f"{two.url}/v1", api_key="unused", max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, temperature=0, messages=[{"role": "user", "content": "how do i reset my pasword"}]
            )
            assert raw.headers["x-gateway-cache"] == "hit-semantic" and upstream.requests == before
            assert raw.parse().choices[0].message.content == stored.json()["choices"][0]["message"]["content"]

            # Stored through the second while the first runs: the first hears of it from the feed.
            assert ask(two, "What is the boiling point of water at sea level?").headers["x-gateway-cache"] == "miss"
            before = upstream.requests
            wait_until(
                lambda: ask(one, "What's the boiling point of water at sea level?").headers["x-gateway-cache"] == "hit-semantic"
            )
            assert upstream.requests == before

            # A wrong hit reported to one gateway is gone for the other too, and so is that kind
            # of hit: the namespace's threshold, raised past the hit's score, is shared.
            key, score = raw.headers["x-gateway-cache-key"], float(raw.headers["x-gateway-cache-score"])
            reported = httpx.post(f"{one.admin_url}/admin/cache/feedback", json={"key": key, "score": score}).json()
            assert reported["removed"] is True and reported["threshold"] > score
            assert ask(two, "How do I reset my password?").headers["x-gateway-cache"] == "miss"  # gone; stored again
            wait_until(lambda: httpx.get(f"{one.admin_url}/admin/cache").json()["vectors"] >= 2)  # one has indexed it
            assert ask(one, "how do i reset my pasword").headers["x-gateway-cache"] == "miss"  # yet no hit
            stats = httpx.get(f"{two.admin_url}/admin/cache").json()
            assert stats["store"] == "redis" and stats["store_up"] is True and stats["entries"] >= 2
        finally:
            two.stop()
    finally:
        one.stop()


def test_requests_are_served_while_redis_is_down(single: tuple[Path, FakeUpstream], redis_server: RedisServer) -> None:
    path, upstream = single
    gateway = GatewayProcess(path)
    try:
        assert ask(gateway, "Name three primary colours.").headers["x-gateway-cache"] == "miss"
        redis_server.stop()
        before = upstream.requests
        answers = [ask(gateway, "Name three primary colours.") for _ in range(20)]
        assert [a.status_code for a in answers] == [200] * 20
        assert {a.headers["x-gateway-cache"] for a in answers} == {"bypass"}
        assert upstream.requests == before + 20  # every one was answered by the upstream
        assert metric(gateway, "gateway_cache_store_up") == 0
        assert metric(gateway, "gateway_cache_store_errors_total") >= 1
        assert gateway.logs().count("response cache bypassed") == 1  # one warning per outage, not per request
        stats = httpx.get(f"{gateway.admin_url}/admin/cache").json()
        assert stats["store_up"] is False and stats["entries"] is None
        flush = httpx.post(f"{gateway.admin_url}/admin/cache/flush", json={})
        assert_openai_error(flush, 503, "cache_store_unavailable")

        redis_server.start()  # back, empty
        wait_until(lambda: ask(gateway, "Name three primary colours.").headers["x-gateway-cache"] == "miss")
        assert ask(gateway, "Name three primary colours.").headers["x-gateway-cache"] == "hit-exact"
        assert metric(gateway, "gateway_cache_store_up") == 1
        assert redis_server.url not in gateway.logs()
    finally:
        gateway.stop()
