"""Schemathesis against a running gateway: requests generated from the gateway's own OpenAPI
document (valid ones, and ones that break it on purpose), and from OpenAI's published document
when it is found (tests.helpers.openai_spec). No request may get a server error; with the gateway's own
document, every answer must also match what the document says (status, content type, body).
`GATEWAY_FUZZ_EXAMPLES=1000 pytest tests/test_schemathesis.py` hunts longer."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.access.keys import hash_key
from tests.helpers.gateway import GatewayProcess
from tests.helpers.openai_spec import require_spec

load_all_checks()
KEY = "sk-gw-schemathesis-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small", "auto-echo"]
EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "60"))
"""Examples per test; CI runs 60, a longer hunt sets more."""
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    path = tmp_path_factory.mktemp("fuzz") / "gateway.yaml"
    path.write_text(f"""
reload: {{watch: false}}
auth:
  keys:
    - {{alias: fuzz, key_hash: "{hash_key(KEY)}"}}
pools:
  echo:
    aliases: {MODELS}
    deployments: [{{id: echo-dep, backend: echo}}]
""")
    gateway = GatewayProcess(path)
    yield gateway
    gateway.stop()


def own_schema(gateway: GatewayProcess) -> Any:
    """The document the gateway serves, with `model` drawn from its models so that generated
    requests get past model resolution (the served document leaves it a free string)."""
    document = httpx.get(f"{gateway.url}/openapi.json").json()
    narrowed = copy.deepcopy(document)
    for name in ("ChatRequest", "CompletionRequest", "EmbeddingRequest"):
        narrowed["components"]["schemas"][name]["properties"]["model"] = {"enum": MODELS}
    # A deadline the client sets itself ends in 504 by design when it is too short to answer in.
    for doc in (document, narrowed):
        doc["components"]["schemas"]["GatewayControls"]["properties"]["deadline_ms"]["minimum"] = 10_000
    return document, narrowed


OWN_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("narrow", [True, False], ids=["known-models", "any-model"])
def test_valid_requests_from_the_gateways_own_document(target: GatewayProcess, narrow: bool) -> None:
    schema = schemathesis.openapi.from_dict(own_schema(target)[1 if narrow else 0])
    calls = []

    @FUZZ
    @given(case=schema.as_strategy(GenerationMode.POSITIVE))
    def run(case: Any) -> None:
        response = case.call_and_validate(base_url=target.url, headers=AUTH, checks=OWN_CHECKS, timeout=15)
        calls.append(response.status_code)

    run()
    assert calls and all(s < 500 for s in calls)
    if narrow:
        assert calls.count(200) > len(calls) / 4  # most valid requests got an answer, not a refusal


def test_invalid_requests_from_the_gateways_own_document_are_refused(target: GatewayProcess) -> None:
    schema = schemathesis.openapi.from_dict(own_schema(target)[1])
    statuses = []

    @FUZZ
    @given(case=schema.as_strategy(GenerationMode.NEGATIVE))
    def run(case: Any) -> None:
        checks = [not_a_server_error, negative_data_rejection, content_type_conformance]
        response = case.call_and_validate(base_url=target.url, headers=AUTH, checks=checks, timeout=15)
        statuses.append(response.status_code)

    run()
    assert statuses and all(400 <= s < 500 for s in statuses if s != 200)


@pytest.mark.slow
def test_requests_from_openais_document_never_get_a_server_error(target: GatewayProcess) -> None:
    import yaml

    document = yaml.safe_load(require_spec().read_text())
    kept = {"/chat/completions": "post", "/completions": "post", "/embeddings": "post", "/models": "get"}
    document["paths"] = {p: {m: document["paths"][p][m]} for p, m in kept.items()}
    schema = schemathesis.openapi.from_dict(document)
    statuses = []

    @FUZZ
    @given(case=schema.as_strategy(GenerationMode.POSITIVE))
    def run(case: Any) -> None:
        response = case.call_and_validate(base_url=f"{target.url}/v1", headers=AUTH, checks=[not_a_server_error], timeout=15)
        statuses.append(response.status_code)

    run()
    assert statuses and all(s < 500 for s in statuses)
