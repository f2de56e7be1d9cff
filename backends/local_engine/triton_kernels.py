"""Triton kernels for the GPU: W8A16 and W4A16 matmuls that dequantize in registers (split-K for
small batches), and a paged-attention decode kernel that reads the block table itself.

Imported only where a CUDA tensor meets a quantized layer or the attention (and by the tests,
which run these kernels on CPU under Triton's interpreter, `TRITON_INTERPRET=1`). Their speed on
a GPU has not been measured yet; their results are checked against float64 references.

Layouts:
- int8: codes int8 [out, in], scale float32 [out]; w = codes * scale.
- int4: two codes per byte along the input, uint8 [out, in / 2] (input 2j in the low nibble,
  2j + 1 in the high one), scale and zero float32 [out, in / group]; w = (code - zero) * scale.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_M, BLOCK_N, BLOCK_K = 16, 64, 64


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [out, in] (0..15) -> uint8 [out, in / 2], two per byte, low nibble first."""
    c = codes.to(torch.uint8)
    return (c[:, 0::2] | (c[:, 1::2] << 4)).contiguous()


def _split_k(m: int, k: int) -> int:
    """Few rows leave most of the GPU idle: split the input dimension across programs instead."""
    if m > 64:
        return 1
    return max(1, min(8, k // (4 * BLOCK_K)))


@triton.jit
def _w8a16_kernel(
    x_ptr, q_ptr, s_ptr, out_ptr, M, N, K,
    sxm, sxk, sqn, sqk, som, son,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(pid_k * BK, K, BK * SPLIT_K):
        rk = k0 + tl.arange(0, BK)
        x = tl.load(x_ptr + rm[:, None] * sxm + rk[None, :] * sxk, mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        q = tl.load(q_ptr + rn[None, :] * sqn + rk[:, None] * sqk, mask=(rn[None, :] < N) & (rk[:, None] < K), other=0)
        acc += tl.dot(x, q.to(x.dtype))  # codes are exact in bf16 / fp16
    scale = tl.load(s_ptr + rn, mask=rn < N, other=0.0)
    acc = acc * scale[None, :]
    ptrs = out_ptr + rm[:, None] * som + rn[None, :] * son
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if SPLIT_K == 1:
        tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(ptrs, acc, mask=mask)


@triton.jit
def _w4a16_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, out_ptr, M, N, K, GROUP,
    sxm, sxk, sqn, sqk, ssn, ssg, som, son,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(pid_k * BK, K, BK * SPLIT_K):
        rk = k0 + tl.arange(0, BK)
        x = tl.load(x_ptr + rm[:, None] * sxm + rk[None, :] * sxk, mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        wmask = (rn[None, :] < N) & (rk[:, None] < K)
        byte = tl.load(q_ptr + rn[None, :] * sqn + (rk[:, None] // 2) * sqk, mask=wmask, other=0)
        code = ((byte >> ((rk[:, None] % 2) * 4)) & 0xF).to(tl.float32)
        g = rk[:, None] // GROUP
        scale = tl.load(s_ptr + rn[None, :] * ssn + g * ssg, mask=wmask, other=0.0)
        zero = tl.load(z_ptr + rn[None, :] * ssn + g * ssg, mask=wmask, other=0.0)
        acc += tl.dot(x, ((code - zero) * scale).to(x.dtype))
    ptrs = out_ptr + rm[:, None] * som + rn[None, :] * son
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if SPLIT_K == 1:
        tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(ptrs, acc, mask=mask)


def _launch_matmul(x: torch.Tensor, n: int, split_k: int | None, out: torch.Tensor | None, launch) -> torch.Tensor:
    """Run a matmul kernel into `out` ([..., n], x's dtype; made when None). With split-K the
    programs add their partial sums into a zeroed float32 buffer first."""
    flat = x.reshape(-1, x.shape[-1])
    m, k = flat.shape
    split = split_k or _split_k(m, k)
    result = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device) if out is None else out
    target = torch.zeros((m, n), dtype=torch.float32, device=x.device) if split > 1 else result.view(m, n)
    launch((triton.cdiv(m, BLOCK_M), triton.cdiv(n, BLOCK_N), split), flat, target, m, k, split)
    if split > 1:
        result.view(m, n).copy_(target)
    return result


def w8a16_matmul(
    x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, split_k: int | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x [..., in] @ (codes * scale).T in x's dtype."""
    n = codes.shape[0]

    def launch(grid, flat, out, m, k, split):
        _w8a16_kernel[grid](
            flat, codes, scale, out, m, n, k,
            flat.stride(0), flat.stride(1), codes.stride(0), codes.stride(1), out.stride(0), out.stride(1),
            BM=BLOCK_M, BN=BLOCK_N, BK=BLOCK_K, SPLIT_K=split,
        )  # fmt: skip

    return _launch_matmul(x, n, split_k, out, launch)


def w4a16_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    split_k: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """x [..., in] @ ((codes - zero) * scale).T in x's dtype; `packed` from `pack_int4`."""
    n = packed.shape[0]

    def launch(grid, flat, out, m, k, split):
        _w4a16_kernel[grid](
            flat, packed, scale, zero, out, m, n, k, group_size,
            flat.stride(0), flat.stride(1), packed.stride(0), packed.stride(1), scale.stride(0), scale.stride(1),
            out.stride(0), out.stride(1),
            BM=BLOCK_M, BN=BLOCK_N, BK=BLOCK_K, SPLIT_K=split,
        )  # fmt: skip

    return _launch_matmul(x, n, split_k, out, launch)


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr, out_ptr, scale, window,
    sqs, sqh, skb, sko, skh, stb, sos, soh,
    GROUP: tl.constexpr, BLOCK: tl.constexpr, D: tl.constexpr,
):  # fmt: skip
    """One program per (sequence, head): online softmax over the sequence's blocks."""
    seq, head = tl.program_id(0), tl.program_id(1)
    kv_head = head // GROUP
    d = tl.arange(0, D)
    q = tl.load(q_ptr + seq * sqs + head * sqh + d).to(tl.float32)
    length = tl.load(lens_ptr + seq)
    first = 0
    if window > 0:
        first = tl.maximum(length - window, 0)
    m_i = -float("inf")
    l_i = 0.0
    acc = tl.zeros((D,), dtype=tl.float32)
    offs = tl.arange(0, BLOCK)
    for b in range(first // BLOCK, tl.cdiv(length, BLOCK)):
        block = tl.load(table_ptr + seq * stb + b)
        pos = b * BLOCK + offs
        live = (pos < length) & (pos >= first)
        base = block * skb + offs[:, None] * sko + kv_head * skh + d[None, :]
        k = tl.load(k_ptr + base, mask=live[:, None], other=0.0).to(tl.float32)
        s = tl.sum(k * q[None, :], axis=1) * scale
        s = tl.where(live, s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        p = tl.exp(s - m_new)
        alpha = tl.exp(m_i - m_new)
        v = tl.load(v_ptr + base, mask=live[:, None], other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        m_i = m_new
    tl.store(out_ptr + seq * sos + head * soh + d, (acc / l_i).to(out_ptr.dtype.element_ty))


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [seqs, heads, head_dim] (one new token each); caches [blocks, block_size, kv_heads,
    head_dim]; block_tables [seqs, max_blocks]; context_lens [seqs] (the new token included)."""
    seqs, heads, dim = q.shape
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    if dim & (dim - 1) or block_size & (block_size - 1):
        raise ValueError("the decode kernel needs a power-of-two head_dim and block_size")
    result = torch.empty_like(q) if out is None else out
    if k_cache.stride() != v_cache.stride():
        raise ValueError("K and V caches must share a layout")
    _paged_decode_kernel[(seqs, heads)](
        q, k_cache, v_cache, block_tables, context_lens, result, scale, sliding_window or 0,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), result.stride(0), result.stride(1),
        GROUP=heads // kv_heads, BLOCK=block_size, D=dim,
    )  # fmt: skip
    return result
