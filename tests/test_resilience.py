"""Fault injection against the high-availability example config, with real loopback upstreams:
replicas A and B in pool `chat`, falling back to pool `chat-fallback`. Breaker cooldown is 1 s."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers.errors import assert_openai_error
from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.gateway import ROOT, GatewayProcess
from tests.helpers.polling import wait_until
from tests.helpers.redis_ha import SharedRedis

EXAMPLE = ROOT / "config" / "examples" / "high-availability.yaml"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
COOLDOWN_S = 1.0


@dataclass
class HA:
    gateway: GatewayProcess
    a: FakeUpstream
    b: FakeUpstream
    fallback: FakeUpstream

    def chat(self, timeout: float = 10, **extra: object) -> httpx.Response:
        return httpx.post(f"{self.gateway.url}/v1/chat/completions", json={**CHAT, **extra}, timeout=timeout)

    def breakers(self) -> dict[str, dict[str, object]]:
        rows = httpx.get(f"{self.gateway.admin_url}/admin/breakers").json()["data"]
        return {row["deployment"]: row for row in rows}

    def blast(self, n: int, concurrency: int = 16, **extra: object) -> list[httpx.Response]:
        """`n` requests, `concurrency` at a time."""

        async def go() -> list[httpx.Response]:
            limit = asyncio.Semaphore(concurrency)
            async with httpx.AsyncClient(base_url=self.gateway.url, timeout=30) as client:

                async def one() -> httpx.Response:
                    async with limit:
                        return await client.post("/v1/chat/completions", json={**CHAT, **extra})

                return await asyncio.gather(*(one() for _ in range(n)))

        return asyncio.run(go())


def upstreams() -> list[FakeUpstream]:
    return [FakeUpstream(name=n).start_in_thread() for n in ("a", "b", "fallback")]


def ha_gateway(
    tmp_path: Path, ups: list[FakeUpstream], name: str = "ha", strategy: str = "peak_ewma", **env: str
) -> GatewayProcess:
    """A gateway on a copy of the example (plus `redis.url` when REDIS_URL is given)."""
    config = tmp_path / f"{name}.yaml"
    text = re.sub(r"(?m)^auth:\n(?:  .*\n)+", "auth: {enabled: false}\n", EXAMPLE.read_text())  # keys are not under test here
    text = text.replace("strategy: peak_ewma", f"strategy: {strategy}")
    config.write_text(text + ("redis:\n  url: ${REDIS_URL}\n" if "REDIS_URL" in env else ""))
    base = {
        "UPSTREAM_A_BASE_URL": ups[0].base_url,
        "UPSTREAM_B_BASE_URL": ups[1].base_url,
        "UPSTREAM_FALLBACK_BASE_URL": ups[2].base_url,
        "BREAKER_COOLDOWN_S": str(COOLDOWN_S),
    }
    return GatewayProcess(config, {**base, **env})


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[HA]:
    yield from _ha(tmp_path, COOLDOWN_S)


@pytest.fixture
def ha_held(tmp_path: Path) -> Iterator[HA]:
    """Breakers that stay open for the whole test: a 1 s cooldown can pass on a busy machine."""
    yield from _ha(tmp_path, 30.0)


def _ha(tmp_path: Path, cooldown_s: float) -> Iterator[HA]:
    ups = upstreams()
    setup = HA(ha_gateway(tmp_path, ups, BREAKER_COOLDOWN_S=str(cooldown_s)), *ups)
    yield setup
    setup.gateway.stop()
    for up in ups:
        up.stop()


def test_one_replica_hard_down_costs_clients_nothing(ha: HA) -> None:
    ha.a.kill()  # connection refused from now on
    responses = ha.blast(1000)
    assert [r.status_code for r in responses].count(200) == 1000
    assert {r.headers["x-gateway-model"] for r in responses} <= {"replica-b", "fallback"}
    assert ha.breakers()["replica-a"]["state"] in ("open", "half_open")
    assert ha.breakers()["replica-a"]["times_opened"] >= 1


def test_a_failing_replica_is_cut_off_within_ten_failures_and_then_only_probed(ha: HA) -> None:
    ha.a.behavior = Behavior(mode="status", status=503)
    responses = ha.blast(1000, concurrency=4)
    assert all(r.status_code == 200 for r in responses)
    reopened = int(ha.breakers()["replica-a"]["times_opened"]) - 1  # type: ignore[call-overload]
    # Once open, A gets only probes: one per cooldown (half_open_probes: 1), each failing and
    # reopening the breaker for another cooldown. So: at most 10 failures, then one per reopening.
    assert ha.a.requests <= 10 + reopened, (ha.a.requests, reopened)


def test_a_replica_that_dies_after_a_good_run_is_ejected_after_five_failed_attempts(tmp_path: Path) -> None:
    """100 successes fill its window, so the failure ratio alone would need as many failures again;
    five in a row (breaker.consecutive_failures) open it at once. Round robin, so that A keeps its
    share until then; one request at a time, so that none is on its way to A when the fifth fails."""
    ups = upstreams()
    gateway = ha_gateway(tmp_path, ups, strategy="weighted_round_robin", BREAKER_COOLDOWN_S="60")
    ha = HA(gateway, *ups)
    try:
        assert all(r.status_code == 200 for r in ha.blast(200))
        ha.a.kill()
        responses = ha.blast(200, concurrency=1)
        assert [r.status_code for r in responses].count(200) == 200
        assert gateway.logs().count("failed on replica-a") == 5
        assert ha.breakers()["replica-a"]["state"] == "open"
        assert sum(r.headers["x-gateway-model"] == "replica-b" for r in responses) == 200
    finally:
        gateway.stop()
        for up in ups:
            up.stop()


def test_thirty_percent_errors_are_retried_away(ha: HA) -> None:
    ha.a.behavior = Behavior(error_ratio=0.3, status=500)
    ha.b.behavior = Behavior(error_ratio=0.3, status=502)
    responses = ha.blast(1000)
    ok = sum(r.status_code == 200 for r in responses)
    assert ok / len(responses) >= 0.999
    assert any(r.headers["x-gateway-attempts"] != "1" for r in responses)  # some did need a retry


def test_a_recovered_replica_gets_traffic_again_within_a_cooldown(ha: HA) -> None:
    ha.a.kill()
    ha.blast(50)
    assert int(ha.breakers()["replica-a"]["times_opened"]) >= 1  # type: ignore[call-overload]
    assert float(ha.breakers()["replica-a"]["open_for_s"]) <= COOLDOWN_S  # type: ignore[arg-type]
    ha.a.revive()
    wait_until(lambda: ha.breakers()["replica-a"]["state"] == "half_open", timeout=3 * COOLDOWN_S)
    answers = [r.headers["x-gateway-model"] for r in ha.blast(8, concurrency=1)]
    assert answers[0] == "replica-a"  # the first request after the cooldown is the probe, and it passes
    assert ha.breakers()["replica-a"]["state"] == "closed"
    # Each change of state is one line in the log, and each failed attempt a warning naming it.
    logs = ha.gateway.logs()
    assert "WARNING gateway.breakers: circuit breaker of replica-a opened for 1.0 s" in logs
    assert "INFO gateway.breakers: circuit breaker of replica-a is half-open" in logs
    assert "INFO gateway.breakers: circuit breaker of replica-a closed" in logs
    assert "WARNING gateway.upstreams: attempt 1 (pool chat) failed on replica-a: 502 upstream_unavailable" in logs


def test_everything_down_is_503_with_retry_after_without_waiting(ha_held: HA) -> None:
    ha = ha_held
    for up in (ha.a, ha.b, ha.fallback):
        up.kill()
    ha.blast(30)  # opens every breaker
    assert {row["state"] for row in ha.breakers().values()} == {"open"}
    response = ha.chat()
    assert_openai_error(response, 503, "no_healthy_deployment")
    assert 1 <= int(response.headers["retry-after"]) <= 31
    assert response.headers["x-gateway-attempts"] == "0"
    metrics = httpx.get(f"{ha.gateway.url}/metrics").text
    assert 'gateway_breaker_state{deployment="replica-a",pool="chat"} 2.0' in metrics


def test_fallback_headers_say_what_happened(ha: HA) -> None:
    ha.a.behavior = ha.b.behavior = Behavior(mode="status", status=500)
    response = ha.chat()
    assert response.status_code == 200
    assert response.headers["x-gateway-model"] == "fallback"
    assert response.headers["x-gateway-attempts"] == "4"  # three in `chat`, one in `chat-fallback`
    assert response.headers["x-gateway-fallbacks"] == "1"


def test_a_client_error_is_not_retried_or_failed_over(ha: HA) -> None:
    ha.a.behavior = ha.b.behavior = Behavior(mode="status", status=400)
    response = ha.chat()
    assert response.status_code == 400
    assert ha.a.requests + ha.b.requests == 1 and ha.fallback.requests == 0
    assert response.headers["x-gateway-attempts"] == "1"


def test_429_with_retry_after_opens_the_breaker_until_then(ha: HA) -> None:
    ha.a.behavior = ha.b.behavior = Behavior(mode="status", status=429, retry_after="30")
    response = ha.chat()
    assert response.headers["x-gateway-model"] == "fallback"  # 30 s is past retry_after_max_s: no wait
    rows = ha.breakers()
    assert rows["replica-a"]["state"] == rows["replica-b"]["state"] == "open"
    assert 25 < float(rows["replica-a"]["open_for_s"]) <= 30  # type: ignore[arg-type]
    before = ha.a.requests + ha.b.requests
    ha.blast(20)
    assert ha.a.requests + ha.b.requests == before


def test_context_window_exceeded_goes_to_the_context_fallback(tmp_path: Path) -> None:
    long_ctx = FakeUpstream(name="long").start_in_thread()
    short = FakeUpstream(Behavior(mode="status", status=400), name="short").start_in_thread()
    path = tmp_path / "ctx.yaml"
    path.write_text(f"""
auth: {{enabled: false}}
pools:
  small-ctx:
    context_fallbacks: [long-ctx]
    deployments: [{{id: short, base_url: "{short.base_url}"}}]
  long-ctx:
    deployments: [{{id: long, base_url: "{long_ctx.base_url}"}}]
""")
    gateway = GatewayProcess(path)
    try:
        url = f"{gateway.url}/v1/chat/completions"
        body = {**CHAT, "model": "small-ctx"}
        assert httpx.post(url, json=body).status_code == 400  # a plain 400 stays a 400
        short.behavior = Behavior(mode="status", status=400, error_message="This model's maximum context length is 8192 tokens.")
        response = httpx.post(url, json=body)
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-model"] == "long"
        assert response.headers["x-gateway-fallbacks"] == "1"
    finally:
        gateway.stop()
        long_ctx.stop()
        short.stop()


def test_a_prompt_over_a_configured_context_window_is_not_sent_streamed_or_not(tmp_path: Path) -> None:
    """Some servers answer a streamed prompt that is too long with an empty 200 stream: with the
    deployment's `context_window` set, the gateway says 400 itself, or goes to the context fallback."""
    long_ctx = FakeUpstream(name="long").start_in_thread()
    short = FakeUpstream(name="short").start_in_thread()
    path = tmp_path / "window.yaml"
    path.write_text(f"""
auth: {{enabled: false}}
pools:
  small-ctx:
    context_fallbacks: [long-ctx]
    deployments: [{{id: short, base_url: "{short.base_url}", context_window: 64}}]
  alone:
    deployments: [{{id: alone, base_url: "{short.base_url}", context_window: 64}}]
  long-ctx:
    deployments: [{{id: long, base_url: "{long_ctx.base_url}"}}]
""")
    gateway = GatewayProcess(path)
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        fits = [{"role": "user", "content": "hello there"}]
        too_long = [{"role": "user", "content": "word " * 80}]
        assert client.chat.completions.create(model="alone", messages=fits).choices[0].message.content
        assert short.requests == 1
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model="alone", messages=too_long, stream=stream)
            assert caught.value.code == "context_length_exceeded"
            assert "maximum context length is 64 tokens" in caught.value.message
            answer = client.chat.completions.with_raw_response.create(model="small-ctx", messages=too_long, stream=stream)
            assert answer.headers["x-gateway-model"] == "long"
            chunks = list(answer.parse()) if stream else [answer.parse()]
            assert chunks
        with pytest.raises(openai.BadRequestError) as caught:  # it fits, but not with the answer it asks for
            client.chat.completions.create(model="alone", messages=fits, max_tokens=100, stream=True)
        assert caught.value.code == "context_length_exceeded"
        assert short.requests == 1  # neither reached it
    finally:
        gateway.stop()
        long_ctx.stop()
        short.stop()


def test_a_stream_is_retried_until_its_first_byte(ha: HA) -> None:
    ha.a.behavior = Behavior(mode="stream_error")
    ha.b.behavior = Behavior(mode="disconnect")  # hangs up before answering
    client = openai.OpenAI(base_url=f"{ha.gateway.url}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(stream=True, **CHAT)  # type: ignore[call-overload]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    assert text.startswith("tok")
    assert raw.headers["x-gateway-model"] == "fallback"
    assert int(raw.headers["x-gateway-attempts"]) >= 2


def test_after_the_first_byte_a_failure_ends_the_stream_with_an_error_event(ha: HA) -> None:
    ha.a.behavior = ha.b.behavior = Behavior(mode="reset_mid_stream", chunks=6)
    with httpx.stream("POST", f"{ha.gateway.url}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        body = response.read().decode()
    assert response.status_code == 200
    events = [line for line in body.split("\n\n") if line]
    assert '"error"' in events[-2] and events[-1] == "data: [DONE]"
    assert ha.fallback.requests == 0  # no fallback once bytes reached the client


def test_a_client_leaving_mid_stream_closes_the_upstream(ha: HA) -> None:
    for up in (ha.a, ha.b):
        up.behavior = Behavior(chunks=200, chunk_interval_s=0.05)
    with httpx.stream("POST", f"{ha.gateway.url}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        chunks = response.iter_bytes()  # kept: a dropped iterator closes the connection (a disconnect)
        first = next(chunks)
        assert first.startswith(b"data: {") and b'"error"' not in first, first
        wait_until(lambda: ha.a.streams_in_progress + ha.b.streams_in_progress == 1, timeout=3)
    # 200 chunks 50 ms apart would take 10 s; the gateway must stop the upstream well before.
    wait_until(lambda: ha.a.streams_in_progress + ha.b.streams_in_progress == 0, timeout=3)


def test_a_client_leaving_a_slow_request_cancels_the_upstream_call(ha: HA) -> None:
    for up in (ha.a, ha.b):
        up.behavior = Behavior(latency_s=5)
    with pytest.raises(httpx.ReadTimeout):
        ha.chat(timeout=0.3)
    wait_until(lambda: ha.a.open_connections + ha.b.open_connections == 0, timeout=2)


def test_a_hundred_streams_end_cleanly_when_the_upstreams_die(ha: HA) -> None:
    for up in (ha.a, ha.b):
        up.behavior = Behavior(chunks=400, chunk_interval_s=0.02)

    async def one(client: httpx.AsyncClient, started: asyncio.Event, counter: list[int]) -> str:
        async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            parts = []
            async for chunk in response.aiter_text():
                if not parts:
                    counter[0] += 1
                    if counter[0] == 100:
                        started.set()
                parts.append(chunk)
            return "".join(parts)

    async def go() -> list[str]:
        started, counter = asyncio.Event(), [0]
        async with httpx.AsyncClient(base_url=ha.gateway.url, timeout=30) as client:
            tasks = [asyncio.ensure_future(one(client, started, counter)) for _ in range(100)]
            await asyncio.wait_for(started.wait(), 20)
            await asyncio.to_thread(ha.a.kill)
            await asyncio.to_thread(ha.b.kill)
            return await asyncio.wait_for(asyncio.gather(*tasks), 20)

    bodies = asyncio.run(go())
    assert len(bodies) == 100
    for body in bodies:
        events = [e for e in body.split("\n\n") if e]
        assert events[-1] == "data: [DONE]" and body.count("data: [DONE]") == 1
        assert '"error"' in events[-2]


def test_deadline_ends_every_attempt_and_can_be_set_per_request(ha: HA) -> None:
    for up in (ha.a, ha.b, ha.fallback):
        up.behavior = Behavior(mode="hang")
    response = httpx.post(
        f"{ha.gateway.url}/v1/chat/completions", json=CHAT, headers={"x-gateway-deadline-ms": "300"}, timeout=10
    )
    assert_openai_error(response, 504, "deadline_exceeded")  # the read timeout is 60 s, the client's 10 s: the deadline ended it
    client = openai.OpenAI(base_url=f"{ha.gateway.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(extra_body={"gateway": {"deadline_ms": 200}}, **CHAT)  # type: ignore[call-overload]
    assert caught.value.status_code == 504
    wait_until(lambda: ha.a.open_connections + ha.b.open_connections + ha.fallback.open_connections == 0, timeout=2)
    bad = httpx.post(f"{ha.gateway.url}/v1/chat/completions", json=CHAT, headers={"x-gateway-deadline-ms": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-gateway-deadline-ms"


def test_in_flight_bounds_answer_429_instead_of_queueing(tmp_path: Path) -> None:
    slow = FakeUpstream(Behavior(latency_s=1.0), name="slow").start_in_thread()
    path = tmp_path / "bounded.yaml"
    path.write_text(f"""
resilience: {{max_in_flight: 3}}
auth: {{enabled: false}}
pools:
  bounded:
    deployments: [{{id: slow, base_url: "{slow.base_url}", max_in_flight: 2}}]
  other:
    deployments: [{{id: other, base_url: "{slow.base_url}"}}]
""")
    gateway = GatewayProcess(path)

    async def burst(model: str, n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            body = {**CHAT, "model": model}
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(n)))

    try:
        statuses = sorted(r.status_code for r in asyncio.run(burst("bounded", 3)))
        assert statuses == [200, 200, 429]
        rejected = next(r for r in asyncio.run(burst("bounded", 3)) if r.status_code == 429)
        assert_openai_error(rejected, 429, "pool_saturated")
        assert rejected.headers["retry-after"] == "1"
        responses = asyncio.run(burst("other", 5))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 200, 200, 429, 429]
        for refused in (r for r in responses if r.status_code == 429):
            assert_openai_error(refused, 429, "gateway_overloaded")
    finally:
        gateway.stop()
        slow.stop()


def test_breakers_are_shared_through_redis(tmp_path: Path, shared_redis: SharedRedis) -> None:
    ups = upstreams()
    first = HA(ha_gateway(tmp_path, ups, "first", REDIS_URL=shared_redis.url, BREAKER_COOLDOWN_S="30"), *ups)
    second = HA(ha_gateway(tmp_path, ups, "second", REDIS_URL=shared_redis.url, BREAKER_COOLDOWN_S="30"), *ups)
    try:
        first.a.behavior = Behavior(mode="status", status=503)
        first.blast(20)
        assert first.breakers()["replica-a"]["state"] == "open"
        seen = first.a.requests
        wait_until(lambda: second.breakers()["replica-a"]["state"] == "open", timeout=3)
        assert all(r.status_code == 200 for r in second.blast(20))
        assert first.a.requests == seen  # the second gateway never sent to the replica the first one cut off
    finally:
        second.gateway.stop()
        first.gateway.stop()
        for up in ups:
            up.stop()
