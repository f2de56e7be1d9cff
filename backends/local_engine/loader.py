"""Reads a Hugging Face checkpoint folder: config.json, safetensors (one file or shards), tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backends.local_engine.config import ModelConfig
from backends.local_engine.cpu_kernels import pack_linears
from backends.local_engine.errors import LoadError
from backends.local_engine.model import CausalLM, fuse_projections
from backends.local_engine.quant import QuantConfig, QuantLinear, from_awq, from_gptq, quantize_model
from backends.local_engine.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(slots=True)
class Checkpoint:
    """A checkpoint folder's config, tokenizer and generation defaults (weights are read by `load_model`)."""

    folder: Path
    config: ModelConfig
    tokenizer: Tokenizer
    generation_defaults: dict[str, float] = field(default_factory=dict)
    """temperature, top_p, top_k, min_p, repetition_penalty from generation_config.json."""
    eos_token_ids: tuple[int, ...] = ()

    @classmethod
    def open(cls, folder: str | Path) -> Checkpoint:
        path = Path(folder)
        if not (path / "config.json").is_file():
            raise LoadError(f"{path}: not a checkpoint folder (no config.json)")
        config = ModelConfig.from_dict(_read(path / "config.json"))
        tokenizer = Tokenizer(path)
        generation = _read(path / "generation_config.json") if (path / "generation_config.json").is_file() else {}
        defaults = {
            k: float(generation[k])
            for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
            if isinstance(generation.get(k), int | float)
        }
        eos = set(config.eos_token_ids)
        raw_eos = generation.get("eos_token_id")
        eos.update(raw_eos if isinstance(raw_eos, list) else [raw_eos] if isinstance(raw_eos, int) else [])
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        return cls(path, config, tokenizer, defaults, tuple(sorted(eos)))


def resolve_dtype(name: str, config: ModelConfig, device: torch.device) -> torch.dtype:
    """`auto`: the checkpoint's dtype on a GPU; float32 on CPU, where half-precision matmuls are slow."""
    if name == "auto":
        return DTYPES[config.dtype] if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise LoadError(f"dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def load_model(checkpoint: Checkpoint, dtype: torch.dtype, device: torch.device, quant: QuantConfig | None = None) -> CausalLM:
    """The checkpoint's model on `device` in `dtype`; with `quant`, its linear layers quantized as
    they load. An AWQ or GPTQ checkpoint's layers come in already quantized (int4)."""
    config = checkpoint.config
    with torch.device("meta"):
        model = CausalLM(config)
    model = model.to_empty(device=device).to(dtype)
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    packed: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in _tensors(checkpoint.folder):
        if name.endswith("rotary_emb.inv_freq"):
            continue
        prefix, _, leaf = name.rpartition(".")
        if config.quantization is not None and leaf in _PACKED:
            packed.setdefault(prefix, {})[leaf] = tensor
            continue
        target = params.get(name)
        if target is None:
            raise LoadError(f"unexpected weight {name!r}")
        if target.shape != tensor.shape:
            raise LoadError(f"weight {name!r} has shape {tuple(tensor.shape)}, config.json implies {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(tensor)
        loaded.add(name)
    for prefix, parts in packed.items():
        _install_prequantized(model, prefix, parts, config, device)
        loaded.add(f"{prefix}.weight")
    if "lm_head.weight" not in loaded and config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
        loaded.add("lm_head.weight")
    missing = sorted(set(params) - loaded)
    if missing:
        raise LoadError(f"{len(missing)} weights missing from the checkpoint, e.g. {missing[:3]}")
    model.eval().requires_grad_(False)
    fuse_projections(model)
    if quant is not None:
        if config.quantization is not None:
            raise LoadError(f"the checkpoint is already quantized ({config.quantization.method}); load it without quantization")
        quantize_model(model, quant)
    if device.type == "cpu":
        pack_linears(model)
    model.prepare(config.max_model_len)
    return model


_PACKED = ("qweight", "qzeros", "scales", "g_idx")


def _install_prequantized(
    model: CausalLM, prefix: str, parts: dict[str, torch.Tensor], config: ModelConfig, device: torch.device
) -> None:
    """Put a QuantLinear made from an AWQ / GPTQ layer's packed tensors in place of its nn.Linear."""
    spec = config.quantization
    assert spec is not None
    missing = [p for p in ("qweight", "qzeros", "scales") if p not in parts]
    if missing:
        raise LoadError(f"{prefix}: quantized layer without {', '.join(missing)}")
    parent_name, _, child = prefix.rpartition(".")
    try:
        linear = model.get_submodule(prefix)
    except AttributeError:
        raise LoadError(f"unexpected quantized layer {prefix!r}") from None
    if not isinstance(linear, torch.nn.Linear):
        raise LoadError(f"{prefix!r} is not a linear layer")
    try:
        if spec.method == "gptq":
            codes, scale, zero = from_gptq(
                parts["qweight"], parts["qzeros"], parts["scales"], parts.get("g_idx"), spec.group_size
            )
        else:
            codes, scale, zero = from_awq(parts["qweight"], parts["qzeros"], parts["scales"])
    except (RuntimeError, ValueError) as exc:
        raise LoadError(f"{prefix}: {exc}") from exc
    if tuple(codes.shape) != tuple(linear.weight.shape) or codes.shape[1] // scale.shape[1] != spec.group_size:
        raise LoadError(f"{prefix}: packed weight {tuple(codes.shape)} does not fit {tuple(linear.weight.shape)}")
    bias = None if linear.bias is None else linear.bias.detach()
    layer = QuantLinear("int4", codes.to(device), scale.to(device), zero.to(device), spec.group_size, bias)
    setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)


def _tensors(folder: Path) -> Any:
    from safetensors import safe_open

    files = _weight_files(folder)
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                yield name, f.get_tensor(name)


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read(index).get("weight_map", {})
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise LoadError(f"{folder}: no safetensors weights (.bin checkpoints are not read; convert them)")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise LoadError(f"{folder}: shards listed in the index are missing: {missing}")
    return files


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LoadError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise LoadError(f"{path}: not a JSON object")
    return data
