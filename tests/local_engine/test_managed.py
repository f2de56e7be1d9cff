"""The gateway running the bundled engine as a managed child process (`backend: local`)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers.errors import assert_openai_error
from tests.helpers.gateway import GatewayProcess
from tests.helpers.polling import wait_until
from tests.helpers.ports import outside_ephemeral_port

pytestmark = pytest.mark.slow  # the engine as a child process: starts, restarts, dies with the gateway


@pytest.fixture
def managed(tmp_path: Path, llama_dir: Path) -> Iterator[GatewayProcess]:
    path = tmp_path / "gateway.yaml"
    port = outside_ephemeral_port()  # the gateway starts the engine on this port
    path.write_text(f"""
reload: {{watch: false}}
auth: {{enabled: false}}
pools:
  small:
    aliases: [auto-small]
    deployments:
      - id: engine
        backend: local
        engine: {{model: {llama_dir}, port: {port}, num_kv_blocks: 64, startup_timeout_s: 60}}
        price: {{gpu_hour_usd: 3.6}}
  vectors:
    deployments: [{{id: echo, backend: echo}}]
""")
    gateway = GatewayProcess(path)
    gateway.engine_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield gateway
    gateway.stop()


def engine_pids(gateway: GatewayProcess) -> list[int]:
    return [int(p) for p in re.findall(r"local engine engine: started pid (\d+)", gateway.logs())]


def ask(gateway: GatewayProcess) -> httpx.Response:
    """Ask until the engine answers (it takes a few seconds to start)."""
    body = {"model": "small", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "temperature": 0}

    def answered() -> httpx.Response | None:
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
        if response.status_code == 200:
            return response
        assert_openai_error(response, 502, "upstream_unavailable")  # starting: never a crash
        return None

    return wait_until(answered, timeout=60, interval=0.2, what="the engine's answer")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_gateway_starts_the_engine_restarts_it_and_stops_it(managed: GatewayProcess) -> None:
    first = ask(managed)
    assert first.status_code == 200, first.text
    assert first.headers["x-gateway-model"] == "engine"
    assert first.json()["usage"]["completion_tokens"] == 5
    client = openai.OpenAI(base_url=f"{managed.url}/v1", api_key="unused", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="auto-small", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    # Priced per GPU-hour over the engine's measured seconds per token, which the gateway polls
    # every 2 s: once a poll has come between two requests, a request is priced at the figures
    # the engine reports just before it.
    def priced_at_the_engines_figures() -> bool:
        health = httpx.get(f"{managed.engine_url}/health").json()  # type: ignore[attr-defined]
        priced = ask(managed)
        usage = priced.json()["usage"]
        per_token = health["busy_seconds"] / health["computed_tokens"]
        expected = 3.6 / 3600 * per_token * (usage["prompt_tokens"] + usage["completion_tokens"])
        return abs(float(priced.headers["x-gateway-cost-usd"]) - expected) <= 1e-10  # the header has 10 decimals

    wait_until(priced_at_the_engines_figures, timeout=30, interval=0.5, what="a request priced per GPU-hour")

    [pid] = engine_pids(managed)
    os.kill(pid, signal.SIGKILL)
    again = ask(managed)
    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    pids = engine_pids(managed)
    assert len(pids) == 2 and "restarting" in managed.logs()

    managed.stop()
    assert not alive(pids[1])


def test_embeddings_asked_of_the_engine_name_the_models_that_serve_them(managed: GatewayProcess) -> None:
    response = httpx.post(f"{managed.url}/v1/embeddings", json={"model": "auto-small", "input": "hello"})
    error = assert_openai_error(response, 400, "model_not_supported", param="model")
    assert "does not serve embeddings; models that do: vectors." in error["message"]
    assert httpx.post(f"{managed.url}/v1/embeddings", json={"model": "vectors", "input": "hello"}).status_code == 200


def test_a_killed_gateway_leaves_no_engine_behind(managed: GatewayProcess) -> None:
    assert ask(managed).status_code == 200
    [pid] = engine_pids(managed)
    managed.proc.kill()
    managed.proc.wait(10)
    wait_until(lambda: not alive(pid), what="the orphaned engine to exit")
