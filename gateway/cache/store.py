"""Cache entries. The `Store` contract, and the in-process store (the embedded default).

An entry lives until its TTL, counted from when it was stored (a hit does not extend it). Past
`max_entries` the least recently used entry goes. Entries are found by id: 63 bits of a hash of
their exact key, which is also their id in the vector index, so a semantic candidate is one read
away from its entry and every worker agrees on ids without asking anyone.

A store shared by several processes (Redis) also tells each of them about every entry added or
removed by any of them (`follow`), so each keeps its own vector index in step.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


def entry_id(key: str) -> int:
    """The id of the entry stored under exact key `key` (a non-negative int64)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


class StoreUnavailable(Exception):
    """The store could not be reached in time; the request goes on without the cache."""


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    """The exact key."""
    namespace: str
    text: str | None
    """The prompt text the semantic layer embedded (None: exact layer only)."""
    body: bytes
    """The upstream's complete response body."""
    expires_at: float
    """Wall-clock time (`time.time()`) when the entry ends."""
    vector: bytes | None = None
    """The text's embedding (float32, unit length), kept so other workers can index it."""

    @property
    def id(self) -> int:
        return entry_id(self.key)


@dataclass(frozen=True, slots=True)
class Change:
    """An entry that appeared (with its vector) or went (vector None), for a worker's index."""

    entry_id: int
    namespace: str
    vector: bytes | None
    expires_at: float = float("inf")


class Store(Protocol):
    async def get(self, entry_id: int) -> Entry | None:
        """The live entry with this id (it becomes the most recently used), else None."""
        ...

    async def put(self, entry: Entry) -> list[Change]:
        """Store `entry`, replacing one with the same key; returns the entries dropped for room."""
        ...

    async def delete(self, entry_id: int) -> Entry | None: ...

    async def ids(self, namespace: str | None = None) -> list[int]:
        """Ids of the live entries in `namespace`, or in every namespace that starts with
        `namespace:` (namespaces begin with their pool's name: "small" means all of pool small);
        all when None."""
        ...

    async def count(self) -> int: ...

    async def threshold(self, namespace: str) -> float | None:
        """The verifier threshold feedback has raised `namespace` to, if it has."""
        ...

    async def raise_threshold(self, namespace: str, value: float) -> float:
        """Raise `namespace`'s threshold to `value` (never lower it); returns the threshold now."""
        ...

    async def follow(self, apply: Callable[[Change], None], reset: Callable[[], None]) -> None:
        """Keep the caller's index in step: `reset()`, then `apply` every live entry with a vector,
        then every change any process makes, for as long as it runs. A store no other process
        writes returns after the live entries."""
        ...

    async def aclose(self) -> None: ...


class MemoryStore:
    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._expiry: list[tuple[float, int]] = []  # heap, so the expired go before the live make room
        self._thresholds: dict[str, float] = {}

    async def get(self, entry_id: int) -> Entry | None:
        entry = self._entries.get(entry_id)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            del self._entries[entry_id]
            return None
        self._entries.move_to_end(entry_id)
        return entry

    async def put(self, entry: Entry) -> list[Change]:
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            _, gone_id = heapq.heappop(self._expiry)
            gone = self._entries.get(gone_id)
            if gone is not None and gone.expires_at <= now:
                del self._entries[gone_id]
        self._entries.pop(entry.id, None)
        self._entries[entry.id] = entry
        heapq.heappush(self._expiry, (entry.expires_at, entry.id))
        dropped = []
        while len(self._entries) > self._max:
            _, gone = self._entries.popitem(last=False)
            dropped.append(Change(gone.id, gone.namespace, None))
        return dropped

    async def delete(self, entry_id: int) -> Entry | None:
        return self._entries.pop(entry_id, None)

    async def ids(self, namespace: str | None = None) -> list[int]:
        now = self._clock()
        return [
            i for i, e in self._entries.items() if e.expires_at > now and (namespace is None or within(e.namespace, namespace))
        ]

    async def count(self) -> int:
        now = self._clock()
        return sum(e.expires_at > now for e in self._entries.values())

    async def threshold(self, namespace: str) -> float | None:
        return self._thresholds.get(namespace)

    async def raise_threshold(self, namespace: str, value: float) -> float:
        self._thresholds[namespace] = max(value, self._thresholds.get(namespace, 0.0))
        return self._thresholds[namespace]

    async def follow(self, apply: Callable[[Change], None], reset: Callable[[], None]) -> None:
        reset()
        now = self._clock()
        for entry in list(self._entries.values()):
            if entry.vector is not None and entry.expires_at > now:
                apply(Change(entry.id, entry.namespace, entry.vector, entry.expires_at))

    async def aclose(self) -> None:
        self._entries.clear()
        self._expiry.clear()


def within(namespace: str, selector: str) -> bool:
    return namespace == selector or namespace.startswith(selector.rstrip(":") + ":")
