"""Request metrics on /metrics, parsed with prometheus_client's parser: counts, tokens, cost, latency."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.gateway import GatewayProcess


def scrape(gateway: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{gateway.url}/metrics").text):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_requests_tokens_cost_and_latency_are_counted_per_pool(gateway: GatewayProcess) -> None:
    before = scrape(gateway)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "count me"}]}
    whole = httpx.post(f"{gateway.url}/v1/chat/completions", json=body)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True}))
    missing = httpx.post(f"{gateway.url}/v1/chat/completions", json={**body, "model": "no-such-model"})
    assert whole.status_code == 200 and missing.status_code == 404
    after = scrape(gateway)

    assert delta(before, after, "gateway_requests_total", model="main", tier="", status="200") == 2
    assert delta(before, after, "gateway_requests_total", model="-", tier="", status="404") == 1  # never a client's string
    usage = [whole.json()["usage"], chunks[-1].usage.model_dump()]
    assert delta(before, after, "gateway_tokens_total", model="main", tier="", type="input") == sum(
        u["prompt_tokens"] for u in usage
    )
    assert delta(before, after, "gateway_tokens_total", model="main", tier="", type="output") == sum(
        u["completion_tokens"] for u in usage
    )
    cost = sum((u["prompt_tokens"] * 2.5 + u["completion_tokens"] * 10) / 1e6 for u in usage)
    assert delta(before, after, "gateway_cost_usd_total", model="main", tier="", tenant="") == pytest.approx(cost)
    assert delta(before, after, "gateway_request_duration_seconds_count", model="main", tier="") == 2
    assert delta(before, after, "gateway_time_to_first_token_seconds_count", model="main", tier="") == 1
    assert delta(before, after, "gateway_request_duration_seconds_bucket", model="main", tier="", le="+Inf") == 2


def test_a_stream_without_include_usage_is_still_counted_and_the_client_sees_no_usage_chunk(gateway: GatewayProcess) -> None:
    before = scrape(gateway)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "no usage asked"}], stream=True)
    )
    assert chunks and all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    after = scrape(gateway)
    assert delta(before, after, "gateway_tokens_total", model="main", tier="", type="output") == 5  # the upstream's 5 chunks
    assert delta(before, after, "gateway_tokens_total", model="main", tier="", type="input") > 0
    assert delta(before, after, "gateway_cost_usd_total", model="main", tier="", tenant="") > 0
