"""Responses checked against OpenAI's published OpenAPI schemas (the document is found as
`tests.helpers.openai_spec` says: skipped without it, except in CI, where its absence fails)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml

from tests.helpers.gateway import GatewayProcess
from tests.helpers.openai_spec import require_spec

MESSAGES = [{"role": "user", "content": "Say hello."}]


def _nullable_to_type(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` (still used in places) as JSON Schema's `type: [T, "null"]`."""
    if isinstance(node, dict):
        node = {k: _nullable_to_type(v) for k, v in node.items()}
        if node.pop("nullable", False) is True:
            if isinstance(node.get("enum"), list):
                node["enum"] = [*node["enum"], None]
            if isinstance(node.get("type"), str):
                node["type"] = [node["type"], "null"]
            elif "type" not in node:
                node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable_to_type(v) for v in node]
    return node


@pytest.fixture(scope="module")
def components() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(require_spec().read_text(), Loader=loader)
    return _nullable_to_type(spec["components"])  # type: ignore[no-any-return]


def check(components: dict[str, Any], schema: str, instance: object) -> None:
    import jsonschema

    root = {"$ref": f"#/components/schemas/{schema}", "components": components}
    validator = jsonschema.Draft202012Validator(root)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{schema}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.mark.parametrize("model", ["gpt-4o", "echo"])
def test_chat_completion_and_chunks(components: dict[str, Any], gateway: GatewayProcess, model: str) -> None:
    body = {"model": model, "messages": MESSAGES}
    check(components, "CreateChatCompletionResponse", httpx.post(f"{gateway.url}/v1/chat/completions", json=body).json())
    streamed = httpx.post(
        f"{gateway.url}/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    import json

    chunks = [json.loads(e[6:]) for e in streamed.text.split("\n\n") if e and e != "data: [DONE]"]
    assert chunks
    for chunk in chunks:
        check(components, "CreateChatCompletionStreamResponse", chunk)


@pytest.mark.parametrize("model", ["gpt-4o", "echo"])
def test_completions_and_embeddings(components: dict[str, Any], gateway: GatewayProcess, model: str) -> None:
    completion = httpx.post(f"{gateway.url}/v1/completions", json={"model": model, "prompt": "hi"}).json()
    check(components, "CreateCompletionResponse", completion)
    embeddings = httpx.post(f"{gateway.url}/v1/embeddings", json={"model": model, "input": ["a", "b"]}).json()
    check(components, "CreateEmbeddingResponse", embeddings)


def test_models_and_errors(components: dict[str, Any], gateway: GatewayProcess) -> None:
    check(components, "ListModelsResponse", httpx.get(f"{gateway.url}/v1/models").json())
    check(components, "Model", httpx.get(f"{gateway.url}/v1/models/gpt-4o").json())
    for response in [
        httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "nope", "messages": MESSAGES}),
        httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{not json"),
        httpx.get(f"{gateway.url}/v1/unknown"),
    ]:
        assert response.status_code >= 400
        check(components, "ErrorResponse", response.json())
