"""The README's quickstart, run as written against the embedded default config: what a newcomer
sees in their first minutes (a pool, the router's decision, a paraphrase answered from the cache,
a stream, the bundled engine) is what the code does."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.gateway import ROOT, GatewayProcess


@pytest.fixture(scope="module")
def default_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """`config/gateway.yaml` as it ships (copied, so that the test's gateway has a log of its own)."""
    path = tmp_path_factory.mktemp("default") / "gateway.yaml"
    shutil.copy(ROOT / "config" / "gateway.yaml", path)
    gateway = GatewayProcess(path)
    yield gateway
    gateway.stop()


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quickstart") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_readme_quickstart_prints_what_its_comments_say(default_gateway: GatewayProcess) -> None:
    code = quickstart().replace("http://127.0.0.1:8000/v1", f"{default_gateway.url}/v1")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md quickstart", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "echo: Hello there echo-small"
    assert lines[1:3] == ["small echo-small", "large echo-large"]  # the router's decisions
    assert lines[3] == "miss echo: How do I reset my password?"
    assert lines[4] == "hit-semantic echo: How do I reset my password?"  # the typo, from the cache
    assert lines[5] == "echo:" and "stream me" in "".join(lines[6:-2])
    assert "CompletionUsage(" in lines[-2] and "completion_tokens=8" in lines[-1]  # the stream's usage; the engine


def test_the_default_config_has_the_headline_features(default_gateway: GatewayProcess) -> None:
    from gateway import config

    settings = config.load(Path(default_gateway.config_path)).settings
    assert settings.cache.enabled and settings.cache.store == "memory" and settings.redis.address() is None
    assert "auto" in settings.routers and not settings.auth.enabled
