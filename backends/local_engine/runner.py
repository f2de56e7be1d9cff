"""ModelRunner: owns the weights and the KV cache, turns a scheduled batch into tensors and scores."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from backends.local_engine.attention import AttentionMetadata, PrefillChunk, Workspace, cpu_decode_kernel
from backends.local_engine.config import ModelConfig
from backends.local_engine.model import CausalLM
from backends.local_engine.scheduler import Batch

log = logging.getLogger("local_engine.runner")
DECODE_GROUPS = 8
MIN_DECODE_GROUP = 8


@dataclass(frozen=True, slots=True)
class CacheShape:
    num_blocks: int
    block_size: int

    def bytes_per_block(self, config: ModelConfig, dtype: torch.dtype) -> int:
        return 2 * config.num_layers * self.block_size * config.num_kv_heads * config.head_dim * dtype.itemsize


def kv_blocks_for(
    config: ModelConfig, dtype: torch.dtype, block_size: int, fraction: float, device: torch.device, cap: int
) -> int:
    """How many blocks `fraction` of the memory left after the weights holds (at most `cap`)."""
    per_block = CacheShape(1, block_size).bytes_per_block(config, dtype)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = _available_ram()
    return max(1, min(cap, int(free * fraction) // per_block))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


class ModelRunner:
    def __init__(self, model: CausalLM, num_blocks: int, block_size: int, kv_dtype: torch.dtype | None = None) -> None:
        """`kv_dtype`: the cache's dtype (default: the model's); `torch.float8_e4m3fn` stores K and V
        in 8 bits (values saturate at +-448), read back in the model's dtype."""
        self.model = model
        config = model.config
        weight = model.model.embed_tokens.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.kv_dtype = kv_dtype or self.dtype
        self.block_size = block_size
        # Zeroed, not empty: padding rows of a decode batch read block 0, and masked NaNs would still poison the sum.
        self.kv_cache = torch.zeros(
            (config.num_layers, 2, num_blocks, block_size, config.num_kv_heads, config.head_dim),
            dtype=self.kv_dtype,
            device=self.device,
        )
        cpu_decode_kernel(self.device, self.dtype, self.kv_dtype)  # starts building it where it applies
        self.workspace = Workspace(tuple(self.kv_cache.shape[3:]), self.kv_dtype, self.device)
        log.info("KV cache: %d blocks of %d tokens, %.1f MiB", num_blocks, block_size, self.kv_cache.nbytes / 2**20)

    @torch.inference_mode()
    def run(self, batch: Batch) -> torch.Tensor:
        """Scores [sequences that sample this step, vocab] float32, in `batch.items` order."""
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        rows: list[int] = []
        prefills: list[PrefillChunk] = []
        bs = self.block_size
        for item in batch.items:
            seq, start = item.seq, item.seq.num_computed
            end = start + item.num_new
            row = len(tokens)
            tokens.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            if item.num_new > 1:
                prefills.append(PrefillChunk(row, row + item.num_new, end, self._tensor(table)))
            if item.samples:
                rows.append(row + item.num_new - 1)
        decodes = batch.decodes
        width = max((len(d.seq.block_table) for d in decodes), default=0)
        # The C++ decode kernel reads the blocks in place: no gather buffer, no groups for it.
        gathers = cpu_decode_kernel(self.device, self.dtype, self.kv_dtype) is None
        self.workspace.reserve(max([width * len(decodes) if gathers else 0] + [len(c.block_table) for c in prefills]))
        meta = AttentionMetadata(
            slot_mapping=self._tensor(slots),
            num_decode=len(decodes),
            decode_block_tables=self._tensor([d.seq.block_table + [0] * (width - len(d.seq.block_table)) for d in decodes]),
            decode_context_lens=self._tensor([d.seq.num_computed + 1 for d in decodes]),
            prefills=prefills,
            workspace=self.workspace,
            sliding_window=self.model.config.sliding_window,
            decode_groups=self._decode_groups([len(d.seq.block_table) for d in decodes]) if gathers else (),
        )
        logits: torch.Tensor = self.model(self._tensor(tokens), self._tensor(positions), self.kv_cache, meta, self._tensor(rows))
        return logits

    def _decode_groups(self, widths: list[int]) -> tuple[tuple[torch.Tensor, int], ...]:
        """Decode rows sorted by block-table width, in up to `DECODE_GROUPS` groups of at least
        `MIN_DECODE_GROUP` rows. On CPU, gathering K/V padded to the batch's longest context read
        about twice what the contexts hold (lengths 64 to 768); per group, a 64-row decode layer took
        8.0 ms instead of 13.4 (8 groups, ad hoc). CUDA's fused kernel reads the block tables itself."""
        groups = min(DECODE_GROUPS, len(widths) // MIN_DECODE_GROUP)
        if groups < 2 or self.device.type == "cuda":
            return ()
        order = sorted(range(len(widths)), key=widths.__getitem__)
        size = -(-len(order) // groups)
        parts = [order[i : i + size] for i in range(0, len(order), size)]
        return tuple((self._tensor(part), widths[part[-1]]) for part in parts)

    def _tensor(self, values: list[int] | list[list[int]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)
