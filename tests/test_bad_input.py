"""Bad input from clients and bad behaviour from upstreams: each gets a clear OpenAI-shaped error
with the right status, and the gateway stays up without leaking connections."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers.errors import assert_openai_error
from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.gateway import GatewayProcess
from tests.helpers.polling import wait_until

MESSAGES = [{"role": "user", "content": "hi"}]


def post(gateway: GatewayProcess, body: object | bytes, path: str = "/v1/chat/completions", **kw: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    return httpx.post(f"{gateway.url}{path}", content=content, headers={"content-type": "application/json"}, timeout=10, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "gpt-4o", "messages": [', None),
        (b"\xff\xfe not utf-8", None),
        (b"[1, 2, 3]", None),
        ({"model": "gpt-4o"}, "messages"),
        ({"model": "gpt-4o", "messages": []}, "messages"),
        ({"model": "gpt-4o", "messages": "hello"}, "messages"),
        ({"model": "gpt-4o", "messages": [{"content": "no role"}]}, "messages[0].role"),
        ({"model": 42, "messages": MESSAGES}, "model"),
        ({"messages": MESSAGES}, "model"),
        ({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": -5}, "max_tokens"),
        ({"model": "gpt-4o", "messages": MESSAGES, "max_completion_tokens": "many"}, "max_completion_tokens"),
        ({"model": "gpt-4o", "messages": MESSAGES, "temperature": 9}, "temperature"),
        ({"model": "gpt-4o", "messages": MESSAGES, "stream": "yes"}, "stream"),
    ],
)
def test_malformed_requests_are_400(gateway: GatewayProcess, body: object, param: str | None) -> None:
    error = assert_openai_error(post(gateway, body), 400, param=param)
    assert error["type"] == "invalid_request_error"


def test_an_unknown_role_is_named_with_the_roles_there_are(gateway: GatewayProcess) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "robot", "content": "hi"}]}
    error = assert_openai_error(post(gateway, body), 400, param="messages[0].role")
    assert "'robot'" in error["message"] and "system, developer, user, assistant, tool, function" in error["message"]


def test_completions_and_embeddings_validate_their_own_fields(gateway: GatewayProcess) -> None:
    assert_openai_error(post(gateway, {"model": "gpt-4o"}, "/v1/completions"), 400, param="prompt")
    assert_openai_error(post(gateway, {"model": "gpt-4o", "input": {"a": 1}}, "/v1/embeddings"), 400, param="input")


def test_oversized_body_is_413(gateway: GatewayProcess) -> None:
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 70_000}]}
    assert_openai_error(post(gateway, big), 413, code="request_too_large")


def test_oversized_body_without_content_length_is_413(gateway: GatewayProcess) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 5000
        yield b'"}]}'

    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=chunks(), timeout=10)
    assert_openai_error(response, 413)


def test_unknown_route_and_method(gateway: GatewayProcess) -> None:
    assert_openai_error(httpx.get(f"{gateway.url}/v1/nothing-here"), 404, code="unknown_url")
    assert_openai_error(httpx.get(f"{gateway.url}/v1/chat/completions"), 405, code="method_not_allowed")
    assert_openai_error(httpx.delete(f"{gateway.url}/v1/models"), 405)


def call_faulty(gateway: GatewayProcess, stream: bool = False) -> httpx.Response:
    return post(gateway, {"model": "faulty", "messages": MESSAGES, "stream": stream})


def test_upstream_garbage_is_502(gateway: GatewayProcess, fault: FakeUpstream) -> None:
    fault.behavior = Behavior(mode="garbage")
    assert_openai_error(call_faulty(gateway), 502, code="bad_upstream_response")


def test_upstream_disconnect_is_502(gateway: GatewayProcess, fault: FakeUpstream) -> None:
    fault.behavior = Behavior(mode="disconnect")
    assert_openai_error(call_faulty(gateway), 502, code="bad_upstream_response")
    assert_openai_error(call_faulty(gateway, stream=True), 502)


def test_upstream_that_hangs_is_504_after_the_read_timeout(gateway: GatewayProcess, fault: FakeUpstream) -> None:
    fault.behavior = Behavior(mode="hang")
    # The client waits 10 s at most; the 1 s read timeout of this config, not the client, ends these.
    assert_openai_error(call_faulty(gateway), 504, code="upstream_timeout")
    assert_openai_error(call_faulty(gateway, stream=True), 504, code="upstream_timeout")


def test_unreachable_upstream_is_502(tmp_path: object, gateway: GatewayProcess) -> None:
    from pathlib import Path

    from tests.helpers.ports import refused_port

    path = Path(str(tmp_path)) / "dead.yaml"
    path.write_text(
        f"reload: {{watch: false}}\nauth: {{enabled: false}}\npools:\n  dead:\n    deployments: [{{id: d, base_url: 'http://127.0.0.1:{refused_port()}/v1'}}]\n"
    )
    proc = GatewayProcess(path)
    try:
        assert_openai_error(post(proc, {"model": "dead", "messages": MESSAGES}), 502, code="upstream_unavailable")
    finally:
        proc.stop()


@pytest.mark.parametrize(("status", "expected"), [(400, 400), (404, 404), (422, 422), (500, 500), (503, 503), (401, 502)])
def test_upstream_error_statuses(gateway: GatewayProcess, fault: FakeUpstream, status: int, expected: int) -> None:
    fault.behavior = Behavior(mode="status", status=status)
    error = assert_openai_error(call_faulty(gateway), expected)
    if status == 401:
        assert error["code"] == "upstream_auth_failed"  # the gateway's key is wrong, not the client's
    else:
        assert error["message"] == f"fake upstream status {status}"


def test_upstream_429_keeps_retry_after(gateway: GatewayProcess, fault: FakeUpstream) -> None:
    fault.behavior = Behavior(mode="status", status=429, retry_after="7")
    response = call_faulty(gateway)
    assert_openai_error(response, 429)
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"


def sse_events(response: httpx.Response) -> list[str]:
    return [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]


@pytest.mark.parametrize("mode", ["reset_mid_stream", "truncated_sse"])
def test_a_stream_that_breaks_ends_with_an_error_event_and_done(gateway: GatewayProcess, fault: FakeUpstream, mode: str) -> None:
    fault.behavior = Behavior(mode=mode, chunks=6)  # type: ignore[arg-type]
    response = call_faulty(gateway, stream=True)
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert '"error"' in events[-2] and "bad_upstream_response" in events[-2]
    assert any('"tok ' in e for e in events[:-2])  # what arrived before the break was passed on


def test_no_connection_leaks_after_faults(gateway: GatewayProcess, fault: FakeUpstream) -> None:
    for mode in ["garbage", "disconnect", "reset_mid_stream", "truncated_sse", "ok"]:
        fault.behavior = Behavior(mode=mode)  # type: ignore[arg-type]
        for _ in range(20):
            call_faulty(gateway, stream=mode in ("reset_mid_stream", "truncated_sse"))
    # Broken connections are dropped, healthy ones reused: a handful stay open, not one per request
    # (a leaked one would stay for the pool's 30 s idle expiry, longer than this waits).
    wait_until(lambda: fault.open_connections <= 4, timeout=5, what="broken upstream connections to close")
    assert httpx.get(f"{gateway.url}/health/liveness").status_code == 200


def test_client_disconnect_mid_stream_closes_the_upstream_connection(gateway: GatewayProcess, fault: FakeUpstream) -> None:
    fault.behavior = Behavior(chunks=100, chunk_interval_s=0.05)  # a 5 s stream if nobody stops it
    body = {"model": "faulty", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10) as response:
        chunks = response.iter_bytes()  # kept: a dropped iterator closes the connection (a disconnect)
        first = next(chunks)
        assert first.startswith(b"data: {") and b'"error"' not in first, first  # the stream is under way
        wait_until(lambda: fault.streams_in_progress == 1, timeout=3, what="the upstream to count its stream")
    # Left alone, the upstream would stream for 5 s; the gateway must stop it well before.
    wait_until(lambda: fault.streams_in_progress == 0, timeout=3, what="the upstream stream to stop after the client left")
