"""The seed servers' wire quirks (tests/fixtures/wire/*.json, each written from the server's own
source or documentation, cited in the file), replayed byte for byte behind the gateway: the official
`openai` client gets a correct answer or an OpenAI-shaped error (docs/upstreams.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.helpers.gateway import GatewayProcess
from tests.helpers.replay_upstream import WIRE, Recorded, ReplayUpstream, fixture

SERVERS = sorted(p.stem for p in WIRE.glob("*.json"))
CASES = [(server, name) for server in SERVERS for name in fixture(server)["exchanges"]]
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
]


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayUpstream]:
    exchanges = {}
    for server, name in CASES:
        e = fixture(server)["exchanges"][name]
        exchanges[f"{server}/{name}"] = Recorded(
            e["status"], e["headers"], e.get("body"), e.get("pieces"), e.get("http10", False)
        )
    upstream = ReplayUpstream(exchanges=exchanges).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def client(replay: ReplayUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    path = tmp_path_factory.mktemp("wire") / "gateway.yaml"
    path.write_text(f"""
auth: {{enabled: false}}
pools:
  replayed:
    retry: {{max_attempts: 2, backoff_initial_s: 0.01, backoff_max_s: 0.01}}
    breaker: {{enabled: false}}   # every exchange goes to the one replaying upstream
    deployments: [{{id: replay, base_url: "{replay.base_url}"}}]
""")
    gateway = GatewayProcess(path)
    yield openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    gateway.stop()


def send(client: openai.OpenAI, request: dict[str, Any]) -> tuple[Any, list[Any]]:
    """(the raw response, the chunks or [the completion]) for the exchange's kind of request."""
    extra: dict[str, Any] = {"model": "replayed", "stream": bool(request.get("stream"))}
    if request.get("include_usage"):
        extra["stream_options"] = {"include_usage": True}
    if request.get("stop"):
        extra["stop"] = request["stop"]
    if request.get("endpoint") == "completions":
        raw = client.completions.with_raw_response.create(prompt="The capital of France", **extra)
    else:
        if request.get("tools"):
            extra["tools"] = TOOLS
        raw = client.chat.completions.with_raw_response.create(
            messages=[{"role": "user", "content": "Capital of France?"}], **extra
        )
    parsed = raw.parse()
    return raw, list(parsed) if extra["stream"] else [parsed]


def text_of(chunks: list[Any]) -> str:
    out = ""
    for c in chunks:
        for choice in c.choices:
            if hasattr(choice, "text"):
                out += choice.text or ""
            elif hasattr(choice, "delta"):
                out += choice.delta.content or ""
            else:
                out += choice.message.content or ""
    return out


def finish_reasons(chunks: list[Any]) -> list[str]:
    return [choice.finish_reason for c in chunks for choice in c.choices if choice.finish_reason]


def tool_call(chunks: list[Any]) -> dict[str, str]:
    name, arguments = "", ""
    for c in chunks:
        for choice in c.choices:
            for call in choice.delta.tool_calls or []:
                name += call.function.name or ""
                arguments += call.function.arguments or ""
    return {"name": name, "arguments": arguments}


@pytest.mark.parametrize(("server", "name"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_the_client_gets_what_the_gateway_documents(
    server: str, name: str, client: openai.OpenAI, replay: ReplayUpstream
) -> None:
    exchange = fixture(server)["exchanges"][name]
    expect = exchange["expect"]
    replay.current = f"{server}/{name}"
    if "error" in expect:
        with pytest.raises(openai.APIStatusError) as caught:
            send(client, exchange["request"])
        error, wanted = caught.value, expect["error"]
        assert error.status_code == wanted["status"], error.body
        body = error.body
        assert isinstance(body, dict) and {"message", "type", "code", "param"} <= set(body), body
        if "code" in wanted:
            assert error.code == wanted["code"]
        if "message" in wanted:
            assert wanted["message"] in error.message
        if "retry_after" in wanted:
            assert error.response.headers["retry-after"] == wanted["retry_after"]
        return
    if expect.get("stream_error"):
        got: list[Any] = []
        with pytest.raises(openai.APIError):
            read_stream(client, got)
        assert text_of(got) == expect["content"]
        return
    raw, chunks = send(client, exchange["request"])
    assert raw.status_code == 200
    if "content" in expect:
        assert text_of(chunks) == expect["content"]
    if "tool" in expect:
        assert tool_call(chunks) == expect["tool"]
        assert json.loads(tool_call(chunks)["arguments"]) == json.loads(expect["tool"]["arguments"])
    assert finish_reasons(chunks) == [expect["finish_reason"]]
    if "usage" in expect:
        usage = [c.usage for c in chunks if c.usage is not None and c.usage.total_tokens][-1]
        assert [usage.prompt_tokens, usage.completion_tokens] == expect["usage"]


def read_stream(client: openai.OpenAI, got: list[Any]) -> None:
    """A stream read chunk by chunk into `got`, so that what came before an error is kept."""
    stream = client.chat.completions.create(
        model="replayed", messages=[{"role": "user", "content": "Capital of France?"}], stream=True
    )
    for chunk in stream:
        got.append(chunk)


def test_every_fixture_cites_its_sources_and_says_what_the_gateway_does() -> None:
    for server in SERVERS:
        doc = fixture(server)
        assert doc["version"] and doc["sources"] and doc["differs"] and doc["gateway"], server
        assert all(("(" in s or "docs" in s or "issue" in s) for s in doc["sources"]), server
        assert server in Path(WIRE.parents[1].parent / "docs" / "upstreams.md").read_text(), (
            f"{server} missing from docs/upstreams.md"
        )
