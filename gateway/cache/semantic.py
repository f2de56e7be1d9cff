"""The two cache layers over a store and a vector index: exact key first, then by meaning.

lookup ─▶ exact key in the store ─▶ hit-exact
       └▶ namespace's index: top-k above the threshold ─▶ entry still alive? ─▶ veto? ─▶ hit-semantic
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from gateway.cache.store import Entry, Store
from gateway.cache.veto import veto

if TYPE_CHECKING:
    from gateway.cache.index import VectorIndex  # faiss: imported only when a cache is built


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    layer: Literal["hit-exact", "hit-semantic"]
    similarity: float


class SemanticCache:
    def __init__(self, store: Store, index: VectorIndex, *, threshold: float = 0.9, top_k: int = 4) -> None:
        self.store = store
        self.index = index
        self.threshold = threshold
        self.top_k = top_k
        self.vetoed = 0

    def lookup_exact(self, key: str) -> Hit | None:
        entry = self.store.get(key)
        return None if entry is None else Hit(entry, "hit-exact", 1.0)

    def lookup_semantic(self, namespace: str, text: str, vector: np.ndarray, threshold: float | None = None) -> Hit | None:
        bound = self.threshold if threshold is None else threshold
        for candidate in self.index.search(namespace, vector, self.top_k):
            if candidate.similarity < bound:
                break
            entry = self.store.by_id(candidate.entry_id)
            if entry is None:  # expired or evicted since: the index catches up
                self.index.remove(namespace, candidate.entry_id)
                continue
            if entry.text is None or veto(text, entry.text) is not None:
                self.vetoed += 1
                continue
            return Hit(entry, "hit-semantic", candidate.similarity)
        return None

    def remove(self, key: str) -> bool:
        entry = self.store.delete(key)
        if entry is not None:
            self.index.remove(entry.namespace, entry.entry_id)
        return entry is not None

    def flush(self, namespace: str | None = None) -> int:
        """Remove every entry of `namespace` (of all namespaces when None); returns how many."""
        return sum(self.remove(key) for key in self.store.keys(namespace))

    def store_entry(self, entry: Entry, vector: np.ndarray | None) -> Entry:
        old = self.store.get(entry.key)
        if old is not None:
            self.index.remove(old.namespace, old.entry_id)
        stored = self.store.put(entry)
        for gone in self.store.take_evicted():
            self.index.remove(gone.namespace, gone.entry_id)
        if vector is not None and stored.text is not None:
            self.index.add(stored.namespace, stored.entry_id, vector)
        return stored
