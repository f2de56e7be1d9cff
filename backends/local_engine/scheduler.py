"""Continuous batching: each step picks which sequences run and how many of their tokens.

One token budget per step. Running sequences go first (decodes before unfinished prefills, each in
arrival order), then waiting ones in arrival order: a waiting sequence that does not fit stops the
queue (FCFS). A prefill longer than what is left of the budget is cut into chunks. When blocks run
out, the latest-arrived running sequence is preempted: its blocks are freed and it is computed again
from the start when blocks allow (recompute; the prefix cache usually keeps most of it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from backends.local_engine.block_manager import BlockManager
from backends.local_engine.errors import EngineOverloaded, InvalidRequest
from backends.local_engine.sequence import Sequence, Status


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    max_model_len: int
    max_num_batched_tokens: int = 2048
    """Tokens computed per step, across all sequences."""
    max_num_seqs: int = 128
    """Sequences running at once."""
    enable_chunked_prefill: bool = True
    max_waiting: int = 4096
    """Sequences queued at most; past this a request is refused with 503."""

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1 or self.max_model_len < 2:
            raise ValueError("max_num_batched_tokens and max_num_seqs must be >= 1, max_model_len >= 2")
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError("without chunked prefill, max_num_batched_tokens must be at least max_model_len")


@dataclass(slots=True)
class Scheduled:
    seq: Sequence
    num_new: int

    @property
    def samples(self) -> bool:
        """This step reaches the sequence's last token, so it yields the next one."""
        return self.seq.num_computed + self.num_new == self.seq.num_tokens


@dataclass(slots=True)
class Batch:
    decodes: list[Scheduled]
    prefills: list[Scheduled]
    preempted: list[Sequence]

    @property
    def items(self) -> list[Scheduled]:
        return self.decodes + self.prefills

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new for s in self.decodes) + sum(s.num_new for s in self.prefills)


class Scheduler:
    def __init__(self, settings: SchedulerSettings, blocks: BlockManager) -> None:
        self.settings = settings
        self.blocks = blocks
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._watermark = blocks.num_blocks // 100
        self.num_preemptions = 0

    def check(self, num_prompt: int, max_tokens: int) -> None:
        """Refuse a request that could never run, however long it waited."""
        limit = self.settings.max_model_len
        if num_prompt + max_tokens > limit:
            raise InvalidRequest(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{num_prompt + max_tokens} tokens ({num_prompt} in the messages, {max_tokens} in the completion). "
                "Please reduce the length of the messages or completion.",
                param="messages",
                code="context_length_exceeded",
            )
        if self.blocks.blocks_for(num_prompt + max_tokens) > self.blocks.num_blocks:
            raise InvalidRequest(
                f"the request needs {num_prompt + max_tokens} tokens of KV cache, more than the engine holds "
                f"({self.blocks.num_blocks * self.blocks.block_size}); reduce max_tokens or the prompt",
                param="max_tokens",
                code="kv_cache_too_small",
            )

    def add(self, seq: Sequence, front: bool = False) -> None:
        self.check(seq.num_prompt_tokens, seq.params.max_tokens)
        if len(self.waiting) >= self.settings.max_waiting and not front:
            raise EngineOverloaded(f"{len(self.waiting)} requests already waiting; try again later")
        seq.status = Status.WAITING
        if front:
            self.waiting.appendleft(seq)
        else:
            self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Batch:
        budget = self.settings.max_num_batched_tokens
        batch = Batch([], [], [])
        order = sorted(self.running, key=lambda s: (s.num_tokens - s.num_computed > 1, s.arrival))
        for i, seq in enumerate(order):
            if seq.status is not Status.RUNNING:
                continue  # preempted earlier in this step
            num_new = min(seq.num_tokens - seq.num_computed, budget)
            if num_new == 0:
                break
            if not self._make_room(seq, num_new, order[i + 1 :], batch):
                continue
            self.blocks.allocate(seq, num_new)
            (batch.decodes if num_new == 1 else batch.prefills).append(Scheduled(seq, num_new))
            budget -= num_new
        if not batch.preempted:
            self._admit(batch, budget)
        return batch

    def _make_room(self, seq: Sequence, num_new: int, later: list[Sequence], batch: Batch) -> bool:
        """Preempt latest-arrived sequences not yet scheduled until `seq` fits; False if `seq` itself went."""
        while not self.blocks.can_allocate(seq, num_new):
            candidates = [s for s in later if s.status is Status.RUNNING] + [seq]
            victim = max(candidates, key=lambda s: s.arrival)
            self._preempt(victim)
            batch.preempted.append(victim)
            if victim is seq:
                return False
        return True

    def _admit(self, batch: Batch, budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.settings.max_num_seqs:
            seq = self.waiting[0]
            cached = self.blocks.cached_prefix(seq)
            remaining = seq.num_tokens - len(cached) * self.blocks.block_size
            num_new = min(remaining, budget)
            if num_new < remaining and not self.settings.enable_chunked_prefill:
                break
            # A little room stays free for the running sequences' next tokens, so admitting does not force preemption.
            reserve = self._watermark if self.running else 0
            if not self.blocks.can_allocate(seq, num_new, cached, reserve):
                break
            self.waiting.popleft()
            self.blocks.note_queried(seq)
            self.blocks.allocate(seq, num_new, cached)
            seq.status = Status.RUNNING
            self.running.append(seq)
            (batch.decodes if num_new == 1 else batch.prefills).append(Scheduled(seq, num_new))
            budget -= num_new

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.deallocate(seq)
        seq.reset()
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def computed(self, batch: Batch) -> None:
        """The model has run `batch`: its tokens' K/V are in the cache."""
        for item in batch.items:
            item.seq.num_computed += item.num_new
            self.blocks.cache_full_blocks(item.seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
            self.blocks.deallocate(seq)
        elif seq.status is Status.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = reason
