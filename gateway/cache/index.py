"""Vectors of cached prompts, one FAISS index per namespace. Nothing crosses between namespaces.

Inner-product search over unit vectors, so the score is the cosine. A namespace starts as an exact
flat index, which answers 10,000 entries in about a millisecond on one core; past `ivf_from`
entries it is rebuilt as an IVF index (inverted lists over k-means cells; `nprobe` cells are
searched), retrained whenever it has doubled since. IVF rather than HNSW because entries are
removed all the time (TTL, eviction, feedback) and FAISS's HNSW cannot remove.

Training takes seconds, so it runs on a background thread over a copy of the vectors while the old
index keeps answering; what is added or removed meanwhile is replayed onto the new index before it
takes over (on the next call after the build ends).

The index knows each entry's namespace and expiry, so `expire` drops what has ended without
asking the store, and `add` of an id it holds is a no-op: the same change may arrive twice (from
the process that made it and from the store's change feed).
"""

from __future__ import annotations

import heapq
import math
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True, slots=True)
class Candidate:
    entry_id: int
    similarity: float


_Op = tuple[int, "np.ndarray | None"]  # an id and its vector (None: removed)


class _Space:
    """One namespace's index."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.ids: set[int] = set()
        self.trained_at = 0  # entries when the IVF index was last trained (0: flat)
        self.building: Future[faiss.Index] | None = None
        self.missed: list[_Op] = []  # changes since the build's copy was taken

    def add(self, entry_id: int, vector: np.ndarray) -> None:
        self.index.add_with_ids(vector.reshape(1, self.dim), np.array([entry_id], dtype=np.int64))
        self.ids.add(entry_id)
        if self.building is not None:
            self.missed.append((entry_id, vector))

    def remove(self, entry_id: int) -> None:
        self.index.remove_ids(faiss.IDSelectorArray(np.array([entry_id], dtype=np.int64)))
        self.ids.discard(entry_id)
        if self.building is not None:
            self.missed.append((entry_id, None))

    def start_build(self, builder: Executor, nprobe: int) -> None:
        ids = np.fromiter(self.ids, dtype=np.int64, count=len(self.ids))
        vectors = self.index.reconstruct_batch(ids)
        self.building = builder.submit(_ivf, vectors, ids, nprobe)
        self.trained_at = len(ids)

    def settle(self) -> None:
        """Take over the IVF index once its build has ended, with what changed meanwhile."""
        if self.building is None or not self.building.done():
            return
        index, self.building = self.building.result(), None
        for entry_id, vector in self.missed:
            selector = faiss.IDSelectorArray(np.array([entry_id], dtype=np.int64))
            index.remove_ids(selector)
            if vector is not None:
                index.add_with_ids(vector.reshape(1, self.dim), np.array([entry_id], dtype=np.int64))
        self.index, self.missed = index, []


def _ivf(vectors: np.ndarray, ids: np.ndarray, nprobe: int) -> faiss.Index:
    """An IVF index over `vectors` with about 2·√n cells, trained on at most 50 vectors per cell."""
    dim = vectors.shape[1]
    cells = max(1, int(2 * math.sqrt(len(ids))))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).permutation(len(ids))[: 50 * cells]
    index.train(vectors[sample])
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    index.nprobe = nprobe
    index.add_with_ids(vectors, ids)
    return index


class VectorIndex:
    def __init__(self, dim: int, *, ivf_from: int = 20_000, nprobe: int = 16, builder: Executor | None = None) -> None:
        # One query at a time gains nothing from OpenMP threads, whose spinning fights ONNX
        # Runtime's threads for the same cores.
        faiss.omp_set_num_threads(1)
        self.dim = dim
        self.ivf_from = ivf_from
        self.nprobe = nprobe
        self._spaces: dict[str, _Space] = {}
        self._where: dict[int, tuple[str, float]] = {}  # entry id -> (namespace, expires_at)
        self._expiry: list[tuple[float, int]] = []  # heap; stale items are skipped
        self._builder = builder or ThreadPoolExecutor(1, thread_name_prefix="ivf-build")

    def add(self, namespace: str, entry_id: int, vector: np.ndarray, expires_at: float = math.inf) -> None:
        held = self._where.get(entry_id)
        if held is not None and held[0] == namespace:
            self._where[entry_id] = (namespace, max(held[1], expires_at))  # the same entry again (a replaced one lives longer)
        else:
            if held is not None:
                self.remove(entry_id)
            space = self._spaces.get(namespace)
            if space is None:
                space = self._spaces[namespace] = _Space(self.dim)
            space.settle()
            space.add(entry_id, np.ascontiguousarray(vector, dtype=np.float32))
            self._where[entry_id] = (namespace, expires_at)
            if space.building is None and len(space.ids) >= max(self.ivf_from, 2 * space.trained_at):
                space.start_build(self._builder, self.nprobe)
        if expires_at != math.inf:
            heapq.heappush(self._expiry, (self._where[entry_id][1], entry_id))

    def remove(self, entry_id: int) -> None:
        held = self._where.pop(entry_id, None)
        if held is None:
            return
        space = self._spaces[held[0]]
        space.settle()
        space.remove(entry_id)
        if not space.ids:
            del self._spaces[held[0]]

    def expire(self, now: float) -> None:
        """Drop every entry whose time has passed."""
        while self._expiry and self._expiry[0][0] <= now:
            _, entry_id = heapq.heappop(self._expiry)
            held = self._where.get(entry_id)
            if held is not None and held[1] <= now:
                self.remove(entry_id)

    def clear(self) -> None:
        self._spaces.clear()
        self._where.clear()
        self._expiry.clear()

    def search(self, namespace: str, vector: np.ndarray, k: int) -> list[Candidate]:
        """Up to `k` entries of `namespace`, most similar first."""
        space = self._spaces.get(namespace)
        if space is None:
            return []
        space.settle()
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        scores, ids = space.index.search(query, min(k, len(space.ids)))
        return [Candidate(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def kind(self, namespace: str) -> str:
        space = self._spaces.get(namespace)
        if space is None:
            return "none"
        space.settle()
        return "flat" if isinstance(space.index, faiss.IndexIDMap2) else "ivf"

    def wait_built(self) -> None:
        """Block until background builds have ended (benchmarks and tests)."""
        self._builder.submit(lambda: None).result()

    def size(self, namespace: str | None = None) -> int:
        if namespace is not None:
            space = self._spaces.get(namespace)
            return 0 if space is None else len(space.ids)
        return len(self._where)
