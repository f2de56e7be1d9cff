"""A Sequence: one completion being generated, its tokens, its KV blocks and where it stands."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from backends.local_engine.sampling import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False, slots=True)
class Sequence:
    seq_id: int
    request_id: str
    index: int
    """Which of the request's `n` choices this is."""
    token_ids: list[int]
    num_prompt_tokens: int
    params: SamplingParams
    arrival: float
    status: Status = Status.WAITING
    num_computed: int = 0
    """Tokens whose K/V are in the cache (from a prefix hit or computed here)."""
    num_cached: int = 0
    """Prompt tokens found in the prefix cache when the sequence was (last) admitted."""
    block_table: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    generator: torch.Generator | None = None
    num_preemptions: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def prompt_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED

    def reset(self) -> None:
        """Preempted by recompute: its blocks are gone; prompt and output are computed again later."""
        self.status = Status.WAITING
        self.num_computed = 0
        self.block_table = []
        self.num_preemptions += 1
