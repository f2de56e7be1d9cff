"""The gateway's own OpenAPI 3.1 document (`GET /openapi.json`): the OpenAI endpoints as this
gateway accepts them (the same bounds it enforces, from the live config), every error status it
answers with, and the health and model endpoints. Schemathesis runs against it in the tests."""

from __future__ import annotations

from typing import Any

from gateway.settings import Settings

_ERROR_STATUSES = {
    "400": "Invalid request (schema, bounds, unknown tier or control).",
    "401": "No key, an unknown key, or an expired one.",
    "403": "The key may not use this model or tier.",
    "404": "Unknown model.",
    "413": "The body is larger than server.max_body_bytes.",
    "415": "The body is not JSON.",
    "429": "A key's rate limit or budget (insufficient_quota), or the gateway is full.",
    "500": "An upstream's own 500, passed on.",
    "502": "The upstream failed or answered something that is not an answer.",
    "503": "No healthy deployment, or a dependency (Redis under on_store_error: closed) is down.",
    "504": "The request's deadline passed.",
}


def _error() -> dict[str, Any]:
    nullable = {"type": ["string", "null"]}
    body = {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "param": nullable, "code": nullable},
    }
    return {"type": "object", "required": ["error"], "properties": {"error": body}}


def _generation(settings: Settings) -> dict[str, Any]:
    """Fields shared by chat and text completions, with the bounds the gateway enforces."""
    tokens = {"type": "integer", "minimum": 1, "maximum": settings.server.max_output_tokens}
    return {
        "model": {"type": "string", "description": "A pool, an alias or a router (`GET /v1/models`)."},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "max_tokens": tokens,
        "max_completion_tokens": tokens,
        "n": {"type": "integer", "minimum": 1, "maximum": 128},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "seed": {"type": "integer"},
        "gateway": {"$ref": "#/components/schemas/GatewayControls"},
    }


def _request(settings: Settings, kind: str) -> dict[str, Any]:
    items = settings.server.max_messages
    text = {"type": "string"}
    tokens = {"type": "array", "items": {"type": "integer"}}
    if kind == "chat":
        message = {
            "type": "object",
            "required": ["role"],
            "properties": {
                "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
                "content": {"anyOf": [text, {"type": "array", "items": {"type": "object"}}, {"type": "null"}]},
            },
        }
        fields = {**_generation(settings), "messages": {"type": "array", "items": message, "minItems": 1, "maxItems": items}}
        required = ["model", "messages"]
    elif kind == "completion":
        batch = {"type": "array", "maxItems": items, "items": {"anyOf": [text, {"type": "integer"}, tokens]}}
        prompt = {"anyOf": [text, tokens, batch]}  # a list of token ids is one prompt, however long
        fields, required = {**_generation(settings), "prompt": prompt}, ["model", "prompt"]
    else:
        many = {"type": "array", "maxItems": items, "items": {"anyOf": [text, {"type": "integer"}, tokens]}}
        inputs = {"anyOf": [text, tokens, many]}  # a list of token ids is one input, however long
        fields, required = {"model": _generation(settings)["model"], "input": inputs}, ["model", "input"]
    return {"type": "object", "required": required, "properties": fields, "additionalProperties": True}


def _post(summary: str, schema: str, answer: str) -> dict[str, Any]:
    ok = {
        "description": "The answer (JSON), or with `stream: true` server-sent events ending in `data: [DONE]`.",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{answer}"}}, "text/event-stream": {}},
    }
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
            },
            "responses": {"200": ok, **_errors()},
        }
    }


def _errors(*statuses: str) -> dict[str, Any]:
    chosen = statuses or tuple(_ERROR_STATUSES)
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {s: {"description": _ERROR_STATUSES[s], "content": ref} for s in chosen}


def document(settings: Settings, version: str) -> dict[str, Any]:
    model = {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    }
    models = {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": model}},
    }
    answer = {"type": "object", "required": ["object"], "properties": {"id": {"type": "string"}, "object": {"type": "string"}}}
    health = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    controls = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "deadline_ms": {"type": "number", "exclusiveMinimum": 0},
            "cache": {"enum": ["no-cache", "no-store"]},
            "tier": {"type": "string", "minLength": 1, "maxLength": 100},
        },
    }
    json_ok = {"application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "llm-gateway", "version": version, "description": "An OpenAI-compatible LLM gateway."},
        "security": [{"bearer": []}] if settings.auth.enabled else [],
        "paths": {
            "/v1/chat/completions": _post("Chat completion", "ChatRequest", "Answer"),
            "/v1/completions": _post("Text completion", "CompletionRequest", "Answer"),
            "/v1/embeddings": _post("Embeddings", "EmbeddingRequest", "Answer"),
            "/v1/models": {
                "get": {
                    "summary": "Models the key may use",
                    "responses": {"200": {"description": "Models", "content": json_ok}, **_errors("401", "503")},
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "One model",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {
                            "description": "The model",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Model"}}},
                        },
                        **_errors("401", "403", "404", "503"),
                    },
                }
            },
            "/health/liveness": {"get": {"security": [], "responses": _health(health)}},
            "/health/readiness": {"get": {"security": [], "responses": _health(health)}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "ChatRequest": _request(settings, "chat"),
                "CompletionRequest": _request(settings, "completion"),
                "EmbeddingRequest": _request(settings, "embedding"),
                "GatewayControls": controls,
                "Answer": answer,
                "Model": model,
                "ModelList": models,
                "Error": _error(),
            },
        },
    }


def _health(schema: dict[str, Any]) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    return {"200": {"description": "Up", "content": content}, "503": {"description": "Draining", "content": content}}
