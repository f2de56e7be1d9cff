"""Weight-only quantization: int8 per output channel (W8A16) and int4 in groups along the input
(W4A16; groups of 128 or 64, symmetric or with zero points), applied to every linear layer when a
model loads, or read from AWQ and GPTQ checkpoints in their packed layouts.

One public op per kind, dispatched by device:

- `int8_linear`: on CUDA the Triton W8A16 kernel (`triton_kernels.py`); on CPU PyTorch's packed
  int8 kernel (`_weight_int8pack_mm`, bf16 activations); elsewhere dequantize-then-matmul.
- `int4_linear`: on CUDA the Triton W4A16 kernel (codes repacked two per byte at load); on CPU
  PyTorch's packed int4 kernel (`_weight_int4pack_mm_for_cpu`, repacked once at load); elsewhere
  dequantize-then-matmul.

The Triton kernels are checked for correctness on CPU under Triton's interpreter; their speed on a
GPU is not measured yet.

A weight is stored as codes `q` and per-group `scale` and `zero` with w = (q - zero) * scale; int8
is symmetric (zero 0, codes -127..127), int4 codes are 0..15 (symmetric: zero 8).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from backends.local_engine.cpu_kernels import w8a8_kernel

Scheme = Literal["int8", "int4"]


@dataclass(frozen=True, slots=True)
class QuantConfig:
    scheme: Scheme
    group_size: int = 128
    """int4: input channels per scale (128 or 64)."""
    symmetric: bool = True
    """int4: a zero point of 8 for every group (else each group's own)."""
    lm_head: bool = False
    """Quantize the output projection too (the largest matrix of a small model, and the most sensitive)."""

    def __post_init__(self) -> None:
        if self.scheme not in ("int8", "int4"):
            raise ValueError(f"quantization {self.scheme!r} is not one of int8, int4")
        if self.scheme == "int4" and self.group_size not in (32, 64, 128, 256):
            raise ValueError("int4 group_size must be 32, 64, 128 or 256")


# --- quantizers (reference, float64 math) ------------------------------------------------------


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> codes int8 [out, in] and scales float32 [out] (symmetric, per output channel)."""
    w = weight.detach().to(torch.float64)
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    codes = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return codes, scale.to(torch.float32)


def quantize_int4(weight: torch.Tensor, group_size: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[out, in] float -> codes uint8 [out, in] (0..15), scales and zeros float32 [out, in / group]."""
    out_f, in_f = weight.shape
    if in_f % group_size:
        raise ValueError(f"input size {in_f} is not a multiple of the group size {group_size}")
    w = weight.detach().to(torch.float64).view(out_f, in_f // group_size, group_size)
    if symmetric:
        scale = (w.abs().amax(dim=-1) / 7.5).clamp(min=1e-12)
        zero = torch.full_like(scale, 8.0)
    else:
        low, high = w.amin(dim=-1), w.amax(dim=-1)
        scale = ((high - low) / 15).clamp(min=1e-12)
        zero = torch.round(-low / scale).clamp(0, 15)
    codes = torch.round(w / scale[..., None] + zero[..., None]).clamp(0, 15).to(torch.uint8)
    return codes.view(out_f, in_f), scale.to(torch.float32), zero.to(torch.float32)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, group_size: int | None) -> torch.Tensor:
    """The float32 [out, in] weight that codes, scales and zeros stand for."""
    q = codes.to(torch.float32)
    if group_size is None:  # per output channel
        return (q - (0 if zero is None else zero[:, None])) * scale[:, None]
    out_f, in_f = codes.shape
    g = q.view(out_f, in_f // group_size, group_size)
    z = torch.zeros_like(scale) if zero is None else zero
    return ((g - z[..., None]) * scale[..., None]).view(out_f, in_f)


# --- the ops -----------------------------------------------------------------------------------

W8A8_MAX_ROWS = 64
"""Up to this many rows (decode steps, short prompts), an int8 layer on a CPU with AVX-512 VNNI
quantizes its activations to int8 per 64 values and multiplies bytes by bytes
(`cpu_kernels.w8a8_kernel`), as llama.cpp's q8_0 does; more rows (prefill) go to PyTorch's kernel
with bf16 activations. The 100m preset's linears, ad hoc on 2 cores: the GEMV took 0.66x of
PyTorch's kernel's time at 8 rows, 0.59x at 16, 0.75x at 64, and the same from 128 rows on."""


def int8_linear(
    x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x [..., in] @ (codes * scale).T + bias, in x's dtype. `out`, when given, receives the result."""
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    if x.device.type == "cuda" and triton_available():
        from backends.local_engine.triton_kernels import w8a16_matmul

        y = w8a16_matmul(flat, codes, scale)
    elif x.device.type == "cpu":
        scale = scale if scale.dtype == torch.bfloat16 else scale.to(torch.bfloat16)
        y = torch._weight_int8pack_mm(flat.to(torch.bfloat16), codes, scale).to(x.dtype)
    else:
        y = flat @ (codes.to(x.dtype) * scale.to(x.dtype)[:, None]).T
    if bias is not None:
        y = y + bias
    return _into(y.view(*shape[:-1], codes.shape[0]), out)


@dataclass(slots=True)
class Int4Weight:
    """An int4 weight as a device's kernel wants it."""

    codes: torch.Tensor
    """uint8 [out, in], 0..15 (kept for the dequantize path and for checks)."""
    scale: torch.Tensor
    zero: torch.Tensor
    group_size: int
    packed: torch.Tensor | None = None
    """CPU: `_convert_weight_to_int4pack_for_cpu` of the codes."""
    scale_and_zero: torch.Tensor | None = None
    """CPU: [in / group, out, 2] bf16: the kernel computes (q - 8) * scale + zero'."""
    nibbles: torch.Tensor | None = None
    """CUDA: uint8 [out, in / 2], two codes per byte, for the Triton kernel."""

    @classmethod
    def build(cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> Int4Weight:
        weight = cls(codes, scale, zero, group_size)
        if codes.device.type == "cuda" and codes.shape[1] % 2 == 0 and triton_available():
            from backends.local_engine.triton_kernels import pack_int4

            weight.nibbles = pack_int4(codes)
        if codes.device.type == "cpu" and codes.shape[1] % 16 == 0 and codes.shape[0] % 16 == 0:
            weight.packed = torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1)
            # (q - zero) * scale == (q - 8) * scale + (8 - zero) * scale
            offset = (8 - zero) * scale
            weight.scale_and_zero = torch.stack([scale, offset], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        return weight


def int4_linear(
    x: torch.Tensor, weight: Int4Weight, bias: torch.Tensor | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x [..., in] @ dequantize(weight).T + bias, in x's dtype. `out`, when given, receives the result."""
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    if x.device.type == "cuda" and weight.nibbles is not None:
        from backends.local_engine.triton_kernels import w4a16_matmul

        y = w4a16_matmul(flat, weight.nibbles, weight.scale, weight.zero, weight.group_size)
    elif x.device.type == "cpu" and weight.packed is not None and weight.scale_and_zero is not None:
        y = torch._weight_int4pack_mm_for_cpu(flat.to(torch.bfloat16), weight.packed, weight.group_size, weight.scale_and_zero)
        y = y.to(x.dtype)
    else:
        y = flat @ dequantize(weight.codes, weight.scale, weight.zero, weight.group_size).to(x.dtype).T
    if bias is not None:
        y = y + bias
    return _into(y.view(*shape[:-1], weight.codes.shape[0]), out)


@functools.cache
def triton_available() -> bool:
    """Triton importable (it comes with CUDA builds of torch); the GPU paths use it when it is."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _into(y: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return y
    out.copy_(y)
    return out


# --- the layer ---------------------------------------------------------------------------------


class QuantLinear(nn.Module):
    """A linear layer with a quantized weight; `bias` stays in the model's dtype."""

    codes: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self,
        scheme: Scheme,
        codes: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor | None = None,
        group_size: int | None = None,
        bias: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.scheme = scheme
        self.out_features, self.in_features = codes.shape
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.int4: Int4Weight | None = None
        self._scale_bf16: torch.Tensor | None = None  # the CPU kernel's scales, converted once
        if scheme == "int4":
            assert zero is not None and group_size is not None
            self.int4 = Int4Weight.build(codes, scale, zero, group_size)

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantConfig) -> QuantLinear:
        bias = None if linear.bias is None else linear.bias.detach().clone()
        if config.scheme == "int8":
            codes, scale = quantize_int8(linear.weight)
            return cls("int8", codes, scale, bias=bias)
        codes, scale, zero = quantize_int4(linear.weight, config.group_size, config.symmetric)
        return cls("int4", codes, scale, zero, config.group_size, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int4 is not None:
            return int4_linear(x, self.int4, self.bias)
        if x.device.type == "cpu":
            rows = x.numel() // self.in_features
            if rows <= W8A8_MAX_ROWS and x.dtype == torch.float32 and self.in_features % 64 == 0:
                gemv = w8a8_kernel()
                if gemv is not None:  # decode: int8 activations on AVX-512 VNNI
                    y = gemv(x.reshape(rows, self.in_features), self.codes, self.scale.float())
                    y = y if self.bias is None else y + self.bias
                    return y.view(*x.shape[:-1], self.out_features)
            if self._scale_bf16 is None:
                self._scale_bf16 = self.scale.to(torch.bfloat16)
            return int8_linear(x, self.codes, self._scale_bf16, self.bias)
        return int8_linear(x, self.codes, self.scale, self.bias)

    def weight_bytes(self) -> int:
        """Bytes the weight takes in memory as its kernel reads it."""
        if self.int4 is not None and self.int4.packed is not None:
            assert self.int4.scale_and_zero is not None
            return self.int4.packed.numel() * self.int4.packed.element_size() + self.int4.scale_and_zero.numel() * 2
        return self.codes.numel() * self.codes.element_size() + self.scale.numel() * 4

    def extra_repr(self) -> str:
        group = f", group_size={self.int4.group_size}" if self.int4 is not None else ""
        return f"{self.in_features}, {self.out_features}, scheme={self.scheme}{group}"


def quantize_model(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Replace every linear layer of the decoder (and the LM head with `config.lm_head`) in place."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and (full != "lm_head" or config.lm_head):
                setattr(module, child_name, QuantLinear.from_linear(child, config))
    return model


# --- AWQ and GPTQ checkpoints ------------------------------------------------------------------

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
"""AutoAWQ's GEMM layout packs the 8 nibbles of an int32 in this order of output channels."""


def _unpack_nibbles(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """int32 [..] with 8 nibbles each -> int [.., 8 x ..] along `dim` (nibble j of word i -> 8i + j)."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=packed.device)
    nibbles = (packed.unsqueeze(-1) >> shifts) & 0xF  # [..., 8]
    if dim == 0:
        rows, cols = packed.shape
        return nibbles.permute(0, 2, 1).reshape(rows * 8, cols)
    rows, cols = packed.shape
    return nibbles.reshape(rows, cols * 8)


def pack_nibbles(values: torch.Tensor, dim: int) -> torch.Tensor:
    """The inverse of `_unpack_nibbles` (for tests and converters)."""
    v = values.to(torch.int64)
    if dim == 0:
        rows, cols = v.shape
        groups = v.view(rows // 8, 8, cols).permute(0, 2, 1)  # [rows/8, cols, 8]
    else:
        rows, cols = v.shape
        groups = v.view(rows, cols // 8, 8)
    shifts = torch.arange(0, 32, 4, dtype=torch.int64)
    word = (groups << shifts).sum(-1)
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def from_gptq(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor | None, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ (AutoGPTQ v1) 4-bit tensors -> codes uint8 [out, in], scales and zeros [out, in / group].

    qweight int32 [in / 8, out] (nibbles along the input), qzeros int32 [groups, out / 8] (stored as
    zero - 1), scales [groups, out], g_idx [in] (the group of each input channel; with act-order it
    is not in order, so the input channels are put back in group order here, which a permutation
    of the activations would undo: not supported, refused)."""
    codes = _unpack_nibbles(qweight, dim=0)  # [in, out]
    zeros = (_unpack_nibbles(qzeros, dim=1) + 1) & 0xF  # [groups, out]
    in_f = codes.shape[0]
    if g_idx is not None and not torch.equal(g_idx.to(torch.int64), torch.arange(in_f) // group_size):
        raise ValueError("GPTQ checkpoints with act-order (desc_act) are not supported")
    return codes.T.contiguous().to(torch.uint8), scales.T.contiguous().to(torch.float32), zeros.T.contiguous().to(torch.float32)


def from_awq(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AWQ (AutoAWQ GEMM) 4-bit tensors -> codes uint8 [out, in], scales and zeros [out, in / group].

    qweight int32 [in, out / 8] and qzeros int32 [groups, out / 8], nibbles along the output in
    `AWQ_ORDER`; scales [groups, out]."""
    undo = torch.tensor([AWQ_ORDER.index(j) for j in range(8)])

    def unpack(packed: torch.Tensor) -> torch.Tensor:
        raw = _unpack_nibbles(packed, dim=1)  # nibble j of each word at 8i + j
        rows, cols = raw.shape
        return raw.view(rows, cols // 8, 8)[..., undo].reshape(rows, cols)

    codes, zeros = unpack(qweight), unpack(qzeros)
    return codes.T.contiguous().to(torch.uint8), scales.T.contiguous().to(torch.float32), zeros.T.contiguous().to(torch.float32)
