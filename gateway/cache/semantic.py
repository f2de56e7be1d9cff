"""The two cache layers over a store and this worker's vector index: exact key first, then by meaning.

lookup ─▶ exact key in the store ─▶ hit-exact
       └▶ namespace's index: top-k above the threshold ─▶ entry still alive? ─▶ veto? ─▶ hit-semantic

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

from gateway.cache.store import Change, Entry, Store, entry_id
from gateway.cache.veto import veto

if TYPE_CHECKING:
    from gateway.cache.index import VectorIndex  # faiss: imported only when a cache is built


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    layer: Literal["hit-exact", "hit-semantic"]
    similarity: float


class SemanticCache:
    def __init__(
        self,
        store: Store,
        index: VectorIndex,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.index = index
        self.clock = clock
        self.vetoed = 0

    async def lookup_exact(self, key: str) -> Hit | None:
        entry = await self.store.get(entry_id(key))
        return None if entry is None or entry.key != key else Hit(entry, "hit-exact", 1.0)

    async def lookup_semantic(self, namespace: str, text: str, vector: np.ndarray, threshold: float, top_k: int) -> Hit | None:
        """The first of the `top_k` nearest entries at or above `threshold` that is alive and not vetoed."""
        self.index.expire(self.clock())
        for candidate in self.index.search(namespace, vector, top_k):
            if candidate.similarity < threshold:
                break
            entry = await self.store.get(candidate.entry_id)
            if entry is None:  # evicted or removed since: the index catches up
                self.index.remove(candidate.entry_id)
                continue
            if entry.text is None or veto(text, entry.text) is not None:
                self.vetoed += 1
                continue
            return Hit(entry, "hit-semantic", candidate.similarity)
        return None

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
