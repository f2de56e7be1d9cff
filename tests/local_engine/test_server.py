"""The engine's own server as a real process, through the official `openai` client."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.local_engine.tokenizer import Detokenizer, Tokenizer
from tests.helpers.polling import wait_until
from tests.helpers.ports import free_port
from tests.local_engine.conftest import hf_greedy, hf_model

ROOT = Path(__file__).resolve().parents[2]


class EngineServer:
    """`python -m backends.local_engine serve` on a free port; a port taken between its choice and
    the engine's bind makes the engine exit, and the next free port is tried."""

    def __init__(self, model: Path, *flags: str) -> None:
        for _ in range(5):
            self.port = free_port()
            self.log = model.parent / f"engine-{self.port}.log"
            cmd = [sys.executable, "-m", "backends.local_engine", "serve", "--model", str(model), "--served-model-name",
                   "tiny", "--port", str(self.port), "--num-kv-blocks", "64", *flags]  # fmt: skip
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=self.log.open("w"), stderr=subprocess.STDOUT
            )
            if wait_until(self._outcome, timeout=60, interval=0.1, what="the engine server") == "ready":
                return
            assert "address already in use" in self.log.read_text().lower(), self.log.read_text()
        raise RuntimeError("the engine server found no free port in five tries")

    def _outcome(self) -> str | None:
        if self.proc.poll() is not None:
            return "exited"
        try:
            return "ready" if httpx.get(f"{self.url}/health", timeout=1).status_code == 200 else None
        except httpx.TransportError:
            return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health").json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


@pytest.fixture(scope="module")
def server(llama_dir: Path) -> Iterator[EngineServer]:
    s = EngineServer(llama_dir)
    yield s
    s.stop()


@pytest.fixture
def client(server: EngineServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_chat_greedy_answer_is_the_models_and_usage_adds_up(client: openai.OpenAI, llama_dir: Path) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "name three colours"}]
    reply = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    )
    tokenizer = Tokenizer(llama_dir)
    prompt = tokenizer.encode_chat(messages)
    expected, _ = hf_greedy(hf_model(llama_dir), prompt, 12)
    detok = Detokenizer(tokenizer, prompt)
    assert reply.choices[0].message.content == "".join(detok.push(t) for t in expected)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens == len(prompt) and reply.usage.completion_tokens == 12
    assert reply.usage.total_tokens == len(prompt) + 12


def test_stream_carries_the_same_text_and_usage(client: openai.OpenAI) -> None:
    kwargs = {"model": "tiny", "messages": [{"role": "user", "content": "count to ten"}], "max_tokens": 10, "temperature": 0}
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_with_text_or_token_ids_n_and_logprobs(client: openai.OpenAI) -> None:
    text = client.completions.create(model="tiny", prompt="once upon a time", max_tokens=6, temperature=0, logprobs=2)
    choice = text.choices[0]
    assert len(choice.logprobs.tokens) == 6 and all(len(t) == 2 for t in choice.logprobs.top_logprobs)
    ids = client.completions.create(model="tiny", prompt=[101, 2320, 2588, 1037, 2051], max_tokens=6, temperature=0)
    assert ids.choices[0].text == choice.text  # the same tokens as the text prompt ([CLS] once upon a time)
    several = client.completions.create(model="tiny", prompt="hi", max_tokens=5, n=3, temperature=1.0, seed=3)
    assert sorted(c.index for c in several.choices) == [0, 1, 2]
    assert several.usage.completion_tokens == 15


def test_bad_requests_get_openai_shaped_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=10_000)
    assert exc.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], temperature=9)
    assert exc.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[])


def test_client_that_goes_away_mid_stream_frees_its_blocks(server: EngineServer) -> None:
    before = server.health()["generation_tokens"]
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "go on"}],
        "max_tokens": 200,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        for _ in response.iter_lines():
            break

    def freed() -> dict | None:
        health = server.health()
        return health if health["running"] == 0 and health["kv_usage"] == 0.0 else None

    health = wait_until(freed, what="the engine to free the abandoned request's blocks")
    assert health["generation_tokens"] - before < 200  # it did not run to the end


def test_concurrent_requests_are_batched_and_metrics_show_them(client: openai.OpenAI, server: EngineServer) -> None:
    results: list[str] = []
    steps_before = server.health()["steps"]

    def ask(i: int) -> None:
        r = client.completions.create(model="tiny", prompt=f"question number {i}", max_tokens=64, temperature=0)
        results.append(r.choices[0].finish_reason)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["length"] * 8
    # One at a time, 8 requests of 64 tokens take at least 8 x 64 engine steps; run together, a step
    # computes a token of every running request.
    assert server.health()["steps"] - steps_before < 8 * 64 / 2
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)}
    for name in ("engine_requests_running", "engine_kv_cache_usage_ratio", "engine_prefix_cache_hit_ratio",
                 "engine_time_to_first_token_seconds", "engine_inter_token_latency_seconds"):  # fmt: skip
        assert name in families
    ttft = {s.name: s.value for s in families["engine_time_to_first_token_seconds"].samples}
    assert ttft["engine_time_to_first_token_seconds_count"] >= 8
