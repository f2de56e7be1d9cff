"""Span attributes after the OpenTelemetry GenAI semantic conventions, built from what the gateway
already holds (the client's request, an answer, its usage, a deployment)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
from opentelemetry.trace import Status, StatusCode

from backends.errors import APIError
from backends.types import Usage
from gateway.telemetry.spans import Span, attribute

if TYPE_CHECKING:
    from gateway.routing.pools import Deployment


class Choice(msgspec.Struct):
    finish_reason: str | None = None


class Answer(msgspec.Struct):
    """What a trace reads from an answer or a chunk."""

    id: str | None = None
    model: str | None = None
    choices: list[Choice] = msgspec.field(default_factory=list)
    usage: Usage | None = None


def request_attributes(operation: str, model: str, payload: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
        "gen_ai.provider.name": "llm-gateway",
    }
    for field, key in (("max_tokens", "max_tokens"), ("max_completion_tokens", "max_tokens"), ("temperature", "temperature"),
                       ("top_p", "top_p"), ("seed", "seed"), ("n", "choice.count")):  # fmt: skip
        value = payload.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[f"gen_ai.request.{key}"] = attribute(value)  # the client's number: int64 or its string
    return attributes


def answer_attributes(body: bytes) -> dict[str, Any]:
    try:
        answer = msgspec.json.decode(body, type=Answer)
    except msgspec.DecodeError:
        return {}
    attributes: dict[str, Any] = {"gen_ai.response.finish_reasons": [c.finish_reason or "" for c in answer.choices]}
    if answer.id:
        attributes["gen_ai.response.id"] = answer.id
    if answer.model:
        attributes["gen_ai.response.model"] = answer.model
    return attributes


def usage_attributes(usage: Usage, deployment: Deployment, cost_key: str) -> dict[str, Any]:
    return {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        cost_key: deployment.cost(usage),
    }


def server(deployment: Deployment) -> Mapping[str, Any]:
    return server_attributes(deployment.settings.base_url, deployment.settings.backend)


@functools.lru_cache(maxsize=256)
def server_attributes(url: str | None, backend: str) -> Mapping[str, Any]:
    """Per deployment URL, parsed once (read only: every attempt's span shares it)."""
    if not url:
        return {"gen_ai.provider.name": backend}
    parts = urlsplit(url)  # host and port only: a URL may carry credentials
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"gen_ai.provider.name": "openai", "server.address": parts.hostname or "", "server.port": port}


def fail(span: Span, exc: APIError) -> None:
    span.set_attribute("error.type", exc.code or type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, exc.message[:200]))
