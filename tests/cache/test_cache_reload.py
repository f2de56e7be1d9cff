"""A reload changes the cache's live settings for the next request, and says which settings wait
for a restart instead of keeping them silently."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.fake_upstream import FakeUpstream
from tests.helpers.gateway import GatewayProcess

CONFIG = """
reload: {{watch: false}}
cache:
  enabled: true
{cache}
auth: {{enabled: false}}
pools:
  small:
    deployments: [{{id: up, base_url: "{upstream}"}}]
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(name="reload-upstream").start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("cache-reload")
    path = root / "gateway.yaml"
    path.write_text(config(upstream, "  threshold: 0.999\n  max_temperature: 0"))
    proc = GatewayProcess(path)
    yield proc
    proc.stop()


def config(upstream: FakeUpstream, cache: str) -> str:
    return CONFIG.format(upstream=upstream.base_url, cache=cache)


def reload(gateway: GatewayProcess, upstream: FakeUpstream, cache: str) -> dict[str, object]:
    gateway.write_config(config(upstream, cache))
    answer = httpx.post(f"{gateway.admin_url}/admin/config/reload", timeout=10)
    assert answer.status_code == 200, answer.text
    result: dict[str, object] = answer.json()
    return result


def ask(gateway: GatewayProcess, text: str, temperature: float = 0) -> str:
    body = {"model": "small", "temperature": temperature, "messages": [{"role": "user", "content": text}]}
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-gateway-cache"]


def test_threshold_semantic_and_max_temperature_apply_on_reload(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    assert ask(gateway, "How do I reset my password?") == "miss"
    assert ask(gateway, "How can I reset my password?") == "miss"  # a paraphrase under 0.999
    assert ask(gateway, "Name three primary colours.", temperature=0.7) == "bypass"  # over max_temperature 0

    result = reload(gateway, upstream, "  threshold: 0.85\n  max_temperature: 1.0")
    assert result["changed"] is True and result["restart_required"] == []
    assert ask(gateway, "How could I reset my password?") == "hit-semantic"
    assert ask(gateway, "Name three primary colours.", temperature=0.7) == "miss"
    assert ask(gateway, "Name three primary colours.", temperature=0.7) == "hit-exact"

    reload(gateway, upstream, "  threshold: 0.85\n  max_temperature: 1.0\n  semantic: false")
    assert ask(gateway, "How would I reset my password?") == "miss"
    assert ask(gateway, "How do I reset my password?") == "hit-exact"  # the exact layer stays


def test_a_start_only_change_is_reported_and_the_rest_of_the_reload_applies(
    gateway: GatewayProcess, upstream: FakeUpstream
) -> None:
    result = reload(gateway, upstream, "  threshold: 0.85\n  max_temperature: 0\n  max_entries: 5\n  nprobe: 4")
    assert result["changed"] is True
    assert result["restart_required"] == ["cache.max_entries", "cache.nprobe"]
    assert httpx.get(f"{gateway.admin_url}/admin/config").json()["restart_required"] == ["cache.max_entries", "cache.nprobe"]
    assert "take effect only after a restart: cache.max_entries, cache.nprobe" in gateway.logs()
    assert ask(gateway, "Name two secondary colours.", temperature=0.7) == "bypass"  # max_temperature 0 applied

    back = reload(gateway, upstream, "  threshold: 0.85\n  max_temperature: 0")
    assert back["restart_required"] == []  # back to what the process started with
