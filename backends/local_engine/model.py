"""The Llama-family decoder (Llama, Qwen2, Mistral) over a paged KV cache.

Parameter names are transformers' own, so a checkpoint's state dict loads as it is. Inputs are one
step's tokens flattened across sequences ([tokens]); see `attention.AttentionMetadata` for the layout.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from backends.local_engine import cpu_kernels, quant
from backends.local_engine.attention import NARROW_CACHES, AttentionMetadata, paged_attention, write_kv
from backends.local_engine.config import ModelConfig
from backends.local_engine.rope import Rotary

_NONE = torch.empty(0)
Operands = tuple[torch.Tensor, ...]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (kernels := cpu_kernels.elementwise(x)) is not None and self.weight.dtype == torch.float32:
            out: torch.Tensor = kernels.rms_norm(x.reshape(-1, x.shape[-1]), self.weight, self.eps)
            return out.view(x.shape)
        # As transformers: normalise in float32, cast back, then scale.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        out = self.weight * h.to(x.dtype)
        return out


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.heads, self.kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, d
        self.q_proj = nn.Linear(h, self.heads * d, bias=config.attention_bias)
        self.k_proj = nn.Linear(h, self.kv_heads * d, bias=config.attention_bias)
        self.v_proj = nn.Linear(h, self.kv_heads * d, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.heads * d, h, bias=config.o_bias)
        self.scale = d**-0.5
        self.widths = [self.heads * d, self.kv_heads * d, self.kv_heads * d]

        self.qkv_proj: nn.Module | None = None
        """q, k and v as one layer once the weights are in (`fuse_projections`): one weight read per step."""

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, kv: torch.Tensor, meta: AttentionMetadata, rotary: Rotary
    ) -> torch.Tensor:
        """x: [tokens, hidden]; kv: [2, blocks, block_size, kv_heads, head_dim] for this layer."""
        rotated = False
        if self.qkv_proj is not None:
            qkv = self.qkv_proj(x)
            if (kernels := cpu_kernels.elementwise(qkv)) is not None and qkv.is_contiguous():
                kernels.rotary_(qkv, rotary.cos[positions], rotary.sin[positions], self.heads, self.kv_heads)
                rotated = True
            q, k, v = qkv.split(self.widths, dim=-1)
            q = q.view(-1, self.heads, self.head_dim)
            k = k.view(-1, self.kv_heads, self.head_dim)
            v = v.view(-1, self.kv_heads, self.head_dim)
        else:
            q = self.q_proj(x).view(-1, self.heads, self.head_dim)
            k = self.k_proj(x).view(-1, self.kv_heads, self.head_dim)
            v = self.v_proj(x).view(-1, self.kv_heads, self.head_dim)
        if not rotated:
            q, k = rotary.apply(q, k, positions)
        write_kv(kv[0], kv[1], k, v, meta.slot_mapping)
        out = paged_attention(q, kv[0], kv[1], meta, self.scale)
        result: torch.Tensor = self.o_proj(out.flatten(1))
        return result


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h, i, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(h, i, bias=bias)
        self.up_proj = nn.Linear(h, i, bias=bias)
        self.down_proj = nn.Linear(i, h, bias=bias)
        self.gate_up_proj: nn.Module | None = None
        """gate and up as one layer once the weights are in (`fuse_projections`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate_up = self.gate_up_proj(x)
            if (kernels := cpu_kernels.elementwise(gate_up)) is not None and gate_up.dim() == 2:
                act = kernels.silu_mul(gate_up)
            else:
                gate, up = gate_up.chunk(2, dim=-1)
                act = F.silu(gate) * up
            out: torch.Tensor = self.down_proj(act)
            return out
        out = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out


def fuse_projections(model: nn.Module) -> int:
    """Put one layer in place of q/k/v and of gate/up wherever all are plain `nn.Linear` (as vLLM's
    qkv_proj and gate_up_proj): a decode step then reads each weight in one pass with one call, not
    three and two. The outputs are the same numbers (the rows of one matrix are those of the parts).
    Returns how many layers were fused."""
    fused = 0
    for module in model.modules():
        if isinstance(module, Attention) and module.qkv_proj is None:
            parts: list[nn.Module] = [module.q_proj, module.k_proj, module.v_proj]
            if _joinable(parts):
                module.qkv_proj = _joined(parts)
                del module.q_proj, module.k_proj, module.v_proj
                fused += 1
        elif isinstance(module, MLP) and module.gate_up_proj is None:
            parts = [module.gate_proj, module.up_proj]
            if _joinable(parts):
                module.gate_up_proj = _joined(parts)
                del module.gate_proj, module.up_proj
                fused += 1
    return fused


def _joinable(parts: list[nn.Module]) -> bool:
    return all(type(p) is nn.Linear for p in parts) and len({p.bias is None for p in parts}) == 1


def _joined(modules: list[nn.Module]) -> nn.Linear:
    parts = [p for p in modules if isinstance(p, nn.Linear)]
    first = parts[0]
    joined = nn.Linear(first.in_features, sum(p.out_features for p in parts), bias=first.bias is not None,
                       device=first.weight.device, dtype=first.weight.dtype)  # fmt: skip
    with torch.no_grad():
        joined.weight.copy_(torch.cat([p.weight for p in parts]))
        if joined.bias is not None:
            joined.bias.copy_(torch.cat([p.bias for p in parts if p.bias is not None]))
    return joined.requires_grad_(False)


def _decode_operand(linear: nn.Module) -> tuple[str, Operands] | None:
    """A linear layer as the one-call decode layer reads it (`csrc/paged_decode.cpp`, `decode_layer`):
    its kind and (weight, scale, bias, other), an empty tensor for each part it lacks; None: a layer
    it does not take (a float32 layer without oneDNN's copy, another dtype, int4 codes the CPU kernel
    could not pack)."""
    bias = getattr(linear, "bias", None)
    if bias is not None and bias.dtype != torch.float32:
        return None
    b = _NONE if bias is None else bias.detach().contiguous()
    if isinstance(linear, cpu_kernels.PackedLinear):
        panels = linear.panel_weight()  # None without AVX-512: oneDNN takes every row count
        return "float32", (_NONE if panels is None else panels, _NONE, b, linear.packed)
    if isinstance(linear, quant.QuantLinear) and linear.int4 is None and linear.in_features % 64 == 0:
        return "int8", (linear.codes, linear.scale.float().contiguous(), b, linear.scale.to(torch.bfloat16))
    if isinstance(linear, quant.QuantLinear) and linear.int4 is not None and linear.int4.packed is not None:
        assert linear.int4.scale_and_zero is not None
        return "int4", (linear.int4.packed, linear.int4.scale_and_zero, b, _NONE)
    return None


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, kv: torch.Tensor, meta: AttentionMetadata, rotary: Rotary
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), positions, kv, meta, rotary)
        out: torch.Tensor = x + self.mlp(self.post_attention_layernorm(x))
        return out

    def decode_operands(self) -> tuple[set[str], Operands] | None:
        """The linears of this layer as `cpu_kernels.decode_layer_kernel` takes them, with their kinds;
        None where it cannot run this layer (projections not fused, another dtype)."""
        attn, mlp = self.self_attn, self.mlp
        if attn.qkv_proj is None or mlp.gate_up_proj is None:
            return None
        parts = [_decode_operand(m) for m in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)]
        if any(p is None for p in parts):
            return None
        return {p[0] for p in parts if p}, tuple(t for p in parts if p for t in p[1])

    def decode_step(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv: torch.Tensor,
        meta: AttentionMetadata,
        operands: Operands,
        gemv_rows: int,
    ) -> None:
        """This layer for a step of decode rows only, in one call: x [rows, hidden] float32 is
        updated in place; cos, sin: the rows' rotary tables; up to `gemv_rows` rows, the linears
        run on the small-row kernels."""
        kernel = cpu_kernels.decode_layer_kernel()
        assert kernel is not None
        attn = self.self_attn
        kernel(
            x, cos, sin, meta.slot_mapping, kv[0], kv[1], meta.decode_block_tables, meta.decode_context_lens,
            self.input_layernorm.weight, self.post_attention_layernorm.weight, self.input_layernorm.eps,
            attn.heads, attn.kv_heads, attn.scale, meta.sliding_window or 0, gemv_rows, *operands,
        )  # fmt: skip


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class CausalLM(nn.Module):
    """`forward` runs the decoder over one step's tokens and returns the hidden states of the rows
    asked for; `logits` turns those into float32 scores over the vocabulary."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary: Rotary | None = None
        self._decode: tuple[set[str], list[Operands]] | None = None
        """Every layer's operands for the one-call decode layer and their kinds, found at the first
        decode step on the CPU (an empty list: some layer cannot take it)."""

    def prepare(self, max_len: int) -> None:
        """Build the rotary tables once the weights sit on their device in their dtype."""
        weight = self.model.embed_tokens.weight
        self.rotary = Rotary(self.config.rope, self.config.head_dim, max_len, weight.dtype, weight.device)

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, rows: torch.Tensor
    ) -> torch.Tensor:
        """tokens, positions: [tokens]; kv_cache: [layers, 2, blocks, block_size, kv_heads, head_dim];
        rows: [n] indices of the tokens whose next-token scores are wanted. Returns [n, vocab] float32."""
        assert self.rotary is not None, "prepare() first"
        x = self.model.embed_tokens(tokens)
        fused = self._decode_operands(x, kv_cache, meta)
        if fused is not None:
            operands, gemv_rows = fused
            cos, sin = self.rotary.cos[positions], self.rotary.sin[positions]
            for layer, kv, ops in zip(self._layers(), kv_cache, operands, strict=True):
                layer.decode_step(x, cos, sin, kv, meta, ops, gemv_rows)
        else:
            for module, kv in zip(self.model.layers, kv_cache, strict=True):
                x = module(x, positions, kv, meta, self.rotary)
        logits: torch.Tensor = self.lm_head(self.model.norm(x[rows])).float()
        return logits

    def _layers(self) -> list[DecoderLayer]:
        return cast(list[DecoderLayer], list(self.model.layers))

    def _decode_operands(
        self, x: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata
    ) -> tuple[list[Operands], int] | None:
        """Each layer's operands, and up to how many rows the small-row kernels take, where this step runs
        layer by layer in one call each: a CPU step of float32 decode rows only (the cache in float32,
        float16 or bfloat16), at most
        `cpu_kernels.DECODE_LAYER_MAX_ROWS` of them, the kernels built."""
        if (
            not cpu_kernels.FUSE_DECODE_LAYERS
            or x.device.type != "cpu"
            or x.dtype != torch.float32
            or kv_cache.dtype not in (torch.float32, *NARROW_CACHES)
            or meta.prefills
            or meta.num_decode != x.shape[0]
            or cpu_kernels.decode_layer_kernel() is None
        ):
            return None
        if self._decode is None:
            found = [layer.decode_operands() for layer in self._layers()]
            usable = [f for f in found if f is not None]
            kinds = set().union(*(kinds for kinds, _ in usable))
            self._decode = (kinds, [ops for _, ops in usable] if len(usable) == len(found) else [])
        kinds, operands = self._decode
        if not operands or x.shape[0] > cpu_kernels.DECODE_LAYER_MAX_ROWS:
            return None
        # int4 has no GEMV: PyTorch's kernel at any number of rows
        gemv = {"float32": cpu_kernels.F32_PANEL_MAX_ROWS if cpu_kernels.f32_panels_kernel() else 0,
                "int8": quant.W8A8_MAX_ROWS if cpu_kernels.w8a8_kernel() else 0,
                "int4": cpu_kernels.DECODE_LAYER_MAX_ROWS}  # fmt: skip
        return operands, min(gemv[kind] for kind in kinds)
