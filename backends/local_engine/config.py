"""What the engine needs from a checkpoint's config.json, read for Llama, Qwen2 and Mistral."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from backends.local_engine.errors import LoadError

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "MistralForCausalLM": "mistral"}
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True, slots=True)
class RopeConfig:
    """Rotary embedding parameters, in the shape of transformers' `rope_parameters`."""

    theta: float = 10000.0
    type: str = "default"
    params: dict[str, float] = field(default_factory=dict)
    """The scaling variant's own fields (factor, low_freq_factor, beta_fast, ...)."""


@dataclass(frozen=True, slots=True)
class PrequantizedConfig:
    """A checkpoint stored quantized (config.json's `quantization_config`)."""

    method: str
    """awq or gptq."""
    group_size: int
    sym: bool = True


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """A decoder-only transformer of the Llama family."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    rope: RopeConfig
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    """Bias on the q, k and v projections (Qwen2 always; Llama when `attention_bias`)."""
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    dtype: str = "float32"
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    quantization: PrequantizedConfig | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        archs = raw.get("architectures") or []
        arch = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
        if arch is None:
            arch = {"llama": "llama", "qwen2": "qwen2", "mistral": "mistral"}.get(str(raw.get("model_type")))
        if arch is None:
            raise LoadError(f"unsupported architecture {archs or raw.get('model_type')!r}; supported: {sorted(ARCHITECTURES)}")
        try:
            hidden = int(raw["hidden_size"])
            heads = int(raw["num_attention_heads"])
            config = cls(
                architecture=arch,
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_layers=int(raw["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(raw.get("num_key_value_heads") or heads),
                head_dim=int(raw.get("head_dim") or hidden // heads),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
                rope=_rope(raw),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                attention_bias=arch == "qwen2" or bool(raw.get("attention_bias", False)),
                o_bias=arch == "llama" and bool(raw.get("attention_bias", False)),
                mlp_bias=arch == "llama" and bool(raw.get("mlp_bias", False)),
                sliding_window=_sliding_window(arch, raw),
                dtype=_dtype(raw),
                bos_token_id=raw.get("bos_token_id"),
                eos_token_ids=_ids(raw.get("eos_token_id")),
                quantization=_quantization(raw.get("quantization_config")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LoadError(f"config.json: missing or bad field: {exc}") from exc
        config.check()
        return config

    def check(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise LoadError(f"num_attention_heads {self.num_heads} is not a multiple of num_key_value_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise LoadError(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if self.rope.type not in ROPE_TYPES:
            raise LoadError(f"rope type {self.rope.type!r} is not supported; supported: {', '.join(ROPE_TYPES)}")

    @property
    def max_model_len(self) -> int:
        """The longest sequence the model may see. Dynamic NTK scaling only changes frequencies past
        the pretraining length, so it is served up to that length with the plain frequencies."""
        if self.rope.type == "dynamic":
            return int(self.rope.params.get("original_max_position_embeddings", self.max_position_embeddings))
        return self.max_position_embeddings

    def num_parameters(self) -> int:
        h, i, d = self.hidden_size, self.intermediate_size, self.head_dim
        attention = h * d * (self.num_heads * 2 + self.num_kv_heads * 2)
        per_layer = attention + 3 * h * i + 2 * h
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embeddings + h


def _rope(raw: dict[str, Any]) -> RopeConfig:
    # transformers >= 5 writes `rope_parameters`; older checkpoints write `rope_theta` and `rope_scaling`.
    params = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", raw.get("rope_theta", 10000.0)))
    kind = str(params.pop("rope_type", params.pop("type", "default")))
    if kind in ("llama3", "yarn", "dynamic"):
        params.setdefault("original_max_position_embeddings", raw.get("max_position_embeddings", 2048))
    numbers = {
        k: float(v) for k, v in params.items() if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    return RopeConfig(theta=theta, type=kind, params=numbers)


def _quantization(raw: Any) -> PrequantizedConfig | None:
    """AWQ (GEMM) and GPTQ 4-bit checkpoints are read; other quantized formats are refused."""
    if not raw:
        return None
    method = str(raw.get("quant_method", "")).lower()
    if method not in ("awq", "gptq"):
        raise LoadError(f"quantized checkpoints of kind {method!r} are not supported (awq and gptq are)")
    bits = int(raw.get("bits", raw.get("w_bit", 4)))
    if bits != 4:
        raise LoadError(f"{method} with {bits} bits is not supported (4 is)")
    if method == "awq" and str(raw.get("version", "gemm")).lower() != "gemm":
        raise LoadError("only AWQ's GEMM layout is supported")
    if method == "gptq" and raw.get("desc_act"):
        raise LoadError("GPTQ checkpoints with act-order (desc_act) are not supported")
    group = int(raw.get("group_size", raw.get("q_group_size", 128)))
    if group <= 0:
        raise LoadError("quantized checkpoints without groups (group_size -1) are not supported")
    return PrequantizedConfig(method, group, bool(raw.get("sym", not raw.get("zero_point", True))))


def _sliding_window(arch: str, raw: dict[str, Any]) -> int | None:
    window = raw.get("sliding_window")
    if arch == "mistral" and window:
        return int(window)
    if arch == "qwen2" and raw.get("use_sliding_window") and window:
        # Qwen2 slides only above max_window_layers; checkpoints ship with it off. Refuse rather than differ.
        raise LoadError("Qwen2 with use_sliding_window is not supported")
    return None


def _dtype(raw: dict[str, Any]) -> str:
    dtype = str(raw.get("torch_dtype") or raw.get("dtype") or "float32").removeprefix("torch.")
    return dtype if dtype in DTYPES else "float32"


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(int(v) for v in value)
    return (int(value),)
