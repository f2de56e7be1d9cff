"""The text of a request, read by one set of rules for the router, the cache, access and metering.

- a message's text is `backends.types.content_text`: the string, or its text parts;
- the conversation: the last user turn, every turn but the system's, the system prompt(s), the
  number of turns (a completion's prompt is all of these but the system prompt);
- the embedded text is the last user turn (a completion's prompt). It is embedded once per
  request; the router and the semantic cache share the vector. The cache uses it only when the
  request ends with it (a request that ends with a tool result is answered from that result);
- token estimates come from sizes, before any tokenizer has seen the text: one token per 3 bytes
  of the whole request's JSON for what a request reserves (above most tokenizers' count, so
  reservations err high; images at a fixed count), the same for the input of a stream without
  usage and one per 3 bytes of the text it relayed for its output, one per 4 characters of
  text for the router's features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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


def request_tokens(endpoint: Endpoint, payload: Mapping[str, Any]) -> int:
    """Every token a request may make the upstream read, as a reservation counts them (high): the
    JSON of the whole body at one token per 3 bytes (messages, tools and tool results, functions,
    `response_format` and its schema, stop sequences, and any other field a client fills), 4 per
    message, and `IMAGE_TOKENS` per image."""
    size = len(msgspec.json.encode(payload))
    overhead = 0
    messages = payload.get("messages") if endpoint == "chat/completions" else None
    if isinstance(messages, list):
        overhead = MESSAGE_TOKENS * len(messages)
        for message in messages:
            content = message.get("content") if isinstance(message, Mapping) else None
            if not isinstance(content, list):
                continue
            for part in content:
                if isinstance(part, Mapping) and part.get("type") in _IMAGE_PARTS:
                    overhead += IMAGE_TOKENS
                    size -= len(msgspec.json.encode(part))
    return math.ceil(max(0, size) / RESERVE_BYTES_PER_TOKEN) + overhead


def text_tokens(text: str) -> float:
    """About how many tokens a text is: words and punctuation, as a BPE tokenizer roughly counts them."""
    return len(text) / CHARS_PER_TOKEN
