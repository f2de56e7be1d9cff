"""Request text: one set of rules for what the router, the cache, access and metering read."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.text import IMAGE_TOKENS, conversation, embedded_text, request_tokens, semantic_text

CHAT: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": [{"type": "text", "text": "And 3 + 3?"}, {"type": "image_url", "image_url": {"url": "x"}}]},
    ]
}


def test_the_conversation_is_read_from_text_parts_only() -> None:
    talk = conversation(CHAT)
    assert talk.last == "And 3 + 3?" and talk.system == "Be brief." and talk.turns == 3
    assert talk.everything == "What is 2 + 2?\n4\nAnd 3 + 3?" and talk.ends_with_user


@pytest.mark.parametrize(
    "payload",
    [
        CHAT,
        {"messages": [{"role": "user", "content": "  hello  "}]},
        {"messages": [{"role": "user", "content": "question"}, {"role": "tool", "content": "result"}]},
        {"messages": [{"role": "user", "content": [{"text": "no type"}, {"type": "text", "text": "typed"}]}]},
        {"messages": [{"role": "system", "content": "only a system prompt"}]},
        {"prompt": "Once upon a time"},
        {"prompt": [1, 2, 3]},
    ],
)
def test_the_cache_compares_the_text_the_router_embeds_or_none(payload: dict[str, Any]) -> None:
    endpoint = "completions" if "prompt" in payload else "chat/completions"
    semantic = semantic_text(endpoint, payload)
    assert semantic is None or semantic == embedded_text(payload)


def test_a_request_that_ends_with_a_tool_result_has_no_semantic_text_but_is_still_embedded() -> None:
    payload = {"messages": [{"role": "user", "content": "weather?"}, {"role": "tool", "content": "sunny"}]}
    assert semantic_text("chat/completions", payload) is None
    assert embedded_text(payload) == "weather?"


def test_reservations_count_the_whole_request_high() -> None:
    hi = [{"role": "user", "content": "hi"}]
    short = request_tokens("chat/completions", {"messages": hi})
    long = request_tokens("chat/completions", {"messages": [{"role": "user", "content": "hi " * 300}]})
    assert long >= 900 / 3 and long > short  # one token per 3 bytes of JSON: above most tokenizers' count
    assert request_tokens("embeddings", {"input": "x" * 30}) >= 10
    # text outside `messages` counts the same as inside it
    text = "describe the weather in detail " * 1000
    inside = request_tokens("chat/completions", {"messages": [{"role": "user", "content": text}]})
    tool = {"type": "function", "function": {"name": "f", "description": text, "parameters": {"type": "object"}}}
    for outside in (
        {"tools": [tool]},
        {"functions": [tool["function"]]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"description": text}}}},
        {"stop": [text[:8000]] * 4},
        {"metadata": {"x": text}},
    ):
        assert request_tokens("chat/completions", {"messages": hi, **outside}) >= inside * 0.95, list(outside)
    # an image counts as a fixed number of tokens, not as the bytes of its data URL
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 3_000_000}}
    with_image = request_tokens("chat/completions", {"messages": [{"role": "user", "content": [image]}]})
    assert IMAGE_TOKENS <= with_image < IMAGE_TOKENS + 100
