"""Cache entries. The `Store` protocol, and the in-process store (the embedded default).

An entry lives until its TTL, counted from when it was stored (a hit does not extend it). Past
`max_entries` the least recently used entry goes. Time comes from an injected clock.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


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
    entry_id: int = 0


class Store(Protocol):
    def get(self, key: str) -> Entry | None: ...

    def by_id(self, entry_id: int) -> Entry | None: ...

    def put(self, entry: Entry) -> Entry:
        """Store `entry` (replacing one with the same key) and return it with its id."""
        ...

    def delete(self, key: str) -> Entry | None: ...

    def take_evicted(self) -> list[Entry]:
        """Entries dropped for room or age since the last call (so the index can drop them too)."""
        ...

    def keys(self, namespace: str | None = None) -> list[str]:
        """Keys of the entries in `namespace`, or in every namespace that starts with `namespace:`
        (namespaces begin with their pool's name: "small" means all of pool small); all when None."""
        ...

    def __len__(self) -> int: ...


class MemoryStore:
    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._ids: dict[int, str] = {}
        self._next_id = itertools.count(1)
        self._evicted: list[Entry] = []

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def by_id(self, entry_id: int) -> Entry | None:
        key = self._ids.get(entry_id)
        return None if key is None else self.get(key)

    def put(self, entry: Entry) -> Entry:
        self.delete(entry.key)
        stored = Entry(entry.key, entry.namespace, entry.text, entry.body, entry.expires_at, next(self._next_id))
        self._entries[entry.key] = stored
        self._ids[stored.entry_id] = entry.key
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))
        return stored

    def delete(self, key: str) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._ids.pop(entry.entry_id, None)
        return entry

    def take_evicted(self) -> list[Entry]:
        evicted, self._evicted = self._evicted, []
        return evicted

    def keys(self, namespace: str | None = None) -> list[str]:
        return [k for k, e in self._entries.items() if namespace is None or _within(e.namespace, namespace)]

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        entry = self.delete(key)
        if entry is not None:
            self._evicted.append(entry)


def _within(namespace: str, selector: str) -> bool:
    return namespace == selector or namespace.startswith(selector.rstrip(":") + ":")
