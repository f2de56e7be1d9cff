"""The response cache as the pipeline sees it: look a request up, store an answer.

    request ─▶ cacheable? (pool on, temperature policy, n = 1, no `no-store`)
            ─▶ exact key ─▶ hit-exact
            ─▶ semantic text ─▶ embed (micro-batched, off the loop) ─▶ namespace index ─▶ rules ─▶ verifier ─▶ hit-semantic
            ─▶ miss: after the upstream answers, store it if every choice finished (`stop`, `tool_calls`)

A hit is the stored completion with a fresh `id` and `created`, its prompt reported as cached
tokens; a streamed request gets it replayed as SSE events (replay.py). The embedder is imported only when the cache is on.

The cache never fails a request. A store that does not answer in `store_timeout_s` (Redis down)
makes the request bypass the cache, and the next ones for `store_retry_s` without trying; this is
logged once per outage and counted (`store_errors`, `store_up`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import numpy as np

from backends.types import Endpoint
from gateway.cache.keys import context_digest, exact_key, semantic_namespace
from gateway.cache.semantic import Hit, SemanticCache
from gateway.cache.store import Entry, MemoryStore, Store, StoreUnavailable, entry_id
from gateway.controls import CacheDirective
from gateway.settings import CacheSettings, PoolSettings, RedisSettings
from gateway.text import semantic_text

if TYPE_CHECKING:
    from gateway.cache.embedder import Embedder  # onnxruntime: imported only when something embeds
    from gateway.cache.verifier import Calibration, OperatingPoint, Verifier

log = logging.getLogger("gateway.cache")
Outcome = Literal["hit-exact", "hit-semantic", "miss", "bypass"]
_STORABLE_FINISH = {"stop", "tool_calls"}


@dataclass(slots=True)
class Lookup:
    """One request's way through the cache, kept until its answer can be stored."""

    outcome: Outcome
    hit: Hit | None = None
    key: str = ""
    namespace: str = ""
    text: str | None = None
    vector: np.ndarray | None = None
    store: bool = False
    ttl_s: float = 0.0


BYPASS = Lookup("bypass")
Embedded = tuple[str, np.ndarray]
"""A text and its embedding, made once per request and shared by the router and the cache."""


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _Finished(msgspec.Struct):
    choices: list[_Choice] = msgspec.field(default_factory=list)


class ResponseCache:
    """The cache a gateway process builds at start. What it builds then (the store, the index, the
    embedder) follows the settings it started with; every lookup reads the live config's
    `cache` block for the rest (semantic, threshold, top_k, ttl_s, max_temperature, store_retry_s),
    so a reload changes them for the next request."""

    def __init__(
        self,
        settings: CacheSettings,
        embedder: Embedder,
        redis: RedisSettings | None = None,
        verifier: Verifier | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        """`verifier` and its `calibration`: built from the shipped files when `settings.verifier`
        is on and none is given."""
        from gateway.cache.index import VectorIndex  # faiss only when the cache is on

        self.embedder = embedder
        self.store_kind = settings.store
        if verifier is None and settings.semantic and settings.verifier:
            from gateway.cache.verifier import CrossEncoder

            verifier = CrossEncoder(threads=settings.embedder.threads or 0)
        if verifier is not None and calibration is None:
            from gateway.cache.verifier import Calibration

            calibration = Calibration.load()
        self.calibration = calibration
        self._points: dict[tuple[float, float], OperatingPoint] = {}
        index = VectorIndex(self.embedder.dim, ivf_from=settings.ivf_from, nprobe=settings.nprobe)
        self.layers = SemanticCache(_store(settings, redis), index, verifier=verifier)
        self.counts: dict[str, int] = {"hit-exact": 0, "hit-semantic": 0, "miss": 0, "bypass": 0}
        self.reported_wrong = 0
        self.store_errors = 0
        self.store_up = True
        self._retry_s = settings.store_retry_s
        self._retry_at = 0.0  # monotonic time before which a store found down is not tried again
        self._follower: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Build this worker's index from the store and keep it in step (a shared store only)."""
        self._follower = asyncio.get_running_loop().create_task(self.layers.follow())

    async def lookup(
        self,
        settings: CacheSettings,
        endpoint: Endpoint,
        pool: str,
        pool_settings: PoolSettings,
        payload: dict[str, Any],
        directive: CacheDirective | None,
        embedded: Embedded | None = None,
        tenant: str = "",
    ) -> Lookup:
        """`settings`: the live config's `cache` block. `embedded`: the request's text and vector if
        something (a router) has embedded it already. `tenant`: whose entries these are (the client
        key's tenant); a pool with `cache.shared` ignores it, so its entries serve every tenant."""
        self._retry_s = settings.store_retry_s
        cacheable = _cacheable(settings, endpoint, pool_settings, payload)
        if not cacheable or directive == "no-store" or not self._store_ready():
            return self._count(BYPASS)
        try:
            tenant = "" if pool_settings.cache.shared else tenant
            found = await self._lookup(settings, endpoint, pool, pool_settings, payload, directive, embedded, tenant)
            return self._count(found)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            return self._count(BYPASS)

    async def _lookup(
        self,
        settings: CacheSettings,
        endpoint: Endpoint,
        pool: str,
        pool_settings: PoolSettings,
        payload: dict[str, Any],
        directive: CacheDirective | None,
        embedded: Embedded | None,
        tenant: str,
    ) -> Lookup:
        ttl = pool_settings.cache.ttl_s or settings.ttl_s
        found = Lookup("miss", key=exact_key(endpoint, pool, payload, tenant), namespace=f"{pool}:", store=True, ttl_s=ttl)
        looking = directive != "no-cache"  # no-cache: answer from upstream, and still store a complete entry
        if looking:
            found.hit = await self.layers.lookup_exact(found.key)
        if found.hit is None and settings.semantic and (text := semantic_text(endpoint, payload)) is not None:
            try:
                vector = embedded[1] if embedded is not None and embedded[0] == text else (await self.embedder.embed([text]))[0]
            except Exception:  # the cache must never fail a request: go on without the semantic layer
                log.exception("embedding failed; this request skips the semantic cache")
            else:
                found.namespace = f"{pool}:{semantic_namespace(endpoint, pool, payload, tenant)}{context_digest(payload)}"
                found.text, found.vector = text, vector
                if looking:
                    floor = pool_settings.cache.threshold or settings.threshold
                    target = pool_settings.cache.target_false_hit_rate or settings.target_false_hit_rate
                    threshold = self.operating_point(target, floor).threshold if self.calibration is not None else 0.0
                    found.hit = await self.layers.lookup_semantic(found.namespace, text, vector, floor, settings.top_k, threshold)
        if found.hit is not None:
            found.outcome = found.hit.layer
        self._store_answered()
        return found

    async def store(self, lookup: Lookup, body: bytes) -> None:
        """Keep a complete answer: every choice ended with `stop` or `tool_calls`. Done before the
        answer goes out, so a client that repeats the request at once gets a hit."""
        if not lookup.store or lookup.hit is not None or not self._store_ready():
            return
        try:
            finished = msgspec.json.decode(body, type=_Finished)
        except msgspec.DecodeError:
            return
        if not finished.choices or any(c.finish_reason not in _STORABLE_FINISH for c in finished.choices):
            return
        vector = None if lookup.vector is None else lookup.vector.astype(np.float32).tobytes()
        entry = Entry(lookup.key, lookup.namespace, lookup.text, body, time.time() + lookup.ttl_s, vector)
        try:
            await self.layers.store_entry(entry)
        except StoreUnavailable as exc:
            self._store_failed(exc)
        else:
            self._store_answered()

    def operating_point(self, target: float, floor: float) -> OperatingPoint:
        """The verifier threshold for `target` at cosine `floor`, from the calibration scores (once per pair of values)."""
        from gateway.cache.verifier import threshold_for

        point = self._points.get((target, floor))
        if point is None:
            assert self.calibration is not None
            point = self._points[(target, floor)] = threshold_for(self.calibration, target, floor)
        return point

    async def stats(self) -> dict[str, object]:
        """Entries in the store (None while it is down), this worker's counts and index size."""
        entries: int | None = None
        with contextlib.suppress(StoreUnavailable):
            entries = await self.layers.store.count()
        return {
            "store": self.store_kind,
            "store_up": self.store_up,
            "entries": entries,
            "vectors": self.layers.index.size(),
            **{k.replace("-", "_"): v for k, v in self.counts.items()},
            "refused": self.layers.refused,
            "rejected": self.layers.rejected,
            "reported_wrong": self.reported_wrong,
            "store_errors": self.store_errors,
        }

    async def flush(self, namespace: str | None) -> int:
        return await self.layers.flush(namespace)

    async def report_wrong(self, key: str, score: float | None) -> dict[str, Any]:
        """A client says a hit was wrong: the entry goes and it is counted. With the hit's verifier
        `score` (its `x-gateway-cache-score`: semantic hits), the namespace it was found in needs
        more than that score from then on, in every process that shares the store."""
        entry = await self.layers.store.get(entry_id(key)) if score is not None else None
        removed = await self.layers.remove(key)
        self.reported_wrong += removed
        found: dict[str, Any] = {"removed": removed}
        if entry is not None and score is not None:
            found["threshold"] = await self.layers.tighten(entry.namespace, score)
        return found

    async def aclose(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self.layers.store.aclose()

    def _store_ready(self) -> bool:
        return self.store_up or time.monotonic() >= self._retry_at

    def _store_failed(self, exc: StoreUnavailable) -> None:
        self.store_errors += 1
        self._retry_at = time.monotonic() + self._retry_s
        if self.store_up:
            log.warning(
                "response cache bypassed: its store is unreachable (%s); trying again every %.1f s",
                exc,
                self._retry_s,
            )
        self.store_up = False

    def _store_answered(self) -> None:
        if not self.store_up:
            log.info("response cache back: its store answers again")
        self.store_up = True

    def _count(self, lookup: Lookup) -> Lookup:
        self.counts[lookup.outcome] += 1
        return lookup


def _cacheable(settings: CacheSettings, endpoint: Endpoint, pool: PoolSettings, payload: dict[str, Any]) -> bool:
    if not pool.cache.enabled or endpoint == "embeddings" or payload.get("n", 1) != 1:
        return False
    temperature = payload.get("temperature")
    if temperature is None or payload.get("seed") is not None:
        return True  # the pool's cache is on: a request that asks for no particular sampling is cached
    return isinstance(temperature, int | float) and temperature <= settings.max_temperature


def _store(settings: CacheSettings, redis: RedisSettings | None) -> Store:
    url = None if redis is None else redis.address()
    if settings.store == "memory":
        return MemoryStore(settings.max_entries)
    if url is None or redis is None:
        raise ValueError("cache.store redis needs redis.url")
    from gateway.cache.redis_store import RedisStore

    return RedisStore(url, prefix=redis.key_prefix, max_entries=settings.max_entries, timeout_s=settings.store_timeout_s)


def hit_body(stored: bytes) -> bytes:
    """The stored completion as a new one: fresh id and created, the whole prompt as cached tokens."""
    data = msgspec.json.decode(stored)
    data["id"] = f"chatcmpl-cache-{uuid.uuid4().hex[:24]}"
    data["created"] = int(time.time())
    usage = data.get("usage")
    if isinstance(usage, dict):
        usage["prompt_tokens_details"] = {
            **(usage.get("prompt_tokens_details") or {}),
            "cached_tokens": usage.get("prompt_tokens", 0),
        }
    return msgspec.json.encode(data)
