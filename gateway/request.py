"""Bounds on what a request may carry, beyond its schema: JSON depth, how many messages, how much
text, how many output tokens, and its content type. Each broken bound is a 400 (415 for the
content type) that names the bound, checked before anything is spent on the request.

The checks cost almost nothing on ordinary requests: depth is walked only when the body has more
brackets than the bound, text is summed only when the body is longer than its bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from backends.types import Endpoint
from gateway.errors import InvalidRequest, UnsupportedMediaType
from gateway.settings import ServerSettings


def check_content_type(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """JSON bodies only: `application/json` (any parameters), or no Content-Type at all."""
    for name, value in headers:
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            if kind != b"application/json":
                shown = kind.decode("latin-1")[:100].encode("unicode_escape").decode()
                raise UnsupportedMediaType(
                    f"Unsupported Content-Type {shown!r}: send the request as JSON with Content-Type: application/json."
                )


def check_body(endpoint: Endpoint, body: bytes, payload: dict[str, Any], limits: ServerSettings) -> None:
    if body.count(b"{") + body.count(b"[") > limits.max_json_depth and _depth(payload) > limits.max_json_depth:
        raise InvalidRequest(f"The request's JSON is nested more than {limits.max_json_depth} levels deep.")
    items = _items(endpoint, payload, limits.max_messages)
    if items is not None:
        field = "messages" if endpoint == "chat/completions" else ("input" if endpoint == "embeddings" else "prompt")
        raise InvalidRequest(
            f"Too many items in '{field}': {len(items)}; this gateway accepts at most {limits.max_messages}.", param=field
        )
    if len(body) > limits.max_text_chars:
        source = payload.get("messages", payload.get("prompt", payload.get("input")))
        chars = _text_chars(source)
        if chars > limits.max_text_chars:
            raise InvalidRequest(
                f"The request carries {chars} characters of text; this gateway accepts at most {limits.max_text_chars}.",
                code="context_too_large",
            )
    for name in ("max_tokens", "max_completion_tokens"):
        asked = payload.get(name)
        if isinstance(asked, int) and asked > limits.max_output_tokens:
            raise InvalidRequest(f"'{name}' is {asked}; this gateway allows at most {limits.max_output_tokens}.", param=name)


def _items(endpoint: Endpoint, payload: dict[str, Any], most: int) -> list[Any] | None:
    """The messages, or the prompts / inputs of a batch, when there are more than `most` (a list
    of token ids is one prompt, however long)."""
    value = payload.get("messages" if endpoint == "chat/completions" else ("input" if endpoint == "embeddings" else "prompt"))
    if not isinstance(value, list) or len(value) <= most:
        return None
    if endpoint != "chat/completions" and all(isinstance(v, int) for v in value):
        return None
    return value


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in item if isinstance(child, dict | list))
    return deepest


def _text_chars(value: Any) -> int:
    """Characters in every string inside `value`."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total
