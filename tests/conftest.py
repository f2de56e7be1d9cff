"""Fixtures with real parts: fake upstreams on loopback ports, and the gateway as a real
`gateway serve` process on another loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fake_upstream import Behavior, FakeUpstream
from tests.helpers.gateway import GatewayProcess, upstream_pool
from tests.helpers.redis_ha import RedisClusterProcesses, SentinelProcesses, SharedRedis
from tests.helpers.redis_server import RedisServer


@pytest.fixture(scope="session", autouse=True)
def onnx_exports() -> None:
    """The embedder's and the verifier's ONNX files, exported once per machine (into the user's
    cache folder) before any test starts a gateway, whose first start would otherwise spend its
    readiness wait on them."""
    from gateway.cache.embedder import bundled_model_dir, default_onnx_dir
    from gateway.cache.verifier import SHIPPED, ensure_verifier_onnx
    from gateway.offline.onnx_export import ensure_onnx

    ensure_onnx(bundled_model_dir(), default_onnx_dir())
    ensure_verifier_onnx(bundled_model_dir(), SHIPPED / "verifier.safetensors", default_onnx_dir())


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(Behavior(chunks=5), name="primary").start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def faulty() -> Iterator[FakeUpstream]:
    """An upstream whose behaviour each test sets (and the `faulty` fixture resets)."""
    server = FakeUpstream(name="faulty").start_in_thread()
    yield server
    server.stop()


@pytest.fixture
def fault(faulty: FakeUpstream) -> Iterator[FakeUpstream]:
    faulty.behavior = Behavior()
    yield faulty
    faulty.behavior = Behavior()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, faulty: FakeUpstream) -> Iterator[GatewayProcess]:
    """A gateway with a pool on the healthy upstream, one on the faulty one, and the echo pool."""
    path = tmp_path_factory.mktemp("gw") / "gateway.yaml"
    # The faulty pool tests how each fault is reported, attempt by attempt: no retries, no breaker.
    fast_timeouts = "\n        timeouts: {read: 1.0, total: 3.0}"
    single_attempt = "\n    retry: {max_attempts: 1}\n    breaker: {enabled: false}"
    price = "\n        price: {input_per_1m: 2.5, output_per_1m: 10}"
    path.write_text(
        "server: {max_body_bytes: 65536}\nreload: {watch: false}\nauth: {enabled: false}\npools:"
        + upstream_pool("main", upstream, model="upstream-model", extra=price, aliases="[gpt-4o, gpt-4o-mini]")
        + upstream_pool("faulty", faulty, extra=fast_timeouts, pool_extra=single_attempt)
        + "\n  echo:\n    deployments: [{id: echo-dep, backend: echo}]\n"
    )
    proc = GatewayProcess(path)
    yield proc
    proc.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(params=["single", "cluster", pytest.param("sentinel", marks=pytest.mark.slow)])
def shared_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedRedis]:
    """Redis as each kind of `redis.url` names it: one `redis-server`; a Redis Cluster of three
    masters; a master and a replica behind three Sentinels (slow tier: they take seconds to meet)."""
    kinds = {"single": RedisServer, "cluster": RedisClusterProcesses, "sentinel": SentinelProcesses}
    (tmp_path / "redis").mkdir()
    server: SharedRedis = kinds[request.param](tmp_path / "redis")
    yield server
    server.stop()
