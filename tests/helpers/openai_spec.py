"""Where the contract tests find OpenAI's published OpenAPI document.

The document is not part of this repository (its owners keep it in `../shared/contracts/`, beside
the checkout, as CI has it). `OPENAI_SPEC` names another copy: openai/openai-openapi's
`openapi.yaml`. Without one the contract tests are skipped, except where `GATEWAY_REQUIRE_SPEC=1`
(`.ci/run` sets it): there a missing document fails them, so a green CI run has checked them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.gateway import ROOT


def spec_path() -> Path:
    named = os.environ.get("OPENAI_SPEC")
    return Path(named) if named else ROOT.parent / "shared" / "contracts" / "openai-openapi.yaml"


def require_spec() -> Path:
    """The document's path; skips the test without it (fails instead under GATEWAY_REQUIRE_SPEC=1)."""
    path = spec_path()
    if path.exists():
        return path
    message = f"OpenAI's OpenAPI document is not at {path} (set OPENAI_SPEC to a copy of openai/openai-openapi's openapi.yaml)"
    if os.environ.get("GATEWAY_REQUIRE_SPEC") == "1":
        pytest.fail(message)
    pytest.skip(message)
