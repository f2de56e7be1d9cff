"""The Llama-family decoder (Llama, Qwen2, Mistral) over a paged KV cache.

Parameter names are transformers' own, so a checkpoint's state dict loads as it is. Inputs are one
step's tokens flattened across sequences ([tokens]); see `attention.AttentionMetadata` for the layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backends.local_engine.attention import AttentionMetadata, paged_attention, write_kv
from backends.local_engine.config import ModelConfig
from backends.local_engine.rope import Rotary


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As transformers: normalise in float32, cast back, then scale.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        out: torch.Tensor = self.weight * h.to(x.dtype)
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
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).split(self.widths, dim=-1)
            q = q.view(-1, self.heads, self.head_dim)
            k = k.view(-1, self.kv_heads, self.head_dim)
            v = v.view(-1, self.kv_heads, self.head_dim)
        else:
            q = self.q_proj(x).view(-1, self.heads, self.head_dim)
            k = self.k_proj(x).view(-1, self.kv_heads, self.head_dim)
            v = self.v_proj(x).view(-1, self.kv_heads, self.head_dim)
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
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            out: torch.Tensor = self.down_proj(F.silu(gate) * up)
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
        for layer, kv in zip(self.model.layers, kv_cache, strict=True):
            x = layer(x, positions, kv, meta, self.rotary)
        logits: torch.Tensor = self.lm_head(self.model.norm(x[rows])).float()
        return logits
