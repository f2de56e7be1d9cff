"""Config validation (pure), the `gateway validate` command, and hot reload of a running gateway."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest

from gateway import config
from gateway.settings import Secret
from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.gateway import ROOT, GatewayProcess, upstream_pool
from tests.helpers.polling import wait_until


def parse(text: str, env: dict[str, str] | None = None) -> config.LoadedConfig:
    """The config, with auth off unless the text sets `auth:` (added last, so line numbers hold)."""
    text = textwrap.dedent(text)
    if text.strip() and "auth:" not in text:
        text += "\nauth: {enabled: false}\n"
    return config.parse(text.encode(), "test.yaml", env or {})


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        parse(text, env)
    return [p.render("test.yaml") for p in info.value.problems]


def test_every_problem_is_reported_with_line_and_key_path() -> None:
    found = problems(
        """
        server:
          max_body_bytes: -1
          colour: blue
        pools:
          a:
            deployments:
              - id: x
                weight: heavy
                backend: echoo
                timeouts: {connect: 0}
        """
    )
    assert "test.yaml:3: server.max_body_bytes: Expected `int` >= 1" in found
    assert any(p.startswith("test.yaml:4: server.colour: unknown key") for p in found)
    assert "test.yaml:9: pools.a.deployments[0].weight: Expected `int`, got `str`" in found
    assert (
        "test.yaml:10: pools.a.deployments[0].backend: Invalid enum value 'echoo' (expected one of: openai, echo, local)" in found
    )
    assert any(p.startswith("test.yaml:11: pools.a.deployments[0].timeouts.connect") for p in found)
    assert len(found) == 5


def test_cross_field_rules() -> None:
    found = problems(
        """
        pools:
          a:
            aliases: [b]
            deployments: [{id: x}, {id: x, backend: echo, base_url: "ftp://h"}]
          b:
            deployments: [{id: y, backend: echo}]
        """
    )
    assert "test.yaml:4: pools.a.aliases[0]: model name 'b' is already used at pools.b" in found
    assert "test.yaml:5: pools.a.deployments[0]: an `openai` deployment needs base_url" in found
    assert any("deployment id 'x' is used twice" in p for p in found)
    assert any("pools.a.deployments[1].base_url: must start with http" in p for p in found)


def test_yaml_errors_and_duplicate_keys() -> None:
    assert problems("auth: {enabled: false}\npools: [unclosed\n")[0].startswith("test.yaml:3: invalid YAML")
    dup = problems("pools:\n  a:\n    deployments: [{id: x, backend: echo}]\n  a:\n    deployments: []\n")
    assert "test.yaml:4: pools.a: this key appears twice" in dup
    assert problems("")[0] == "test.yaml: the file is empty"
    assert "missing required key 'pools'" in problems("server: {}\n")[0]


def test_env_interpolation_and_secrets() -> None:
    text = """
    pools:
      a:
        deployments:
          - id: x
            base_url: ${BASE}
            api_key: ${KEY}
            price: {input_per_1m: "${PRICE:-1.5}"}
    """
    loaded = parse(text, {"BASE": "http://up:8000/v1", "KEY": "sk-very-secret"})
    dep = loaded.settings.pools["a"].deployments[0]
    assert dep.base_url == "http://up:8000/v1" and dep.price.input_per_1m == 1.5
    assert isinstance(dep.api_key, Secret) and dep.api_key.reveal() == "sk-very-secret"
    assert "sk-very-secret" not in repr(loaded.settings) and "sk-very-secret" not in str(dep)
    missing = problems(text, {"BASE": "http://up/v1"})
    assert missing == [
        "test.yaml:7: pools.a.deployments[0].api_key: environment variable KEY is not set (write ${KEY:-default} for a default)"
    ]


def test_version_follows_the_file_content() -> None:
    a = parse("pools: {a: {deployments: [{id: x, backend: echo}]}}")
    b = parse("pools: {a: {deployments: [{id: y, backend: echo}]}}")
    assert a.version != b.version and a.version == parse("pools: {a: {deployments: [{id: x, backend: echo}]}}").version


RESILIENCE = """
resilience: {deadline_s: 100, max_deadline_s: 10}
redis:
  url: http://localhost:6379
pools:
  a:
    fallbacks: [a, nowhere]
    context_fallbacks: [b]%s
    deployments: [{id: x, backend: echo}]
  b:%s
    deployments: [{id: y, backend: echo}]
"""


def test_resilience_rules() -> None:
    typed = problems(RESILIENCE % ("\n    breaker: {failure_ratio: 1.5, half_open_probes: 0}", "\n    strategy: fastest"))
    assert typed == [
        "test.yaml:9: pools.a.breaker.failure_ratio: Expected `float` <= 1.0",
        "test.yaml:9: pools.a.breaker.half_open_probes: Expected `int` >= 1",
        "test.yaml:12: pools.b.strategy: Invalid enum value 'fastest' (expected one of: weighted_round_robin, least_in_flight, peak_ewma)",
    ]  # cross-field rules wait until the types are right
    fixed = problems(RESILIENCE % ("", ""))
    assert "test.yaml:7: pools.a.fallbacks[0]: a pool cannot fall back to itself" in fixed
    assert any(p.startswith("test.yaml:7: pools.a.fallbacks[1]: no pool is named 'nowhere'") for p in fixed)
    assert "test.yaml:2: resilience.deadline_s: must not be longer than resilience.max_deadline_s" in fixed
    assert any(p.startswith("test.yaml:4: redis.url: must start with redis://, rediss://, unix://") for p in fixed)
    assert len(fixed) == 4
    assert parse("redis: {url: ''}\npools: {a: {deployments: [{id: x, backend: echo}]}}").settings.redis.address() is None


def test_sentinel_and_cluster_urls_are_checked_without_quoting_the_password() -> None:
    echo = "pools: {a: {deployments: [{id: x, backend: echo}]}}\n"
    for good in ("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/2", "rediss+cluster://u:pw@h1:6379,h2:6379"):
        assert parse(f"redis: {{url: '{good}'}}\n" + echo).settings.redis.address() == good
    for bad, why in (
        ("redis+sentinel://:s3cret@10.0.0.1:26379", "names its service"),
        ("redis+cluster://:s3cret@h1:6379/1", "has no path"),
        ("redis+cluster://:s3cret@h1,h2:6379", "every node must be host:port"),
    ):
        found = problems(f"redis: {{url: '{bad}'}}\n" + echo)
        assert len(found) == 1 and why in found[0] and "s3cret" not in found[0], found
    assert problems("redis: {key_prefix: '{gw}:'}\n" + echo)  # the gateway places the hash tags itself


def test_without_config_the_embedded_default_is_found_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config.default_path({}) == str(ROOT / "config" / "gateway.yaml")  # the checkout's, from elsewhere
    assert config.default_path({"GATEWAY_CONFIG": "mine.yaml"}) == "mine.yaml"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gateway.yaml").write_text("pools: {}")
    assert config.default_path({}) == str(tmp_path / "config" / "gateway.yaml")  # the working directory's first
    monkeypatch.setattr(config, "DEFAULT_CONFIG", Path("nowhere") / "gateway.yaml")
    with pytest.raises(config.ConfigError) as none:
        config.default_path({})
    assert "--config" in str(none.value) and str(tmp_path / "nowhere" / "gateway.yaml") in str(none.value)


def test_shipped_configs_are_valid() -> None:
    env = {
        "UPSTREAM_BASE_URL": "http://localhost:8000/v1",
        "UPSTREAM_A_BASE_URL": "http://a/v1",
        "UPSTREAM_B_BASE_URL": "http://b/v1",
        "UPSTREAM_FALLBACK_BASE_URL": "http://fallback/v1",
    }
    for path in [ROOT / "config" / "gateway.yaml", *sorted((ROOT / "config" / "examples").glob("*.yaml"))]:
        config.load(path, env)


def run_validate(*files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "validate", *files], cwd=ROOT, capture_output=True, text=True, env={"PATH": ""}
    )


def test_validate_command(tmp_path: Path) -> None:
    good = run_validate("config/gateway.yaml")
    assert good.returncode == 0 and "OK" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools:\n  a:\n    deployments:\n      - id: x\n        weight: 0\n        wat: 1\n")
    result = run_validate(str(bad))
    assert result.returncode == 1
    assert f"{bad}:5: pools.a.deployments[0].weight: Expected `int` >= 1" in result.stderr
    assert f"{bad}:6: pools.a.deployments[0].wat: unknown key" in result.stderr
    assert "INVALID (2 problems)" in result.stderr  # cross-field rules (the missing base_url) wait for valid types


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "pools" in result.stderr


# --- hot reload -------------------------------------------------------------------------------


@pytest.fixture
def reloading(tmp_path: Path, upstream: FakeUpstream) -> GatewayProcess:
    path = tmp_path / "gateway.yaml"
    path.write_text("reload: {watch: true, interval_s: 0.1}\nauth: {enabled: false}\npools:" + upstream_pool("first", upstream))
    proc = GatewayProcess(path)
    yield proc  # type: ignore[misc]
    proc.stop()


def version_of(gateway: GatewayProcess) -> str:
    return httpx.get(f"{gateway.url}/health/readiness").json()["config_version"]  # type: ignore[no-any-return]


def chat(gateway: GatewayProcess, model: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]}, timeout=10
    )


def test_file_watch_reloads_and_rejects_bad_files(reloading: GatewayProcess, upstream: FakeUpstream) -> None:
    v1 = version_of(reloading)
    assert chat(reloading, "first").headers["x-gateway-config-version"] == v1

    reloading.config_path.write_text(
        "reload: {watch: true, interval_s: 0.1}\nauth: {enabled: false}\npools:" + upstream_pool("second", upstream)
    )
    wait_until(lambda: version_of(reloading) != v1, what="the file watch to reload")
    v2 = version_of(reloading)
    assert chat(reloading, "second").headers["x-gateway-config-version"] == v2
    assert chat(reloading, "first").status_code == 404

    reloading.config_path.write_text("auth: {enabled: false}\npools:\n  broken: {deployments: [{id: z, weight: -1}]}\n")
    wait_until(lambda: "config reload rejected" in reloading.logs(), what="the bad file to be rejected")
    assert version_of(reloading) == v2 and chat(reloading, "second").status_code == 200
    assert "pools.broken.deployments[0].weight" in reloading.logs()


def test_admin_reload_endpoint(tmp_path: Path, upstream: FakeUpstream) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "reload: {watch: false}\nadmin: {api_key: admin-secret}\nauth: {enabled: false}\npools:" + upstream_pool("a", upstream)
    )
    proc = GatewayProcess(path)
    try:
        url = f"{proc.admin_url}/admin/config/reload"
        assert httpx.post(url).status_code == 401
        assert httpx.post(url, headers={"authorization": "Bearer wrong"}).status_code == 401
        auth = {"authorization": "Bearer admin-secret"}
        assert httpx.post(url, headers=auth).json()["changed"] is False

        path.write_text(
            "reload: {watch: false}\nadmin: {api_key: admin-secret}\nauth: {enabled: false}\npools:"
            + upstream_pool("b", upstream)
        )
        result = httpx.post(url, headers=auth).json()
        assert result["changed"] is True and chat(proc, "b").headers["x-gateway-config-version"] == result["version"]

        path.write_text("reload: {watch: false}\nadmin: {api_key: admin-secret}\nauth: {enabled: false}\npools: {}\n")
        rejected = httpx.post(url, headers=auth)
        assert rejected.status_code == 400 and "pools" in rejected.json()["error"]["message"]
        assert chat(proc, "b").status_code == 200
        assert "admin-secret" not in proc.logs()
    finally:
        proc.stop()


def test_in_flight_requests_finish_on_the_config_they_started_with(tmp_path: Path) -> None:
    release = threading.Event()
    held = FakeUpstream(Behavior(release=release), name="held").start_in_thread()
    try:
        path = tmp_path / "gateway.yaml"
        path.write_text("reload: {watch: false}\nauth: {enabled: false}\npools:" + upstream_pool("old", held))
        proc = GatewayProcess(path)
        try:
            v1 = version_of(proc)
            result: dict[str, httpx.Response] = {}
            thread = threading.Thread(target=lambda: result.setdefault("r", chat(proc, "old")))
            thread.start()
            wait_until(lambda: held.requests == 1, what="the request to reach the upstream")
            path.write_text(
                "reload: {watch: false}\nauth: {enabled: false}\npools:\n  new: {deployments: [{id: e, backend: echo}]}\n"
            )
            assert httpx.post(f"{proc.admin_url}/admin/config/reload").json()["changed"] is True
            release.set()
            thread.join(10)
            assert result["r"].status_code == 200
            assert result["r"].headers["x-gateway-config-version"] == v1
            assert chat(proc, "old").status_code == 404
        finally:
            proc.stop()
    finally:
        release.set()
        held.stop()


def test_a_listening_socket_handed_to_serve_gives_its_connections_no_delay() -> None:
    """`gateway serve --fd N`: uvicorn takes N for a Unix socket, so a TCP listener handed over
    would give connections without TCP_NODELAY, and an answer written as head then body would wait
    ~40 ms for the client's delayed ACK. The gateway turns it on at the listener, which
    connections inherit."""
    import socket

    from gateway.cli import _no_delay

    with socket.create_server(("127.0.0.1", 0)) as listener:
        _no_delay(listener.fileno())
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert listener.fileno() != -1  # the gateway's copy is closed, not the socket it was handed
