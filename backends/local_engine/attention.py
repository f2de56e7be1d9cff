"""Paged attention, the torch reference: K/V live in fixed-size blocks and are read through block tables.

Layout of one step's tokens: first the decode part, sequences that bring exactly one new token
(batched together), then each prefill chunk in turn. The fused kernels issue replaces these functions
with kernels of the same signature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
    sliding_window: int | None = None


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
    """k_cache, v_cache: [blocks, block_size, kv_heads, head_dim]; k, v: [tokens, kv_heads, head_dim]."""
    k_cache.view(-1, *k.shape[1:]).index_copy_(0, slots, k)
    v_cache.view(-1, *v.shape[1:]).index_copy_(0, slots, v)


def paged_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """q: [tokens, heads, head_dim] -> [tokens, heads, head_dim], the new tokens' K/V already written."""
    out = torch.empty_like(q)
    if meta.num_decode:
        out[: meta.num_decode] = _decode(q[: meta.num_decode], k_cache, v_cache, meta, scale)
    for chunk in meta.prefills:
        out[chunk.start : chunk.end] = _prefill(q[chunk.start : chunk.end], k_cache, v_cache, chunk, meta.sliding_window, scale)
    return out


def _gather(cache: torch.Tensor, block_table: torch.Tensor) -> torch.Tensor:
    """[..., blocks] block ids -> [..., blocks * block_size, kv_heads, head_dim]."""
    gathered = cache[block_table]
    return gathered.flatten(-4, -3)


def _decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float) -> torch.Tensor:
    k = _gather(k_cache, meta.decode_block_tables).transpose(1, 2)  # [seqs, kv_heads, keys, head_dim]
    v = _gather(v_cache, meta.decode_block_tables).transpose(1, 2)
    keys = torch.arange(k.shape[2], device=q.device)
    lens = meta.decode_context_lens[:, None]
    mask = keys[None, :] < lens  # [seqs, keys]
    if meta.sliding_window is not None:
        mask &= keys[None, :] >= lens - meta.sliding_window
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2), k, v, attn_mask=mask[:, None, None, :], scale=scale, enable_gqa=True
    )  # [seqs, heads, 1, head_dim]
    return out.squeeze(2)


def _prefill(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, chunk: PrefillChunk, window: int | None, scale: float
) -> torch.Tensor:
    n = chunk.context_len
    k = _gather(k_cache, chunk.block_table)[:n].transpose(0, 1)  # [kv_heads, keys, head_dim]
    v = _gather(v_cache, chunk.block_table)[:n].transpose(0, 1)
    q = q.transpose(0, 1)  # [heads, new, head_dim]
    start = n - q.shape[1]
    if start == 0 and window is None:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    else:
        rows = torch.arange(start, n, device=q.device)[:, None]
        keys = torch.arange(n, device=q.device)[None, :]
        mask = keys <= rows
        if window is not None:
            mask &= keys > rows - window
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    return out.transpose(0, 1)
