"""llama.cpp's server (llama-cpp-python 0.3.36) behind the gateway, through the official `openai`
client: the same tiny checkpoint the bundled engine serves, converted to GGUF."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers.gateway import GatewayProcess
from tests.peers.conftest import LlamaServer

pytestmark = pytest.mark.peers

LONG = "word " * 300  # about 300 tokens: over a 256-token window


@pytest.fixture(scope="module")
def llama_long(ggufs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(ggufs["f32"], tmp_path_factory.mktemp("llama-long") / "server.log", n_ctx=2048)
    yield server
    server.kill()


@pytest.fixture(scope="module")
def gateway(
    llama: LlamaServer, llama_long: LlamaServer, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    path = tmp_path_factory.mktemp("gateway") / "llama.yaml"
    path.write_text(f"""
auth: {{enabled: false}}
pools:
  llama:            # the 256-token server, its window known to the gateway, a longer one behind it
    context_fallbacks: [llama-long]
    deployments:
      - {{id: llama-cpp, base_url: "{llama.base_url}", model: tiny-llama, context_window: 256, tokenizer: "hf:{checkpoint}"}}
  llama-alone:      # the same, with nowhere to go
    deployments:
      - {{id: llama-cpp-alone, base_url: "{llama.base_url}", context_window: 256, tokenizer: "hf:{checkpoint}"}}
  llama-raw:        # the same server, its window not configured: its own answers decide
    context_fallbacks: [llama-long]
    deployments: [{{id: llama-cpp-raw, base_url: "{llama.base_url}"}}]
  llama-long:
    deployments: [{{id: llama-cpp-long, base_url: "{llama_long.base_url}"}}]
""")
    process = GatewayProcess(path)
    yield process
    process.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_chat_and_text_completions_come_back_with_usage_and_finish_reasons(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="llama", messages=chat("hello there"), max_tokens=8, temperature=0)
    assert answer.choices[0].message.content and answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 8 and answer.usage.prompt_tokens > 0
    text = client.completions.create(model="llama", prompt="the quick brown fox", max_tokens=5, temperature=0)
    assert text.choices[0].text and text.choices[0].finish_reason == "length"
    assert text.usage is not None and text.usage.completion_tokens == 5


def test_a_stream_relays_every_piece_and_gets_a_usage_chunk_only_when_asked(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="llama", messages=chat("tell me more"), max_tokens=12, temperature=0)
    plain = list(client.chat.completions.create(model="llama", messages=chat("tell me more"), max_tokens=12,
                                                temperature=0, stream=True))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == whole.choices[0].message.content
    assert all(c.usage is None for c in plain)
    assert [c.choices[0].finish_reason for c in plain if c.choices and c.choices[0].finish_reason] == ["length"]
    # This server never sends the usage chunk: the gateway makes it from its own count.
    counted = list(client.chat.completions.create(model="llama", messages=chat("tell me more"), max_tokens=12, temperature=0,
                                                  stream=True, stream_options={"include_usage": True}))  # fmt: skip
    last = counted[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in counted[:-1])


def test_stop_sequences_cut_the_answer_streamed_or_not(client: openai.OpenAI) -> None:
    full = client.completions.create(model="llama", prompt="one two three", max_tokens=16, temperature=0).choices[0].text
    words = [w for w in full.split() if full.count(w) == 1 and full.index(w) > 0]
    assert words, full
    stop = words[len(words) // 2]
    cut = client.completions.create(model="llama", prompt="one two three", max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = list(client.completions.create(model="llama", prompt="one two three", max_tokens=16, temperature=0,
                                              stop=[stop], stream=True))  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed if c.choices) == full[: full.index(stop)]
    assert [c.choices[0].finish_reason for c in streamed if c.choices and c.choices[0].finish_reason] == ["stop"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_over_the_window_goes_to_the_longer_context_or_is_a_clean_400(client: openai.OpenAI, stream: bool) -> None:
    answer = client.chat.completions.with_raw_response.create(model="llama", messages=chat(LONG), max_tokens=4, stream=stream)
    assert answer.headers["x-gateway-model"] == "llama-cpp-long" and answer.headers["x-gateway-fallbacks"] == "1"
    parsed = answer.parse()
    content = (
        "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) if stream else parsed.choices[0].message.content
    )
    assert content
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="llama-alone", messages=chat(LONG), max_tokens=4, stream=stream)
    assert caught.value.code == "context_length_exceeded" and "256 tokens" in caught.value.message


def test_the_servers_own_context_error_is_read_as_one_when_its_window_is_not_configured(client: openai.OpenAI) -> None:
    answer = client.chat.completions.with_raw_response.create(model="llama-raw", messages=chat(LONG), max_tokens=4)
    assert answer.headers["x-gateway-model"] == "llama-cpp-long"  # its 400 context_length_exceeded, understood


def test_its_500_for_a_bad_field_is_the_clients_400_without_the_traceback_and_trips_nothing(
    client: openai.OpenAI, gateway: GatewayProcess
) -> None:
    """llama-cpp-python answers a field of the wrong type (one the gateway does not check: `min_p`
    is not OpenAI's) with 500, pydantic's report and the file and line of its handler."""
    for _ in range(8):  # more than breaker.consecutive_failures, were they counted as failures
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.with_raw_response.create(
                model="llama-alone", messages=chat("hi"), max_tokens=4, extra_body={"min_p": "x"}
            )
        assert caught.value.response.headers["x-gateway-attempts"] == "1"
        assert caught.value.param == "min_p" and "- min_p: Input should be a valid number" in caught.value.message
        assert "File " not in str(caught.value.body) and "site-packages" not in str(caught.value.body)
    assert client.chat.completions.create(model="llama-alone", messages=chat("hi"), max_tokens=4).choices
    breakers = {b["deployment"]: b for b in httpx.get(f"{gateway.admin_url}/admin/breakers").json()["data"]}
    assert breakers["llama-cpp-alone"]["times_opened"] == 0


def test_a_server_killed_mid_stream_ends_the_stream_with_an_error(
    ggufs: dict[str, Path], checkpoint: Path, tmp_path: Path
) -> None:
    server = LlamaServer(ggufs["f32"], tmp_path / "doomed.log", n_ctx=2048)
    config = tmp_path / "doomed.yaml"
    config.write_text(
        f'auth: {{enabled: false}}\npools:\n  doomed:\n    deployments: [{{id: doomed, base_url: "{server.base_url}"}}]\n'
    )
    gateway = GatewayProcess(config)
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model="doomed", messages=chat("go on"), max_tokens=1800, stream=True)
        pieces = iter(stream)
        assert next(pieces).choices and next(pieces).choices
        server.kill()
        with pytest.raises(openai.APIError) as caught:
            for _ in pieces:
                pass
        assert "upstream" in caught.value.message
        assert httpx.get(f"{gateway.url}/health/liveness").status_code == 200
    finally:
        gateway.stop()
        server.kill()


def test_the_converted_checkpoint_decodes_as_the_engine_does(checkpoint: Path, ggufs: dict[str, Path]) -> None:
    """Greedy tokens from the same prompt ids: llama.cpp on the f32 and f16 files equals the engine
    (so the conversion keeps the weights and RoPE layout); q8_0 rounds enough to part after a few."""
    from llama_cpp import Llama

    from backends.local_engine.engine import EngineSettings, LLMEngine
    from backends.local_engine.sampling import SamplingParams

    prompt = [101, 1996, 4248, 2829, 4419, 102]
    ours = LLMEngine(EngineSettings(model=str(checkpoint), num_kv_blocks=64)).generate(
        [prompt], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    )[0]
    for kind, agree in (("f32", 16), ("f16", 16), ("q8_0", 3)):
        llm = Llama(str(ggufs[kind]), n_ctx=256, verbose=False)
        theirs = []
        for token in llm.generate(prompt, temp=0):
            theirs.append(token)
            if len(theirs) == 16:
                break
        assert theirs[:agree] == ours[:agree], kind
