"""The response cache in a running gateway, with the official openai client and a real upstream."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import msgspec
import openai
import pytest

from tests.helpers.fake_upstream import FakeUpstream
from tests.helpers.gateway import GatewayProcess


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeUpstream]]:
    upstream = FakeUpstream(name="cached-upstream").start_in_thread()
    root = tmp_path_factory.mktemp("cache")
    path = root / "gateway.yaml"
    path.write_text(f"""
reload: {{watch: false}}
cache:
  enabled: true
auth: {{enabled: false}}
pools:
  small:
    aliases: [gpt-4o-mini]
    deployments: [{{id: up, base_url: "{upstream.base_url}"}}]
  nocache:
    cache: {{enabled: false}}
    deployments: [{{id: up2, base_url: "{upstream.base_url}"}}]
""")
    gateway = GatewayProcess(path)
    yield gateway, upstream
    gateway.stop()
    upstream.stop()


def ask(gateway: GatewayProcess, text: str, **extra: object) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)


def test_exact_and_semantic_hits_skip_the_upstream(cached: tuple[GatewayProcess, FakeUpstream]) -> None:
    gateway, upstream = cached
    first = ask(gateway, "How do I reset my password?")
    assert first.headers["x-gateway-cache"] == "miss"
    before = upstream.requests
    again = ask(gateway, "How do I reset my password?")
    assert again.headers["x-gateway-cache"] == "hit-exact" and upstream.requests == before
    typed = ask(gateway, "how do i  reset my password")  # case, spacing and trailing punctuation
    assert typed.headers["x-gateway-cache"] == "hit-exact" and upstream.requests == before
    assert again.json()["id"] != first.json()["id"]
    assert again.json()["choices"] == first.json()["choices"]
    assert again.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == first.json()["usage"]["prompt_tokens"]
    assert again.headers["x-gateway-cost-usd"] == "0"
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": "how do i reset my pasword"}]
    )
    assert raw.headers["x-gateway-cache"] == "hit-semantic" and upstream.requests == before
    assert 0.5 <= float(raw.headers["x-gateway-cache-similarity"]) < 1
    assert 0 < float(raw.headers["x-gateway-cache-score"]) <= 1  # the verifier's
    assert raw.parse().choices[0].message.content == first.json()["choices"][0]["message"]["content"]


def test_a_plain_openai_call_is_cached_when_the_pool_has_its_cache_on(cached: tuple[GatewayProcess, FakeUpstream]) -> None:
    gateway, upstream = cached
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)

    def ask_plainly(text: str) -> str:  # no temperature, no seed: what most applications send
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
        return raw.headers["x-gateway-cache"]

    assert ask_plainly("What is the boiling point of water at sea level?") == "miss"
    before = upstream.requests
    assert ask_plainly("What is the boiling point of water at sea level?") == "hit-exact"
    assert ask_plainly("what is the boiling point of water at sea levle") == "hit-semantic"
    assert upstream.requests == before


def test_a_no_cache_request_stores_an_entry_the_semantic_layer_still_finds(cached: tuple[GatewayProcess, FakeUpstream]) -> None:
    gateway, _ = cached
    assert ask(gateway, "How do I remove a stripped screw?").headers["x-gateway-cache"] == "miss"
    url = f"{gateway.url}/v1/chat/completions"
    body = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": "How do I remove a stripped screw?"}],
    }
    assert httpx.post(url, json=body, headers={"cache-control": "no-cache"}).headers["x-gateway-cache"] == "miss"
    # The no-cache answer replaced the entry; the semantic layer must still find it.
    assert ask(gateway, "how do i remove a stripped screww").headers["x-gateway-cache"] == "hit-semantic"


def test_a_cache_starts_without_noise_in_the_log(cached: tuple[GatewayProcess, FakeUpstream]) -> None:
    """faiss tells of every CPU build it did not find, ONNX Runtime of thread affinity it could not
    set: nothing an operator can act on, so neither reaches the log."""
    gateway, _ = cached
    assert ask(gateway, "Is the log quiet?").status_code == 200  # the index and the embedder have run
    logs = gateway.logs()
    assert "faiss" not in logs and "onnxruntime" not in logs.lower() and "Could not load" not in logs


def test_a_hard_negative_is_not_served_from_the_cache(cached: tuple[GatewayProcess, FakeUpstream]) -> None:
    gateway, upstream = cached
    assert ask(gateway, "Book a flight from Paris to Berlin on Friday.").headers["x-gateway-cache"] == "miss"
    before = upstream.requests
    swapped = ask(gateway, "Book a flight from Berlin to Paris on Friday.")
    assert swapped.headers["x-gateway-cache"] == "miss" and upstream.requests == before + 1


def test_controls_and_policy(cached: tuple[GatewayProcess, FakeUpstream]) -> None:
    gateway, _ = cached
    ask(gateway, "Name three primary colours.")
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "Name three primary colours."}]}
    url = f"{gateway.url}/v1/chat/completions"
    no_cache = httpx.post(url, json=body, headers={"cache-control": "no-cache"})
    assert no_cache.headers["x-gateway-cache"] == "miss"  # looked past the cache, and stored again
    no_store = httpx.post(url, json={**body, "gateway": {"cache": "no-store"}})
    assert no_store.headers["x-gateway-cache"] == "bypass"
    warm = ask(gateway, "Name three primary colours.", temperature=1.5)
    assert warm.headers["x-gateway-cache"] == "bypass"  # above max_temperature (1.0) and no seed
    seeded = ask(gateway, "Name three primary colours.", temperature=1.5, seed=7)
    assert seeded.headers["x-gateway-cache"] == "miss"  # a seed makes it cacheable, under its own key
    assert ask(gateway, "Name three primary colours.", temperature=1.5, seed=7).headers["x-gateway-cache"] == "hit-exact"
    off = httpx.post(url, json={**body, "model": "nocache"})
    assert off.headers["x-gateway-cache"] == "bypass"  # the pool has its cache turned off


def test_a_streamed_request_gets_a_stored_answer_replayed(cached: tuple[GatewayProcess, FakeUpstream]) -> None:
    gateway, upstream = cached
    stored = ask(gateway, "List the planets of the solar system.").json()
    before = upstream.requests
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        temperature=0,
        messages=[{"role": "user", "content": "List the planets of the solar system."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    assert raw.headers["x-gateway-cache"] == "hit-exact" and upstream.requests == before
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == stored["choices"][0]["message"]["content"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len({c.id for c in chunks}) == 1
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == stored["usage"]["prompt_tokens"]


def test_a_streamed_miss_goes_upstream_and_is_stored(cached: tuple[GatewayProcess, FakeUpstream]) -> None:
    gateway, upstream = cached
    body = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "stream": True,
        "messages": [{"role": "user", "content": "Spell 'cat' backwards."}],
    }
    before = upstream.requests
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body) as response:
        text = response.read().decode()
    assert response.headers["x-gateway-cache"] == "miss" and text.endswith("data: [DONE]\n\n")
    assert upstream.requests == before + 1
    streamed = "".join(
        msgspec.json.decode(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in text.split("\n\n")
        if line.startswith("data: {") and msgspec.json.decode(line[6:])["choices"]
    )
    # The streamed answer was assembled and stored: the same request, not streamed, is a hit.
    again = httpx.post(f"{gateway.url}/v1/chat/completions", json={**body, "stream": False})
    assert again.headers["x-gateway-cache"] == "hit-exact" and upstream.requests == before + 1
    assert again.json()["choices"][0]["message"]["content"] == streamed
    assert again.json()["choices"][0]["finish_reason"] == "stop"


def test_admin_stats_feedback_and_flush(cached: tuple[GatewayProcess, FakeUpstream]) -> None:
    gateway, _ = cached
    admin = f"{gateway.admin_url}/admin/cache"
    ask(gateway, "What is the speed of light?")
    hit = ask(gateway, "What is the speed of light?")
    assert hit.headers["x-gateway-cache"] == "hit-exact"
    stats = httpx.get(admin).json()
    assert stats["entries"] >= 1 and stats["hit_exact"] >= 1 and stats["miss"] >= 1
    wrong = httpx.post(f"{admin}/feedback", json={"key": hit.headers["x-gateway-cache-key"]})
    assert wrong.json()["removed"] is True
    assert httpx.get(admin).json()["reported_wrong"] == 1
    assert ask(gateway, "What is the speed of light?").headers["x-gateway-cache"] == "miss"  # the entry is gone
    assert httpx.post(f"{admin}/flush", json={"namespace": "large"}).json() == {"removed": 0}  # another pool's
    assert httpx.post(f"{admin}/flush", json={"namespace": "small"}).json()["removed"] >= 1
    assert httpx.get(admin).json()["entries"] == 0
    assert httpx.post(f"{admin}/feedback", json={"kee": 1}).status_code == 400
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'gateway_cache_lookups_total{outcome="hit-exact"}' in metrics
