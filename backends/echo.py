"""A deterministic backend that answers with the prompt it was given, with no model at all.

It lets the embedded default config run with no upstream and no download, and gives smoke tests
and demos a backend whose answers are known in advance. It is not a language model: the reply to
a chat is `echo: <last user text>`, one SSE chunk per word, with usage counted in words.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import time
from collections.abc import AsyncIterator

import msgspec

from backends.protocol import Completion
from backends.types import ENDPOINTS, Endpoint, PromptTokensDetails, Usage, content_text

_ids = itertools.count()


class EchoBackend:
    """Answers chat, completions and embeddings deterministically from the request itself."""

    endpoints = ENDPOINTS

    def __init__(self, name: str = "echo") -> None:
        self.name = name

    async def complete(self, endpoint: Endpoint, payload: dict[str, object], timeout: float | None = None) -> Completion:
        if endpoint == "embeddings":
            return _embeddings(payload)
        text, prompt_tokens = _reply(endpoint, payload)
        usage = Usage(prompt_tokens, len(text.split()), prompt_tokens + len(text.split()), PromptTokensDetails())
        choice: dict[str, object] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if endpoint == "chat/completions":
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        else:
            choice["text"] = text
        body = {**_envelope(endpoint, payload, stream=False), "choices": [choice], "usage": msgspec.to_builtins(usage)}
        return Completion(msgspec.json.encode(body), usage)

    async def stream(self, endpoint: Endpoint, payload: dict[str, object]) -> EchoStream:
        return EchoStream(endpoint, payload)

    async def aclose(self) -> None:
        return None


class EchoStream:
    """The echo answer as OpenAI chunks, one word each, then usage when asked for."""

    def __init__(self, endpoint: Endpoint, payload: dict[str, object]) -> None:
        self.endpoint, self.payload = endpoint, payload

    async def __aiter__(self) -> AsyncIterator[bytes]:
        text, prompt_tokens = _reply(self.endpoint, self.payload)
        words = text.split(" ")
        base = _envelope(self.endpoint, self.payload, stream=True)
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            finish = "stop" if i == len(words) - 1 else None
            choice: dict[str, object] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if self.endpoint == "chat/completions":
                choice["delta"] = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            else:
                choice["text"] = piece
            yield msgspec.json.encode({**base, "choices": [choice]})
        options = self.payload.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
            yield msgspec.json.encode({**base, "choices": [], "usage": usage})

    async def aclose(self) -> None:
        return None


def _envelope(endpoint: Endpoint, payload: dict[str, object], stream: bool) -> dict[str, object]:
    chat = endpoint == "chat/completions"
    kind = ("chat.completion.chunk" if stream else "chat.completion") if chat else "text_completion"
    return {"id": f"echo-{next(_ids)}", "object": kind, "created": int(time.time()), "model": payload.get("model", "echo")}


def _reply(endpoint: Endpoint, payload: dict[str, object]) -> tuple[str, int]:
    """The answer text (the last user turn, or the prompt) and the prompt's size in words."""
    if endpoint == "chat/completions":
        messages = payload.get("messages")
        turns = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        users = [content_text(m.get("content")) for m in turns if m.get("role") == "user"]
        prompt = " ".join(content_text(m.get("content")) for m in turns)
        last = users[-1] if users else ""
    else:
        raw = payload.get("prompt")
        prompt = last = raw if isinstance(raw, str) else " ".join(map(str, raw)) if isinstance(raw, list) else ""
    return f"echo: {last}".strip(), len(prompt.split())


def _embeddings(payload: dict[str, object]) -> Completion:
    raw = payload.get("input")
    inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    data = [{"object": "embedding", "index": i, "embedding": _vector(str(item))} for i, item in enumerate(inputs)]
    tokens = sum(len(str(item).split()) for item in inputs)
    usage = Usage(tokens, 0, tokens, PromptTokensDetails())
    body = {
        "object": "list",
        "data": data,
        "model": payload.get("model", "echo"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Completion(msgspec.json.encode(body), usage)


def _vector(text: str, dims: int = 8) -> list[float]:
    """A stable unit-free vector from a hash of the text (not a semantic embedding)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(v / 65535, 6) for v in struct.unpack(f">{dims}H", digest[: 2 * dims])]
