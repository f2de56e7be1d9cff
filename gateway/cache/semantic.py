"""The two cache layers over a store and this worker's vector index: exact key first, then by meaning.

lookup ─▶ exact key in the store ─▶ hit-exact
       └▶ namespace's index: top-k at or above the floor ─▶ entry still alive? ─▶ rules ─▶ verifier ─▶ hit-semantic

The index finds candidates by cosine; the rules (rules.py) refuse those that differ in what no
paraphrase changes (numbers, quoted text, code, text the verifier cannot read); the verifier
scores the rest in one call off the event loop, and the best at or above the threshold is the hit.
The threshold is the operating point's (set by the target false-hit rate) or, if feedback has
raised it for this namespace, the raised one. With no verifier, the nearest candidate the rules
let through is the hit (plain cosine, as most semantic caches do).

The store is the truth; the index is this worker's view of it, fed by what this worker stores and
by the store's change feed (`follow`), and pruned by expiry. An index candidate the store no
longer has is dropped on sight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from gateway.cache.rules import refuse
from gateway.cache.store import Change, Entry, Store, entry_id

if TYPE_CHECKING:
    from gateway.cache.index import VectorIndex  # faiss: imported only when a cache is built
    from gateway.cache.verifier import Verifier


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    layer: Literal["hit-exact", "hit-semantic"]
    similarity: float
    score: float | None = None
    """The verifier's score (semantic hits with a verifier)."""


class SemanticCache:
    def __init__(
        self,
        store: Store,
        index: VectorIndex,
        *,
        verifier: Verifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.index = index
        self.verifier = verifier
        self.clock = clock
        self.refused = 0
        """Candidates the rules refused."""
        self.rejected = 0
        """Candidates the verifier scored below the threshold."""

    async def lookup_exact(self, key: str) -> Hit | None:
        entry = await self.store.get(entry_id(key))
        return None if entry is None or entry.key != key else Hit(entry, "hit-exact", 1.0)

    async def lookup_semantic(
        self, namespace: str, text: str, vector: np.ndarray, floor: float, top_k: int, threshold: float
    ) -> Hit | None:
        """Of the `top_k` nearest live entries at or above cosine `floor` that the rules let
        through, the one the verifier scores highest, if that reaches `threshold` (or the higher
        threshold feedback has set for this namespace)."""
        self.index.expire(self.clock())
        candidates: list[tuple[Entry, float]] = []
        unseen = self.verifier.unseen if self.verifier is not None else None
        for candidate in self.index.search(namespace, vector, top_k):
            if candidate.similarity < floor:
                break
            entry = await self.store.get(candidate.entry_id)
            if entry is None:  # evicted or removed since: the index catches up
                self.index.remove(candidate.entry_id)
                continue
            if entry.text is None or refuse(text, entry.text, unseen) is not None:
                self.refused += 1
                continue
            if self.verifier is None:
                return Hit(entry, "hit-semantic", candidate.similarity)
            candidates.append((entry, candidate.similarity))
        if not candidates or self.verifier is None:
            return None
        scores = await self.verifier.verify(text, [e.text or "" for e, _ in candidates])
        raised = await self.store.threshold(namespace)
        best = int(np.argmax(scores))
        if scores[best] < max(threshold, raised or 0.0):
            self.rejected += len(candidates)
            return None
        entry, similarity = candidates[best]
        return Hit(entry, "hit-semantic", similarity, float(scores[best]))

    async def tighten(self, namespace: str, score: float) -> float:
        """A semantic hit in `namespace` with verifier `score` was wrong: from now on the namespace
        needs more than that score. Returns its threshold now, which every process sharing the
        store reads (above 1: no semantic hit there at all)."""
        return await self.store.raise_threshold(namespace, float(np.nextafter(np.float32(score), np.float32(2))))

    async def remove(self, key: str) -> bool:
        return await self.remove_id(entry_id(key))

    async def remove_id(self, entry_id: int) -> bool:
        entry = await self.store.delete(entry_id)
        self.index.remove(entry_id)
        return entry is not None

    async def flush(self, namespace: str | None = None) -> int:
        """Remove every entry of `namespace` (of all namespaces when None); returns how many."""
        return sum([await self.remove_id(i) for i in await self.store.ids(namespace)])

    async def store_entry(self, entry: Entry) -> None:
        for dropped in await self.store.put(entry):
            self.index.remove(dropped.entry_id)
        if entry.vector is not None and entry.text is not None:
            self.index.add(entry.namespace, entry.id, np.frombuffer(entry.vector, dtype=np.float32), entry.expires_at)

    async def follow(self) -> None:
        """Keep the index in step with the store (returns at once for a store only this worker writes)."""
        await self.store.follow(self.apply, self.index.clear)

    def apply(self, change: Change) -> None:
        if change.vector is None:
            self.index.remove(change.entry_id)
        elif change.expires_at > self.clock():
            self.index.add(change.namespace, change.entry_id, np.frombuffer(change.vector, dtype=np.float32), change.expires_at)
