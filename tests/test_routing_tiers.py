"""Tiered routing through a running gateway: `model="auto"` with the official openai client, three
loopback upstreams (one per tier) that say who answered."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway import config
from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.gateway import ROOT, GatewayProcess
from tests.helpers.otlp_receiver import OTLPReceiver
from tests.helpers.polling import wait_until

EASY = "Which planet is closest to the Sun?"
HARD = (
    "Design a sharded, multi-region order ledger with exactly-once processing, prove that your "
    "reconciliation algorithm preserves double-entry consistency under concurrent writes, and analyze its complexity."
)
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, dict[str, FakeUpstream]]]:
    ups = {
        "small": FakeUpstream(Behavior(content="not json"), name="up-small").start_in_thread(),
        "medium": FakeUpstream(Behavior(content='{"answer": "from medium"}'), name="up-medium").start_in_thread(),
        "large": FakeUpstream(name="up-large").start_in_thread(),
    }
    root = tmp_path_factory.mktemp("tiers")
    receiver = OTLPReceiver().start()
    pools = "".join(
        f"""
  {tier}:
    deployments: [{{id: {tier}-dep, base_url: "{up.base_url}", price: {{input_per_1m: 1, output_per_1m: 1}}}}]"""
        for tier, up in ups.items()
    )
    tiers_yaml = "{small: {pool: small}, medium: {pool: medium}, large: {pool: large}}"
    path = root / "gateway.yaml"
    path.write_text(f"""
reload: {{watch: false}}
telemetry: {{enabled: true, endpoint: "{receiver.endpoint}"}}
cache: {{enabled: true}}
auth: {{enabled: false}}
routing_log: {{path: "decisions-{{pid}}.jsonl"}}
pools:{pools}
routers:
  auto:
    tiers: {tiers_yaml}
  auto-shadow:
    tiers: {tiers_yaml}
    shadow: large
  auto-json:
    tiers: {tiers_yaml}
    validate_json: true
""")
    gateway = GatewayProcess(path, env={"OTEL_BSP_SCHEDULE_DELAY": "50"})
    gateway.receiver = receiver  # type: ignore[attr-defined]
    gateway.root = root  # type: ignore[attr-defined]
    yield gateway, ups
    gateway.stop()
    receiver.stop()
    for up in ups.values():
        up.stop()


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def ask(gateway: GatewayProcess, text: str, model: str = "auto", **extra: object) -> tuple[httpx.Headers, str]:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **extra
    )
    return raw.headers, raw.parse().system_fingerprint or ""


def test_auto_sends_easy_prompts_small_and_hard_ones_large(tiers: tuple[GatewayProcess, dict[str, FakeUpstream]]) -> None:
    gateway, _ = tiers
    headers, answered_by = ask(gateway, EASY)
    assert (headers["x-gateway-tier"], answered_by) == ("small", "up-small")
    assert 0 <= float(headers["x-gateway-route-score"]) < 0.25
    assert headers["x-gateway-route-reasons"]  # the features that pulled toward small
    headers, answered_by = ask(gateway, HARD)
    assert (headers["x-gateway-tier"], answered_by) == ("large", "up-large")
    assert "auto" in [m.id for m in client(gateway).models.list()]


def test_the_router_and_the_cache_share_one_embedding(tiers: tuple[GatewayProcess, dict[str, FakeUpstream]]) -> None:
    gateway, _ = tiers

    def embedded() -> float:
        lines = httpx.get(f"{gateway.url}/metrics").text.splitlines()
        return float(next(line.split()[1] for line in lines if line.startswith("gateway_embedder_texts_total ")))

    before = embedded()
    headers, _ = ask(gateway, "How many moons does Mars have?", temperature=0)  # cacheable: both layers look
    assert headers["x-gateway-cache"] == "miss" and headers["x-gateway-tier"] == "small"
    assert embedded() == before + 1
    headers, _ = ask(gateway, "How many moons does Mars have?", temperature=0)
    assert headers["x-gateway-cache"] == "hit-exact" and headers["x-gateway-tier"] == "small"  # routed, then cached

    # Content parts: the router and the cache read a message's text by the same rule (text parts
    # only), so they embed the same string once.
    parts = [{"type": "text", "text": "How many moons does Jupiter have?"}, {"text": "a part with no type"}]
    body = {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": parts}]}
    before = embedded()
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200 and response.headers["x-gateway-cache"] == "miss"
    assert embedded() == before + 1


def test_a_tier_can_be_forced_by_header_or_body(tiers: tuple[GatewayProcess, dict[str, FakeUpstream]]) -> None:
    gateway, _ = tiers
    headers, answered_by = ask(gateway, EASY, extra_headers={"x-gateway-tier": "large"})
    assert (headers["x-gateway-tier"], headers["x-gateway-route-forced"], answered_by) == ("large", "true", "up-large")
    headers, answered_by = ask(gateway, HARD, extra_body={"gateway": {"tier": "medium"}})
    assert (headers["x-gateway-tier"], answered_by) == ("medium", "up-medium")
    with pytest.raises(openai.BadRequestError) as caught:
        ask(gateway, EASY, extra_headers={"x-gateway-tier": "huge"})
    assert caught.value.status_code == 400 and "huge" in str(caught.value.message)


def test_shadow_mode_decides_but_one_pool_answers(tiers: tuple[GatewayProcess, dict[str, FakeUpstream]]) -> None:
    gateway, _ = tiers
    headers, answered_by = ask(gateway, EASY, model="auto-shadow")
    assert (headers["x-gateway-tier"], headers["x-gateway-route-shadow"], answered_by) == ("small", "large", "up-large")
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'gateway_router_decisions_total{how="shadow",router="auto-shadow",tier="small"}' in metrics


def test_a_broken_json_answer_is_asked_again_one_tier_up(tiers: tuple[GatewayProcess, dict[str, FakeUpstream]]) -> None:
    gateway, ups = tiers
    before = ups["small"].requests
    headers, answered_by = ask(gateway, EASY, model="auto-json", response_format=SCHEMA)
    assert ups["small"].requests == before + 1  # the small tier answered first, with "not json"...
    assert (headers["x-gateway-tier"], answered_by) == ("medium", "up-medium")  # ...so medium was asked
    assert headers["x-gateway-route-escalated"] == "json_schema"


def test_a_failing_tier_escalates(tiers: tuple[GatewayProcess, dict[str, FakeUpstream]]) -> None:
    gateway, ups = tiers
    ups["small"].kill()
    try:
        headers, answered_by = ask(gateway, EASY, extra_headers={"cache-control": "no-cache"})  # not from the cache
        assert (headers["x-gateway-tier"], answered_by) == ("small", "up-medium")  # decided small, served one tier up
        assert headers["x-gateway-fallbacks"] == "1"
    finally:
        ups["small"].revive()


def write(tmp_path: Path, routers: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(
        """
auth: {enabled: false}
pools:
  small: {aliases: [mini], deployments: [{id: a, backend: echo}]}
  large: {deployments: [{id: b, backend: echo}]}
routers:
"""
        + routers
    )
    return path


@pytest.mark.parametrize(
    ("routers", "message"),
    [
        ("  mini: {tiers: {small: {pool: small}, medium: {pool: large}, large: {pool: large}}}\n", "already used"),
        ("  auto: {tiers: {small: {pool: small}, medium: {pool: nowhere}, large: {pool: large}}}\n", "no pool named 'nowhere'"),
        ("  auto: {tiers: {small: {pool: small}, large: {pool: large}}}\n", "must be the classifier's tiers"),
        (
            "  auto: {tiers: {small: {pool: small}, medium: {pool: small}, large: {pool: large}}, model: nope.json}\n",
            "cannot load",
        ),
        (
            "  auto: {tiers: {small: {pool: small}, medium: {pool: small, threshold: 0.6}, large: {pool: large, threshold: 0.4}}}\n",
            "must not be below",
        ),
    ],
)
def test_router_config_errors_are_reported(tmp_path: Path, routers: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, routers))
    assert message in str(caught.value) and "routers" in str(caught.value)


def test_the_trace_shows_the_route_and_each_step(tiers: tuple[GatewayProcess, dict[str, FakeUpstream]]) -> None:
    gateway, _ = tiers
    receiver: OTLPReceiver = gateway.receiver  # type: ignore[attr-defined]
    trace_id = secrets.token_hex(16)
    before = httpx.get(f"{gateway.url}/metrics").text
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Prove that there are infinitely many primes, step by step, rigorously."}],
        extra_headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        temperature=0,
    )

    def traced() -> list[dict] | None:
        spans = [s for s in receiver.snapshot() if s["trace_id"] == trace_id]
        return spans if len(spans) >= 6 else None

    spans = wait_until(traced, what="the routed request's six spans")
    by_name = {s["name"]: s for s in spans}
    server = next(s for s in spans if s["kind"] == "SERVER")
    assert {"embed", "classify", "cache lookup", "cache store"} <= set(by_name)
    assert all(by_name[n]["parent_span_id"] == server["span_id"] for n in ("embed", "classify", "cache lookup", "cache store"))
    a = server["attributes"]
    assert a["gateway.tier"] == raw.headers["x-gateway-tier"]
    assert a["gateway.route.score"] == pytest.approx(float(raw.headers["x-gateway-route-score"]), abs=1e-4)
    assert "; ".join(a["gateway.route.reasons"]) == raw.headers["x-gateway-route-reasons"]
    assert a["gateway.cache.outcome"] == "miss"
    after = httpx.get(f"{gateway.url}/metrics").text
    for name in ("gateway_classifier_seconds_count", "gateway_embedding_seconds_count"):
        assert _sample(after, name) - _sample(before, name) == 1


def _sample(text: str, name: str) -> float:
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)


def test_decisions_and_their_outcomes_are_logged_and_train_the_router(
    tiers: tuple[GatewayProcess, dict[str, FakeUpstream]], tmp_path: Path
) -> None:
    from gateway.routing.outcomes import labelled_rows

    gateway, _ = tiers
    first, _ = ask(gateway, "Which ocean is the saltiest?")  # routed small; feedback will say it needed medium
    assert first["x-gateway-tier"] == "small"
    schema, _ = ask(gateway, "Which country has the most islands?", model="auto-json", response_format=SCHEMA)
    assert schema["x-gateway-route-escalated"] == "json_schema"
    retried, _ = ask(gateway, "Which river is the longest in Africa?")
    assert retried["x-gateway-tier"] == "small"
    again, _ = ask(gateway, "Which river is the longest in Africa?", extra_headers={"x-gateway-tier": "large"})
    assert again["x-gateway-tier"] == "large"

    feedback = f"{gateway.admin_url}/admin/router/feedback"
    sent = httpx.post(feedback, json={"request_id": first["x-request-id"], "tier": "medium"}, timeout=10)
    assert sent.status_code == 200 and sent.json()["logged"] is True
    for bad in ({"request_id": first["x-request-id"], "tier": "huge"}, {"request_id": "a b", "tier": "large"}, {"tier": "large"}):
        refused = httpx.post(feedback, json=bad, timeout=10)
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error", bad

    def logged() -> list[dict] | None:
        files = list(gateway.root.glob("decisions-*.jsonl"))  # type: ignore[attr-defined]
        rows = labelled_rows(files)
        return rows if len(rows) >= 4 else None

    rows = wait_until(logged, what="four labelled requests in the routing log")
    text = "".join(p.read_text() for p in gateway.root.glob("decisions-*.jsonl"))  # type: ignore[attr-defined]
    assert "Bearer" not in text and "unused" not in text  # the client's key never reaches the log
    by_prompt = {r["messages"][-1]["content"]: r["tier"] for r in rows}
    assert by_prompt["Which ocean is the saltiest?"] == "medium"  # feedback
    assert by_prompt["Which country has the most islands?"] == "medium"  # json_schema escalation
    assert by_prompt["Which river is the longest in Africa?"] == "large"  # the retry on a larger tier (and the forced request)

    # `router-train --log` learns from them, beside a small labelled file.
    seed = [line for line in (ROOT / "evals" / "router-prompts.jsonl").read_text().splitlines() if '"train"' in line][:90]
    labelled = tmp_path / "seed.jsonl"
    labelled.write_text("\n".join(seed) + "\n")
    logs = [a for p in gateway.root.glob("decisions-*.jsonl") for a in ("--log", str(p))]  # type: ignore[attr-defined]
    out = tmp_path / "model.json"
    command = [sys.executable, "-m", "gateway", "router-train", str(labelled), "--no-generated", *logs, "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "from routing logs" in result.stdout and out.exists()


def test_odd_requests_get_a_decision_not_an_error(tiers: tuple[GatewayProcess, dict[str, FakeUpstream]]) -> None:
    gateway, _ = tiers
    document = "\n\n".join(["Minutes: the board approved the budget and the hiring plan. " * 10] * 3000)  # ~190k tokens
    odd = [
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
        [
            {"role": "user", "content": "What's the weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 3}'},
        ],
        [{"role": "user", "content": "Résume ce texte, 请总结, summarise: " + "données et 数据. " * 200}],
        [{"role": "user", "content": f"{document}\n\nWhat did the board approve?"}],
    ]
    for messages in odd:
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "auto", "messages": messages}, timeout=60)
        assert response.status_code == 200, response.text[:300]
        assert response.headers["x-gateway-tier"] in ("small", "medium", "large")
    # the question after the long document is what is judged: an easy request with a big prompt
    assert response.headers["x-gateway-tier"] != "large"
