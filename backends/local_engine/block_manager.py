"""Hands out KV-cache blocks to sequences and keeps full blocks findable by their content (prefix caching).

A full block's hash chains its parent's hash, its tokens and the request's cache salt, so two
sequences share a block only when everything before it is the same too. A block whose reference
count drops to zero goes to the back of the free queue with its hash kept: it can still be found
and reused until it reaches the front and is taken for new tokens (LRU eviction). Every hit is
checked token by token, so a hash collision costs a miss, never a wrong answer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from backends.local_engine.sequence import Sequence

BlockKey = tuple[int | None, tuple[int, ...], str | None]


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    key: BlockKey | None = None
    """(parent hash, tokens, salt) of a full, cached block."""
    hash: int | None = None


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        assert num_blocks > 0 and block_size > 0
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # LRU first
        self._cached: dict[int, int] = {}  # block hash -> block id
        self.hit_tokens = 0
        self.queried_tokens = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self._free)

    def usage(self) -> float:
        return 1.0 - self.num_free / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def cached_prefix(self, seq: Sequence) -> list[int]:
        """Ids of the cached blocks that hold the start of `seq`. At least the last token is always
        left to compute (its scores are needed), so a whole-prompt hit stops one block short."""
        if not self.enable_prefix_caching:
            return []
        found: list[int] = []
        parent: int | None = None
        for start in range(0, seq.num_tokens - 1 - self.block_size + 1, self.block_size):
            key = (parent, tuple(seq.token_ids[start : start + self.block_size]), seq.params.cache_salt)
            block_id = self._cached.get(hash(key))
            if block_id is None or self.blocks[block_id].key != key:  # token verification
                break
            found.append(block_id)
            parent = hash(key)
        return found

    def can_allocate(self, seq: Sequence, num_new_tokens: int, cached: list[int] | None = None, reserve: int = 0) -> bool:
        """Whether `allocate` can succeed and still leave `reserve` blocks free."""
        cached = cached or []
        needed = (
            self.blocks_for(seq.num_computed + len(cached) * self.block_size + num_new_tokens)
            - len(seq.block_table)
            - len(cached)
        )
        reclaimed = sum(1 for b in cached if self.blocks[b].ref_count == 0)  # cached blocks that sit in the free queue
        return needed <= self.num_free - reclaimed - reserve

    def allocate(self, seq: Sequence, num_new_tokens: int, cached: list[int] | None = None) -> None:
        """Take the prefix hit `cached` (only when the sequence has no blocks yet) and enough new
        blocks to hold `num_new_tokens` more tokens. `can_allocate` must have said yes."""
        if cached:
            assert not seq.block_table and seq.num_computed == 0
            for block_id in cached:
                self._take(block_id)
                seq.block_table.append(block_id)
            seq.num_computed = seq.num_cached = len(cached) * self.block_size
            self.hit_tokens += seq.num_cached
        needed = self.blocks_for(seq.num_computed + num_new_tokens) - len(seq.block_table)
        for _ in range(needed):
            block_id = next(iter(self._free))
            self._evict(block_id)
            self._take(block_id)
            seq.block_table.append(block_id)

    def note_queried(self, seq: Sequence) -> None:
        self.queried_tokens += seq.num_tokens

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the sequence's full, computed blocks so that later sequences can share them."""
        if not self.enable_prefix_caching:
            return
        parent: int | None = None
        for i in range(seq.num_computed // self.block_size):
            block = self.blocks[seq.block_table[i]]
            if block.key is None:
                tokens = tuple(seq.token_ids[i * self.block_size : (i + 1) * self.block_size])
                key = (parent, tokens, seq.params.cache_salt)
                block.key, block.hash = key, hash(key)
                self._cached.setdefault(block.hash, block.block_id)
            parent = block.hash

    def deallocate(self, seq: Sequence) -> None:
        # Tail blocks first, so that they are evicted before the prefix blocks other prompts share.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0
            if block.ref_count == 0:
                self._free[block_id] = None
        seq.block_table = []
        seq.num_computed = 0

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self._free[block_id]
        block.ref_count += 1

    def _evict(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.hash is not None and self._cached.get(block.hash) == block_id:
            del self._cached[block.hash]
        block.key = block.hash = None

    def reset_prefix_cache(self) -> None:
        for block_id in list(self._free):
            self._evict(block_id)
