"""A Runtime is one loaded config made live: its pools, deployments and backends.

Requests hold the runtime they started on (`acquire` / `release`), so a hot reload never changes
the config under an in-flight request; a retired runtime closes its backends once the last
request that holds it has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from backends.echo import EchoBackend
from backends.local import EngineProcess, LocalBackend
from backends.openai_http import HTTPBackend
from backends.protocol import Backend
from backends.transport import PooledTransport
from gateway.access.keys import KeyTable
from gateway.config import LoadedConfig
from gateway.routing.breaker import Breaker
from gateway.routing.dispatcher import Dispatcher
from gateway.routing.pools import Deployment, ModelTable, Pool, link_fallbacks
from gateway.routing.router import Router
from gateway.settings import DeploymentSettings, LocalEngineSettings, PoolSettings

log = logging.getLogger("gateway.runtime")


class Runtime:
    def __init__(self, config: LoadedConfig, previous: Runtime | None = None) -> None:
        self.config = config
        self.settings = config.settings
        self.version = config.version
        self.version_header = config.version.encode()
        self.loaded_at = int(time.time())
        pools: dict[str, Pool] = {}
        for name, pool_settings in self.settings.pools.items():
            deployments = [self._deployment(d, pool_settings, previous) for d in pool_settings.deployments]
            pools[name] = Pool.build(name, pool_settings, deployments)
        link_fallbacks(pools)
        self.pools = list(pools.values())
        self.models = ModelTable.build(self.pools)
        self.routers = {name: Router(name, spec, config.classifiers[name], pools) for name, spec in self.settings.routers.items()}
        self.dispatcher = Dispatcher()
        self.keys = KeyTable(self.settings.auth)
        self._holders = 0
        self._retired = False
        self._closing: asyncio.Task[None] | None = None

    def _deployment(self, settings: DeploymentSettings, pool: PoolSettings, previous: Runtime | None) -> Deployment:
        """A new deployment; it keeps the breaker and latency of the same upstream in the previous
        config, so a reload neither forgets a sick upstream nor floods it."""
        old = previous.deployment(settings.id) if previous else None
        backend = self._reused_engine(settings, old) or make_backend(settings, Path(self.config.source).resolve().parent)
        if old is not None and old.settings.base_url == settings.base_url and old.breaker.settings == pool.breaker:
            return Deployment(settings, backend, old.breaker, old.latency)
        return Deployment(settings, backend, Breaker(pool.breaker, name=settings.id))

    @staticmethod
    def _reused_engine(settings: DeploymentSettings, old: Deployment | None) -> Backend | None:
        """A local engine whose settings did not change keeps running across a reload."""
        if old is None or settings.backend != "local" or not isinstance(old.backend, LocalBackend):
            return None
        same = (old.settings.engine, old.settings.model, old.settings.timeouts) == (
            settings.engine,
            settings.model,
            settings.timeouts,
        )
        return old.backend.share() if same else None

    def start(self) -> None:
        """Start what runs beside the gateway (local engines); needs the event loop."""
        for pool in self.pools:
            for deployment in pool.deployments:
                if isinstance(deployment.backend, LocalBackend):
                    deployment.backend.start()

    def deployment(self, deployment_id: str) -> Deployment | None:
        for pool in self.pools:
            for d in pool.deployments:
                if d.id == deployment_id:
                    return d
        return None

    def acquire(self) -> Runtime:
        self._holders += 1
        return self

    def release(self) -> None:
        self._holders -= 1
        if self._retired and self._holders == 0:
            self._closing = asyncio.get_running_loop().create_task(self.aclose())

    def retire(self) -> None:
        """No new requests will start here; close once the ones in flight are done."""
        self._retired = True
        if self._holders == 0:
            self._closing = asyncio.get_running_loop().create_task(self.aclose())

    async def closed(self) -> None:
        """Wait until a retired runtime has closed its backends (shutdown: local engines are stopped)."""
        if self._closing is not None:
            await self._closing

    async def aclose(self) -> None:
        for pool in self.pools:
            for deployment in pool.deployments:
                try:
                    await deployment.backend.aclose()
                except Exception:  # closing must not stop the others from closing
                    log.exception("closing deployment %s failed", deployment.id)


def make_backend(settings: DeploymentSettings, config_dir: Path) -> Backend:
    if settings.backend == "echo":
        return EchoBackend(settings.id)
    if settings.backend == "local":
        return LocalBackend(settings.id, engine_process(settings, config_dir), settings.timeouts, settings.max_connections)
    assert settings.base_url is not None  # gateway.config.check guarantees it
    proxy = egress_proxy(settings.base_url, settings.proxy)
    tls: ssl.SSLContext | bool = True
    if settings.ca_bundle is not None:
        tls = ssl.create_default_context(cafile=str(config_dir / settings.ca_bundle))
    transport: httpx.AsyncBaseTransport
    if proxy is not None or settings.transport == "httpx":  # the pooled transport does not speak to proxies
        limits = httpx.Limits(max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections)
        transport = httpx.AsyncHTTPTransport(limits=limits, proxy=proxy, verify=tls, trust_env=False)
    else:
        transport = PooledTransport(max_connections=settings.max_connections, max_keepalive=settings.max_connections, verify=tls)
    return HTTPBackend(
        settings.id,
        settings.base_url,
        api_key=settings.api_key.reveal() if settings.api_key else None,
        headers=settings.headers,
        timeouts=settings.timeouts,
        max_connections=settings.max_connections,
        transport=transport,
        secrets=[proxy or ""],
    )


def egress_proxy(base_url: str, configured: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy a deployment's requests go through: its own `proxy` setting (`none`: none), else
    the environment's HTTPS_PROXY / HTTP_PROXY / ALL_PROXY unless NO_PROXY names the host."""
    if configured is not None:
        return None if configured.lower() == "none" else configured
    found = {k.lower(): v for k, v in (os.environ if environ is None else environ).items() if k.lower().endswith("_proxy") and v}
    url = urlsplit(base_url)
    proxy = found.get(f"{url.scheme}_proxy") or found.get("all_proxy")
    if proxy is None or _bypassed(url.hostname or "", url.port, found.get("no_proxy", "")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether NO_PROXY names `host`: `*`, the host itself, a domain it is in (`example.com` or
    `.example.com`), `host:port`, or an IP network (`10.0.0.0/8`)."""
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.lstrip(".").lstrip("*.") if name.startswith(("*.", ".")) else name
        if host == name or host.endswith("." + name):
            return True
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                return True
    return False


def engine_process(settings: DeploymentSettings, config_dir: Path) -> EngineProcess:
    engine = settings.engine or LocalEngineSettings()
    model = engine.model
    if not (model == "tiny" or model.startswith("tiny:")) and not Path(model).is_absolute():
        model = str(config_dir / model)
    flags = ["--dtype", engine.dtype, "--kv-memory-fraction", str(engine.kv_memory_fraction)]
    flags += ["--max-num-batched-tokens", str(engine.max_num_batched_tokens), "--max-num-seqs", str(engine.max_num_seqs)]
    if engine.num_kv_blocks is not None:
        flags += ["--num-kv-blocks", str(engine.num_kv_blocks)]
    if engine.kv_cache_dtype != "auto":
        flags += ["--kv-cache-dtype", engine.kv_cache_dtype]
    if engine.quantization != "none":
        flags += ["--quantization", engine.quantization, "--quant-group-size", str(engine.quant_group_size)]
    if engine.max_model_len is not None:
        flags += ["--max-model-len", str(engine.max_model_len)]
    return EngineProcess(
        model=model,
        served_name=settings.model or settings.id,
        port=engine.port,
        flags=(*flags, *engine.extra_args),
        startup_timeout_s=engine.startup_timeout_s,
    )
