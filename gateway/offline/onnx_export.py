"""Export a sentence-transformers BERT model (all-MiniLM-L6-v2) to ONNX, once.

The graph includes mean pooling over the attention mask and L2 normalisation, so ONNX Runtime
returns the sentence embedding itself. The model is traced with transformers' eager attention,
whose pattern ONNX Runtime's BERT fusions recognise: each layer's attention (the Q/K/V projections
in one product, the mask, softmax and heads) becomes one `Attention` node, the residual adds and
norms `SkipLayerNormalization`, the embeddings `EmbedLayerNormalization`. On two cores that runs
one short text 10-20% faster, and a batch of 16 1-5%, than the graph of shape arithmetic the plain
export leaves, with the same vectors (loadtest/RESULTS.md). The file is cached on disk under a
name made of the model's hash, so a changed model (or a changed export) makes a new file, and
concurrent workers that export at the same time each write a temporary file and rename it into
place.

torch and transformers are imported here only, and only when an export is needed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

EXPORT_VERSION = "2"
"""Bump when the exported graph changes."""
_HASHED = ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json")


def model_hash(model_dir: Path) -> str:
    digest = hashlib.sha256(EXPORT_VERSION.encode())
    for name in _HASHED:
        path = model_dir / name
        if path.exists():
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def ensure_onnx(model_dir: Path, cache_dir: Path) -> Path:
    """The ONNX file for `model_dir`, exported into `cache_dir` if it is not there yet."""
    target = cache_dir / f"{model_dir.name}-{model_hash(model_dir)}.onnx"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".onnx.tmp")
    os.close(fd)
    try:
        _export(model_dir, Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _export(model_dir: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
            # hidden: (batch, seq, 384); mask: (batch, seq, 1)
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)  # (batch, 384)

    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    model = Pooled(bert)
    sample = torch.ones(2, 8, dtype=torch.long)
    axes = {"batch": 0, "seq": 1}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dynamic = {n: {v: k for k, v in axes.items()} for n in names} | {"embedding": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (sample, sample, torch.zeros_like(sample)),
            str(target),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    _fuse(target, bert.config.num_attention_heads, bert.config.hidden_size, bert.config.num_hidden_layers)


def _fuse(path: Path, heads: int, hidden: int, layers: int) -> None:
    """Rewrite `path` with ONNX Runtime's BERT fusions (graph rewrites only: `opt_level` 0 leaves
    the machine-specific optimisations to the session that loads it). A graph the fusions do not
    recognise, or fail on, is kept as exported: slower, never wrong, and the embedder still starts."""
    import logging
    import sys

    path_before = list(sys.path)
    try:  # the package appends its own folder to sys.path (its modules import each other by bare name)
        from onnxruntime.transformers import optimizer

        logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
        fused = optimizer.optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
    except Exception as exc:  # an optional rewrite: another onnxruntime release may not take this graph
        warnings.warn(f"ONNX export: the attention fusions failed ({exc!r}); the embedder runs unfused", stacklevel=2)
        return
    finally:
        sys.path[:] = path_before
    attention = sum(node.op_type == "Attention" for node in fused.model.graph.node)
    if attention != layers:
        warnings.warn(f"ONNX export: {attention} of {layers} attention layers fused; the embedder runs unfused", stacklevel=2)
        return
    fused.save_model_to_file(str(path))
