"""The text of a request, read by one set of rules for the router, the cache, access and metering.

- a message's text is `backends.types.content_text`: the string, or its text parts;
- the conversation: the last user turn, every turn but the system's, the system prompt(s), the
  number of turns (a completion's prompt is all of these but the system prompt);
- the embedded text is the last user turn (a completion's prompt). It is embedded once per
  request; the router and the semantic cache share the vector. The cache uses it only when the
  request ends with it (a request that ends with a tool result is answered from that result);
- token counts for access and metering are taken on the whole request's JSON (`request_text`):
  with a real tokenizer where the gateway has one (`gateway.access.tokens`), else with
  `estimate_tokens`, which errs high on the text people send; images count a fixed number. A
  stream without usage is charged the same for its input and one token per 3 bytes of the text it
  relayed for its output. The router's features count one token per 4 characters of text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from backends.types import Endpoint, content_text

RESERVE_BYTES_PER_TOKEN = 3
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Conversation:
    last: str
    """The last user turn (a completion's prompt); empty when there is none."""
    everything: str
    """Every turn's text but the system prompts', one per line."""
    system: str
    """The system (and developer) prompts, one per line."""
    turns: int
    """Turns other than system prompts."""
    ends_with_user: bool
    """The final message is the user's (always, for a completion)."""


def conversation(payload: Mapping[str, Any]) -> Conversation:
    """The conversation of a chat or text completion request."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        prompt = payload.get("prompt")
        text = prompt if isinstance(prompt, str) else ""
        return Conversation(text, text, "", 1, True)
    last, everything, system = "", [], []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        text = content_text(message.get("content"))
        if message.get("role") in ("system", "developer"):
            system.append(text)
            continue
        everything.append(text)
        if message.get("role") == "user":
            last = text
    final = messages[-1] if messages else None
    ends_with_user = isinstance(final, Mapping) and final.get("role") == "user"
    return Conversation(last, "\n".join(everything), "\n".join(system), len(everything), ends_with_user)


def embedded_text(payload: Mapping[str, Any]) -> str | None:
    """What a request is embedded by: its last user turn, stripped (None when empty)."""
    return conversation(payload).last.strip() or None


def semantic_text(endpoint: Endpoint, payload: Mapping[str, Any]) -> str | None:
    """What the semantic cache compares: the embedded text, when the request ends with it."""
    if endpoint == "embeddings":
        return None
    talk = conversation(payload)
    return (talk.last.strip() or None) if talk.ends_with_user else None


IMAGE_TOKENS = 1_536
"""What an image in a message counts for (above OpenAI's high-detail count for any image size,
765 to 1,105); its URL or base64 bytes are not counted as text."""
MESSAGE_TOKENS = 4
"""Each message's role and separators."""
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_ASCII = bytes(range(128))
_PUNCTUATION = bytes([*range(33, 48), *range(58, 65), *range(91, 97), *range(123, 127)])
_NOT_PUNCTUATION = bytes(b for b in range(256) if b not in _PUNCTUATION)
_NOT_LEAD = bytes(b for b in range(256) if b < 0xC0)
"""Every byte but those that begin a multi-byte UTF-8 character."""

Counter = Callable[[bytes], int]
"""Tokens in a UTF-8 text."""


def request_text(endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[bytes, int]:
    """What a request's tokens are counted on: the JSON of the whole body (messages, tools and tool
    results, functions, `response_format` and its schema, stop sequences, and any other field a
    client fills), less its images; and the tokens counted apart (`MESSAGE_TOKENS` per message,
    `IMAGE_TOKENS` per image)."""
    data = msgspec.json.encode(payload)
    messages = payload.get("messages") if endpoint == "chat/completions" else None
    if not isinstance(messages, list):
        return data, 0
    apart, images = MESSAGE_TOKENS * len(messages), []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            images += [p for p in content if isinstance(p, Mapping) and p.get("type") in _IMAGE_PARTS]
    if images:
        apart += IMAGE_TOKENS * len(images)
        for image in images:  # each image's JSON, as it appears in the body, taken out
            data = data.replace(msgspec.json.encode(image), b"", 1)
    return data, apart


def estimate_tokens(data: bytes) -> int:
    """Tokens in a UTF-8 text without a tokenizer, erring high for the text people send: one per
    3 bytes of ASCII letters, digits and spaces (but at least one per word), one per ASCII
    punctuation mark, one per byte past the first of each non-ASCII character (2 for a CJK or
    Devanagari character). Measured against cl100k_base in docs/access.md; random strings
    (base64, hex) count up to about 2x more than this."""
    high = len(data.translate(None, _ASCII))
    lead = len(data.translate(None, _NOT_LEAD))
    punctuation = len(data.translate(None, _NOT_PUNCTUATION))
    words = data.count(b" ") + data.count(b"\n") + 1
    return max(math.ceil((len(data) - high - punctuation) / RESERVE_BYTES_PER_TOKEN), words) + punctuation + high - lead


def request_tokens(endpoint: Endpoint, payload: Mapping[str, Any], count: Counter = estimate_tokens) -> int:
    """Every token a request may make the upstream read, as a reservation counts them (high)."""
    data, apart = request_text(endpoint, payload)
    return count(data) + apart


def text_tokens(text: str) -> float:
    """About how many tokens a text is: words and punctuation, as a BPE tokenizer roughly counts them."""
    return len(text) / CHARS_PER_TOKEN
