"""`gateway cache-train`: fine-tune the cache's pair verifier from the bundled all-MiniLM-L6-v2.

The verifier is a cross-encoder: both prompts go through the model together ("[CLS] a [SEP] b
[SEP]"), so every token of one attends to every token of the other, and a linear head on the
mean of the last layer says how likely one answer serves both. The bundled weights stay frozen;
what is trained is a low-rank update (LoRA, rank `RANK`) beside each linear layer of the six
transformer layers, and the head. What ships is only that: the updates and the head in float16
(`config/cache/verifier.safetensors`, about 1.3 MB), merged into the bundled weights when the
gateway exports the ONNX file on first use.

Training data: the generated pairs (cache_data.py: from the seeds, and the hand-written sets in
evals/cache-pairs.jsonl with their augmented variants), `train` split only. Then the shipped
verifier, run through ONNX Runtime as the gateway runs it, scores the `calibration` split, and
those scores are kept in `config/cache/verifier.json`: the gateway picks its threshold from them
for the configured `cache.target_false_hit_rate`. The frozen test splits (evals/cache-frozen*.jsonl) are never read.

Deterministic for a given torch build and CPU: one seeded generator orders the batches and
initialises the head, and torch runs on a fixed number of threads.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.offline.cache_eval import Pair

RANK = 16
ALPHA = 32.0
LEARNING_RATE = 1e-3
MAX_TOKENS = 128
"""Both prompts together, in tokens; the longer one is cut first."""
VERSION = "1"
HANDWRITTEN = Path(__file__).resolve().parents[2] / "evals" / "cache-pairs.jsonl"


class LoRA:
    """A low-rank update beside a frozen linear layer: y = W x + b + (B A x) * alpha / rank."""

    def __new__(cls, base: Any, rank: int, generator: Any) -> Any:
        import torch

        class _LoRA(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.base = base
                self.lora_A = torch.nn.Parameter(torch.randn(rank, base.in_features, generator=generator) / rank)
                self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, rank))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                out: torch.Tensor = self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * (ALPHA / rank)
                return out

        return _LoRA()


def train(
    pairs: Sequence[Pair], out: Path, *, epochs: int = 2, batch: int = 32, seed: int = 0, threads: int = 2, log: Any = print
) -> None:
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from gateway.cache.embedder import bundled_model_dir
    from gateway.cache.verifier import aligned

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(seed)
    model_dir = bundled_model_dir()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    vocabulary = Tokenizer.from_file(str(model_dir / "tokenizer.json"))

    def known(word: str) -> bool:
        return vocabulary.token_to_id(word.lower()) is not None

    bert = AutoModel.from_pretrained(str(model_dir))
    for p in bert.parameters():
        p.requires_grad = False
    adapted: dict[str, Any] = {}
    for layer in bert.encoder.layer:
        for owner, name in [
            (layer.attention.self, "query"), (layer.attention.self, "key"), (layer.attention.self, "value"),
            (layer.attention.output, "dense"), (layer.intermediate, "dense"), (layer.output, "dense"),
        ]:  # fmt: skip
            wrapped = LoRA(getattr(owner, name), RANK, generator)
            setattr(owner, name, wrapped)
    for name, module in bert.named_modules():
        if hasattr(module, "lora_A"):
            adapted[name] = module
    head = torch.nn.Linear(bert.config.hidden_size, 1)
    params = [p for m in adapted.values() for p in (m.lora_A, m.lora_B)] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.01)
    rng = random.Random(seed)
    steps = epochs * math.ceil(len(pairs) / batch)
    warmup = max(1, steps // 20)

    def schedule(s: int) -> float:
        return min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step = 0
    bert.train()
    for epoch in range(epochs):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        swapped = [rng.random() < 0.5 for _ in order]
        texts = [(pairs[i].b, pairs[i].a) if s else (pairs[i].a, pairs[i].b) for i, s in zip(order, swapped, strict=True)]
        texts = [aligned(a, b, known) for a, b in texts]  # as the gateway will show them to the model
        encoded = tokenizer.encode_batch(texts)
        # Batches of like lengths (less padding): sort within chunks of 50 batches, then shuffle the batches.
        chunk = batch * 50
        batches: list[list[int]] = []
        for start in range(0, len(order), chunk):
            idx = sorted(range(start, min(start + chunk, len(order))), key=lambda j: len(encoded[j].ids))
            batches += [idx[k : k + batch] for k in range(0, len(idx), batch)]
        rng.shuffle(batches)
        seen, loss_sum, began = 0, 0.0, time.monotonic()
        for group in batches:
            ids, mask, types = _padded([encoded[j] for j in group])
            labels = torch.tensor([float(pairs[order[j]].same) for j in group])
            hidden = bert(input_ids=ids, attention_mask=mask, token_type_ids=types)[0]
            logits = head(_mean(hidden, mask)).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            seen += len(group)
            loss_sum += loss.item() * len(group)
            if step % 100 == 0:
                log(f"epoch {epoch + 1} step {step}/{steps}: loss {loss_sum / seen:.4f} ({time.monotonic() - began:.0f} s)")
    state = {}
    for name, module in adapted.items():
        state[f"{name}.lora_A"] = module.lora_A.detach().to(torch.float16).contiguous()
        state[f"{name}.lora_B"] = module.lora_B.detach().to(torch.float16).contiguous()
    state |= {f"head.{k}": v.detach().to(torch.float16).contiguous() for k, v in head.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    # One metadata key: safetensors writes the metadata map in no fixed order, and the file must be
    # the same bytes each time it is rebuilt (base, rank and version are in verifier.json).
    save_file(state, str(out / "verifier.safetensors"), metadata={"lora_scale": repr(ALPHA / RANK)})


def _padded(encodings: Sequence[Any]) -> tuple[Any, Any, Any]:
    import torch

    from gateway.cache.verifier import padded

    ids, mask, types = padded(encodings)
    return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)


def _mean(hidden: Any, mask: Any) -> Any:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_calibration(out: Path, rows: list[dict[str, Any]]) -> None:
    """`rows`: per calibration pair its `same`, `kind`, `source`, `cosine`, `ruled` (refused by a
    structural rule or unreadable to the model) and `score`."""
    meta = {
        "version": VERSION,
        "weights_sha256": file_hash(out / "verifier.safetensors"),
        "rank": RANK,
        "max_tokens": MAX_TOKENS,
        "calibration": {
            "same": [int(r["same"]) for r in rows],
            "cosine": [round(float(r["cosine"]), 4) for r in rows],
            "ruled": [int(r["ruled"]) for r in rows],
            "score": [round(float(r["score"]), 5) for r in rows],
            "kind": [r["kind"] for r in rows],
        },
    }
    (out / "verifier.json").write_text(json.dumps(meta, separators=(",", ":"), ensure_ascii=False) + "\n")


def training_pairs(readable: Any) -> tuple[list[Pair], list[Pair]]:
    """(train, calibration): the generated pairs and the hand-written sets, split by their `split`;
    pairs the model cannot read (`readable(a, b)` false) are left out, as the gateway never asks it."""
    from gateway.offline.cache_data import augment, generate
    from gateway.offline.cache_eval import read_pairs

    handwritten = read_pairs(HANDWRITTEN)
    everything = [p for p in [*generate(), *handwritten, *augment(handwritten)] if readable(p.a, p.b)]
    return [p for p in everything if p.split == "train"], [p for p in everything if p.split == "calibration"]


def score_rows(weights: Path, pairs: Sequence[Pair], log: Any = print) -> list[dict[str, Any]]:
    """Per pair, what the gateway's parts say of it with the verifier `weights`, through ONNX
    Runtime as the gateway runs it: `cosine`, `ruled` (refused by a rule), `score`."""
    import asyncio
    import tempfile

    from gateway.cache.embedder import OnnxEmbedder
    from gateway.cache.rules import refuse
    from gateway.cache.verifier import CrossEncoder

    with tempfile.TemporaryDirectory() as onnx_dir:
        verifier = CrossEncoder(weights, Path(onnx_dir))
        embedder = OnnxEmbedder()
        try:
            a = asyncio.run(embedder.embed([p.a for p in pairs]))
            b = asyncio.run(embedder.embed([p.b for p in pairs]))
            began = time.monotonic()
            scores = verifier.score_pairs([(p.b, p.a) for p in pairs])
            log(f"{len(pairs)} pairs scored in {time.monotonic() - began:.0f} s")
            return [
                {
                    "same": p.same,
                    "kind": p.kind,
                    "source": p.source,
                    "cosine": c,
                    "score": s,
                    "ruled": refuse(p.a, p.b, verifier.unseen) is not None,
                }
                for p, c, s in zip(pairs, (a * b).sum(axis=1), scores, strict=True)
            ]
        finally:
            verifier.close()
            embedder.close()


def calibrate(out: Path, calibration: Sequence[Pair], log: Any = print) -> None:
    """Score the calibration split with the verifier in `out` and keep the scores beside the weights."""
    write_calibration(out, score_rows(out / "verifier.safetensors", calibration, log))


def readable_with_bundled_tokenizer() -> Any:
    from tokenizers import Tokenizer

    from gateway.cache.embedder import bundled_model_dir

    tokenizer = Tokenizer.from_file(str(bundled_model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    unk = tokenizer.token_to_id("[UNK]")

    def unseen(text: str) -> list[str]:
        e = tokenizer.encode(text, add_special_tokens=False)
        return [text[s:t] for i, (s, t) in zip(e.ids, e.offsets, strict=True) if i == unk]

    return lambda a, b: unseen(a) == unseen(b)


def run(out: Path, epochs: int = 2, log: Any = print) -> None:
    train_set, calibration = training_pairs(readable_with_bundled_tokenizer())
    log(f"training on {len(train_set)} pairs ({sum(p.same for p in train_set)} same); calibrating on {len(calibration)}")
    began = time.monotonic()
    train(train_set, out, epochs=epochs, log=log)
    log(f"trained in {time.monotonic() - began:.0f} s")
    calibrate(out, calibration, log)
