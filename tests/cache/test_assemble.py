"""A streamed answer assembled into the completion that the cache stores, and replayed back."""

from __future__ import annotations

import msgspec

from gateway.cache.assemble import Assembler
from gateway.cache.replay import replay_events


def chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
    event = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return msgspec.json.encode(event)


def test_content_tool_calls_and_usage_come_back_whole() -> None:
    a = Assembler(chat=True)
    a.feed(chunk({"role": "assistant", "content": "Hel"}))
    a.feed(chunk({"content": "lo"}))
    a.feed(
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}}
                ]
            }
        )
    )
    a.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]}))
    a.feed(chunk({}, "tool_calls"))
    a.feed(
        msgspec.json.encode(
            {"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}
        )
    )
    body = msgspec.json.decode(a.body())
    message = body["choices"][0]["message"]
    assert message["content"] == "Hello"
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"]["total_tokens"] == 12 and body["id"] == "c1" and body["object"] == "chat.completion"
    replayed = [
        msgspec.json.decode(e) for e in replay_events("chat/completions", a.body(), {"stream_options": {"include_usage": True}})
    ]
    again = Assembler(chat=True)
    for event in replayed:
        again.feed(msgspec.json.encode(event))
    assert msgspec.json.decode(again.body())["choices"] == body["choices"]  # replay and assembly are inverses


def test_text_completions() -> None:
    a = Assembler(chat=False)
    for piece, finish in [("Once", None), (" upon", None), (" a time", "stop")]:
        a.feed(msgspec.json.encode({"id": "t", "choices": [{"index": 0, "text": piece, "finish_reason": finish}]}))
    assert msgspec.json.decode(a.body())["choices"][0] == {
        "index": 0,
        "text": "Once upon a time",
        "finish_reason": "stop",
        "logprobs": None,
    }
