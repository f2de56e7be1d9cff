"""The Triton kernels (W8A16, W4A16, paged-attention decode) against float64 references on fresh
random inputs, with their outputs poisoned (NaN) before each run so that an element a kernel
forgot to write shows. Without a GPU they run under Triton's interpreter on CPU (float32, exact
math); on a machine with one (this file run through the device tool) on CUDA in bf16."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels' module is imported
pytest.importorskip("triton")

from backends.local_engine.attention import AttentionMetadata, Workspace, _decode
from backends.local_engine.quant import dequantize, quantize_int4, quantize_int8
from backends.local_engine.triton_kernels import pack_int4, paged_decode_attention, w4a16_matmul, w8a16_matmul

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
# Relative (Frobenius) error bound per activation dtype: bf16 inputs to the dot, float32 accumulation.
BOUND = {torch.float32: 1e-5, torch.bfloat16: 1.5e-2}[DTYPE]


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double().cpu() - want).norm() / want.norm())


def poisoned(*shape: int) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=DTYPE, device=DEVICE)


@pytest.mark.parametrize("rows", [1, 5, 40])
@pytest.mark.parametrize("split_k", [1, 2])
def test_w8a16_against_float64(rows: int, split_k: int) -> None:
    gen = torch.Generator().manual_seed(rows * 10 + split_k)
    w, x = torch.randn(80, 320, generator=gen), torch.randn(rows, 320, generator=gen)  # ragged against the tiles
    codes, scale = quantize_int8(w)
    want = x.double() @ dequantize(codes, scale, None, None).double().T
    out = poisoned(rows, 80)
    got = w8a16_matmul(x.to(DEVICE, DTYPE), codes.to(DEVICE), scale.to(DEVICE), split_k=split_k, out=out)
    assert got is out and not out.isnan().any() and rel(out, want) < BOUND


@pytest.mark.parametrize(("group", "symmetric"), [(128, True), (64, False)])
@pytest.mark.parametrize(("rows", "split_k"), [(1, 2), (7, 1), (33, 3)])
def test_w4a16_against_float64(group: int, symmetric: bool, rows: int, split_k: int) -> None:
    gen = torch.Generator().manual_seed(group + rows + split_k)
    w, x = torch.randn(72, 384, generator=gen), torch.randn(rows, 384, generator=gen)
    codes, scale, zero = quantize_int4(w, group, symmetric)
    want = x.double() @ dequantize(codes, scale, zero, group).double().T
    out = poisoned(rows, 72)
    w4a16_matmul(x.to(DEVICE, DTYPE), pack_int4(codes).to(DEVICE), scale.to(DEVICE), zero.to(DEVICE), group, split_k, out)
    assert not out.isnan().any() and rel(out, want) < BOUND


def test_int4_packing_puts_even_inputs_in_the_low_nibble() -> None:
    codes = torch.tensor([[1, 2, 3, 4], [15, 0, 0, 15]], dtype=torch.uint8)
    assert pack_int4(codes).tolist() == [[0x21, 0x43], [0x0F, 0xF0]]


@pytest.mark.parametrize("window", [None, 20])
def test_paged_decode_attention_against_the_reference(window: int | None) -> None:
    gen = torch.Generator().manual_seed(7)
    seqs, heads, kv_heads, dim, block, blocks = 4, 8, 2, 32, 16, 24
    k_cache = torch.randn(blocks, block, kv_heads, dim, generator=gen)
    v_cache = torch.randn(blocks, block, kv_heads, dim, generator=gen)
    tables = torch.tensor([[3, 7, 1, 0, 0], [5, 2, 0, 0, 0], [9, 10, 11, 4, 20], [6, 0, 0, 0, 0]])  # padded with block 0
    lens = torch.tensor([40, 17, 80, 1])
    q = torch.randn(seqs, heads, dim, generator=gen)
    meta = AttentionMetadata(
        torch.zeros(seqs, dtype=torch.long),
        seqs,
        tables,
        lens,
        [],
        Workspace((block, kv_heads, dim), torch.float64, torch.device("cpu")),
        window,
    )
    meta.workspace.reserve(tables.numel())
    want = _decode(q.double(), k_cache.double(), v_cache.double(), meta, dim**-0.5)
    out = poisoned(seqs, heads, dim)
    paged_decode_attention(
        q.to(DEVICE, DTYPE), k_cache.to(DEVICE, DTYPE), v_cache.to(DEVICE, DTYPE),
        tables.to(DEVICE, torch.int32), lens.to(DEVICE, torch.int32), dim**-0.5, window, out,
    )  # fmt: skip
    assert not out.isnan().any() and rel(out, want) < BOUND


def test_the_decode_kernel_refuses_shapes_it_cannot_tile() -> None:
    q = torch.zeros(1, 2, 24)
    cache = torch.zeros(2, 16, 1, 24)
    with pytest.raises(ValueError):
        paged_decode_attention(q, cache, cache, torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, dtype=torch.int32), 1.0)
