"""What the semantic layer embeds, and the digest of the conversation around it. Pure.

Only the last user turn is embedded. Everything before it (earlier turns, the assistant's answers,
tool results) goes into a digest that joins the namespace, so a follow-up question ("and in
2023?") only meets follow-ups of the same conversation. A request whose last turn is not a user's
text (a tool result, an empty or non-text turn) has no semantic text: it is cached exactly or not at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from backends.types import Endpoint


def semantic_text(endpoint: Endpoint, payload: Mapping[str, Any]) -> str | None:
    if endpoint == "completions":
        prompt = payload.get("prompt")
        return prompt.strip() or None if isinstance(prompt, str) else None
    if endpoint != "chat/completions":
        return None
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "user":
        return None
    return _text(last.get("content")).strip() or None


def context_digest(payload: Mapping[str, Any]) -> str:
    """A digest of the turns before the last one, system prompts excluded (they have their own place in the key)."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return ""
    earlier = [m for m in messages[:-1] if not (isinstance(m, dict) and m.get("role") in ("system", "developer"))]
    if not earlier:
        return ""
    return hashlib.blake2b(msgspec.json.encode(earlier), digest_size=12).hexdigest()


def _text(content: object) -> str:
    """A message's text: the string, or the text parts of a list of parts (images and audio are not text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""
