"""The scheduler as plain objects: token budget, decode first, chunking, FCFS, preemption, admission."""

from __future__ import annotations

import pytest

from backends.local_engine.block_manager import BlockManager
from backends.local_engine.errors import InvalidRequest
from backends.local_engine.sampling import SamplingParams
from backends.local_engine.scheduler import Scheduler, SchedulerSettings
from backends.local_engine.sequence import Sequence, Status


def make(num_blocks: int = 64, budget: int = 32, **kw) -> Scheduler:
    return Scheduler(
        SchedulerSettings(max_model_len=512, max_num_batched_tokens=budget, **kw), BlockManager(num_blocks, 4, False)
    )


def seq(i: int, n: int, max_tokens: int = 8) -> Sequence:
    return Sequence(i, f"r{i}", 0, list(range(100, 100 + n)), n, SamplingParams(max_tokens=max_tokens), float(i))


def step(s: Scheduler) -> list[tuple[int, int]]:
    """Schedule, pretend the model ran, and give every sampling sequence one new token."""
    batch = s.schedule()
    s.computed(batch)
    for item in batch.items:
        if item.seq.num_computed == item.seq.num_tokens:
            item.seq.token_ids.append(1)
    return [(item.seq.seq_id, item.num_new) for item in batch.items]


def test_long_prompt_is_chunked_and_decodes_go_first() -> None:
    s = make(budget=16)
    a, b = seq(1, 6), seq(2, 40)
    s.add(a)
    s.add(b)
    assert step(s) == [(1, 6), (2, 10)]  # a whole, b's first chunk fills the budget
    assert step(s) == [(1, 1), (2, 15)]  # a decodes first, then b goes on
    assert step(s) == [(1, 1), (2, 15)]
    assert step(s) == [(1, 1), (2, 1)]


def test_waiting_queue_is_first_come_first_served() -> None:
    s = make(num_blocks=12, budget=64)
    big, small = seq(1, 40), seq(2, 4)
    s.add(seq(0, 8))
    step(s)  # 0 holds 3 blocks: 40-token `big` (10 blocks) no longer fits, and `small` must not jump it
    s.add(big)
    s.add(small)
    assert step(s) == [(0, 1)]
    assert [q.seq_id for q in s.waiting] == [1, 2]


def test_preemption_takes_the_latest_arrival_and_requeues_it_first() -> None:
    s = make(num_blocks=5, budget=64)
    first, second = seq(1, 8), seq(2, 8)
    s.add(first)
    s.add(second)
    assert step(s) == [(1, 8), (2, 8)]  # 4 blocks used; 1 free
    step(s)  # both append into their third block... one of them must give way
    assert second.status is Status.WAITING and second.num_preemptions == 1
    assert first.status is Status.RUNNING and s.waiting[0] is second
    assert second.num_computed == 0 and second.block_table == []


def test_requests_that_can_never_run_are_refused() -> None:
    s = make(num_blocks=4)
    with pytest.raises(InvalidRequest, match="more than the engine holds"):
        s.add(seq(1, 10, max_tokens=10))  # 20 tokens need 5 blocks of 4
    with pytest.raises(InvalidRequest, match="maximum context length"):
        s.check(500, 20)
