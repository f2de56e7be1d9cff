"""Tiny random-weight checkpoints (ours and transformers' own) and a reference greedy decoder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from backends.local_engine.cpu_kernels import decode_kernel
from backends.local_engine.engine import EngineSettings, LLMEngine
from backends.local_engine.tiny import build

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="session", autouse=True)
def cpu_decode_kernel() -> None:
    """Engine tests decode through the C++ kernel, built before the first of them (a build takes
    about half a minute, once per machine); without a compiler they run on the torch path."""
    decode_kernel(wait=True)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our builder's Llama: grouped-query attention (4 heads, 2 KV heads), untied embeddings."""
    return build(tmp_path_factory.mktemp("llama"), "tiny", seed=1, max_position_embeddings=256)


def hf_checkpoint(root: Path, tokenizer_from: Path, kind: str, seed: int = 0, **config: Any) -> Path:
    """A checkpoint written by transformers itself (save_pretrained), with its random init made wider
    (so that argmaxes are decisive) and random biases where the architecture has them."""
    import transformers

    classes = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
               "mistral": ("MistralConfig", "MistralForCausalLM")}  # fmt: skip
    config_cls, model_cls = (getattr(transformers, name) for name in classes[kind])
    defaults = {"vocab_size": 30522, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
                "initializer_range": 0.25, "bos_token_id": 101, "eos_token_id": 102}  # fmt: skip
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**defaults, **config})).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0, 0.5)
    folder = root / kind
    model.save_pretrained(folder, **({"max_shard_size": "1MB"} if config.pop("_sharded", False) else {}))
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_from / name, folder / name)
    return folder


def hf_model(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


@torch.no_grad()
def hf_greedy(model: Any, prompt: list[int], n: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens by full forward passes (no KV cache, no generation_config defaults), with the
    log-probabilities at each step."""
    ids = list(prompt)
    logprobs = []
    for _ in range(n):
        logits = model(torch.tensor([ids]), use_cache=False).logits[0, -1].float()
        logprobs.append(torch.log_softmax(logits, -1))
        ids.append(int(logits.argmax()))
    return ids[len(prompt) :], logprobs


def engine(folder: Path, **settings: Any) -> LLMEngine:
    return LLMEngine(EngineSettings(model=str(folder), **{"num_kv_blocks": 256, **settings}))


def assert_same_or_tied(ours: list[int], ref: list[int], ref_logprobs: list[torch.Tensor], tol: float = 1e-3) -> None:
    """Identical tokens, or at the first divergence our token is in the reference's top 5 and within
    `tol` of the reference's best log-probability (a near tie that rounding may break either way)."""
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        if a != b:
            top5 = ref_logprobs[i].topk(5).indices.tolist()
            gap = float(ref_logprobs[i][b] - ref_logprobs[i][a])
            assert a in top5 and gap < tol, f"diverged at {i}: ours {a}, reference {b}, gap {gap:.4f}"
            return
