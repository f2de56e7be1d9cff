"""Paged attention, the torch reference: K/V live in fixed-size blocks and are read through block tables.

Layout of one step's tokens: first the decode part, sequences that bring exactly one new token
(batched together), then each prefill chunk in turn. On CUDA the decode part runs the Triton kernel
of `triton_kernels.py`, on the CPU the C++ kernel of `cpu_kernels.py` once it is built; both read the
block tables themselves. Prefill, and decode until then, use these torch functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backends.local_engine.cpu_kernels import DecodeKernel, decode_kernel, enabled


@dataclass(slots=True)
class PrefillChunk:
    """One sequence's run of new tokens: rows `start:end` of the step, attending to `context_len` keys."""

    start: int
    end: int
    context_len: int
    block_table: torch.Tensor  # [blocks] int64


@dataclass(slots=True)
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [tokens] int64: the cache slot (block * block_size + offset) of each new token
    num_decode: int  # rows 0..num_decode-1 are one token each of as many sequences
    decode_block_tables: torch.Tensor  # [num_decode, max_blocks] int64, padded with block 0
    decode_context_lens: torch.Tensor  # [num_decode] int64, the new token included
    prefills: list[PrefillChunk]
    workspace: Workspace
    sliding_window: int | None = None
    decode_groups: tuple[tuple[torch.Tensor, int], ...] = ()
    """The decode rows in groups of similar context length, each with the block-table width it
    needs (the torch path gathers and attends each group padded to its own longest, not the
    batch's); empty: one group."""


class Workspace:
    """Reused buffers for gathered K and V. A fresh tensor of tens of MB per layer costs more in page
    faults than the copy itself (glibc maps large allocations anew each time)."""

    def __init__(self, block_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.block_shape, self.dtype, self.device = block_shape, dtype, device
        self.k = self.v = torch.empty((0, *block_shape), dtype=dtype, device=device)

    def reserve(self, blocks: int) -> None:
        if blocks > self.k.shape[0]:
            size = max(blocks, 2 * self.k.shape[0])
            self.k = torch.empty((size, *self.block_shape), dtype=self.dtype, device=self.device)
            self.v = torch.empty_like(self.k)


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
    """k_cache, v_cache: [blocks, block_size, kv_heads, head_dim]; k, v: [tokens, kv_heads, head_dim].
    An fp8 cache takes the values cast (saturating), copied as bytes (index_copy has no fp8 kernel)."""
    if k_cache.dtype != k.dtype:
        k, v = k.to(k_cache.dtype).view(torch.uint8), v.to(v_cache.dtype).view(torch.uint8)
        k_cache, v_cache = k_cache.view(torch.uint8), v_cache.view(torch.uint8)
    k_cache.view(-1, *k.shape[1:]).index_copy_(0, slots, k)
    v_cache.view(-1, *v.shape[1:]).index_copy_(0, slots, v)


def paged_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """q: [tokens, heads, head_dim] -> [tokens, heads, head_dim], the new tokens' K/V already written."""
    out = torch.empty_like(q)
    if meta.num_decode and q.is_cuda and _fused_decode(q, k_cache):
        from backends.local_engine.triton_kernels import paged_decode_attention

        tables, lens = meta.decode_block_tables.to(torch.int32), meta.decode_context_lens.to(torch.int32)
        paged_decode_attention(
            q[: meta.num_decode], k_cache, v_cache, tables, lens, scale, meta.sliding_window, out[: meta.num_decode]
        )
    elif meta.num_decode and (kernel := cpu_decode_kernel(q.device, q.dtype, k_cache.dtype)) is not None:
        out[: meta.num_decode] = kernel(
            q[: meta.num_decode], k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens, scale,
            meta.sliding_window or 0,
        )  # fmt: skip
    elif meta.num_decode:
        out[: meta.num_decode] = _decode(q[: meta.num_decode], k_cache, v_cache, meta, scale)
    for chunk in meta.prefills:
        q_chunk = q[chunk.start : chunk.end]
        out[chunk.start : chunk.end] = _prefill(q_chunk, k_cache, v_cache, chunk, meta.workspace, meta.sliding_window, scale)
    return out


def _fused_decode(q: torch.Tensor, k_cache: torch.Tensor) -> bool:
    """The Triton decode kernel applies: Triton present, power-of-two head_dim and block size."""
    from backends.local_engine.quant import triton_available

    dim, block = q.shape[-1], k_cache.shape[1]
    return triton_available() and not dim & (dim - 1) and not block & (block - 1)


NARROW_CACHES = (torch.float16, torch.bfloat16)
"""Cache dtypes the C++ decode kernel reads under a float32 model, besides the model's own."""


def cpu_decode_kernel(device: torch.device, dtype: torch.dtype, kv_dtype: torch.dtype) -> DecodeKernel | None:
    """The C++ decode kernel, once built, for a CPU cache in the model's dtype or, under a float32
    model, in float16 or bfloat16 (an fp8 cache takes the torch path)."""
    narrow = dtype == torch.float32 and kv_dtype in NARROW_CACHES
    if device.type != "cpu" or (kv_dtype != dtype and not narrow) or not enabled():
        return None
    return decode_kernel()


def _gather(cache: torch.Tensor, block_table: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """[..., blocks] block ids -> [..., blocks * block_size, kv_heads, head_dim], written into `out`.
    index_select copies whole blocks; advanced indexing (`cache[table]`) is several times slower on CPU."""
    flat = block_table.flatten()
    gathered = torch.index_select(cache, 0, flat, out=out[: flat.shape[0]])
    return gathered.view(*block_table.shape[:-1], -1, *cache.shape[2:])


def _decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float) -> torch.Tensor:
    if len(meta.decode_groups) < 2:
        return _decode_rows(q, k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens, meta, scale)
    out = torch.empty_like(q)
    for rows, width in meta.decode_groups:
        tables, lens = meta.decode_block_tables[rows, :width], meta.decode_context_lens[rows]
        out[rows] = _decode_rows(q[rows], k_cache, v_cache, tables, lens, meta, scale)
    return out


def _decode_rows(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    tables: torch.Tensor,
    context_lens: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    k = _gather(k_cache, tables, meta.workspace.k).to(q.dtype).transpose(1, 2)  # [seqs, kv_heads, keys, head_dim]
    v = _gather(v_cache, tables, meta.workspace.v).to(q.dtype).transpose(1, 2)
    keys = torch.arange(k.shape[2], device=q.device)
    lens = context_lens[:, None]
    mask = keys[None, :] < lens  # [seqs, keys]
    if meta.sliding_window is not None:
        mask &= keys[None, :] >= lens - meta.sliding_window
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2), k, v, attn_mask=mask[:, None, None, :], scale=scale, enable_gqa=True
    )  # [seqs, heads, 1, head_dim]
    return out.squeeze(2)


def _prefill(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    chunk: PrefillChunk,
    workspace: Workspace,
    window: int | None,
    scale: float,
) -> torch.Tensor:
    # 4-d tensors throughout: with 3-d ones and a mask, CPU SDPA falls back to its slow math path.
    n = chunk.context_len
    k = _gather(k_cache, chunk.block_table, workspace.k)[:n].to(q.dtype).transpose(0, 1)[None]  # [1, kv_heads, keys, head_dim]
    v = _gather(v_cache, chunk.block_table, workspace.v)[:n].to(q.dtype).transpose(0, 1)[None]
    q = q.transpose(0, 1)[None]  # [1, heads, new, head_dim]
    start = n - q.shape[2]
    if start == 0 and window is None:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    else:
        rows = torch.arange(start, n, device=q.device)[:, None]
        keys = torch.arange(n, device=q.device)[None, :]
        mask = keys <= rows
        if window is not None:
            mask &= keys > rows - window
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None, None], scale=scale, enable_gqa=True)
    return out[0].transpose(0, 1)
