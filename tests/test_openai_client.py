"""The official openai client against the gateway, in front of a fake upstream, over loopback."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.helpers.fake_upstream import FakeUpstream
from tests.helpers.gateway import GatewayProcess

MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-test", max_retries=0)


def test_chat_completion_passes_the_upstream_answer_through(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    completion = raw.parse()
    assert completion.choices[0].message.content == "tok tok tok tok tok"
    assert completion.system_fingerprint == "primary"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert raw.headers["x-gateway-model"] == "main-dep"
    assert raw.headers["x-request-id"] and completion._request_id == raw.headers["x-request-id"]
    # 10 prompt tokens at $2.5/1M plus 5 completion tokens at $10/1M
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(10 * 2.5e-6 + 5 * 10e-6)


def test_the_alias_becomes_the_deployments_model_and_unknown_fields_pass_through(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_completion_tokens": 7, "vendor_knob": {"x": [1, 2]}}
    seen: dict[str, object] = {}
    upstream.on_request = seen.update
    try:
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body)
    finally:
        upstream.on_request = None
    assert response.status_code == 200
    assert seen["model"] == "upstream-model"
    assert seen["vendor_knob"] == {"x": [1, 2]}
    assert seen["max_completion_tokens"] == 7


def test_max_tokens_is_accepted_too(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=16)
    assert completion.choices[0].finish_reason == "stop"


async def test_async_client(gateway: GatewayProcess) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-test", max_retries=0) as client:
        completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert completion.choices[0].message.content
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "tok " * 5


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok " * 5
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_stream_has_exactly_one_done(gateway: GatewayProcess) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"]
        raw = response.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert [e for e in events if e == "data: [DONE]"] == ["data: [DONE]"] and events[-1] == "data: [DONE]"


def test_completions_and_embeddings(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="gpt-4o", prompt="Once upon a time")
    assert completion.choices[0].text == "tok tok tok tok tok"
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="gpt-4o", prompt="x", stream=True))
    assert streamed == "tok " * 5
    embeddings = client.embeddings.create(model="gpt-4o", input=["a", "b"])
    assert [d.index for d in embeddings.data] == [0, 1]


def test_models(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"main", "gpt-4o", "gpt-4o-mini", "faulty", "echo"} <= ids
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


def test_unknown_model_is_404_naming_the_models_that_exist(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-5-ultra", messages=MESSAGES)
    assert info.value.code == "model_not_found"
    assert "gpt-4o-mini" in info.value.message
    assert info.value.request_id


def test_bad_request_error_class(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[list-item]
    assert info.value.param == "messages[0].role"


def test_echo_backend_streams_the_prompt_back(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "one two"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: one two"
