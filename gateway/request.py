"""A client's request body, parsed: valid JSON, an object, within the server's bounds, and of
its endpoint's schema; then its per-request controls. Each broken rule is a 400 (415 for the
content type) that names what is wrong, raised before anything is spent on the request.

Bounds beyond the schema: JSON depth, how many messages, how much text, how many output tokens.

The checks cost almost nothing on ordinary requests: depth is walked only when the body has more
brackets than the bound, text is summed only when the body is longer than its bound.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from backends.types import REQUEST_TYPES, ChatRequest, CompletionRequest, EmbeddingRequest, Endpoint, Role
from gateway import controls
from gateway.errors import InvalidRequest, UnsupportedMediaType
from gateway.settings import ResilienceSettings, ServerSettings


@dataclass(slots=True)
class ClientRequest:
    """A request as the pipeline carries it."""

    endpoint: Endpoint
    payload: dict[str, Any]
    """The client's JSON object, sent upstream as it is (unknown fields included, `gateway` taken out)."""
    typed: ChatRequest | CompletionRequest | EmbeddingRequest
    """What the payload was validated as."""
    controls: controls.Controls
    model: str
    stream: bool


def parse(
    endpoint: Endpoint,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    server: ServerSettings,
    resilience: ResilienceSettings,
) -> ClientRequest:
    """The request in `body`, within the server's bounds, with its controls read."""
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InvalidRequest("We could not parse the JSON body of your request. The body must be valid JSON (UTF-8).") from None
    except RecursionError:
        raise InvalidRequest("The request's JSON is nested too deeply.") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    check_body(endpoint, body, payload, server)
    try:
        typed = msgspec.convert(payload, REQUEST_TYPES[endpoint])
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        param = _param(message, where.rstrip("`"))
        if message.startswith("Invalid enum value") and param is not None and param.endswith("role"):
            message += f", expected one of: {', '.join(typing.get_args(Role))}"
        raise InvalidRequest(f"Invalid request: {message}" + (f" (at '{param}')" if param else ""), param=param) from None
    stream = not isinstance(typed, EmbeddingRequest) and typed.stream
    return ClientRequest(endpoint, payload, typed, controls.read(headers, payload, resilience), typed.model, stream)


def _param(message: str, where: str) -> str | None:
    """`messages[0].role` from msgspec's `$.messages[0]` and 'Object missing required field `role`'."""
    path = where.lstrip(".")
    if message.startswith("Object missing required field `"):
        missing = message.split("`")[1]
        path = f"{path}.{missing}" if path else missing
    return path or None


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
