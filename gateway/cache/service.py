"""The response cache as the pipeline sees it: look a request up, store an answer.

    request ─▶ cacheable? (pool on, temperature policy, n = 1, no `no-store`)
            ─▶ exact key ─▶ hit-exact
            ─▶ semantic text ─▶ embed (micro-batched, off the loop) ─▶ namespace index ─▶ veto ─▶ hit-semantic
            ─▶ miss: after the upstream answers, store it if every choice finished (`stop`, `tool_calls`)

A hit is the stored completion with a fresh `id` and `created`, its prompt reported as cached
tokens; a streamed request gets it replayed as SSE events (replay.py). The embedder is imported only when the cache is on.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np

from backends.types import Endpoint
from gateway.cache.keys import exact_key, semantic_namespace
from gateway.cache.semantic import Hit, SemanticCache
from gateway.cache.store import Entry, MemoryStore
from gateway.cache.text import context_digest, semantic_text
from gateway.controls import CacheDirective
from gateway.settings import CacheSettings, PoolSettings

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


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _Finished(msgspec.Struct):
    choices: list[_Choice] = msgspec.field(default_factory=list)


class ResponseCache:
    def __init__(self, settings: CacheSettings) -> None:
        from gateway.cache.embedder import OnnxEmbedder  # onnxruntime and faiss only when the cache is on
        from gateway.cache.index import VectorIndex

        self.settings = settings
        self.embedder = OnnxEmbedder(settings.embedder)
        self.layers = SemanticCache(MemoryStore(settings.max_entries), VectorIndex(self.embedder.dim), top_k=settings.top_k)
        self.counts: dict[str, int] = {"hit-exact": 0, "hit-semantic": 0, "miss": 0, "bypass": 0}
        self.reported_wrong = 0

    async def lookup(
        self,
        endpoint: Endpoint,
        pool: str,
        pool_settings: PoolSettings,
        payload: dict[str, Any],
        directive: CacheDirective | None,
    ) -> Lookup:
        if not self._cacheable(endpoint, pool_settings, payload) or directive == "no-store":
            return self._count(BYPASS)
        ttl = pool_settings.cache.ttl_s or self.settings.ttl_s
        found = Lookup("miss", key=exact_key(endpoint, pool, payload), namespace=f"{pool}:", store=True, ttl_s=ttl)
        if directive == "no-cache":
            return self._count(found)
        found.hit = self.layers.lookup_exact(found.key)
        if found.hit is None and self.settings.semantic and (text := semantic_text(endpoint, payload)) is not None:
            try:
                vector = (await self.embedder.embed([text]))[0]
            except Exception:  # the cache must never fail a request: go on without the semantic layer
                log.exception("embedding failed; this request skips the semantic cache")
            else:
                found.namespace = f"{pool}:{semantic_namespace(endpoint, pool, payload)}{context_digest(payload)}"
                found.text, found.vector = text, vector
                threshold = pool_settings.cache.threshold or self.settings.threshold
                found.hit = self.layers.lookup_semantic(found.namespace, text, vector, threshold)
        if found.hit is not None:
            found.outcome = found.hit.layer
        return self._count(found)

    def store(self, lookup: Lookup, body: bytes) -> None:
        """Keep a complete answer: every choice ended with `stop` or `tool_calls`."""
        if not lookup.store or lookup.hit is not None:
            return
        try:
            finished = msgspec.json.decode(body, type=_Finished)
        except msgspec.DecodeError:
            return
        if not finished.choices or any(c.finish_reason not in _STORABLE_FINISH for c in finished.choices):
            return
        entry = Entry(lookup.key, lookup.namespace, lookup.text, body, time.time() + lookup.ttl_s)
        self.layers.store_entry(entry, lookup.vector)

    def stats(self) -> dict[str, object]:
        return {
            "entries": len(self.layers.store),
            "vectors": self.layers.index.size(),
            **{k.replace("-", "_"): v for k, v in self.counts.items()},
            "vetoed": self.layers.vetoed,
            "reported_wrong": self.reported_wrong,
        }

    def report_wrong(self, key: str) -> bool:
        """A client says a hit was wrong: the entry goes, and it is counted."""
        removed = self.layers.remove(key)
        self.reported_wrong += removed
        return removed

    def close(self) -> None:
        self.embedder.close()

    def _cacheable(self, endpoint: Endpoint, pool: PoolSettings, payload: dict[str, Any]) -> bool:
        if not pool.cache.enabled or endpoint == "embeddings" or payload.get("n", 1) != 1:
            return False
        temperature = payload.get("temperature", 1.0)
        seeded = payload.get("seed") is not None
        return seeded or (isinstance(temperature, int | float) and temperature <= self.settings.max_temperature)

    def _count(self, lookup: Lookup) -> Lookup:
        self.counts[lookup.outcome] += 1
        return lookup


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
