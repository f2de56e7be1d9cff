"""A client with a valid key that tries to get around its limits, and an upstream that misbehaves:
real `gateway serve` processes, a spying loopback upstream that records what it is sent, real
redis-server processes, the official openai client where a client would use it. Every test here is
a row of the table in docs/access.md ("What a key can overspend")."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.text import request_tokens
from tests.helpers.errors import assert_openai_error
from tests.helpers.gateway import GatewayProcess
from tests.helpers.hostile import (
    ADMIN_KEY,
    ENV,
    HEADER_SECRET,
    KEYS,
    UPSTREAM_KEY,
    auth,
    burst,
    charged,
    chat,
    config,
    cost,
    spent,
)
from tests.helpers.polling import wait_until
from tests.helpers.redis_server import RedisServer
from tests.helpers.spy_upstream import Script, SpyUpstream


@pytest.fixture(scope="module")
def spy() -> Iterator[SpyUpstream]:
    upstream = SpyUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, spy: SpyUpstream, redis: RedisServer) -> Iterator[GatewayProcess]:
    path = tmp_path_factory.mktemp("hostile") / "gateway.yaml"
    path.write_text(config(spy, redis))
    process = GatewayProcess(path, env=ENV)
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def fresh(spy: SpyUpstream, redis: RedisServer) -> None:
    """Each test starts with a well-behaved upstream and no spend on any key."""
    spy.script = Script()
    spy.seen.clear()
    redis.client().flushall()


# --- trusted proxies and authentication order ---------------------------------------------------


def test_forwarded_headers_are_not_believed_from_an_unlisted_peer(
    gateway: GatewayProcess, tmp_path: Path, spy: SpyUpstream
) -> None:
    # Without admin.api_key the admin API answers loopback clients only. A loopback peer that
    # claims to forward for a remote client is believed only when it is a listed proxy.
    path = tmp_path / "proxied.yaml"
    path.write_text(config(spy, None, admin=False))
    plain = GatewayProcess(path, env=ENV)
    path2 = tmp_path / "listed.yaml"
    path2.write_text(path.read_text() + "server: {forwarded_allow_ips: [127.0.0.1]}\n")
    listed = GatewayProcess(path2, env=ENV)
    try:
        claim = {"x-forwarded-for": "203.0.113.7"}
        assert httpx.get(f"{plain.admin_url}/admin/config", headers=claim).status_code == 200  # the peer is loopback
        assert_openai_error(httpx.get(f"{listed.admin_url}/admin/config", headers=claim), 401)  # the proxy's client is not
        assert httpx.get(f"{listed.admin_url}/admin/config").status_code == 200
    finally:
        plain.stop()
        listed.stop()


def test_the_admin_key_is_accepted_only_as_bearer(gateway: GatewayProcess) -> None:
    assert_openai_error(httpx.get(f"{gateway.admin_url}/admin/config", headers={"authorization": ADMIN_KEY}), 401)
    assert_openai_error(httpx.get(f"{gateway.admin_url}/admin/config", headers={"authorization": f"Basic {ADMIN_KEY}"}), 401)
    assert httpx.get(f"{gateway.admin_url}/admin/config", headers={"authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200


def test_a_caller_without_a_key_is_refused_before_the_body_is_judged(gateway: GatewayProcess) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    assert_openai_error(httpx.post(url, content=b"<xml/>", headers={"content-type": "text/xml"}), 401, "invalid_api_key")
    assert_openai_error(httpx.post(url, content=b"x" * (5 * 1024 * 1024)), 401, "invalid_api_key")
    assert_openai_error(httpx.post(url, content=b"<xml/>", headers={"content-type": "text/xml", **auth("open")}), 415)


# --- no secret in any reply ----------------------------------------------------------------------

QUOTING = [
    (400, {"message": "bad request from {authorization}", "type": "x", "code": "{authorization}", "param": "{authorization}"}),
    (500, {"message": "proxy failed; sent headers: {x-key}", "type": "server_error", "code": None, "nested": {"h": "{x-key}"}}),
    (429, {"message": "slow down", "code": "{authorization} {x-key}"}),
]


@pytest.mark.parametrize(("status", "error"), QUOTING)
def test_an_upstream_error_that_quotes_secrets_reaches_the_client_without_them(
    gateway: GatewayProcess, spy: SpyUpstream, status: int, error: dict[str, object]
) -> None:
    spy.script = Script(error=(status, error))
    url = f"{gateway.url}/v1/chat/completions"
    plain = httpx.post(url, json=chat(max_tokens=5), headers=auth("open"))
    streamed = httpx.post(url, json=chat(max_tokens=5, stream=True), headers=auth("open"))
    assert spy.seen and spy.seen[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # it was sent, and quoted
    for reply in (plain, streamed):
        assert reply.status_code == status
        body = assert_openai_error(reply, status)
        assert_no_secret(reply.text + str(reply.headers))
        assert "***" in str(body), body  # what was quoted is blanked, the rest of the error kept
    logged = gateway.logs()
    assert f"request {plain.headers['x-request-id']}: upstream hosted-dep answered {status}" in logged
    assert_no_secret(logged)


def test_a_stream_error_event_and_an_answer_that_quote_secrets_are_blanked(gateway: GatewayProcess, spy: SpyUpstream) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    spy.script = Script(stream_error={"message": "died: {authorization}", "code": "{x-key}"})
    streamed = httpx.post(url, json=chat(max_tokens=5, stream=True), headers=auth("open"))
    assert streamed.status_code == 200 and '"error"' in streamed.text
    assert_no_secret(streamed.text)
    spy.script = Script(stream_text=f"the key is {UPSTREAM_KEY} and {HEADER_SECRET}")
    for body in (chat(max_tokens=5, stream=True), chat(max_tokens=5)):
        reply = httpx.post(url, json=body, headers=auth("open"))
        assert reply.status_code == 200
        assert_no_secret(reply.text)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEYS["open"], max_retries=0)
    spy.script = Script(error=(400, {"message": "no: {authorization}", "code": "{authorization}", "param": "{x-key}"}))
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert_no_secret(str(refused.value.body) + str(refused.value.code) + str(refused.value.param))


def assert_no_secret(text: str) -> None:
    for secret in (UPSTREAM_KEY, HEADER_SECRET, *KEYS.values()):
        assert secret not in text, (secret, text[:500])


# --- spend bounded by construction; the whole request counted ------------------------------------


def test_concurrent_requests_without_max_tokens_cannot_spend_past_the_budget(
    gateway: GatewayProcess, spy: SpyUpstream, redis: RedisServer
) -> None:
    # $1 a day; each request would make the upstream generate 200k tokens ($6) if it were let
    replies = asyncio.run(burst(gateway.url, "budget", [chat("write a long story")] * 30))
    statuses = [r.status_code for r in replies]
    assert statuses.count(200) >= 1 and statuses.count(200) + statuses.count(429) == 30
    refused = next(r for r in replies if r.status_code == 429)
    assert_openai_error(refused, 429, "insufficient_quota")
    assert "budget of $1" in refused.json()["error"]["message"]
    sent = [s.body for s in spy.seen]
    assert len(sent) == statuses.count(200)
    assert all(0 < b["max_tokens"] <= 4096 for b in sent)  # the gateway set what the key can pay for
    assert sum(b["max_tokens"] for b in sent) * 30 / 1e6 <= 1.0
    assert 0 < spent(redis, "budget") <= 1.0  # settled to the upstream's bill: never past the budget
    # the rest of the day's budget buys a shorter answer, then none
    while (last := httpx.post(f"{gateway.url}/v1/chat/completions", json=chat(), headers=auth("budget"))).status_code == 200:
        pass
    assert_openai_error(last, 429, "insufficient_quota")
    assert spent(redis, "budget") <= 1.0


def test_text_outside_messages_counts_against_the_token_limit(gateway: GatewayProcess, spy: SpyUpstream) -> None:
    description = "look up the weather for a city and report it " * 2700  # ~120 KB
    tool = {"type": "function", "function": {"name": "weather", "description": description, "parameters": {"type": "object"}}}
    replies = asyncio.run(burst(gateway.url, "tokens", [chat("hi", max_tokens=1, tools=[tool])] * 10))
    for reply in replies:
        assert_openai_error(reply, 429, "rate_limit_exceeded", type="tokens")
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object", "description": description}}}
    assert_openai_error(
        httpx.post(
            f"{gateway.url}/v1/chat/completions", json=chat("hi", max_tokens=1, response_format=schema), headers=auth("tokens")
        ),
        429,
        type="tokens",
    )
    assert spy.seen == []  # nothing reached the upstream
    ok = httpx.post(f"{gateway.url}/v1/chat/completions", json=chat("hi", max_tokens=1), headers=auth("tokens"))
    assert ok.status_code == 200


def test_only_keys_with_a_token_limit_or_a_budget_get_an_output_limit_set(gateway: GatewayProcess, spy: SpyUpstream) -> None:
    for alias in ("paced", "open", "budget"):
        assert httpx.post(f"{gateway.url}/v1/chat/completions", json=chat(), headers=auth(alias)).status_code == 200
    paced, unlimited, budgeted = (seen.body for seen in spy.seen)
    assert "max_tokens" not in paced and "max_tokens" not in unlimited  # rpm alone says nothing of spend
    assert 0 < budgeted["max_tokens"] <= 4096


def test_n_and_best_of_multiply_the_reservation(gateway: GatewayProcess, spy: SpyUpstream) -> None:
    url = gateway.url
    wide = {"model": "gpt-4o", "prompt": "hi", "max_tokens": 1000, "best_of": 20}
    assert_openai_error(httpx.post(f"{url}/v1/completions", json=wide, headers=auth("tokens")), 429, type="tokens")
    assert_openai_error(
        httpx.post(f"{url}/v1/chat/completions", json=chat(max_tokens=1000, n=6), headers=auth("tokens")), 429, type="tokens"
    )
    assert spy.seen == []
    fits = httpx.post(f"{url}/v1/chat/completions", json=chat(n=4), headers=auth("tokens"))
    assert fits.status_code == 200
    asked = spy.seen[0].body["max_tokens"]
    assert asked * 4 <= 5000  # the output cap is per answer: n answers share what the limit left


# --- billing survives the client -----------------------------------------------------------------


def test_a_client_that_leaves_before_the_usage_chunk_is_charged_the_upstreams_bill(
    gateway: GatewayProcess, spy: SpyUpstream, redis: RedisServer
) -> None:
    spy.script = Script(usage_delay_s=1.0)  # the last token, then a pause, then the usage chunk
    body = chat("tell me everything", stream=True)
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=auth("meter")) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            if '"finish_reason":"length"' in line:
                break  # the answer is complete: leave before the bill
    billed = spy.output_tokens(spy.seen[0].body)
    assert billed == spy.seen[0].body["max_tokens"] == 4096
    assert charged(gateway, redis, "meter") == pytest.approx(cost(10, billed))


def test_a_stream_without_usage_is_charged_by_the_text_it_relayed(
    gateway: GatewayProcess, spy: SpyUpstream, redis: RedisServer
) -> None:
    spy.script = Script(stream_usage=False, stream_text="word " * 50_000)  # one chunk, no usage chunk
    reply = httpx.post(f"{gateway.url}/v1/chat/completions", json=chat(stream=True), headers=auth("meter"), timeout=30)
    assert reply.status_code == 200 and reply.text.count("word") == 50_000
    assert charged(gateway, redis, "meter") >= cost(0, 50_000)  # at least a token a word, not one per chunk


def test_requests_cut_by_the_deadline_or_the_client_are_charged_what_was_asked(
    gateway: GatewayProcess, spy: SpyUpstream, redis: RedisServer
) -> None:
    spy.script = Script(latency_s=3.0)
    url = f"{gateway.url}/v1/chat/completions"
    cut = httpx.post(url, json=chat(max_tokens=100), headers={**auth("meter"), "x-gateway-deadline-ms": "300"})
    assert_openai_error(cut, 504, "deadline_exceeded")
    assert len(spy.seen) == 1  # the upstream got it
    assert charged(gateway, redis, "meter") >= cost(0, 100)  # what the upstream was asked to produce
    redis.client().flushall()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=chat(max_tokens=200), headers=auth("meter"), timeout=1.0)  # the client gives up
    assert len(spy.seen) == 2
    assert charged(gateway, redis, "meter") >= cost(0, 200)
    redis.client().flushall()
    streamed = httpx.post(url, json=chat(max_tokens=300, stream=True), headers={**auth("meter"), "x-gateway-deadline-ms": "500"})
    assert streamed.status_code in (200, 504)
    assert charged(gateway, redis, "meter") >= cost(0, 300)


def test_a_stream_whose_usage_never_comes_is_cancelled_and_charged_its_reservation(
    tmp_path: Path, spy: SpyUpstream, redis: RedisServer
) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(config(spy, redis, auth_extra="meter_after_disconnect_s: 0.5"))
    gateway = GatewayProcess(path, env=ENV)
    try:
        spy.script = Script(usage_delay_s=5.0)
        body = chat("hi", stream=True)
        with (
            httpx.Client(timeout=30) as client,
            client.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=auth("meter")) as r,
        ):
            for line in r.iter_lines():
                if '"finish_reason"' in line and "null" not in line.split('"finish_reason"')[1][:6]:
                    break
        reserved = spy.seen[0].body["max_tokens"]
        prompt = request_tokens("chat/completions", body)
        # the reservation, not the upstream's usage (10 prompt tokens), which would have come after 5 s
        assert charged(gateway, redis, "meter") == pytest.approx(cost(prompt, reserved))
    finally:
        gateway.stop()


# --- store outages fail safely -------------------------------------------------------------------


def test_a_revoked_key_and_a_spent_budget_stay_refused_while_redis_is_down(tmp_path: Path, spy: SpyUpstream) -> None:
    redis = RedisServer(tmp_path)
    made: list[GatewayProcess] = []
    try:
        for name, policy in (("open", "open"), ("default", "{}")):
            path = tmp_path / f"{name}.yaml"
            path.write_text(
                config(spy, redis, auth_extra=f"on_store_error: {policy}\n  revocation_sync_s: 0.2\n  store_timeout_s: 0.5")
            )
            made.append(GatewayProcess(path, env=ENV))
        opened, default = made
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        created = httpx.post(f"{opened.admin_url}/admin/keys", json={"alias": "doomed"}, headers=admin).json()
        doomed = {"authorization": f"Bearer {created['key']}"}
        url = "/v1/chat/completions"
        for gateway in made:  # both processes have seen the key
            assert httpx.post(gateway.url + url, json=chat(max_tokens=5), headers=doomed).status_code == 200
        assert httpx.delete(f"{default.admin_url}/admin/keys/{created['id']}", headers=admin).status_code == 200
        # the other process learns of it without being asked about the key
        wait_until(lambda: "gateway_keys_revoked_known 1.0" in httpx.get(f"{opened.url}/metrics").text, what="the revocation")
        # the budget key spends its $1 (one answer as long as the budget pays for)
        while httpx.post(opened.url + url, json=chat(), headers=auth("budget")).status_code == 200:
            pass
        redis.stop()
        assert_openai_error(httpx.post(opened.url + url, json=chat(max_tokens=5), headers=doomed), 401)
        assert_openai_error(httpx.post(default.url + url, json=chat(max_tokens=5), headers=doomed), 401)
        # open for budgets: counted on from the last spend Redis showed, not from zero
        assert_openai_error(
            httpx.post(opened.url + url, json=chat(max_tokens=5), headers=auth("budget")), 429, "insufficient_quota"
        )
        # the default: a key with a budget is refused while its spend cannot be checked
        assert_openai_error(
            httpx.post(default.url + url, json=chat(max_tokens=5), headers=auth("budget")), 503, "limits_unavailable"
        )
        # rate limits stay open by default, and keys without limits are served
        assert httpx.post(default.url + url, json=chat(max_tokens=5), headers=auth("tokens")).status_code == 200
        assert httpx.post(default.url + url, json=chat(max_tokens=5), headers=auth("open")).status_code == 200
    finally:
        for gateway in made:
            gateway.stop()
        redis.stop()


def test_a_client_that_asks_for_usage_gets_it_when_the_upstream_sends_none(
    gateway: GatewayProcess, spy: SpyUpstream, redis: RedisServer
) -> None:
    spy.script = Script(stream_usage=False, stream_text="twelve words of answer, no usage chunk from this upstream at all")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEYS["meter"], max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.id == chunks[0].id
    assert last.usage.completion_tokens > 0 and last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    charged_usd = charged(gateway, redis, "meter")
    assert charged_usd == pytest.approx(cost(last.usage.prompt_tokens, last.usage.completion_tokens))  # what it was told
    quiet = list(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.usage is None for c in quiet)  # not asked for: not sent
