"""The block manager as plain objects: sharing, reference counts, LRU eviction, verification."""

from __future__ import annotations

from backends.local_engine.block_manager import BlockManager
from backends.local_engine.sampling import SamplingParams
from backends.local_engine.sequence import Sequence


def seq(tokens: list[int], salt: str | None = None, seq_id: int = 0) -> Sequence:
    return Sequence(seq_id, f"r{seq_id}", 0, list(tokens), len(tokens), SamplingParams(cache_salt=salt), 0.0)


def admit(bm: BlockManager, s: Sequence) -> None:
    cached = bm.cached_prefix(s)
    new = s.num_tokens - len(cached) * bm.block_size
    assert bm.can_allocate(s, new, cached)
    bm.allocate(s, new, cached)
    s.num_computed = s.num_tokens
    bm.cache_full_blocks(s)


def test_same_prefix_shares_blocks_and_counts_references() -> None:
    bm = BlockManager(10, 4)
    a, b = seq(list(range(10)), seq_id=1), seq([*list(range(8)), 99, 98, 97], seq_id=2)
    admit(bm, a)
    admit(bm, b)
    assert a.block_table[:2] == b.block_table[:2] and a.block_table[2] != b.block_table[2]
    assert b.num_cached == 8
    assert [bm.blocks[i].ref_count for i in a.block_table[:2]] == [2, 2]
    bm.deallocate(a)
    assert [bm.blocks[i].ref_count for i in b.block_table[:2]] == [1, 1]
    bm.deallocate(b)
    assert bm.num_free == 10


def test_salt_and_any_earlier_difference_keep_blocks_apart() -> None:
    bm = BlockManager(10, 4)
    admit(bm, seq(list(range(9))))
    assert bm.cached_prefix(seq(list(range(9)), salt="tenant-b")) == []
    assert bm.cached_prefix(seq([7, *list(range(1, 9))])) == []  # first block differs: the second cannot match
    assert len(bm.cached_prefix(seq(list(range(9))))) == 2


def test_freed_blocks_stay_findable_until_reused_least_recent_first() -> None:
    bm = BlockManager(4, 2)
    old, recent = seq([1, 2, 3], seq_id=1), seq([5, 6, 7], seq_id=2)
    admit(bm, old)
    bm.deallocate(old)
    admit(bm, recent)
    bm.deallocate(recent)
    assert len(bm.cached_prefix(seq([1, 2, 3]))) == 1 and len(bm.cached_prefix(seq([5, 6, 7]))) == 1
    admit(bm, seq([9, 9, 9], seq_id=3))  # needs two blocks: the least recently freed go first
    assert bm.cached_prefix(seq([1, 2, 3])) == []
    assert len(bm.cached_prefix(seq([5, 6, 7]))) == 1


def test_hash_collision_is_a_miss_not_a_wrong_block() -> None:
    bm = BlockManager(4, 2)
    a = seq([1, 2, 3])
    admit(bm, a)
    block = bm.blocks[a.block_table[0]]
    # Make another prompt's first block hash to the cached block's id, as a collision would.
    other = seq([8, 9, 3])
    key = (None, (8, 9), None)
    bm._cached[hash(key)] = block.block_id
    assert bm.cached_prefix(other) == []


def test_can_allocate_counts_cached_blocks_waiting_in_the_free_queue() -> None:
    bm = BlockManager(3, 2)
    first = seq([1, 2, 3, 4, 5])
    admit(bm, first)
    bm.deallocate(first)  # all three blocks free, two of them cached
    again = seq([1, 2, 3, 4, 5, 6])
    cached = bm.cached_prefix(again)
    assert len(cached) == 2
    assert bm.can_allocate(again, 2, cached)  # 2 reused + 1 new = 3 blocks
    assert not bm.can_allocate(again, 4, cached)  # 2 reused + 2 new = 4 > 3
    bm.allocate(again, 2, cached)
    assert bm.num_free == 0 and again.num_computed == 4
