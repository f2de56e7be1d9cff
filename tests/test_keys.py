"""Keys, limits and budgets end to end: real `gateway serve` processes, a real loopback upstream,
real redis-server processes, the official openai client where a client would use it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest

from gateway.access.keys import hash_key
from gateway.text import request_tokens
from tests.helpers.errors import assert_openai_error, openai_error
from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.gateway import GatewayProcess
from tests.helpers.otlp_receiver import OTLPReceiver
from tests.helpers.redis_ha import RedisClusterProcesses, SharedRedis
from tests.helpers.redis_server import RedisServer

KEYS = {
    alias: f"sk-gw-test-{alias}-0123456789abcdef"
    for alias in ("full", "limited", "mini-only", "expired", "budget", "tokens", "small-tier", "a1", "a2", "b1", "streams")
}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
# $0.1 per token: a request with max_tokens 8 reserves $1.90 (11 estimated prompt tokens + 8); the
# fake upstream's answer (10 prompt tokens and a few completion tokens) costs less.
PRICE = "{input_per_1m: 100000, output_per_1m: 100000}"


def auth(alias: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[alias]}"}


def keys_yaml(extra: str = "") -> str:
    return f"""
auth:
  keys:
    - {{alias: full, key_hash: "{hash_key(KEYS["full"])}"}}
    - {{alias: limited, key_hash: "{hash_key(KEYS["limited"])}", rpm: 50}}
    - {{alias: mini-only, key_hash: "{hash_key(KEYS["mini-only"])}", models: [gpt-4o-mini]}}
    - {{alias: expired, key_hash: "{hash_key(KEYS["expired"])}", expires_at: "2020-01-01T00:00:00Z"}}
    - {{alias: budget, key_hash: "{hash_key(KEYS["budget"])}", budget: {{day: 10}}}}
    - {{alias: tokens, key_hash: "{hash_key(KEYS["tokens"])}", tpm: 100}}
    - {{alias: small-tier, key_hash: "{hash_key(KEYS["small-tier"])}", tiers: [small]}}
    - {{alias: streams, key_hash: "{hash_key(KEYS["streams"])}", rpm: 1000, tpm: 100000}}
{extra}"""


def pools_yaml(upstream: FakeUpstream, extra: str = "") -> str:
    return f"""
pools:
  small:
    tier: small
    aliases: [gpt-4o-mini]
    escalate: false
    deployments:
      - {{id: small-dep, base_url: "{upstream.base_url}", api_key: "${{UPSTREAM_KEY}}", price: {PRICE}}}
  large:
    tier: large
    aliases: [gpt-4o]
    deployments:
      - {{id: large-dep, base_url: "{upstream.base_url}", price: {PRICE}}}
{extra}"""


UPSTREAM_KEY = "sk-upstream-very-secret-42"
ADMIN_KEY = "admin-very-secret-43"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    """One gateway, counters in its own process (no Redis)."""
    path = tmp_path_factory.mktemp("keys") / "gateway.yaml"
    path.write_text("reload: {watch: false}\n" + keys_yaml() + pools_yaml(upstream))
    gateway = GatewayProcess(path, env={"UPSTREAM_KEY": UPSTREAM_KEY})
    yield gateway
    gateway.stop()


def test_a_request_needs_a_valid_key(keyed: GatewayProcess) -> None:
    url = f"{keyed.url}/v1/chat/completions"
    missing = httpx.post(url, json=CHAT)
    assert missing.status_code == 401 and openai_error(missing)["code"] == "invalid_api_key"
    assert "Authorization" in str(openai_error(missing)["message"])
    wrong_key = "sk-gw-not-a-real-key-9999"
    wrong = httpx.post(url, json=CHAT, headers={"authorization": f"Bearer {wrong_key}"})
    assert wrong.status_code == 401 and "9999" not in wrong.text  # no part of the key comes back
    assert httpx.post(url, json=CHAT, headers={"authorization": "Basic abc"}).status_code == 401
    expired = httpx.post(url, json=CHAT, headers=auth("expired"))
    assert expired.status_code == 401 and openai_error(expired)["code"] == "expired_api_key"
    assert httpx.get(f"{keyed.url}/v1/models").status_code == 401

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=wrong_key, max_retries=0).models.list()
    client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEYS["full"], max_retries=0)
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content


def test_a_key_reaches_only_its_models_and_tiers(keyed: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEYS["mini-only"], max_retries=0)
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert denied.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError):
        client.models.retrieve("large")
    assert client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).choices

    small_only = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEYS["small-tier"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as tier:
        small_only.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert tier.value.code == "tier_not_allowed"
    assert small_only.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}]).choices


async def burst(urls: list[str], alias: str, n: int) -> list[httpx.Response]:
    """`n` requests at once, spread over `urls` in turn."""
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=auth(alias)) as client:
        return await asyncio.gather(*(client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=CHAT) for i in range(n)))


def test_200_parallel_requests_on_a_key_limited_to_50_per_minute(keyed: GatewayProcess) -> None:
    responses = asyncio.run(burst([keyed.url], "limited", 200))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 50 and statuses.count(429) == 150
    refused = next(r for r in responses if r.status_code == 429)
    assert openai_error(refused)["type"] == "requests" and openai_error(refused)["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "50" and refused.headers["x-ratelimit-remaining-requests"] == "0"
    served = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in responses if r.status_code == 200)
    assert served == list(range(50))
    metrics = httpx.get(f"{keyed.url}/metrics").text
    assert 'gateway_limits_refused_total{limit="requests",tenant="limited"} 150.0' in metrics


def test_tokens_are_reserved_up_front_and_settled_with_actual_usage(keyed: GatewayProcess) -> None:
    url = f"{keyed.url}/v1/chat/completions"
    too_big = httpx.post(url, json={**CHAT, "max_tokens": 200}, headers=auth("tokens"))
    assert too_big.status_code == 429 and openai_error(too_big)["type"] == "tokens"
    assert "max_tokens" in str(openai_error(too_big)["message"])
    first = httpx.post(url, json=CHAT, headers=auth("tokens"))
    # the whole request's estimated tokens + 8 asked for are reserved; then the reservation becomes what the answer used
    reserved = request_tokens("chat/completions", CHAT) + 8
    assert first.status_code == 200 and first.headers["x-ratelimit-remaining-tokens"] == str(100 - reserved)
    used = first.json()["usage"]["total_tokens"]
    assert used != reserved
    second = httpx.post(url, json=CHAT, headers=auth("tokens"))
    assert second.headers["x-ratelimit-remaining-tokens"] == str(100 - used - reserved)


def test_a_budget_stops_spending_within_one_requests_cost_on_every_route(keyed: GatewayProcess) -> None:
    responses = asyncio.run(burst([keyed.url], "budget", 20))
    statuses = [r.status_code for r in responses]
    # Each request reserves its whole request's tokens and max_tokens at $0.1 each until its answer
    # settles at its actual, smaller, cost: that many reservations fit in $10, and a few more when
    # answers settle while the burst arrives.
    reserve = (request_tokens("chat/completions", CHAT) + 8) * 0.1
    served = statuses.count(200)
    assert 10 // reserve <= served < 20
    refused = next(r for r in responses if r.status_code == 429)
    assert openai_error(refused)["type"] == "insufficient_quota" and openai_error(refused)["code"] == "insufficient_quota"
    assert int(refused.headers["retry-after"]) <= 86400
    cost = next(r for r in responses if r.status_code == 200).json()["usage"]["total_tokens"] * 0.1
    spent = httpx.get(f"{keyed.admin_url}/admin/keys/cfg:budget").json()["spent"]["day"]
    assert spent == pytest.approx(served * cost)  # the reservations became the actual costs
    while httpx.post(f"{keyed.url}/v1/chat/completions", json=CHAT, headers=auth("budget")).status_code == 200:
        served += 1
    spent = httpx.get(f"{keyed.admin_url}/admin/keys/cfg:budget").json()["spent"]["day"]
    assert spent == pytest.approx(served * cost) and 10 - reserve < spent <= 10  # stopped within one request's cost

    client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEYS["budget"], max_retries=0)
    with pytest.raises(openai.RateLimitError) as quota:
        client.chat.completions.create(**CHAT, stream=True)  # type: ignore[call-overload]
    assert quota.value.code == "insufficient_quota"
    # each reserves more than the ~$6 that can be left, and less than the whole $10
    with pytest.raises(openai.RateLimitError):
        client.completions.create(model="gpt-4o-mini", prompt="hi", max_tokens=40)
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="gpt-4o-mini", input="hi " * 40)
    assert httpx.get(f"{keyed.admin_url}/admin/keys/cfg:budget").json()["spent"]["day"] == pytest.approx(spent)


def test_streams_carry_the_rate_limit_headers_and_settle_their_tokens(keyed: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEYS["streams"], max_retries=0)
    with client.chat.completions.with_streaming_response.create(**CHAT, stream=True) as response:  # type: ignore[call-overload]
        assert response.headers["x-ratelimit-remaining-requests"] == "999"
        reserved = request_tokens("chat/completions", {**CHAT, "stream": True}) + 8
        assert response.headers["x-ratelimit-remaining-tokens"] == str(100000 - reserved)
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text
    used = 10 + len(text.split())  # the fake upstream: 10 prompt tokens, one per word of the answer
    after = httpx.post(f"{keyed.url}/v1/chat/completions", json=CHAT, headers=auth("streams"))
    assert after.headers["x-ratelimit-remaining-tokens"] == str(100000 - used - request_tokens("chat/completions", CHAT) - 8)


def test_keys_are_made_through_the_admin_api_only_with_redis(keyed: GatewayProcess) -> None:
    refused = httpx.post(f"{keyed.admin_url}/admin/keys", json={"alias": "app"})
    assert_openai_error(refused, 400, "key_store_not_configured")
    listed = httpx.get(f"{keyed.admin_url}/admin/keys").json()["data"]
    assert {k["alias"] for k in listed} >= {"full", "limited", "budget"} and all(k["source"] == "config" for k in listed)
    assert KEYS["full"] not in json.dumps(listed) and hash_key(KEYS["full"])[7:] not in json.dumps(listed)


def test_the_client_key_stays_here_and_the_upstream_key_stays_upstream(keyed: GatewayProcess, upstream: FakeUpstream) -> None:
    response = httpx.post(f"{keyed.url}/v1/chat/completions", json=CHAT, headers=auth("full"))
    assert response.status_code == 200
    assert upstream.last_headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert KEYS["full"] not in json.dumps(upstream.last_headers)
    assert UPSTREAM_KEY not in response.text and UPSTREAM_KEY not in str(response.headers)


def redis_ttl(server: SharedRedis, key: str) -> int:
    client = server.client()
    try:
        return int(client.ttl(key))
    finally:
        client.close()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def shared_gateways(
    tmp_path: Path, upstream: FakeUpstream, redis: SharedRedis, policy: str = "open", names: tuple[str, ...] = ("one", "two")
) -> list[GatewayProcess]:
    gateways = []
    for name in names:
        path = tmp_path / f"{name}.yaml"
        redis_yaml = f"redis: {{url: '{redis.url}'}}\nresilience: {{share_breakers: false}}\n"
        policy_yaml = f"  on_store_error: {policy}\n  store_timeout_s: 0.5\n"
        path.write_text("reload: {watch: false}\n" + redis_yaml + keys_yaml(policy_yaml) + pools_yaml(upstream))
        gateways.append(GatewayProcess(path, env={"UPSTREAM_KEY": UPSTREAM_KEY}))
    return gateways


def test_the_limit_holds_across_two_gateways_sharing_redis(
    tmp_path: Path, upstream: FakeUpstream, shared_redis: SharedRedis
) -> None:
    gateways = shared_gateways(tmp_path, upstream, shared_redis)
    try:
        statuses = [r.status_code for r in asyncio.run(burst([g.url for g in gateways], "limited", 200))]
        assert statuses.count(200) == 50 and statuses.count(429) == 150
        served = [r for r in asyncio.run(burst([g.url for g in gateways], "budget", 20)) if r.status_code == 200]
        cost = served[0].json()["usage"]["total_tokens"] * 0.1
        spent = httpx.get(f"{gateways[1].admin_url}/admin/keys/cfg:budget").json()["spent"]["day"]
        # at least those that fit at once; more only as earlier ones settled below their reservation
        reserve = (request_tokens("chat/completions", CHAT) + 8) * 0.1
        assert len(served) >= 10 // reserve and spent == pytest.approx(len(served) * cost) and spent <= 10
    finally:
        for g in gateways:
            g.stop()


def test_keys_made_revoked_and_expiring_through_the_admin_api(
    tmp_path: Path, upstream: FakeUpstream, shared_redis: SharedRedis
) -> None:
    one, two = shared_gateways(tmp_path, upstream, shared_redis)
    records = "gw:{key}:" if isinstance(shared_redis, RedisClusterProcesses) else "gw:key:"  # a cluster's hash tag
    try:
        made = httpx.post(f"{one.admin_url}/admin/keys", json={"alias": "app", "rpm": 100, "metadata": {"team": "search"}})
        assert made.status_code == 201
        secret, key_id = made.json()["key"], made.json()["id"]
        chat = f"{two.url}/v1/chat/completions"
        assert httpx.post(chat, json=CHAT, headers={"authorization": f"Bearer {secret}"}).status_code == 200
        listed = httpx.get(f"{two.admin_url}/admin/keys").text
        assert key_id in listed and secret not in listed and hash_key(secret)[7:] not in listed
        assert httpx.post(f"{one.admin_url}/admin/keys", json={"alias": "app"}).status_code == 409  # alias taken
        for bad in (
            {"alias": "x", "tiers": ["huge"]},
            {"alias": "x", "models": ["nope"]},
            {"alias": "x", "rpm": 0},
            {"alias": "x", "what": 1},
        ):
            assert httpx.post(f"{one.admin_url}/admin/keys", json=bad).status_code == 400

        assert httpx.delete(f"{one.admin_url}/admin/keys/{key_id}").json()["revoked"] is True
        refused = httpx.post(chat, json=CHAT, headers={"authorization": f"Bearer {secret}"})
        assert refused.status_code == 401  # at once, on the other gateway too
        assert httpx.delete(f"{one.admin_url}/admin/keys/{key_id}").status_code == 404

        later = httpx.post(f"{one.admin_url}/admin/keys", json={"alias": "later", "expires_in_s": 3600}).json()
        assert httpx.post(chat, json=CHAT, headers={"authorization": f"Bearer {later['key']}"}).status_code == 200
        a_second_ago = datetime.fromtimestamp(time.time() - 1, UTC).isoformat()
        brief = httpx.post(f"{one.admin_url}/admin/keys", json={"alias": "brief", "expires_at": a_second_ago}).json()
        expired = httpx.post(chat, json=CHAT, headers={"authorization": f"Bearer {brief['key']}"})
        assert_openai_error(expired, 401, "expired_api_key")
        ttl = redis_ttl(shared_redis, f"{records}id:{brief['id']}")
        assert 6 * 86400 < ttl <= 7 * 86400  # its records go a week after it expired
        assert redis_ttl(shared_redis, f"{records}id:{key_id}") == -2  # the revoked one is gone already
    finally:
        one.stop()
        two.stop()


def test_redis_down_fails_open_or_closed_as_configured(tmp_path: Path, upstream: FakeUpstream, redis: RedisServer) -> None:
    [opened] = shared_gateways(tmp_path, upstream, redis, "open", names=("open",))
    [closed] = shared_gateways(tmp_path, upstream, redis, "closed", names=("closed",))
    try:
        assert httpx.post(f"{opened.url}/v1/chat/completions", json=CHAT, headers=auth("limited")).status_code == 200
        redis.stop()
        served = [httpx.post(f"{opened.url}/v1/chat/completions", json=CHAT, headers=auth("limited")) for _ in range(5)]
        assert [r.status_code for r in served] == [200] * 5
        assert served[0].headers["x-ratelimit-limit-requests"] == "50"  # still counted, in the process
        metrics = httpx.get(f"{opened.url}/metrics").text
        assert "gateway_limits_store_up 0.0" in metrics and "gateway_limits_store_errors_total 0.0" not in metrics
        assert opened.logs().count("limits: Redis failed") == 1

        refused = httpx.post(f"{closed.url}/v1/chat/completions", json=CHAT, headers=auth("limited"))
        assert_openai_error(refused, 503, "limits_unavailable")
        assert "retry-after" in refused.headers
        assert httpx.post(f"{closed.url}/v1/chat/completions", json=CHAT, headers=auth("full")).status_code == 200
    finally:
        opened.stop()
        closed.stop()


def test_the_cache_is_per_tenant_unless_the_pool_is_shared(tmp_path: Path, upstream: FakeUpstream) -> None:
    keys = "".join(f'    - {{alias: {a}, key_hash: "{hash_key(KEYS[a])}", tenant: {a[0]}}}\n' for a in ("a1", "a2", "b1"))
    path = tmp_path / "cached.yaml"
    path.write_text(f"""
reload: {{watch: false}}
cache: {{enabled: true, semantic: false}}
auth:
  keys:
{keys}
pools:
  own:
    deployments: [{{id: own-dep, base_url: "{upstream.base_url}"}}]
  common:
    cache: {{shared: true}}
    deployments: [{{id: common-dep, base_url: "{upstream.base_url}"}}]
""")
    gateway = GatewayProcess(path)
    try:

        def outcome(alias: str, model: str) -> str:
            body = {"model": model, "messages": [{"role": "user", "content": "what is a tenant?"}], "temperature": 0}
            r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=auth(alias))
            assert r.status_code == 200
            return r.headers["x-gateway-cache"]

        assert [outcome("a1", "own"), outcome("a2", "own"), outcome("b1", "own")] == ["miss", "hit-exact", "miss"]
        assert [outcome("a1", "common"), outcome("b1", "common")] == ["miss", "hit-exact"]
    finally:
        gateway.stop()


def test_secrets_never_reach_logs_spans_errors_or_metrics(tmp_path: Path, upstream: FakeUpstream) -> None:
    receiver = OTLPReceiver().start()
    path = tmp_path / "secret.yaml"
    path.write_text(
        "reload: {watch: false}\n"
        f"admin: {{api_key: '${{ADMIN_KEY}}'}}\n"
        f'telemetry: {{enabled: true, endpoint: "{receiver.endpoint}"}}\n' + keys_yaml() + pools_yaml(upstream)
    )
    gateway = GatewayProcess(path, env={"UPSTREAM_KEY": UPSTREAM_KEY, "ADMIN_KEY": ADMIN_KEY, "OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        seen: list[str] = []
        chat = f"{gateway.url}/v1/chat/completions"
        for alias in ("full", "limited", "budget", "expired"):
            seen.append(httpx.post(chat, json=CHAT, headers=auth(alias)).text)
        seen.append(httpx.post(chat, json={**CHAT, "stream": True}, headers=auth("full")).text)
        seen.append(httpx.post(chat, json={"model": "nope"}, headers=auth("full")).text)
        seen.append(httpx.post(chat, json=CHAT, headers={"authorization": "Bearer sk-gw-guessed-secret"}).text)
        usual, upstream.behavior = upstream.behavior, Behavior(mode="status", status=401, error_message=f"bad key {UPSTREAM_KEY}")
        try:
            failed = httpx.post(chat, json=CHAT, headers=auth("full"))
        finally:
            upstream.behavior = usual
        assert failed.status_code == 502
        seen.append(failed.text)
        upstream.behavior = Behavior(mode="status", status=400, error_message=f"the key {UPSTREAM_KEY} may not do this")
        try:
            quoted = httpx.post(chat, json=CHAT, headers=auth("full"))
        finally:
            upstream.behavior = usual
        assert quoted.status_code == 400 and "the key *** may not" in quoted.json()["error"]["message"]
        seen.append(quoted.text)
        seen.append(httpx.get(f"{gateway.admin_url}/admin/keys", headers={"authorization": "Bearer wrong-admin"}).text)
        seen.append(httpx.get(f"{gateway.admin_url}/admin/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text)
        seen.append(httpx.get(f"{gateway.url}/metrics").text)
        gateway.stop()  # a gateway exports every span it still holds as it shuts down
        spans = receiver.snapshot()
        assert any(s["attributes"].get("gateway.key.alias") == "full" for s in spans)
        seen.append(json.dumps(spans))
        seen.append(gateway.logs())
        everything = "\n".join(seen)
        for secret in [UPSTREAM_KEY, ADMIN_KEY, "sk-gw-guessed-secret", *KEYS.values()]:
            assert secret not in everything, secret
    finally:
        gateway.stop()
        receiver.stop()
