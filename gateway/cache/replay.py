"""A stored completion replayed as a stream: the SSE events an upstream would have sent. Pure.

One event carries the whole message (role, content, tool calls with their indexes), one the
finish reason, then the usage event when the client asked for it with
`stream_options.include_usage`. The caller adds `[DONE]`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from backends.types import Endpoint


def replay_events(endpoint: Endpoint, stored: bytes, payload: Mapping[str, Any]) -> list[bytes]:
    """The `data` payloads of the stream, `[DONE]` excluded."""
    data = msgspec.json.decode(stored)
    chat = endpoint == "chat/completions"
    head = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-cache-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": data.get("model", ""),
        "system_fingerprint": data.get("system_fingerprint"),
    }
    events: list[dict[str, Any]] = []
    for choice in data.get("choices", []):
        index = choice.get("index", 0)
        if chat:
            events.append(
                {**head, "choices": [{"index": index, "delta": _delta(choice.get("message") or {}), "finish_reason": None}]}
            )
            events.append({**head, "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
        else:
            events.append(
                {
                    **head,
                    "choices": [{"index": index, "text": choice.get("text", ""), "finish_reason": choice.get("finish_reason")}],
                }
            )
    options = payload.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage") and data.get("usage") is not None:
        events.append({**head, "choices": [], "usage": data["usage"]})
    return [msgspec.json.encode(e) for e in events]


def _delta(message: Mapping[str, Any]) -> dict[str, Any]:
    delta: dict[str, Any] = {"role": message.get("role", "assistant"), "content": message.get("content")}
    if message.get("refusal") is not None:
        delta["refusal"] = message["refusal"]
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    return delta
