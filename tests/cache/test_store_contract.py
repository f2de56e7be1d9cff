"""One contract for both cache stores: the in-process one and Redis (a real `redis-server` per test).

Time is the test's own clock, given to both stores: an entry past its `expires_at` by the store's
clock is dead for both (Redis's own TTL, on its own clock, only frees the memory later).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from gateway.cache.redis_store import RedisStore
from gateway.cache.store import Change, Entry, MemoryStore, Store, StoreUnavailable
from tests.helpers.polling import await_until
from tests.helpers.redis_server import RedisServer

StoreFactory = Callable[[int], Store]


class Clock:
    """The stores' clock; tests move it on."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> AsyncIterator[StoreFactory]:
    """Builds stores of one kind; Redis ones built by one test share one server, like two workers."""
    made: list[Store] = []
    server = RedisServer(tmp_path) if request.param == "redis" else None

    def make(max_entries: int = 100) -> Store:
        store: Store = (
            MemoryStore(max_entries, clock) if server is None else RedisStore(server.url, max_entries=max_entries, clock=clock)
        )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()
    if server is not None:
        server.stop()


def vector(seed: int) -> bytes:
    v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return (v / np.linalg.norm(v)).tobytes()


def entry(
    name: str, ttl: float = 60, ns: str = "small:ns1", *, text: str | None = "text", with_vector: bool = True, now: float | None = None
) -> Entry:
    expires = (time.time() if now is None else now) + ttl
    return Entry(f"key-{name}", ns, text, f'{{"answer": "{name}"}}'.encode(), expires, vector(len(name)) if with_vector else None)


async def test_an_entry_comes_back_as_stored(make_store: StoreFactory) -> None:
    store = make_store(100)
    full, bare = entry("full"), entry("bare", text=None, with_vector=False)
    assert await store.put(full) == [] and await store.put(bare) == []
    assert await store.get(full.id) == full
    assert await store.get(bare.id) == bare
    assert await store.get(entry("never").id) is None
    assert await store.count() == 2


async def test_a_put_replaces_the_entry_with_the_same_key(make_store: StoreFactory) -> None:
    store = make_store(100)
    await store.put(entry("a"))
    newer = Entry("key-a", "small:ns1", "text", b'{"answer": "newer"}', time.time() + 60)
    await store.put(newer)
    assert (await store.get(newer.id)) == newer
    assert await store.count() == 1


async def test_delete_returns_what_it_removed(make_store: StoreFactory) -> None:
    store = make_store(100)
    kept = entry("kept")
    await store.put(kept)
    assert await store.delete(kept.id) == kept
    assert await store.get(kept.id) is None
    assert await store.delete(kept.id) is None


async def test_an_entry_ends_at_its_ttl_and_a_hit_does_not_extend_it(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store(100)
    short, long = entry("short", ttl=0.6, now=clock.now), entry("long", ttl=60, now=clock.now)
    await store.put(short)
    await store.put(long)
    clock.now += 0.3
    assert await store.get(short.id) == short  # read half-way...
    clock.now += 0.3
    assert await store.get(short.id) is None  # ...and still gone 0.6 s after it was stored
    assert await store.count() == 1
    assert await store.ids() == [long.id]


async def test_past_max_entries_the_least_recently_used_goes(make_store: StoreFactory) -> None:
    store = make_store(2)
    a, b, c = entry("a"), entry("bb"), entry("ccc")
    await store.put(a)
    await store.put(b)
    assert await store.get(a.id) is not None  # a is now used more recently than b
    assert await store.put(c) == [Change(b.id, b.namespace, None)]
    assert await store.get(b.id) is None
    assert await store.get(a.id) == a and await store.get(c.id) == c
    assert await store.count() == 2


async def test_expired_entries_make_room_before_live_ones(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store(2)
    brief, lasting = entry("brief", ttl=0.2, now=clock.now), entry("lasting", now=clock.now)
    await store.put(brief)
    await store.put(lasting)
    clock.now += 0.3
    assert await store.put(entry("third")) == []  # the expired one made room: nothing live was dropped
    assert await store.get(lasting.id) == lasting


async def test_ids_by_namespace_or_pool(make_store: StoreFactory) -> None:
    store = make_store(100)
    one, two, other = entry("one", ns="small:aaa"), entry("two", ns="small:bbb"), entry("other", ns="smaller:aaa")
    for e in (one, two, other):
        await store.put(e)
    assert sorted(await store.ids("small")) == sorted([one.id, two.id])  # a pool: all its namespaces
    assert await store.ids("small:aaa") == [one.id]
    assert sorted(await store.ids()) == sorted([one.id, two.id, other.id])


class View:
    """What a worker's index would hold after the changes it was given (idempotent, like the index:
    the same change may arrive twice, from a snapshot and from the feed)."""

    def __init__(self) -> None:
        self.held: dict[int, Change] = {}
        self.resets = 0

    def apply(self, change: Change) -> None:
        if change.vector is None:
            self.held.pop(change.entry_id, None)
        else:
            self.held[change.entry_id] = change

    def reset(self) -> None:
        self.resets += 1
        self.held.clear()


@contextlib.asynccontextmanager
async def following(store: Store) -> AsyncIterator[View]:
    view = View()
    follow = (
        store.follow(view.apply, view.reset, block_ms=100)
        if isinstance(store, RedisStore)
        else store.follow(view.apply, view.reset)
    )
    task = asyncio.create_task(follow)
    try:
        yield view
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def change(e: Entry) -> Change:
    return Change(e.id, e.namespace, e.vector, e.expires_at)


async def test_follow_starts_from_every_live_entry_with_a_vector(make_store: StoreFactory) -> None:
    store = make_store(100)
    with_vector, exact_only = entry("v"), entry("x", with_vector=False)
    await store.put(with_vector)
    await store.put(exact_only)
    async with following(store) as view:
        await await_until(lambda: view.held == {with_vector.id: change(with_vector)})
        assert view.resets == 1  # once, before the entries


# Redis only: what makes it a shared store.


@pytest.fixture
async def redis_pair(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, RedisStore, RedisStore]]:
    server = RedisServer(tmp_path)
    one, two = RedisStore(server.url, max_entries=3), RedisStore(server.url, max_entries=3)
    yield server, one, two
    await one.aclose()
    await two.aclose()
    server.stop()


async def test_a_worker_follows_what_another_adds_and_removes(redis_pair: tuple[RedisServer, RedisStore, RedisStore]) -> None:
    _, one, two = redis_pair
    async with following(two) as view:
        first = entry("first")
        await one.put(first)
        await await_until(lambda: view.held == {first.id: change(first)})
        assert await two.get(first.id) == first  # and the entry itself is shared
        await one.delete(first.id)
        await await_until(lambda: view.held == {})
        names = ("a", "bb", "ccc", "dddd")
        for name in names:  # max 3: the fourth evicts "a", and followers hear of it
            await one.put(entry(name))
        await await_until(lambda: set(view.held) == {entry(n).id for n in names[1:]})


async def test_a_worker_rebuilds_after_losing_redis(redis_pair: tuple[RedisServer, RedisStore, RedisStore]) -> None:
    server, one, two = redis_pair
    async with following(two) as view:
        before = entry("before")
        await one.put(before)
        await await_until(lambda: set(view.held) == {before.id})
        server.stop()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(one.get(before.id), 5)
        server.start()  # empty: what the worker indexed before is gone
        await await_until(lambda: view.resets >= 2 and not view.held)  # the worker rebuilt from the (empty) store...
        after = entry("after")
        await one.put(after)
        await await_until(lambda: set(view.held) == {after.id})  # ...and follows again


async def test_a_namespace_threshold_only_rises(make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.threshold("small:ns") is None
    assert await store.raise_threshold("small:ns", 0.99) == 0.99
    assert await store.raise_threshold("small:ns", 0.95) == 0.99  # never lowered
    assert await store.raise_threshold("small:ns", 1.0000001) == 1.0000001
    assert await store.threshold("small:ns") == 1.0000001
    assert await store.threshold("small:other") is None
