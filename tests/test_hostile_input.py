"""Hostile and absurd input: each is a clear OpenAI-shaped 4xx, never a 5xx, a hang or a crash,
and nothing a client sends comes back as a response header of its choosing."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.gateway import GatewayProcess
from tests.test_bad_input import assert_openai_error

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    path = tmp_path_factory.mktemp("strict") / "gateway.yaml"
    path.write_text(
        "server: {max_body_bytes: 65536, max_json_depth: 16, max_messages: 10, max_text_chars: 20000, max_output_tokens: 4096}\n"
        "reload: {watch: false}\nauth: {enabled: false}\n"
        "pools:\n  echo:\n    deployments: [{id: echo-dep, backend: echo}]\n"
    )
    gateway = GatewayProcess(path)
    yield gateway
    gateway.stop()


def send(gateway: GatewayProcess, body: bytes | object, path: str = "/v1/chat/completions", **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    return httpx.post(f"{gateway.url}{path}", content=content, headers={"content-type": "application/json", **headers})


def chat(**fields: object) -> dict[str, object]:
    return {"model": "echo", "messages": MESSAGES, **fields}


def nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


def test_a_well_formed_request_passes_the_bounds(strict: GatewayProcess) -> None:
    ok = send(strict, chat(max_tokens=4096, metadata=nested(10)))
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (chat(metadata=nested(20)), None, None),  # deeper than max_json_depth
        (b'{"model": "echo", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, None),  # past the parser's own limit
        ({"model": "echo", "messages": MESSAGES * 11}, "messages", None),
        ({"model": "echo", "messages": [{"role": "user", "content": "y" * 20_001}]}, None, "context_too_large"),
        (chat(max_tokens=5000), "max_tokens", None),
        (chat(max_completion_tokens=10**30), "max_completion_tokens", None),
        (chat(max_tokens=0), "max_tokens", None),
        (chat(temperature=-0.5), "temperature", None),
        (chat(top_p=-1), "top_p", None),
        (chat(n=0), "n", None),
        (chat(presence_penalty=-3), "presence_penalty", None),
        (b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', None, None),
        (b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}', None, None),
        (b'{"model": "echo", "messages": [{"role": "user", "content": "\\ud800"}]}', None, None),  # a lone surrogate
        (b'{"model": "echo", "messages": [{"role": "user", "content": "\xc3\x28"}]}', None, None),  # invalid UTF-8
    ],
)
def test_hostile_bodies_are_400(strict: GatewayProcess, body: object, param: str | None, code: str | None) -> None:
    error = assert_openai_error(send(strict, body), 400, code=code, param=param)
    assert error["type"] == "invalid_request_error"


def test_other_endpoints_keep_the_same_bounds(strict: GatewayProcess) -> None:
    assert_openai_error(send(strict, {"model": "echo", "input": ["a"] * 11}, "/v1/embeddings"), 400, param="input")
    assert_openai_error(send(strict, {"model": "echo", "prompt": "p", "max_tokens": 10**6}, "/v1/completions"), 400)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"]
)
def test_bodies_that_are_not_json_are_415(strict: GatewayProcess, content_type: str) -> None:
    response = httpx.post(f"{strict.url}/v1/chat/completions", content=b"model=echo", headers={"content-type": content_type})
    error = assert_openai_error(response, 415, code="unsupported_media_type")
    assert "application/json" in str(error["message"])


def test_json_with_parameters_or_without_a_content_type_is_accepted(strict: GatewayProcess) -> None:
    body = httpx.Request("POST", "/", json=chat()).content
    assert send(strict, body, **{"content-type": "application/json; charset=utf-8"}).status_code == 200
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", strict.port), timeout=5) as sock:
        sock.sendall(raw + body)
        assert sock.recv(64).startswith(b"HTTP/1.1 200")


def test_client_values_never_become_response_headers(strict: GatewayProcess) -> None:
    injected = "x\r\nset-cookie: stolen=1"
    response = send(strict, chat(model=injected))
    assert_openai_error(response, 404)
    assert "set-cookie" not in response.headers
    unsafe_id = send(strict, chat(), **{"x-request-id": 'a b"<script>'})
    assert unsafe_id.status_code == 200 and unsafe_id.headers["x-request-id"].startswith("req_")
    assert send(strict, chat(), **{"x-request-id": "trace-42"}).headers["x-request-id"] == "trace-42"
    # a header split by the client itself is refused by the HTTP parser before it reaches a handler
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-gateway-tier: small\rset-cookie: a=1\r\ncontent-length: 2\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", strict.port), timeout=5) as sock:
        sock.sendall(raw)
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 400") and b"set-cookie" not in head.lower()
    bad_deadline = send(strict, chat(), **{"x-gateway-deadline-ms": "NaN"})
    assert_openai_error(bad_deadline, 400, param="x-gateway-deadline-ms")


def test_a_long_prompt_of_token_ids_is_one_prompt(strict: GatewayProcess) -> None:
    assert send(strict, {"model": "echo", "prompt": list(range(50)), "max_tokens": 4}, "/v1/completions").status_code == 200
    batch = send(strict, {"model": "echo", "prompt": [[1, 2]] * 11, "max_tokens": 4}, "/v1/completions")
    assert_openai_error(batch, 400, param="prompt")
